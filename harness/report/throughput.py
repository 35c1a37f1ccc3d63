"""Throughput from the store's completed runs, and what a planned cell will process: the two halves of a time
estimate (harness.report.progress multiplies them). Pure functions over the store: no torch.

Each completed run gives two rates: seconds per training example processed (1 / its train_examples_per_s, summed
over ranks; else train_time_s / (steps x batch x accumulation x processes)) and seconds per dev example scored
(eval_time_s / (dev examples x evaluations)). A cell's rate comes from the runs that match it best, at the first
of MATCH_LEVELS with any run, with the spread of their rates as its relative uncertainty, never below the level's
floor (UNCERTAINTY_FLOOR: one or two runs understate the spread, and a coarser match is a guess about another
method or task).

A cell whose encoder is frozen below a pooled head (a linear probe: harness/train/features.py) runs its encoder
once over its data and every later cell with the same `feature_sets` reuses that output. Its run's times are
split: the head's epochs give the per-example rates as above, and the encoder's pass (the record's
`frozen_features`) a once-per-example rate, which an estimate charges only to the first cell of each feature set
not computed yet.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
from dataclasses import dataclass

from harness.spec.methods import FEATURE_ROLES, get_method, methods_with, reads_cached_features
from harness.spec.status import Regime, Status

MATCH_LEVELS = ("exact", "task kind", "model+method", "model")
# what each level matches, on the chosen device and the cell's process count (rate_for): exact = model, method,
# task, regime (a sequence ending on a task is stored under that task: harness/spec/schedule.py), precision
# (same_precision); task kind = model, method, the task's kind, precision (another task's inputs may be several
# times as long: MRPC pairs run 53 tokens, SST-2 sentences 13, with MiniLM's tokenizer); model+method; model
# (these two prefer runs of the cell's precision: bf16 and fp32 steps differ by 1.6x on an AVX512-BF16 CPU,
# bench/RESULTS.md)
# relative uncertainty at least this, per match level ("suite": a suite's own completed cells, in time_left)
UNCERTAINTY_FLOOR = {"exact": 0.10, "task kind": 0.30, "model+method": 0.30, "model": 0.60, "suite": 0.10}

# --- throughput from stored runs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    """The rates of one completed run, and what it is matched on."""

    model: str
    method: str
    kind: str
    precision: str
    device: str
    train_s_per_example: float
    eval_s_per_example: float | None
    # a run that read cached frozen features: the two rates above are its head's alone, and these its encoder's
    # one pass per training / dev example (None where the run found that split cached, so did not time it)
    features: bool = False
    extract_s_per_example: float | None = None
    eval_extract_s_per_example: float | None = None
    task: str | None = None     # the task as stored (a multi-task cell: "a+b") and the row's regime (None: a
    regime: str | None = None   # single task), for the exact match
    ran: str | None = None      # the precision it ran in (its env's mixed_precision: what `auto` resolved to;
                                # None for a record without it)
    processes: int = 1          # the processes it trained on (a DDP world): its rates are that world's wall time
    threads: int | None = None  # torch threads per process it trained with (its record's num_threads; None: not
                                # recorded): not matched on (a cell's threads are `harness run`'s choice, not its
                                # key), but an estimate says where the runs it pools differ (Rate.threads)


@functools.lru_cache(maxsize=None)
def registered_task(task: str):
    """The registry's task of a name as stored (a multi-task cell's 'a+b': its first member); None for a name the
    registry no longer has (an old store's task: still usable at the coarser match levels)."""
    from harness.spec.tasks import get_task

    try:
        return get_task(task.split("+")[0])
    except Exception:
        return None


def task_kind(task: str) -> str:
    """The kind of a task name as stored; 'unknown' for a name the registry no longer has."""
    spec = registered_task(task)
    return spec.kind if spec is not None else "unknown"


def regime_key(regime) -> str | None:
    """A cell's or a stored row's regime as estimates match it (None: a single task)."""
    return str(regime) if regime else None


def precision_key(hparams: dict | None) -> str:
    """The precision a cell or run asked for (hparams.mixed_precision)."""
    return str((hparams or {}).get("mixed_precision", "auto"))


def same_precision(pool: list[Observation], asked: str):
    """Which runs ran in the precision a cell asks for: a cell asking bf16 or no is priced by the runs that asked
    for it or ran in it because `auto` chose it (their env says); a cell asking `auto` by the runs that asked
    `auto`, and by those that ran in what `auto` chose in this pool's runs where it always chose the same (it
    times both precisions on the machine itself: harness/train/precision.py)."""
    if asked != "auto":   # (fp16 asked on a CPU runs in fp32 there: its runs say "no", and match it by the ask)
        return lambda o: o.precision == asked or (o.ran or o.precision) == asked
    chosen = {o.ran for o in pool if o.precision == "auto" and o.ran}
    if len(chosen) == 1:
        (choice,) = chosen
        return lambda o: o.precision == "auto" or o.ran == choice
    return lambda o: o.precision == "auto"


def _evaluations(steps: int, epochs_done: float | None, eval_steps: int | None) -> int:
    """How many evaluations a run of `steps` optimizer steps made (harness/train/recipe.py: one per eval_steps
    strictly before the end, else one per epoch ended before the end, and one at the end)."""
    if eval_steps:
        return max(1, math.ceil(steps / eval_steps))
    return max(1, math.ceil(epochs_done or 1))


# per role (FEATURE_ROLES: training data, dev data): the budget's cap on that data, and the seconds of the encoder's
# pass over it in a probe run's record (`frozen_features`, harness/train/features.py)
ROLE_CAP = {"train": "max_train_samples", "eval": "max_eval_samples"}
PASS_SECONDS = {"train": "extract_s", "eval": "eval_extract_s"}


def feature_sets(model: str, task: str, task_version, method: str, method_params: dict, hparams: dict,
                 budget: dict, single_task: bool = True) -> tuple[tuple, tuple] | None:
    """What a cell's cached frozen features are computed from, as far as its plan says, for its training data
    and for its dev data: harness/train/features.py caches each split's encoder output by the encoder, the split's
    token ids (model, task, max_length, padding, the data cap), pooling and precision. None for a cell that does
    not read cached features (its encoder runs at every step). Cells with an equal tuple share that pass.
    Precision is the one asked for (`auto` and what it resolves to count as different: an estimate errs high)."""
    try:
        spec = get_method(method)
        kind = task_kind(task)
    except Exception:   # an old store's method
        return None
    params = spec.resolve(method_params or {})
    if not reads_cached_features(spec, params, (kind,), single_task):
        return None
    hp, budget = hparams or {}, budget or {}
    common = (model, task, task_version, params.get("pooling") or "cls", hp.get("max_length"), hp.get("padding"),
              precision_key(hp))
    return tuple((*common, role, budget.get(ROLE_CAP[role])) for role in FEATURE_ROLES)


def cell_feature_sets(cell) -> tuple[tuple, tuple] | None:
    return feature_sets(cell.model, cell.task, cell.task_version, cell.method, cell.method_params, cell.hparams,
                        cell.budget, single_task=cell.schedule is None)


def encoder_pass_s(ff: dict | None) -> float:
    """Seconds of a probe run's frozen encoder pass (its record's `frozen_features`), which its train + eval time
    includes (harness/train/recipe.py); 0 for any other run."""
    return sum(ff.get(PASS_SECONDS[role]) or 0.0 for role in FEATURE_ROLES) if ff else 0.0


def timed_passes(ff: dict) -> dict[str, bool]:
    """{role: the record's time for it is an encoder pass over all of that data}: only where the run computed
    every split of it (a split found cached takes milliseconds). Older records: the role counts from the totals
    (training counts only: dev = total - training; none: only where nothing was cached)."""
    computed, cached = ff.get("splits_computed") or 0, ff.get("splits_cached") or 0
    if "train_splits_computed" not in ff:
        return dict.fromkeys(FEATURE_ROLES, computed > 0 and cached == 0)
    out = {}
    for role in FEATURE_ROLES:
        done = ff.get(f"{role}_splits_computed")
        found = ff.get(f"{role}_splits_cached")
        if done is None:   # training counts only
            done, found = computed - ff["train_splits_computed"], cached - (ff.get("train_splits_cached") or 0)
        out[role] = done > 0 and not found
    return out


# what `observation` reads of a run's result besides its identity (model, method, task, hparams, env, processes)
RATE_FIELDS = ("train_time_s", "eval_time_s", "train_examples_per_s", "steps", "epochs_done", "train_examples",
               "eval_examples", "frozen_features")


def device_of(env: dict | None) -> str:
    """The device a run's `env` names, as estimates match it."""
    return str((env if isinstance(env, dict) else {}).get("device") or "unknown device")   # (another tool's)


def observation(row) -> Observation | None:
    """The rates of a completed run (a RunRecord, or a row with its columns and `frozen_features`); None when it
    has no usable time."""
    hp = row.hparams or {}
    env = row.env if isinstance(row.env, dict) else {}   # (another tool's env may be of another shape)
    if row.train_examples_per_s:
        train = 1.0 / row.train_examples_per_s
    elif row.train_time_s and row.steps:
        seen = row.steps * hp.get("batch_size", 1) * hp.get("gradient_accumulation_steps", 1) * (row.num_processes or 1)
        train = row.train_time_s / seen
    else:
        return None
    evaluations = _evaluations(row.steps or 0, row.epochs_done, hp.get("eval_steps"))
    evals = None
    if row.eval_time_s and row.eval_examples:
        evals = row.eval_time_s / (row.eval_examples * evaluations)
    ff = (row.frozen_features if hasattr(row, "frozen_features")
          else (getattr(row, "extra", None) or {}).get("frozen_features"))
    what = (row.model, row.method, task_kind(row.task), precision_key(hp), device_of(env))
    named = {"task": row.task, "regime": regime_key(getattr(row, "regime", None)), "ran": env.get("mixed_precision"),
             "processes": int(row.num_processes or 1), "threads": getattr(row, "num_threads", None) or None}
    if not ff or not row.train_time_s:
        return Observation(*what, train, evals, **named)
    # the encoder's one pass counts as training / evaluation time in the record (harness/train/recipe.py): take it
    # out of the per-epoch rates, and keep it as a rate per example of the data it went over
    passed = {role: ff.get(PASS_SECONDS[role]) or 0.0 for role in FEATURE_ROLES}
    examples = row.train_time_s / train
    train = max(row.train_time_s - passed["train"], 0.0) / examples
    if evals is not None:
        evals = max(row.eval_time_s - passed["eval"], 0.0) / (row.eval_examples * evaluations)
    timed, sizes = timed_passes(ff), {"train": row.train_examples, "eval": row.eval_examples}
    per_example = {role: passed[role] / sizes[role] if timed[role] and sizes[role] else None
                   for role in FEATURE_ROLES}
    return Observation(*what, train, evals, features=True, extract_s_per_example=per_example["train"],
                       eval_extract_s_per_example=per_example["eval"], **named)


def stored_observations(store, suite: str | None = None) -> list[Observation]:
    """Every completed cell's rates (top-level rows: a cell, not its stages or members), reading only the columns
    needed (a worker asks at every claim)."""
    from sqlalchemy import select

    from harness.store.schema import RunRecord as R

    if not store.columns():
        return []
    results = [getattr(R, f) for f in RATE_FIELDS if f != "frozen_features"]   # that one lives in `extra`
    cols = (R.model, R.method, R.task, R.regime, R.hparams, R.env, R.num_processes, R.num_threads, *results,
            R.extra["frozen_features"].label("frozen_features"))
    stmt = select(*cols).where(R.status == Status.COMPLETED.value, R.parent_id.is_(None))
    if suite:
        stmt = stmt.where(R.suite == suite)
    with store.reading() as conn:
        rows = conn.execute(stmt).all()
    return [o for o in map(observation, rows) if o is not None]


def stored_feature_sets(store, device: str | None = None) -> set[tuple]:
    """The feature sets (feature_sets, each role apart) that a completed run in `store` on `device` (None: any)
    computed or read: their encoder output is in the cache, so no later cell runs that pass again. This assumes the
    workers of a store share one cache folder (`<output dir>/cache`, the default layout)."""
    from sqlalchemy import select

    from harness.store.schema import RunRecord as R

    frozen = methods_with("frozen_encoder")
    if store is None or not frozen or not store.columns():
        return set()
    stmt = select(R.model, R.task, R.task_version, R.method, R.method_params, R.hparams, R.budget, R.regime, R.env,
                  R.extra["frozen_features"].label("frozen_features")).where(
        R.status == Status.COMPLETED.value, R.parent_id.is_(None), R.method.in_(frozen))
    with store.reading() as conn:
        rows = conn.execute(stmt).all()
    out = set()
    for r in rows:
        # the run took the cached path (it may not: e.g. a checkpoint whose pooler trains), on this device
        if r.frozen_features and (device is None or device_of(r.env) == device):
            out.update(feature_sets(r.model, r.task, r.task_version, r.method, r.method_params, r.hparams, r.budget,
                                    single_task=r.regime is None) or ())
    return out


def devices(observations: list[Observation]) -> dict[str, int]:
    """Stored devices, most runs first."""
    out: dict[str, int] = {}
    for o in observations:
        out[o.device] = out.get(o.device, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def pick_device(observations: list[Observation], wanted: str | None) -> str | None:
    """The stored device whose throughput is used: the one `wanted` names (exactly, else as a case-insensitive
    part of its name, if only one matches), else the one with the most runs. Raises ValueError naming the
    stored devices when `wanted` matches none or several."""
    seen = devices(observations)
    if wanted is None:
        return next(iter(seen), None)
    if wanted in seen:
        return wanted
    hits = [d for d in seen if wanted.lower() in d.lower()]
    if len(hits) == 1:
        return hits[0]
    listed = "; ".join(seen) or "none"
    raise ValueError(f"{'no' if not hits else 'several'} stored device(s) match {wanted!r} (stored: {listed})")


@dataclass(frozen=True)
class Rate:
    """Seconds per training example and per dev example, with their relative spread, from `n` runs matched at
    `level`."""

    train_s: float
    eval_s: float | None
    rel: float        # relative uncertainty (>= the level's floor)
    n: int
    level: str
    # from runs that read cached frozen features: train_s / eval_s are the head's. The encoder's one pass per
    # training / dev example (_pass_rates; None: no run says)
    features: bool = False
    extract_s: float | None = None
    eval_extract_s: float | None = None
    pass_rel: float = 0.0     # ... their relative uncertainty (a prediction that charges a pass takes the larger)
    threads: tuple[int, ...] = ()   # the torch thread counts its runs trained with, where recorded (several: pooled)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def spread(values: list[float]) -> float:
    """Coefficient of variation (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else 0.0


def _pass_rates(levels: dict[str, list[Observation]]) -> tuple[float | None, float | None, float]:
    """A frozen encoder's pass per training and per dev example, and their relative uncertainty: from the
    best-matching runs that timed one (a role none of them timed: the other role's), else the best-matching runs'
    forward pass per dev example where they ran their encoder at every step (what one example's pass costs: a
    guess, at least the coarsest level's floor); (None, None, 0) when no run says."""
    for level, hits in levels.items():
        train = [o.extract_s_per_example for o in hits if o.extract_s_per_example is not None]
        dev = [o.eval_extract_s_per_example for o in hits if o.eval_extract_s_per_example is not None]
        if train or dev:
            rel = max(spread(train), spread(dev), UNCERTAINTY_FLOOR[level])
            t, d = _mean(train), _mean(dev)
            return (t if t is not None else d), (d if d is not None else t), rel
    for level, hits in levels.items():
        forward = [o.eval_s_per_example for o in hits if not o.features and o.eval_s_per_example is not None]
        if forward:
            return _mean(forward), _mean(forward), max(spread(forward), UNCERTAINTY_FLOOR[MATCH_LEVELS[-1]])
    return None, None, 0.0


def rate_for(observations: list[Observation], model: str, method: str, task: str, regime: str | None, kind: str,
             precision: str, device: str | None, features: bool = False, processes: int = 1) -> Rate | None:
    """The rate of the best match level with any run (MATCH_LEVELS), on `device` (None: any device), from runs on
    `processes` processes only (at every level, as the device: a 2-process world's wall time per example is not
    one process's, nor half of it: DDP scales by less than 2, and on a CPU's shared cores not at all). Within a
    level, runs that took the same path as the cell (`features`: it reads cached frozen features) are preferred:
    a head's rate alone says little about a cell that runs its encoder every step, and the reverse. The encoder
    pass's rates (for a cell that reads features, or one predicted from runs that did) come from _pass_rates."""
    pool = [o for o in observations if (device is None or o.device == device) and o.processes == processes]
    same = same_precision(pool, precision)
    tests = {"exact": lambda o: (o.model, o.method, o.task, o.regime) == (model, method, task, regime) and same(o),
             "task kind": lambda o: (o.model, o.method, o.kind) == (model, method, kind) and same(o),
             "model+method": lambda o: (o.model, o.method) == (model, method),
             "model": lambda o: o.model == model}
    levels = {level: [o for o in pool if tests[level](o)] for level in MATCH_LEVELS}
    # the coarse levels: the runs in the cell's precision where any ran in it
    levels = {level: [o for o in hits if same(o)] or hits for level, hits in levels.items()}
    for level, hits in levels.items():
        if hits:
            hits = [o for o in hits if o.features == features] or hits   # one path only, either way
            train = [o.train_s_per_example for o in hits]
            evals = [o.eval_s_per_example for o in hits if o.eval_s_per_example is not None]
            rel = max(spread(train), spread(evals), UNCERTAINTY_FLOOR[level])
            passes = _pass_rates(levels) if features or hits[0].features else (None, None, 0.0)
            return Rate(statistics.fmean(train), _mean(evals), rel, len(hits), level, features=hits[0].features,
                        extract_s=passes[0], eval_extract_s=passes[1], pass_rel=passes[2],
                        threads=tuple(sorted({o.threads for o in hits if o.threads})))
    return None


# --- what a cell will process -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CellPlan:
    """What a cell processes: training examples (over all its epochs / steps) and dev examples scored (over all
    its evaluations)."""

    train_examples: float
    eval_examples: float
    steps: int
    evaluations: int
    train_set: int = 0        # examples in its training data and dev data, each counted once (an encoder pass
    eval_set: int = 0         # over cached frozen features goes over them once)


def _count_rows(path: str, header: bool) -> int | None:
    """Lines of a TSV file (less its header): cheap, never parsed (a few malformed rows make no difference to
    a time estimate)."""
    try:
        with open(path, "rb") as f:
            n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None
    return max(0, n - (1 if header else 0))


class DataSizes:
    """Sizes of tasks' training and dev sets, found cheaply: from the store (a completed run of the task with the
    same sample caps recorded them), else by counting the lines of the local TSV files, else the budget's caps
    (a dev cap once per dev split). None when nothing says (a hub data set never loaded here)."""

    def __init__(self, store=None, data_dir: str | None = None):
        self.data_dir = data_dir
        self.known: dict[tuple, int] = {}
        self.parts: dict[tuple, list[int] | None] = {}
        if store is not None and store.columns():
            from sqlalchemy import select

            from harness.store.schema import RunRecord as R

            member = Regime.MULTITASK_MEMBER.value
            with store.reading() as conn:
                for task, budget, tr, ev, regime in conn.execute(
                        select(R.task, R.budget, R.train_examples, R.eval_examples, R.regime)
                        .where(R.status == Status.COMPLETED.value)):
                    budget = budget or {}
                    # a multi-task member row's training examples: its own task's since 2026-12-06, before that
                    # the joint run's (every member's), which no column tells apart (its dev examples: its own)
                    if tr and regime != member:
                        self.known[("train", task, budget.get("max_train_samples"))] = tr
                    if ev:
                        self.known[("eval", task, budget.get("max_eval_samples"))] = ev

    def _local(self, task_name: str, split: str) -> list[int] | None:
        """Examples per file of the split (dev: one per dev split) in the local TSV files."""
        from harness.spec.tasks import get_task

        if not self.data_dir:
            return None
        task = get_task(task_name)
        files = [task.local_train] if split == "train" else [s.local_file for s in task.eval_splits]
        counts = [_count_rows(os.path.join(self.data_dir, task.local_dir, f), task.local_header) for f in files
                  if f.endswith(".tsv")]
        return counts if counts and None not in counts else None

    def size(self, split: str, task: str, cap: int | None) -> int | None:
        """Examples of the split under the cap, which applies to each dev split apart (harness/train/loaders.py).
        The store's counts first (what a run really read), the files' line counts where the store has none or the
        cap falls on several dev splits; the local files are read once per split and task."""
        if (split, task, cap) in self.known:
            return self.known[(split, task, cap)]
        full = self.known.get((split, task, None))
        spec = registered_task(task) if split == "eval" else None
        n_splits = len(spec.eval_splits) if spec is not None else 1
        if full is None or (cap and n_splits > 1):
            if (split, task) not in self.parts:
                self.parts[(split, task)] = self._local(task, split)
            parts = self.parts[(split, task)]
            if parts is not None:
                full = sum(parts) if full is None else full
                return min(full, sum(min(n, cap) for n in parts)) if cap else full
        if full is None:
            return n_splits * cap if cap else None
        return min(full, n_splits * cap) if cap else full


def plan_cell(cell, sizes: DataSizes) -> CellPlan | None:
    """What `cell` will process under its budget and hparams (harness/train/optim.optimizer_steps and the
    recipe's evaluation schedule). A sequence's stages are loops of their own, each under the budget, and are
    summed; a multi-task cell is one loop, whose epoch is every task's batches (optim.planned_steps) and whose
    evaluations score every task. None when a task's size is unknown."""
    hp, budget = cell.hparams, cell.budget
    per_batch = hp["batch_size"] * cell.num_processes
    sets = []   # (training examples, dev examples) per task
    for task in cell.tasks:
        n_train = sizes.size("train", task, budget.get("max_train_samples"))
        n_eval = sizes.size("eval", task, budget.get("max_eval_samples"))
        if not n_train or n_eval is None:
            return None
        sets.append((n_train, n_eval))
    loops = [sets] if cell.regime == Regime.MULTITASK else [[s] for s in sets]
    train = evals_n = 0.0
    total_steps = n_evals = 0
    for loop in loops:
        batches = sum(math.ceil(n_train / per_batch) for n_train, _ in loop)
        steps_per_epoch = max(1, math.ceil(batches / hp["gradient_accumulation_steps"]))
        limits = ([math.ceil(budget["epochs"] * steps_per_epoch)] if "epochs" in budget else []) + \
                 ([budget["max_steps"]] if "max_steps" in budget else [])
        steps = max(1, min(limits))
        evaluations = (math.ceil(steps / hp["eval_steps"]) if hp.get("eval_steps")
                       else math.ceil(steps / steps_per_epoch))
        train += sum(n_train for n_train, _ in loop) * steps / steps_per_epoch
        evals_n += sum(n_eval for _, n_eval in loop) * evaluations
        total_steps += steps
        n_evals += evaluations
    train_set, eval_set = sum(n for n, _ in sets), sum(n for _, n in sets)
    return CellPlan(train, evals_n, total_steps, n_evals, train_set, eval_set)
