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
from harness.spec import layout
from harness.spec.cell import Cell
from harness.spec.schedule import Multitask, Sequence
from harness.spec.status import Regime
from harness.tasks.data import TokenizedCache, lengths
from harness.tasks.kinds import kind_of
from harness.spec.tasks import get_task
from harness.train import features
from harness.spec.methods import get_method
from harness.train.methods import ADAPTER_NAME, set_up
from harness.spec.models import ModelSpec
from harness.train.models import load_for_task
from harness.spec.errors import Preempted
from harness.train import preempt
from harness.train.checkpoint import CellCheckpoint
from harness.train.zero import gathered, numel
from harness.train.params import breakdown, count_total, count_trainable, head_parameter_names
from harness.train.precision import head_outside_autocast, heads_in_full_precision, resolve_precision
from harness.train.progress import Progress
from harness.train.result import RunResult


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
                self._raw[task.name] = kind_of(task).load(task, self.data_dir)
            except Exception as exc:
                self._raw[task.name] = exc
        value = self._raw[task.name]
        if isinstance(value, Exception):
            raise value
        return value


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


def quiet_libraries() -> None:
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
    dataset: object          # the tokenized features (some kinds: several per example)
    raw: object = None       # the examples (span extraction maps features back to their contexts)
    loader: object = None


def predict(model, loader, acc=None, forward=None, kind=None, hp=None):
    """The gathered outputs of one dev split as numpy arrays: "idx" (the feature index) and what the task kind
    takes from each batch (classification: logits and labels). Under DDP every feature is gathered exactly
    once (gather_for_metrics drops the padding of the last batch)."""
    from harness.tasks.kinds import KINDS

    forward = forward or (lambda b: model(**b))
    kind = kind or KINDS["classification"]
    parts: dict[str, list] = {}
    for batch in loader:
        idx = batch.pop("idx")
        with torch.no_grad():
            outputs = kind.batch_outputs(forward(batch), batch, hp or {})
        outputs = {"idx": idx, **outputs}
        if acc is not None:
            outputs = acc.gather_for_metrics(outputs)
        for name, value in outputs.items():
            parts.setdefault(name, []).append(value.cpu().numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def evaluate_task(task, sets, predict_fn) -> tuple[dict, float, dict]:
    """Every dev split of one task: (metrics, main score, {split: predictions as the task kind keeps them})."""
    from harness.tasks.kinds import kind_of

    kind = kind_of(task)
    metrics, predictions = {}, {}
    for es in sets:
        split_metrics, predictions[es.split] = kind.score(task, es, predict_fn(es))
        metrics.update(split_metrics)
    return metrics, task.main_score(metrics), predictions


def eval_sets_for(task, ctx: RunContext, tokenizer, hp, budget) -> list[EvalSet]:
    """The task's dev splits, capped at max_eval_samples examples each, as features."""
    from harness.tasks.kinds import kind_of

    kind, raw = kind_of(task), ctx.raw_data(task)
    out = []
    for s in task.eval_splits:
        examples = raw[s.hub_split].head(budget.get("max_eval_samples"))
        out.append(EvalSet(task, s.suffix, s.hub_split,
                           kind.features(task, examples, tokenizer, hp, ctx.tokenized, training=False), examples))
    return out


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
    """Every member uses one encoder object. A classification head reads the pooler, which a QA model's encoder
    lacks: when the kinds are mixed, the shared encoder is one that has it (the QA head ignores it)."""
    prefix = models[0].base_model_prefix
    shared = next((getattr(m, prefix) for m in models if getattr(getattr(m, prefix), "pooler", None) is not None),
                  getattr(models[0], prefix))
    for m in models:
        setattr(m, prefix, shared)


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
        if ADAPTER_NAME in name or _is_pooler(name):   # the pooler belongs to the classification head's path
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
    set_up(first, cell.method, _resolved_method_params(cell, ctx))
    task_adapters = None
    if isinstance(cell.schedule, Multitask) and cell.schedule.adapter_per_task:
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
    for m in models:   # under mixed precision only the encoder autocasts: the head's outputs keep fp32
        head_outside_autocast(m)
    counts = {"total_params": count_total(model), "trainable_params": count_trainable(model),
              "head_params": sum(numel(p) for m, head in zip(models, heads)
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
    # a QA model's encoder has no pooler (its head reads token states): between a QA stage and a classification
    # stage the pooler is not handed over, the classification model keeps its checkpoint's pooler
    missing = [k for k in missing if not _is_pooler(k)]
    unexpected = [k for k in unexpected if not _is_pooler(k)]
    if unexpected or missing:
        raise RuntimeError(f"sequential hand-over: the next stage's encoder does not match the previous one "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def _is_pooler(name: str) -> bool:
    return name.startswith("pooler.")


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
                  os.path.join(tmp, layout.HEAD_FILE))

    atomic.write_dir(out_dir, write)   # a kill mid-save never leaves half an adapter under the final name
    return sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))


def train_and_evaluate(cell: Cell, ctx: RunContext, output_dir: str | None = None) -> RunResult:
    """Train and evaluate one cell. A sequential cell runs its stages one after the other, each through the same
    loop, handing the encoder on; the last stage is the cell's result and the others are its `stages`."""
    if not isinstance(cell.schedule, Sequence):
        return CellRun(cell, ctx, [get_task(t) for t in cell.tasks], output_dir).run()
    stages, handover, total_train = [], None, 0.0
    for i, task_name in enumerate(cell.tasks):
        last = i == len(cell.tasks) - 1
        stage_dir = output_dir if last or output_dir is None else layout.stage_dir(output_dir, i, task_name)
        result = CellRun(cell, ctx, [get_task(task_name)], stage_dir, handover=handover, keep_state=not last).run()
        total_train += result.train_time_s
        if not last:
            handover = {"state": result.state, "mode": cell.schedule.adapter}
            result.state = None
            result.task, result.stage, result.output_dir = task_name, i, stage_dir
            result.regime = Regime.SEQUENTIAL_STAGE
            stages.append(result)
    result.stages = stages
    result.stage_train_time_s = result.train_time_s
    result.train_time_s = total_train  # the cost of the whole sequence
    return result


class CellRun:
    """One training run over one task (or several, multi-task), read as named steps:

        set_up_model -> set_up_data -> fit (which calls evaluate) -> record

    Every method and every task kind goes through these same steps; a method only decides (in set_up_model)
    what is added and what trains, a task kind (harness/tasks/kinds.py) how data, head, predictions and
    metrics work. Raises on failure (the runner records the reason)."""

    def __init__(self, cell: Cell, ctx: RunContext, tasks: list, output_dir: str | None,
                 handover: dict | None = None, keep_state: bool = False):
        self.cell, self.ctx, self.tasks, self.output_dir = cell, ctx, tasks, output_dir
        self.handover, self.keep_state = handover, keep_state
        self.method, self.hp, self.budget = get_method(cell.method), cell.hparams, cell.budget
        self.sequential = isinstance(cell.schedule, Sequence)
        self.multi = len(tasks) > 1
        self.kinds = [kind_of(t) for t in tasks]
        self.trains = self.method.trains(cell.method_params)

    def run(self) -> RunResult:
        from accelerate.utils import set_seed

        quiet_libraries()
        self.acc = make_accelerator(self.cell, find_unused_parameters=self.multi)
        self.main = self.acc.is_main_process
        set_seed(self.cell.seed)
        self.memory = PeakMemory(self.acc.device)
        try:
            self.set_up_model()
            self.set_up_data()
            self.fit()
            return self.record()
        finally:
            self._release()

    # --- steps ------------------------------------------------------------------------------------------------

    def set_up_model(self) -> None:
        """The model with the method applied (adapters added, what trains chosen), optimizer and scheduler come
        with the data (they need the number of steps)."""
        self.tokenizer, self.model, self.members, self.heads, self.counts = build_model(
            self.cell, self.ctx, self.tasks, self.handover)
        if self.trains and self.counts["trainable_params"] == 0:
            raise RuntimeError("the method left no trainable parameter")
        self.checksum_start = encoder_checksum(self.members[0]) if self.sequential else None

    def set_up_data(self) -> None:
        """Features tokenized once per (tokenizer, task, length, data): rank 0 first so the others read its cache;
        loaders, the optimizer, the scheduler and the exact number of optimizer steps the budget allows."""
        from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

        cell, ctx, hp, budget, acc = self.cell, self.ctx, self.hp, self.budget, self.acc
        with acc.main_process_first():
            self.train_raw = [ctx.raw_data(t)["train"].head(budget.get("max_train_samples")) for t in self.tasks]
            self.train_sets = [k.features(t, raw, self.tokenizer, hp, ctx.tokenized, training=True)
                               for t, k, raw in zip(self.tasks, self.kinds, self.train_raw)]
            self.eval_sets = [eval_sets_for(t, ctx, self.tokenizer, hp, budget) for t in self.tasks]
        collator = DataCollatorWithPadding(self.tokenizer)
        # nothing below the head trains: the encoder runs once, the head trains on its cached output
        self.frozen = features.plan(cell, self.method, self.kinds, self.model,
                                    not self.multi and not self.sequential, ctx.cache_dir)
        if self.frozen:
            self.train_sets, self.eval_sets, collator = self.frozen.swap_in(
                self.model, self.train_sets, self.eval_sets, collator, hp["eval_batch_size"], acc.mixed_precision,
                acc.autocast, acc.device)
        train_loaders = [_train_loader(ds, hp, collator, cell.seed) for ds in self.train_sets]
        self.flat_eval = [es for sets in self.eval_sets for es in sets]
        for es in self.flat_eval:
            es.loader = _eval_loader(es.dataset, hp["eval_batch_size"], collator)

        optimizer = _optimizer(self.model, hp) if self.trains else None  # evaluation only: nothing to optimise
        if self.trains:
            self.model, optimizer, *loaders = acc.prepare(self.model, optimizer, *train_loaders,
                                                          *[es.loader for es in self.flat_eval])
        else:  # DDP refuses a model without trainable parameters: an evaluation-only model is not wrapped
            self.model = acc.prepare_model(self.model, evaluation_mode=True)
            loaders = list(acc.prepare(*train_loaders, *[es.loader for es in self.flat_eval]))
        self.optimizer = optimizer
        train_loaders = loaders[:len(self.tasks)]
        for es, dl in zip(self.flat_eval, loaders[len(self.tasks):]):
            es.loader = dl
        if any(len(dl) == 0 for dl in train_loaders):
            raise ValueError(f"task {self.tasks[0].name}: the training split is empty")
        mix = cell.schedule if isinstance(cell.schedule, Multitask) else None
        self.mixture = _TaskMixture(train_loaders, mix.sampling if mix else "proportional",
                                    mix.temperature if mix and mix.temperature else 2.0, cell.seed)

        # budget -> exact number of optimizer steps
        steps_per_epoch = max(1, math.ceil(len(self.mixture) / hp["gradient_accumulation_steps"]))
        limits = []
        if "epochs" in budget:
            limits.append(math.ceil(budget["epochs"] * steps_per_epoch))
        if "max_steps" in budget:
            limits.append(budget["max_steps"])
        self.total_steps = max(1, min(limits)) if self.trains else 0
        self.scheduler = get_linear_schedule_with_warmup(
            optimizer, math.ceil(hp["warmup_ratio"] * self.total_steps), self.total_steps) if self.trains else None

    def forward(self, t: int, batch: dict):
        return self.model(task_index=t, **batch) if self.multi else self.model(**batch)

    def fit(self) -> None:
        """The optimizer steps the budget allows, evaluating after every epoch (or every eval_steps steps) and
        once at the end; stops early on the time limit, raises on a non-finite loss."""
        hp, budget, acc, mixture = self.hp, self.budget, self.acc, self.mixture
        total_steps, time_limit = self.total_steps, self.budget.get("time_limit_min")
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.history, self.eval_time = [], 0.0
        self.per_task = [{"history": [], "best": None, "predictions": {}} for _ in self.tasks]
        label = f"{'+'.join(t.name for t in self.tasks)}/{self.cell.method_label}"
        self.bar = Progress(total_steps, label, enabled=self.main, position=1, bars=self.ctx.show_progress)

        step, examples, tokens, loss_sum, loss_n = 0, 0, 0, 0.0, 0
        stopped_by, micro = (None, 0) if self.trains else ("evaluation_only", 0)
        self.model.train()
        t_start = time.perf_counter()
        epoch_idx = 0
        # --- preemption (harness/train/checkpoint.py): continue from this cell's checkpoint if it has one ---
        ckpt = CellCheckpoint(self.output_dir, self.cell.key, acc, self.model, self.optimizer, self.scheduler,
                              total_steps)
        mixture = ckpt.wrap(mixture)
        saved = ckpt.resume() if self.trains else None
        if saved:
            step, epoch_idx, micro, examples, tokens, loss_sum, loss_n, self.eval_time = (
                saved[k] for k in ("step", "epoch_idx", "micro", "examples", "tokens", "loss_sum", "loss_n",
                                   "eval_time"))
            self.history, self.per_task = saved["history"], saved["per_task"]
            t_start -= saved["elapsed"]   # a time budget counts the time trained before the stop
            self.bar.update(step)
        # ---
        while stopped_by is None:
            for t, batch in mixture:
                batch.pop("idx")
                n_tokens = batch.pop("num_tokens", None)   # cached features: the tokens the encoder read for them
                with acc.accumulate(self.model):
                    loss = self.forward(t, batch).loss
                    acc.backward(loss)
                    if acc.sync_gradients and hp["max_grad_norm"]:
                        acc.clip_grad_norm_(trainable, hp["max_grad_norm"])
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                micro += 1
                examples += batch["labels"].shape[0] if n_tokens is not None else batch["input_ids"].shape[0]
                tokens += (int(n_tokens.sum()) if n_tokens is not None
                           else int(batch["attention_mask"].sum()) if "attention_mask" in batch
                           else batch["input_ids"].numel())
                loss_value = loss.detach().float()
                loss_sum, loss_n = loss_sum + float(loss_value), loss_n + 1
                if not acc.sync_gradients:
                    continue
                self.scheduler.step()
                step += 1
                # every rank must take the same decision, or DDP hangs: reduce the flags
                out_of_time = time_limit is not None and time.perf_counter() - t_start >= 60 * time_limit
                flags = torch.tensor([float(not torch.isfinite(loss_value)), float(out_of_time),
                                      float(preempt.requested())], device=acc.device)
                if acc.num_processes > 1:
                    flags = acc.reduce(flags, reduction="sum")
                if flags[0] > 0:
                    raise FloatingPointError(f"loss is not finite at step {step} (lr {hp['learning_rate']:g})")
                self.bar.update(1, loss=f"{float(loss_value):.4f}")
                epoch_now = epoch_idx + min(1.0, micro / len(mixture))
                if hp.get("eval_steps") and step % hp["eval_steps"] == 0 and step < total_steps:
                    self.evaluate(step, epoch_now, loss_sum / max(loss_n, 1))
                    loss_sum, loss_n = 0.0, 0
                if step >= total_steps:
                    stopped_by = ("max_steps" if "max_steps" in budget and total_steps == budget["max_steps"]
                                  else "epochs")
                    break
                if flags[1] > 0:
                    stopped_by = "time_limit"
                    break
                if flags[2] > 0:   # a stop signal on some rank: all checkpoint this step, the cell is given back
                    ckpt.save({"step": step, "epoch_idx": epoch_idx, "micro": micro, "examples": examples,
                               "tokens": tokens, "loss_sum": loss_sum, "loss_n": loss_n, "eval_time": self.eval_time,
                               "elapsed": time.perf_counter() - t_start, "history": self.history,
                               "per_task": self.per_task})
                    raise Preempted(f"{preempt.signal_name() or 'a stop signal'} at step {step}/{total_steps}: "
                                    f"checkpointed in {ckpt.path}")
            else:  # a whole epoch went by
                epoch_idx += 1
                micro = 0
                if not hp.get("eval_steps") and step < total_steps:
                    self.evaluate(step, float(epoch_idx), loss_sum / max(loss_n, 1))
                    loss_sum, loss_n = 0.0, 0
                continue
        self.epochs_done = epoch_idx + micro / len(mixture)
        if not self.history or self.history[-1]["step"] != step:
            self.evaluate(step, self.epochs_done, loss_sum / max(loss_n, 1) if loss_n else None)
        self.train_time = time.perf_counter() - t_start - self.eval_time
        if self.frozen:   # the encoder's one pass: training features count as training, dev ones as evaluation
            self.train_time += self.frozen.extract_s
            self.eval_time += self.frozen.eval_extract_s
        self.bar.close()
        self.step, self.examples, self.tokens, self.stopped_by = step, examples, tokens, stopped_by

    def evaluate(self, step: int, epoch: float, train_loss: float | None) -> None:
        """Every dev split of every task: metrics, main score (the mean over tasks for a multi-task cell), the
        best evaluation so far per task, the latest predictions."""
        t0 = time.perf_counter()
        self.model.eval()
        scores, merged = [], {}
        for t, (task, kind, sets) in enumerate(zip(self.tasks, self.kinds, self.eval_sets)):
            metrics, score, preds = evaluate_task(
                task, sets, lambda es, t=t, kind=kind: predict(self.model, es.loader, self.acc,
                                                               lambda b: self.forward(t, b), kind, self.hp))
            entry = {"step": step, "epoch": round(epoch, 4), "metrics": metrics, "score": score,
                     "train_loss": train_loss}
            rec = self.per_task[t]
            rec["history"].append(entry)
            rec["predictions"] = preds
            if rec["best"] is None or score > rec["best"]["score"]:
                rec["best"] = entry
            scores.append(score)
            merged.update({f"{task.name}_{k}" if self.multi else k: v for k, v in metrics.items()})
        self.model.train()
        entry = {"step": step, "epoch": round(epoch, 4), "metrics": merged, "score": float(np.mean(scores)),
                 "train_loss": train_loss}
        self.history.append(entry)
        self.eval_time += time.perf_counter() - t0
        self.bar.write(f"  eval step {step} epoch {epoch:.2f}: score {entry['score']:.2f} "
                       + " ".join(f"{k}={v:.2f}" for k, v in merged.items()))

    def record(self) -> RunResult:
        """The run's result (throughput summed and memory the maximum over ranks); rank 0 writes predictions
        and the trained adapter into the output directory."""
        acc, history = self.acc, self.history
        totals = torch.tensor([self.examples, self.tokens], dtype=torch.float64, device=acc.device)
        peak = torch.tensor([self.memory.read_mb(acc.device)], dtype=torch.float64, device=acc.device)
        if acc.num_processes > 1:
            totals = acc.reduce(totals, reduction="sum")
            peak = acc.gather(peak).max()
        final, best = history[-1], max(history, key=lambda e: e["score"])
        train_time, measured = self.train_time, self.train_time > 0 and self.examples
        result = RunResult(
            **self.counts,
            train_time_s=train_time, eval_time_s=self.eval_time,
            peak_memory_mb=float(peak.max()), peak_memory_kind=self.memory.kind,
            train_examples_per_s=float(totals[0]) / train_time if measured else None,
            train_tokens_per_s=float(totals[1]) / train_time if measured else None,
            steps=self.step, epochs_done=round(self.epochs_done, 4), stopped_by=self.stopped_by,
            train_examples=sum(len(raw) for raw in self.train_raw),
            eval_examples=sum(len(es.raw) for es in self.flat_eval),
            score=final["score"], metrics=final["metrics"],
            best_score=best["score"], best_metrics=best["metrics"], history=history,
            mixed_precision=acc.mixed_precision, distributed_type=str(acc.distributed_type),
        )
        unwrapped = acc.unwrap_model(self.model)
        first = unwrapped.members[0] if self.multi else unwrapped
        if self.frozen:
            result.frozen_features = self.frozen.record()
        if acc.mixed_precision != "no":
            result.head_outside_autocast = sorted({name for m in self.members
                                                   for name in heads_in_full_precision(m)}) or None
        if self.checksum_start is not None:
            result.encoder_checksum = {"start": self.checksum_start, "end": encoder_checksum(first)}
        if self.keep_state:
            result.state = handover_state(first)
        if self.multi:
            result.members = [
                RunResult(task=task.name, score=rec["history"][-1]["score"], metrics=rec["history"][-1]["metrics"],
                          best_score=rec["best"]["score"], best_metrics=rec["best"]["metrics"],
                          history=rec["history"],
                          head_params=sum(numel(p) for n, p in m.named_parameters() if n in head),
                          eval_examples=sum(len(es.raw) for es in sets),
                          output_dir=os.path.join(self.output_dir, task.name) if self.output_dir else None,
                          regime=Regime.MULTITASK_MEMBER, stage=i)
                for i, (task, rec, m, head, sets) in enumerate(zip(self.tasks, self.per_task, unwrapped.members,
                                                                   self.heads, self.eval_sets))]
        # ZeRO-3: the full adapter and head tensors (trainable) for the files; every rank takes part in the gather
        with gathered([p for p in first.parameters() if p.requires_grad]):
            if self.main and self.output_dir:
                outs = ([(m.output_dir, rec) for m, rec in zip(result.members, self.per_task)] if self.multi
                        else [(self.output_dir, self.per_task[0])])
                for task, kind, (out, rec) in zip(self.tasks, self.kinds, outs):
                    os.makedirs(out, exist_ok=True)
                    kind.save_predictions(task, out, rec["predictions"])
                if self.method.uses_adapters and self.trains and not self.multi:
                    adapter_dir = os.path.join(self.output_dir, layout.ADAPTER)
                    result.adapter_bytes = save_adapter(first, self.heads[0], adapter_dir)
                    result.adapter_path = adapter_dir
        return result

    def _release(self) -> None:
        for name in ("model", "optimizer", "mixture", "flat_eval", "members", "eval_sets"):
            self.__dict__.pop(name, None)
        self.acc.free_memory()
        gc.collect()
