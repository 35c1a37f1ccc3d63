"""The one training loop every method shares (on Accelerate: 1 process, DDP, DeepSpeed, mixed precision).

AdamW, linear warmup then linear decay, gradient clipping and accumulation, dynamic padding, budgets
enforced exactly (epochs, optimizer steps, sample caps, wall clock), dev evaluation after each epoch or
every N steps. Returns the fields of the run record; raises on failure (the runner records the reason).
"""

from __future__ import annotations

import gc
import math
import os
import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from harness import atomic
from harness.plan.cells import Cell
from harness.tasks.data import TokenizedCache, lengths, load_task_data
from harness.train.methods import ADAPTER_NAME, HEAD_FILE, get_method
from harness.tasks.metrics import compute_metrics, main_score, predictions_from_logits
from harness.train.models import ModelSpec, load_for_task
from harness.train.params import breakdown, count_total, count_trainable, head_parameter_names
from harness.train.progress import Progress
from harness.tasks.registry import get_task


@dataclass
class RunContext:
    """What a process keeps between cells: where data lives and what was already loaded or tokenized."""

    data_dir: str | None
    cache_dir: str | None
    model_base_dir: str = "."
    show_progress: bool = True
    _raw: dict = field(default_factory=dict)
    tokenized: TokenizedCache = None

    def __post_init__(self):
        self.tokenized = TokenizedCache(self.cache_dir)

    def raw_data(self, task):
        """Loaded once per task and process; a failure is remembered too, so a missing data set costs one
        hub time-out, not one per cell."""
        if task.name not in self._raw:
            try:
                self._raw[task.name] = load_task_data(task, self.data_dir)
            except Exception as exc:
                self._raw[task.name] = exc
        value = self._raw[task.name]
        if isinstance(value, Exception):
            raise value
        return value


def resolve_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def process_state():
    """The process group. Without CUDA, Accelerate forms a multi-process (gloo) world only when told cpu=True;
    `accelerate launch --multi_gpu --num_processes N` on a CPU machine then gives real DDP."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def make_accelerator(cell: Cell, find_unused_parameters: bool = False):
    """A fresh Accelerator per cell: precision and accumulation may differ between cells; the process group
    (PartialState) is kept. A multi-task step uses one task's head only: DDP must be told."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs

    AcceleratorState._reset_state()
    GradientState._reset_state()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(cpu=not torch.cuda.is_available(),
                       mixed_precision=resolve_precision(cell.hparams["mixed_precision"]),
                       gradient_accumulation_steps=cell.hparams["gradient_accumulation_steps"],
                       kwargs_handlers=handlers)


class PeakMemory:
    """CUDA max allocated on GPUs; on CPU the process's peak RSS since the cell started (VmHWM, reset through
    /proc/self/clear_refs where the kernel allows it, else the process-lifetime ru_maxrss)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.kind = "cuda_max_allocated" if self.cuda else "peak_rss"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.kind = "peak_rss_cell"
            except OSError:
                self.kind = "peak_rss_process"

    def read_mb(self, device) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(device) / 2**20
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _quiet_libraries() -> None:
    """The head being newly initialised is expected (it is counted as head_params), and adapters warns about
    inactive adapters from inside its own set_active_adapters: neither helps a user reading the log."""
    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)


def _optimizer(model, hp):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    try:
        # one fused kernel per step instead of a dozen passes over every parameter: measured ~7x faster per
        # optimizer step for MiniLM on CPU (and what the HF Trainer uses by default)
        return torch.optim.AdamW(groups, lr=hp["learning_rate"], fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, lr=hp["learning_rate"])


class _LengthGrouped(torch.utils.data.Sampler):
    """Random mega-batches of MEGA_BATCHES batches, sorted by length inside (transformers' grouping function).
    Small mega-batches keep most of the padding saving while batches stay close to random: transformers' own
    sampler uses up to 50, which cost 1.3 MRPC points over 3 seeds in bench/RESULTS.md."""

    MEGA_BATCHES = 8

    def __init__(self, lengths_: list[int], batch_size: int, generator: torch.Generator):
        self.lengths, self.batch_size, self.generator = lengths_, batch_size, generator

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return iter(get_length_grouped_indices(self.lengths, self.batch_size, mega_batch_mult=self.MEGA_BATCHES,
                                               generator=self.generator))


def _train_loader(ds, hp, collator, seed):
    from torch.utils.data import DataLoader, RandomSampler

    generator = torch.Generator().manual_seed(seed)
    if hp["group_by_length"]:
        sampler = _LengthGrouped(lengths(ds), hp["batch_size"], generator)
    else:
        sampler = RandomSampler(ds, generator=generator)
    return DataLoader(ds, batch_size=hp["batch_size"], sampler=sampler, collate_fn=collator)


def _eval_loader(ds, batch_size, collator):
    """Longest first: least padding, and an out-of-memory shows at once. Order cannot change the metrics
    (predictions carry their example index)."""
    from torch.utils.data import DataLoader

    order = sorted(range(len(ds)), key=lengths(ds).__getitem__, reverse=True)
    return DataLoader(ds, batch_size=batch_size, sampler=order, collate_fn=collator)


@dataclass
class EvalSet:
    task: object
    suffix: str
    split: str
    dataset: object
    loader: object = None


def predict(model, loader, acc=None, forward=None):
    """Predictions of one dev split as (idx, logits, labels) arrays: gathered across ranks exactly once per
    example under DDP (gather_for_metrics drops the padding of the last batch)."""
    forward = forward or (lambda b: model(**b))
    logits_all, labels_all, idx_all = [], [], []
    for batch in loader:
        idx = batch.pop("idx")
        with torch.no_grad():
            logits = forward(batch).logits.float()
        labels = batch["labels"]
        if acc is not None:
            logits, labels, idx = acc.gather_for_metrics((logits, labels, idx))
        logits_all.append(logits.cpu().numpy())
        labels_all.append(labels.cpu().numpy())
        idx_all.append(idx.cpu().numpy())
    return np.concatenate(idx_all), np.concatenate(logits_all), np.concatenate(labels_all)


def evaluate_task(task, sets, predict_fn) -> tuple[dict, float, dict]:
    """Every dev split of one task: (metrics, main score, {split: (idx, preds, labels)})."""
    metrics, predictions = {}, {}
    for es in sets:
        idx, logits, labels = predict_fn(es)
        preds = predictions_from_logits(task, logits)
        metrics.update(compute_metrics(task, preds, labels, es.suffix))
        predictions[es.split] = (idx, preds, labels)
    return metrics, main_score(task, metrics), predictions


def eval_sets_for(task, ctx: RunContext, tokenizer, hp, budget) -> list[EvalSet]:
    raw = ctx.raw_data(task)
    return [EvalSet(task, s.suffix, s.hub_split,
                    ctx.tokenized.get(task, raw[s.hub_split].head(budget.get("max_eval_samples")), tokenizer,
                                      hp["max_length"], hp["padding"]))
            for s in task.eval_splits]


class MultiTaskModel(torch.nn.Module):
    """One shared encoder, one head per task: each member is a task's sequence-classification model whose base
    model is the same module object, so the encoder (and any adapter in it) is stored and counted once."""

    def __init__(self, models: list, task_adapters: list[str] | None = None):
        super().__init__()
        self.members = torch.nn.ModuleList(models)
        self.task_adapters = task_adapters   # one adapter per task: switched on for that task's batches

    def forward(self, task_index: int, **batch):
        if self.task_adapters:
            self.members[0].set_active_adapters(self.task_adapters[task_index])
        return self.members[task_index](**batch)


def _share_encoder(models: list) -> None:
    prefix = models[0].base_model_prefix
    for m in models[1:]:
        setattr(m, prefix, getattr(models[0], prefix))


class _TaskMixture:
    """The order in which tasks give the next training batch. Proportional: every batch of every task once
    per epoch, in a random interleaving (a single-task cell is its one-task case). Uniform / temperature:
    each step draws a task with probability proportional to n_t^(1/T) (T=1 proportional, T->inf uniform);
    a task whose batches run out starts its next pass. Seeded alike on every rank, so DDP ranks agree."""

    def __init__(self, loaders: list, sampling: str, temperature: float, seed: int):
        self.loaders, self.sampling, self.temperature = loaders, sampling, temperature
        self.rng = np.random.default_rng(seed)
        self.iters = [None] * len(loaders)

    def __len__(self):
        return sum(len(dl) for dl in self.loaders)

    def _order(self) -> list[int]:
        sizes = np.array([len(dl) for dl in self.loaders], dtype=float)
        if self.sampling == "proportional":
            order = np.repeat(np.arange(len(sizes)), sizes.astype(int))
            self.rng.shuffle(order)
            return order.tolist()
        power = 0.0 if self.sampling == "uniform" else 1.0 / self.temperature
        probs = sizes ** power / (sizes ** power).sum()
        return self.rng.choice(len(sizes), size=int(sizes.sum()), p=probs).tolist()

    def _next(self, t: int):
        if self.iters[t] is None:
            self.iters[t] = iter(self.loaders[t])
        try:
            return next(self.iters[t])
        except StopIteration:
            self.iters[t] = iter(self.loaders[t])
            return next(self.iters[t])

    def __iter__(self):
        if self.sampling == "proportional":
            self.iters = [iter(dl) for dl in self.loaders]  # an epoch is exactly one pass over each task
        for t in self._order():
            yield t, self._next(t)


def encoder_checksum(model) -> str:
    """A fingerprint of the pretrained encoder weights (adapter modules excluded): sequential stages record it
    at their start and end, so the store shows that stage k+1 started from what stage k ended with."""
    import hashlib

    base = getattr(model, model.base_model_prefix)
    h = hashlib.sha256()
    for name, tensor in sorted(base.state_dict().items()):
        if ADAPTER_NAME in name:
            continue
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def _resolved_method_params(cell: Cell, ctx: RunContext) -> dict:
    params = dict(cell.method_params)
    if params.get("path") and not os.path.isabs(params["path"]) and os.path.exists(
            os.path.join(ctx.model_base_dir, params["path"])):
        params["path"] = os.path.join(ctx.model_base_dir, params["path"])  # relative to the suite file
    return params


def build_model(cell: Cell, ctx: RunContext, tasks: list, handover: dict | None = None):
    """Tokenizer, model (a MultiTaskModel for several tasks), head parameter names and parameter counts.
    The method adds modules and picks what trains; every head trains. `handover` (sequential adaptation) is the
    previous stage's encoder state, loaded after the method set the model up."""
    method = get_method(cell.method)
    spec = ModelSpec(cell.model, cell.trust_remote_code, ctx.model_base_dir)
    loaded = [load_for_task(spec, task) for task in tasks]
    tokenizer = loaded[0][0]
    models = [m for _, m, _ in loaded]
    heads = [head_parameter_names(m, missing) for _, m, missing in loaded]
    if len(models) > 1:
        _share_encoder(models)
    first = models[0]
    total_before = count_total(MultiTaskModel(models)) if len(models) > 1 else count_total(first)
    method.setup(first, _resolved_method_params(cell, ctx))
    task_adapters = None
    if (cell.schedule or {}).get("adapter_per_task"):
        config = first.adapters_config.get(ADAPTER_NAME)
        first.delete_adapter(ADAPTER_NAME)
        task_adapters = [f"{ADAPTER_NAME}_{t.name}" for t in tasks]
        for name in task_adapters:
            first.add_adapter(name, config=config)
        first.train_adapter(task_adapters)   # every task's adapter trains (each on its own task's batches)
    if handover is not None:
        apply_handover(first, handover)
    if method.trains(cell.method_params):
        for m, head in zip(models, heads):
            for name, p in m.named_parameters():
                if name in head:
                    p.requires_grad = True
    model = MultiTaskModel(models, task_adapters) if len(models) > 1 else first
    counts = {"total_params": count_total(model), "trainable_params": count_trainable(model),
              "head_params": sum(p.numel() for m, head in zip(models, heads)
                                 for n, p in m.named_parameters() if n in head)}
    counts["added_params"] = counts["total_params"] - total_before
    counts["trainable_pct"] = 100.0 * counts["trainable_params"] / counts["total_params"]
    counts.update(breakdown(first))
    return tokenizer, model, models, heads, counts


def apply_handover(model, handover: dict) -> None:
    """Load the previous stage's encoder. mode "continue": everything, adapters included; "new": the previous
    adapter stays in the model, frozen, and the fresh one is stacked on it (bottleneck adapters only)."""
    base = getattr(model, model.base_model_prefix)
    state, mode = handover["state"], handover["mode"]
    if mode == "new" and any(f".{ADAPTER_NAME}." in k for k in state):
        from adapters.composition import Stack

        previous = f"{ADAPTER_NAME}_previous"
        model.add_adapter(previous, config=model.adapters_config.get(ADAPTER_NAME))
        state = {k.replace(f".{ADAPTER_NAME}.", f".{previous}."): v for k, v in state.items()}
        model.train_adapter(ADAPTER_NAME)
        model.set_active_adapters(Stack(previous, ADAPTER_NAME))
    missing, unexpected = base.load_state_dict(state, strict=False)
    if mode == "new":  # the fresh adapter is meant to start fresh
        missing = [k for k in missing if f".{ADAPTER_NAME}." not in k]
    if unexpected or missing:
        raise RuntimeError(f"sequential hand-over: the next stage's encoder does not match the previous one "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def handover_state(model) -> dict:
    base = getattr(model, model.base_model_prefix)
    return {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}


def save_adapter(model, head: set, out_dir: str) -> int:
    """The trained adapter (adapters' save_adapter format) and the task head beside it, so a later cell can
    stitch both in (method pretrained_adapter). Returns the bytes on disk."""
    from safetensors.torch import save_file

    def write(tmp: str) -> None:
        model.save_adapter(tmp, ADAPTER_NAME)
        save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if n in head},
                  os.path.join(tmp, HEAD_FILE))

    atomic.write_dir(out_dir, write)   # a kill mid-save never leaves half an adapter under the final name
    return sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))


def _savez(path: str, arrays: dict) -> None:
    with open(path, "wb") as f:   # a file object: numpy would append .npz to a temporary name
        np.savez_compressed(f, **arrays)


def train_and_evaluate(cell: Cell, ctx: RunContext, output_dir: str | None = None) -> dict:
    """Train and evaluate one cell. A sequential cell runs its stages one after the other, each through the same
    loop, handing the encoder on; the last stage is the cell's result and the others are listed in "stages"."""
    schedule = cell.schedule or {}
    if "sequence" not in schedule:
        tasks = [get_task(t) for t in schedule.get("multitask", [cell.task])]
        return _train(cell, ctx, tasks, output_dir)
    stages, handover, total_train = [], None, 0.0
    for i, task_name in enumerate(schedule["sequence"]):
        last = i == len(schedule["sequence"]) - 1
        stage_dir = output_dir if last or output_dir is None else os.path.join(output_dir, f"stage{i}-{task_name}")
        result = _train(cell, ctx, [get_task(task_name)], stage_dir, handover=handover, keep_state=not last)
        total_train += result["train_time_s"]
        if not last:
            handover = {"state": result.pop("state"), "mode": schedule.get("adapter", "continue")}
            stages.append({**result, "task": task_name, "stage": i, "output_dir": stage_dir})
    result["stages"] = stages
    result["stage_train_time_s"] = result["train_time_s"]
    result["train_time_s"] = total_train  # the cost of the whole sequence
    return result


def _train(cell: Cell, ctx: RunContext, tasks: list, output_dir: str | None, handover: dict | None = None,
           keep_state: bool = False) -> dict:
    from accelerate.utils import set_seed
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    method, hp, budget = get_method(cell.method), cell.hparams, cell.budget
    schedule = cell.schedule or {}
    multi = len(tasks) > 1
    _quiet_libraries()
    acc = make_accelerator(cell, find_unused_parameters=multi)
    main = acc.is_main_process
    set_seed(cell.seed)
    memory = PeakMemory(acc.device)

    tokenizer, model, members, heads, counts = build_model(cell, ctx, tasks, handover)
    trains = method.trains(cell.method_params)
    if trains and counts["trainable_params"] == 0:
        raise RuntimeError("the method left no trainable parameter")
    checksum_start = encoder_checksum(members[0]) if "sequence" in schedule else None

    # data: tokenized once per (tokenizer, task, length), rank 0 first so the others read its cache
    with acc.main_process_first():
        train_sets = [ctx.tokenized.get(t, ctx.raw_data(t)["train"].head(budget.get("max_train_samples")), tokenizer,
                                        hp["max_length"], hp["padding"]) for t in tasks]
        eval_sets = [eval_sets_for(t, ctx, tokenizer, hp, budget) for t in tasks]
    collator = DataCollatorWithPadding(tokenizer)
    train_loaders = [_train_loader(ds, hp, collator, cell.seed) for ds in train_sets]
    flat_eval = [es for sets in eval_sets for es in sets]
    for es in flat_eval:
        es.loader = _eval_loader(es.dataset, hp["eval_batch_size"], collator)

    optimizer = _optimizer(model, hp) if trains else None  # an evaluation-only cell has nothing to optimise
    model, *loaders = acc.prepare(model, *([optimizer] if trains else []), *train_loaders,
                                  *[es.loader for es in flat_eval])
    if trains:
        optimizer, *loaders = loaders
    train_loaders = loaders[:len(tasks)]
    for es, dl in zip(flat_eval, loaders[len(tasks):]):
        es.loader = dl
    if any(len(dl) == 0 for dl in train_loaders):
        raise ValueError(f"task {tasks[0].name}: the training split is empty")
    mixture = _TaskMixture(train_loaders, schedule.get("sampling", "proportional"),
                           schedule.get("temperature", 2.0), cell.seed)

    def forward(t, batch):
        return model(task_index=t, **batch) if multi else model(**batch)

    # budget -> exact number of optimizer steps
    steps_per_epoch = max(1, math.ceil(len(mixture) / hp["gradient_accumulation_steps"]))
    limits = []
    if "epochs" in budget:
        limits.append(math.ceil(budget["epochs"] * steps_per_epoch))
    if "max_steps" in budget:
        limits.append(budget["max_steps"])
    total_steps = max(1, min(limits)) if trains else 0
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(hp["warmup_ratio"] * total_steps),
                                                total_steps) if trains else None
    time_limit = budget.get("time_limit_min")
    trainable = [p for p in model.parameters() if p.requires_grad]

    history, eval_time = [], 0.0
    per_task = [{"history": [], "best": None, "predictions": {}} for _ in tasks]
    label = f"{'+'.join(t.name for t in tasks)}/{cell.method_label}"
    bar = Progress(total_steps, label, enabled=main, position=1, bars=ctx.show_progress)

    def evaluate(step: int, epoch: float, train_loss: float | None):
        nonlocal eval_time
        t0 = time.perf_counter()
        model.eval()
        scores, merged = [], {}
        for t, (task, sets) in enumerate(zip(tasks, eval_sets)):
            metrics, score, preds = evaluate_task(
                task, sets, lambda es, t=t: predict(model, es.loader, acc, lambda b: forward(t, b)))
            entry = {"step": step, "epoch": round(epoch, 4), "metrics": metrics, "score": score,
                     "train_loss": train_loss}
            rec = per_task[t]
            rec["history"].append(entry)
            rec["predictions"] = preds
            if rec["best"] is None or score > rec["best"]["score"]:
                rec["best"] = entry
            scores.append(score)
            merged.update({f"{task.name}_{k}" if multi else k: v for k, v in metrics.items()})
        model.train()
        entry = {"step": step, "epoch": round(epoch, 4), "metrics": merged, "score": float(np.mean(scores)),
                 "train_loss": train_loss}
        history.append(entry)
        eval_time += time.perf_counter() - t0
        bar.write(f"  eval step {step} epoch {epoch:.2f}: score {entry['score']:.2f} "
                  + " ".join(f"{k}={v:.2f}" for k, v in merged.items()))

    step, examples, tokens, loss_sum, loss_n = 0, 0, 0, 0.0, 0
    stopped_by, micro = (None, 0) if trains else ("evaluation_only", 0)
    model.train()
    t_start = time.perf_counter()
    epoch_idx = 0
    while stopped_by is None:
        for t, batch in mixture:
            batch.pop("idx")
            with acc.accumulate(model):
                loss = forward(t, batch).loss
                acc.backward(loss)
                if acc.sync_gradients and hp["max_grad_norm"]:
                    acc.clip_grad_norm_(trainable, hp["max_grad_norm"])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            micro += 1
            examples += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            loss_value = loss.detach().float()
            loss_sum, loss_n = loss_sum + float(loss_value), loss_n + 1
            if not acc.sync_gradients:
                continue
            scheduler.step()
            step += 1
            # every rank must take the same decision, or DDP hangs: reduce the flags
            out_of_time = time_limit is not None and time.perf_counter() - t_start >= 60 * time_limit
            flags = torch.tensor([float(not torch.isfinite(loss_value)), float(out_of_time)], device=acc.device)
            if acc.num_processes > 1:
                flags = acc.reduce(flags, reduction="sum")
            if flags[0] > 0:
                raise FloatingPointError(f"loss is not finite at step {step} (lr {hp['learning_rate']:g})")
            bar.update(1, loss=f"{float(loss_value):.4f}")
            epoch_now = epoch_idx + min(1.0, micro / len(mixture))
            if hp.get("eval_steps") and step % hp["eval_steps"] == 0 and step < total_steps:
                evaluate(step, epoch_now, loss_sum / max(loss_n, 1))
                loss_sum, loss_n = 0.0, 0
            if step >= total_steps:
                stopped_by = "max_steps" if "max_steps" in budget and total_steps == budget["max_steps"] else "epochs"
                break
            if flags[1] > 0:
                stopped_by = "time_limit"
                break
        else:  # a whole epoch went by
            epoch_idx += 1
            micro = 0
            if not hp.get("eval_steps") and step < total_steps:
                evaluate(step, float(epoch_idx), loss_sum / max(loss_n, 1))
                loss_sum, loss_n = 0.0, 0
            continue
    epochs_done = epoch_idx + micro / len(mixture)
    if not history or history[-1]["step"] != step:
        evaluate(step, epochs_done, loss_sum / max(loss_n, 1) if loss_n else None)
    train_time = time.perf_counter() - t_start - eval_time
    bar.close()

    # over ranks: throughput sums, memory takes the max
    totals = torch.tensor([examples, tokens], dtype=torch.float64, device=acc.device)
    peak = torch.tensor([memory.read_mb(acc.device)], dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        totals = acc.reduce(totals, reduction="sum")
        peak = acc.gather(peak).max()
    final, best = history[-1], max(history, key=lambda e: e["score"])
    result = {
        **counts,
        "train_time_s": train_time, "eval_time_s": eval_time,
        "peak_memory_mb": float(peak.max()), "peak_memory_kind": memory.kind,
        "train_examples_per_s": float(totals[0]) / train_time if train_time > 0 and examples else None,
        "train_tokens_per_s": float(totals[1]) / train_time if train_time > 0 and examples else None,
        "steps": step, "epochs_done": round(epochs_done, 4), "stopped_by": stopped_by,
        "train_examples": sum(len(ds) for ds in train_sets), "eval_examples": sum(len(es.dataset) for es in flat_eval),
        "score": final["score"], "metrics": final["metrics"],
        "best_score": best["score"], "best_metrics": best["metrics"], "history": history,
        "mixed_precision": acc.mixed_precision, "distributed_type": str(acc.distributed_type),
    }
    unwrapped = acc.unwrap_model(model)
    first = unwrapped.members[0] if multi else unwrapped
    if checksum_start is not None:
        result["encoder_checksum"] = {"start": checksum_start, "end": encoder_checksum(first)}
    if keep_state:
        result["state"] = handover_state(first)
    if multi:
        result["members"] = [
            {"task": task.name, "score": rec["history"][-1]["score"], "metrics": rec["history"][-1]["metrics"],
             "best_score": rec["best"]["score"], "best_metrics": rec["best"]["metrics"], "history": rec["history"],
             "head_params": sum(p.numel() for n, p in m.named_parameters() if n in head),
             "eval_examples": sum(len(es.dataset) for es in sets),
             "output_dir": os.path.join(output_dir, task.name) if output_dir else None}
            for task, rec, m, head, sets in zip(tasks, per_task, unwrapped.members, heads, eval_sets)]
    if main and output_dir:
        outs = [(m["output_dir"], rec) for m, rec in zip(result["members"], per_task)] if multi else \
            [(output_dir, per_task[0])]
        for out, rec in outs:
            os.makedirs(out, exist_ok=True)
            arrays = {f"{split}_{part}": arr for split, arrs in rec["predictions"].items()
                      for part, arr in zip(("idx", "pred", "label"), arrs)}
            atomic.write_file(os.path.join(out, "predictions.npz"), lambda tmp: _savez(tmp, arrays))
        if method.uses_adapters and trains and not multi:
            adapter_dir = os.path.join(output_dir, "adapter")
            result["adapter_bytes"] = save_adapter(first, heads[0], adapter_dir)
            result["adapter_path"] = adapter_dir
    del model, optimizer, train_loaders, flat_eval, mixture, unwrapped, first, members
    acc.free_memory()
    gc.collect()
    return result
