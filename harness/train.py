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

from harness.cells import Cell
from harness.data import TokenizedCache, lengths, load_task_data
from harness.methods import get_method
from harness.metrics import compute_metrics, main_score, predictions_from_logits
from harness.models import ModelSpec, load_for_task
from harness.params import count_total, count_trainable, head_parameter_names
from harness.progress import Progress
from harness.tasks import get_task


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


def make_accelerator(cell: Cell):
    """A fresh Accelerator per cell: precision and accumulation may differ between cells; the process group
    (PartialState) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(),
                       mixed_precision=resolve_precision(cell.hparams["mixed_precision"]),
                       gradient_accumulation_steps=cell.hparams["gradient_accumulation_steps"])


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


def train_and_evaluate(cell: Cell, ctx: RunContext, output_dir: str | None = None) -> dict:
    from accelerate.utils import set_seed
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    task, method, hp, budget = get_task(cell.task), get_method(cell.method), cell.hparams, cell.budget
    _quiet_libraries()
    acc = make_accelerator(cell)
    main = acc.is_main_process
    set_seed(cell.seed)
    memory = PeakMemory(acc.device)

    # model and method: the method adds modules and picks what trains; the head always trains
    tokenizer, model, missing = load_for_task(ModelSpec(cell.model, cell.trust_remote_code, ctx.model_base_dir), task)
    head = head_parameter_names(model, missing)
    total_before = count_total(model)
    method.setup(model, cell.method_params)
    for name, p in model.named_parameters():
        if name in head:
            p.requires_grad = True
    counts = {"total_params": count_total(model), "trainable_params": count_trainable(model),
              "head_params": sum(p.numel() for n, p in model.named_parameters() if n in head)}
    counts["added_params"] = counts["total_params"] - total_before
    counts["trainable_pct"] = 100.0 * counts["trainable_params"] / counts["total_params"]
    if counts["trainable_params"] == 0:
        raise RuntimeError("the method left no trainable parameter")

    # data: tokenized once per (tokenizer, task, length), rank 0 first so the others read its cache
    raw = ctx.raw_data(task)
    with acc.main_process_first():
        def tok(split):
            return ctx.tokenized.get(task, split, tokenizer, hp["max_length"], hp["padding"])

        train_ds = tok(raw["train"].head(budget.get("max_train_samples")))
        eval_sets = [(s.suffix, s.hub_split, tok(raw[s.hub_split].head(budget.get("max_eval_samples"))))
                     for s in task.eval_splits]
    collator = DataCollatorWithPadding(tokenizer)
    train_loader = _train_loader(train_ds, hp, collator, cell.seed)
    eval_loaders = [(suffix, name, _eval_loader(ds, hp["eval_batch_size"], collator))
                    for suffix, name, ds in eval_sets]

    optimizer = _optimizer(model, hp)
    model, optimizer, train_loader, *eval_dls = acc.prepare(model, optimizer, train_loader,
                                                           *[dl for _, _, dl in eval_loaders])
    eval_loaders = [(s, n, dl) for (s, n, _), dl in zip(eval_loaders, eval_dls)]

    if len(train_loader) == 0:
        raise ValueError(f"task {task.name}: the training split is empty")
    # budget -> exact number of optimizer steps
    steps_per_epoch = max(1, math.ceil(len(train_loader) / hp["gradient_accumulation_steps"]))
    limits = []
    if "epochs" in budget:
        limits.append(math.ceil(budget["epochs"] * steps_per_epoch))
    if "max_steps" in budget:
        limits.append(budget["max_steps"])
    total_steps = max(1, min(limits))
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(hp["warmup_ratio"] * total_steps), total_steps)
    time_limit = budget.get("time_limit_min")
    trainable = [p for p in model.parameters() if p.requires_grad]

    history, best, eval_time = [], None, 0.0
    predictions = {}
    bar = Progress(total_steps, f"{cell.task}/{cell.method_label}", enabled=main, position=1, bars=ctx.show_progress)

    def evaluate(step: int, epoch: float, train_loss: float | None):
        nonlocal best, eval_time
        t = time.perf_counter()
        model.eval()
        metrics = {}
        for suffix, split, loader in eval_loaders:
            logits_all, labels_all, idx_all = [], [], []
            for batch in loader:
                idx = batch.pop("idx")
                with torch.no_grad():
                    logits = model(**batch).logits
                logits, labels, idx = acc.gather_for_metrics((logits.float(), batch["labels"], idx))
                logits_all.append(logits.cpu().numpy())
                labels_all.append(labels.cpu().numpy())
                idx_all.append(idx.cpu().numpy())
            preds = predictions_from_logits(task, np.concatenate(logits_all))
            labels = np.concatenate(labels_all)
            metrics.update(compute_metrics(task, preds, labels, suffix))
            predictions[split] = (np.concatenate(idx_all), preds, labels)
        model.train()
        score = main_score(task, metrics)
        entry = {"step": step, "epoch": round(epoch, 4), "metrics": metrics, "score": score, "train_loss": train_loss}
        history.append(entry)
        if best is None or score > best["score"]:
            best = entry
        eval_time += time.perf_counter() - t
        bar.write(f"  eval step {step} epoch {epoch:.2f}: score {score:.2f} "
                  + " ".join(f"{k}={v:.2f}" for k, v in metrics.items()))

    step, examples, tokens, loss_sum, loss_n = 0, 0, 0, 0.0, 0
    stopped_by, micro = None, 0
    model.train()
    t_start = time.perf_counter()
    epoch_idx = 0
    while stopped_by is None:
        for batch in train_loader:
            batch.pop("idx")
            with acc.accumulate(model):
                loss = model(**batch).loss
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
            epoch_now = epoch_idx + min(1.0, micro / len(train_loader))
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
    epochs_done = epoch_idx + micro / len(train_loader)
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
    final = history[-1]
    result = {
        **counts,
        "train_time_s": train_time, "eval_time_s": eval_time,
        "peak_memory_mb": float(peak.max()), "peak_memory_kind": memory.kind,
        "train_examples_per_s": float(totals[0]) / train_time if train_time > 0 else None,
        "train_tokens_per_s": float(totals[1]) / train_time if train_time > 0 else None,
        "steps": step, "epochs_done": round(epochs_done, 4), "stopped_by": stopped_by,
        "train_examples": len(train_ds), "eval_examples": sum(len(ds) for _, _, ds in eval_sets),
        "score": final["score"], "metrics": final["metrics"],
        "best_score": best["score"], "best_metrics": best["metrics"], "history": history,
        "mixed_precision": acc.mixed_precision, "distributed_type": str(acc.distributed_type),
    }
    if main and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        np.savez_compressed(os.path.join(output_dir, "predictions.npz"),
                            **{f"{split}_{part}": arr for split, arrs in predictions.items()
                               for part, arr in zip(("idx", "pred", "label"), arrs)})
    del model, optimizer, train_loader, eval_loaders
    acc.free_memory()
    gc.collect()
    return result
