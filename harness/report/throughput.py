"""Throughput from the store's completed runs, and what a planned cell will process: the two halves of a time
estimate (harness.report.progress multiplies them). Pure functions over the store: no torch.

Each completed run gives two rates: seconds per training example processed (1 / its train_examples_per_s, summed
over ranks; else train_time_s / (steps x batch x accumulation x processes)) and seconds per dev example scored
(eval_time_s / (dev examples x evaluations)). A cell's rate comes from the runs that match it best, at the first
of MATCH_LEVELS with any run, with the spread of their rates as its relative uncertainty, never below the level's
floor (UNCERTAINTY_FLOOR: one or two runs understate the spread, and a coarser match is a guess about another
method or task).
"""

from __future__ import annotations

import functools
import math
import os
import statistics
from dataclasses import dataclass

from harness.spec.status import Status

MATCH_LEVELS = ("exact", "model+method", "model")
# what each level matches, on the chosen device: exact = model, method, task kind, requested precision
# (hparams.mixed_precision); model+method; model
# relative uncertainty at least this, per match level ("suite": a suite's own completed cells, in time_left)
UNCERTAINTY_FLOOR = {"exact": 0.10, "model+method": 0.30, "model": 0.60, "suite": 0.10}

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


@functools.lru_cache(maxsize=None)
def task_kind(task: str) -> str:
    """The kind of a task name as stored (a multi-task cell's 'a+b': its first member's); 'unknown' for a name
    the registry no longer has."""
    from harness.spec.tasks import get_task

    try:
        return get_task(task.split("+")[0]).kind
    except Exception:   # an old store's task: still usable at the coarser levels
        return "unknown"


def _evaluations(steps: int, epochs_done: float | None, eval_steps: int | None) -> int:
    """How many evaluations a run of `steps` optimizer steps made (harness/train/recipe.py: one per eval_steps
    strictly before the end, else one per epoch ended before the end, and one at the end)."""
    if eval_steps:
        return max(1, math.ceil(steps / eval_steps))
    return max(1, math.ceil(epochs_done or 1))


def observation(row) -> Observation | None:
    """The rates of a completed run (a RunRecord or a row with its columns); None when it has no usable time."""
    hp = row.hparams or {}
    env = row.env or {}
    if row.train_examples_per_s:
        train = 1.0 / row.train_examples_per_s
    elif row.train_time_s and row.steps:
        seen = row.steps * hp.get("batch_size", 1) * hp.get("gradient_accumulation_steps", 1) * (row.num_processes or 1)
        train = row.train_time_s / seen
    else:
        return None
    evals = None
    if row.eval_time_s and row.eval_examples:
        evals = row.eval_time_s / (row.eval_examples * _evaluations(row.steps or 0, row.epochs_done,
                                                                     hp.get("eval_steps")))
    return Observation(row.model, row.method, task_kind(row.task), str(hp.get("mixed_precision", "auto")),
                       str(env.get("device") or "unknown device"), train, evals)


def stored_observations(store, suite: str | None = None) -> list[Observation]:
    """Every completed cell's rates (top-level rows: a cell, not its stages or members), reading only the columns
    needed (a worker asks at every claim)."""
    from sqlalchemy import select

    from harness.store.schema import RunRecord as R

    if not store.columns():
        return []
    cols = (R.model, R.method, R.task, R.hparams, R.env, R.train_time_s, R.eval_time_s, R.train_examples_per_s,
            R.steps, R.epochs_done, R.eval_examples, R.num_processes)
    stmt = select(*cols).where(R.status == Status.COMPLETED.value, R.parent_id.is_(None))
    if suite:
        stmt = stmt.where(R.suite == suite)
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [o for o in map(observation, rows) if o is not None]


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


def spread(values: list[float]) -> float:
    """Coefficient of variation (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else 0.0


def rate_for(observations: list[Observation], model: str, method: str, kind: str, precision: str,
             device: str | None) -> Rate | None:
    """The rate of the best match level with any run (MATCH_LEVELS), on `device` (None: any device)."""
    pool = [o for o in observations if device is None or o.device == device]
    tests = {"exact": lambda o: (o.model, o.method, o.kind, o.precision) == (model, method, kind, precision),
             "model+method": lambda o: (o.model, o.method) == (model, method),
             "model": lambda o: o.model == model}
    for level in MATCH_LEVELS:
        hits = [o for o in pool if tests[level](o)]
        if hits:
            train = [o.train_s_per_example for o in hits]
            evals = [o.eval_s_per_example for o in hits if o.eval_s_per_example is not None]
            rel = max(spread(train), spread(evals), UNCERTAINTY_FLOOR[level])
            return Rate(statistics.fmean(train), statistics.fmean(evals) if evals else None, rel, len(hits), level)
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
    same sample caps recorded them), else by counting the lines of the local TSV files, else the budget's caps.
    None when nothing says (a hub data set never loaded here)."""

    def __init__(self, store=None, data_dir: str | None = None):
        self.data_dir = data_dir
        self.known: dict[tuple, int] = {}
        if store is not None and store.columns():
            from sqlalchemy import select

            from harness.store.schema import RunRecord as R

            with store.engine.connect() as conn:
                for task, budget, tr, ev in conn.execute(select(R.task, R.budget, R.train_examples, R.eval_examples)
                                                         .where(R.status == Status.COMPLETED.value)):
                    budget = budget or {}
                    if tr:
                        self.known[("train", task, budget.get("max_train_samples"))] = tr
                    if ev:
                        self.known[("eval", task, budget.get("max_eval_samples"))] = ev

    def _local(self, task_name: str, split: str) -> int | None:
        from harness.spec.tasks import get_task

        if not self.data_dir:
            return None
        task = get_task(task_name)
        files = [task.local_train] if split == "train" else [s.local_file for s in task.eval_splits]
        counts = [_count_rows(os.path.join(self.data_dir, task.local_dir, f), task.local_header) for f in files
                  if f.endswith(".tsv")]
        return sum(counts) if counts and None not in counts else None

    def size(self, split: str, task: str, cap: int | None) -> int | None:
        if (split, task, cap) in self.known:
            return self.known[(split, task, cap)]
        full = self.known.get((split, task, None))
        if full is None:
            full = self._local(task, split)
            if full is not None:
                self.known[(split, task, None)] = full
        if full is None:
            return cap
        return min(full, cap) if cap else full


def plan_cell(cell, sizes: DataSizes) -> CellPlan | None:
    """What `cell` will process under its budget and hparams (harness/train/optim.optimizer_steps and the
    recipe's evaluation schedule); several tasks (multi-task, sequential) are summed. None when a task's size is
    unknown."""
    hp, budget = cell.hparams, cell.budget
    per_batch = hp["batch_size"] * cell.num_processes
    train = evals_n = 0.0
    total_steps = n_evals = 0
    for task in cell.tasks:
        n_train = sizes.size("train", task, budget.get("max_train_samples"))
        n_eval = sizes.size("eval", task, budget.get("max_eval_samples"))
        if not n_train or n_eval is None:
            return None
        steps_per_epoch = max(1, math.ceil(math.ceil(n_train / per_batch) / hp["gradient_accumulation_steps"]))
        limits = ([math.ceil(budget["epochs"] * steps_per_epoch)] if "epochs" in budget else []) + \
                 ([budget["max_steps"]] if "max_steps" in budget else [])
        steps = max(1, min(limits))
        evaluations = (math.ceil(steps / hp["eval_steps"]) if hp.get("eval_steps")
                       else math.ceil(steps / steps_per_epoch))
        train += n_train * steps / steps_per_epoch
        evals_n += n_eval * evaluations
        total_steps += steps
        n_evals += evaluations
    return CellPlan(train, evals_n, total_steps, n_evals)
