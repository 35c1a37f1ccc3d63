"""How long a grid takes: a throughput model from the store's completed runs, the predicted time of planned cells
(`harness estimate`, the line in `validate`, `predicted_time_s` at each claim), and the time left of a suite in
progress (`harness status`, the board's Grid page). Pure functions over the store and the suite: no torch.

Throughput. Each completed run gives two rates: seconds per training example processed (1 / its
train_examples_per_s, summed over ranks; else train_time_s / (steps x batch x accumulation x processes)) and
seconds per dev example scored (eval_time_s / (dev examples x evaluations)). A cell is predicted from the runs
that match it best, trying in order (MATCH_LEVELS):
  exact         same model, method, task kind, requested precision (hparams.mixed_precision) and device
  model+method  same model and method on the device
  model         same model on the device
Its prediction is rate x what the cell will process (its planned examples and evaluations, from its budget,
hparams and the task's size: `plan_cell`), and its uncertainty the spread (coefficient of variation) of the
matching runs' rates, never below a floor per level (UNCERTAINTY_FLOOR: one or two runs understate the spread,
and a coarser match is a guess about another method or task). The grid's uncertainty is the per-cell ones summed
(cells predicted from the same runs err together, so they do not average out).
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass, field

from harness.spec.status import DEFAULT_LEASE_TIMEOUT_S, CellState, Status

MATCH_LEVELS = ("exact", "model+method", "model")
# relative uncertainty at least this, per match level (see the module's docstring)
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


def _spread(values: list[float]) -> float:
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
            rel = max(_spread(train), _spread(evals), UNCERTAINTY_FLOOR[level])
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


# --- estimate ---------------------------------------------------------------------------------------------------

@dataclass
class CellEstimate:
    key: str
    label: str
    seconds: float | None          # predicted train + eval time
    plus_minus: float | None
    level: str | None              # the match level used (MATCH_LEVELS), None: no prediction
    runs: int                      # stored runs it comes from
    why: str | None = None         # why there is no prediction


@dataclass
class Estimate:
    cells: list[CellEstimate]
    device: str | None
    observations: int              # stored runs the rates come from (on `device`)
    seconds: float = 0.0           # total over the predicted cells
    plus_minus: float = 0.0
    missing: int = 0               # cells without a prediction
    levels: dict = field(default_factory=dict)   # match level -> cells

    def as_dict(self) -> dict:
        out = asdict(self)
        out["device_hours"], out["plus_minus_hours"] = self.seconds / 3600, self.plus_minus / 3600
        return out


def predict(cell, plan: CellPlan | None, rate: Rate | None) -> CellEstimate:
    if plan is None:
        return CellEstimate(cell.key, cell.label, None, None, None, 0, "the task's size is unknown (no local file, "
                                                                       "no stored run, no max_train_samples)")
    if rate is None:
        return CellEstimate(cell.key, cell.label, None, None, None, 0, f"no stored run of {cell.model}")
    seconds = plan.train_examples * rate.train_s + plan.eval_examples * (rate.eval_s or 0.0)
    return CellEstimate(cell.key, cell.label, seconds, seconds * rate.rel, rate.level, rate.n)


def estimate(cells, store=None, *, device: str | None = None, data_dir: str | None = None,
             observations: list[Observation] | None = None, sizes: DataSizes | None = None) -> Estimate:
    """Each cell's predicted train + eval seconds ± uncertainty from stored throughput on `device` (a stored
    device's name or a part of it; None: the device with most stored runs), and the total. `observations`
    (default: every completed run of `store`) lets a caller pass its own (a pilot's)."""
    obs = stored_observations(store) if observations is None else observations
    dev = pick_device(obs, device)
    obs = [o for o in obs if o.device == dev]
    sizes = sizes or DataSizes(store, data_dir)
    out = Estimate([], dev, len(obs))
    for cell in cells:
        rate = rate_for(obs, cell.model, cell.method, task_kind(cell.task),
                        str(cell.hparams.get("mixed_precision", "auto")), dev)
        est = predict(cell, plan_cell(cell, sizes), rate)
        out.cells.append(est)
        if est.seconds is None:
            out.missing += 1
            continue
        out.seconds += est.seconds
        out.plus_minus += est.plus_minus
        out.levels[est.level] = out.levels.get(est.level, 0) + 1
    return out


def predict_claimed(store, claim, cell, device: str, data_dir: str | None) -> float | None:
    """At a claim: the cell's predicted train + eval seconds from the store's completed runs on this very device
    (none there: no prediction), written into its row (Store.predict). Advice only: any failure to predict is
    logged and the cell trains anyway."""
    import logging

    try:
        obs = [o for o in stored_observations(store) if o.device == device]
        if not obs:
            return None
        (est,) = estimate([cell], store, device=device, data_dir=data_dir, observations=obs).cells
        if est.seconds is not None:
            store.predict(claim, est.seconds)
        return est.seconds
    except Exception as exc:   # noqa: BLE001
        logging.getLogger(__name__).warning("no predicted time for cell %s: %s", cell.key, exc)
        return None


def hours(seconds: float | None, plus_minus: float | None = None) -> str:
    if seconds is None:
        return "?"
    text = f"{seconds / 3600:.3g}" if seconds >= 36 else f"{seconds / 3600:.2g}"
    return text + (f" ± {plus_minus / 3600:.2g}" if plus_minus is not None else "")


def validate_line(cells, store, data_dir: str | None = None) -> str:
    """The line `harness validate` prints."""
    try:
        est = estimate(cells, store, data_dir=data_dir) if store is not None else None
    except ValueError:
        est = None
    if est is None or not est.observations or est.missing == len(est.cells):
        return "no stored throughput: run `harness estimate --pilot SUITE` for an estimate"
    missing = f"; {est.missing} cell(s) without one" if est.missing else ""
    return (f"estimated {hours(est.seconds, est.plus_minus)} device-hours from {est.observations} stored runs on "
            f"{est.device}{missing} (`harness estimate` per cell)")


# --- a suite in progress ----------------------------------------------------------------------------------------

def lease_timeout_s(value: float | None = None) -> float:
    """--lease-timeout-s, else $HARNESS_LEASE_TIMEOUT_S, else the default (as the workers decide it)."""
    if value is not None:
        return float(value)
    try:
        return float(os.environ.get("HARNESS_LEASE_TIMEOUT_S") or DEFAULT_LEASE_TIMEOUT_S)
    except ValueError:
        return DEFAULT_LEASE_TIMEOUT_S


def cell_states(suite, store, num_processes: int = 1, lease_timeout: float | None = None) -> list[tuple]:
    """(cell, CellState, record or None) per cell of the suite, in grid order: as harness.launch.runner's
    status_rows, without importing the launch layer."""
    records = store.by_key(suite.name) if store is not None and store.columns() else {}
    stale = store.stale_keys(suite.name, lease_timeout_s(lease_timeout)) if records else set()
    out = []
    for cell in suite.cells(num_processes=num_processes):
        rec = records.get(cell.key)
        state = (CellState.PENDING if rec is None else CellState.STALE if cell.key in stale
                 else CellState(rec.status))
        out.append((cell, state, rec))
    return out


def cell_time_s(rec) -> float | None:
    """A completed cell's time: train + eval (what `predicted_time_s` predicts)."""
    if rec.train_time_s is None:
        return None
    return rec.train_time_s + (rec.eval_time_s or 0.0)


def time_left(store, suite, *, num_processes: int = 1, lease_timeout: float | None = None, states=None) -> dict:
    """The time left of a suite in progress. Per (method, task): the mean time of this suite's completed cells of
    it x its cells still to run (pending, stale, running: a running one less the time it has run); a (method,
    task) with no completed cell yet is predicted from stored throughput (`estimate`). The work left is divided by
    the live workers (distinct workers holding a lease with a fresh heartbeat; none: as if one).

    Returns {"counts": {state: n, "total": n}, "live_workers": n, "groups": [{method, task, completed, left,
    mean_s, work_s, source: "suite" | "stored" | None}], "work_s": seconds of work left, "left_s": wall seconds
    left (work / workers), "plus_minus_s", "unestimated": cells left without an estimate, "actual_s": train +
    eval of the completed cells, "predicted_s" / "predicted_actual_s" / "ratio": the completed cells that have a
    predicted_time_s, their predicted sum, actual sum and actual / predicted}. `states`: cell_states(...) when the
    caller has them."""
    from harness.store.lease import utcnow

    states = states if states is not None else cell_states(suite, store, num_processes, lease_timeout)
    counts = {str(s): 0 for s in CellState}
    for _, state, _ in states:
        counts[str(state)] += 1
    counts["total"] = len(states)
    live = {rec.worker_id for _, state, rec in states if state == CellState.RUNNING and rec.worker_id}

    groups: dict[tuple, dict] = {}
    for cell, state, rec in states:
        g = groups.setdefault((cell.method, cell.task), {"method": cell.method, "task": cell.task, "times": [],
                                                         "todo": []})
        if state == CellState.COMPLETED and cell_time_s(rec) is not None:
            g["times"].append(cell_time_s(rec))
        elif state in (CellState.PENDING, CellState.STALE, CellState.RUNNING):
            ran = 0.0
            if state == CellState.RUNNING and rec.started_at is not None:
                ran = max(0.0, (utcnow() - rec.started_at).total_seconds())
            g["todo"].append((cell, ran))

    need_stored = [c for g in groups.values() if not g["times"] for c, _ in g["todo"]]
    stored = {}
    if need_stored and store is not None:
        try:
            stored = {e.key: e for e in estimate(need_stored, store, data_dir=suite.data_dir()).cells}
        except (ValueError, OSError):
            stored = {}

    out_groups, work = [], 0.0
    plus_minus, unestimated = 0.0, 0
    for g in groups.values():
        entry = {"method": g["method"], "task": g["task"], "completed": len(g["times"]), "left": len(g["todo"]),
                 "mean_s": None, "work_s": None, "source": None}
        if g["todo"]:
            if g["times"]:
                mean = statistics.fmean(g["times"])
                rel = max(_spread(g["times"]), UNCERTAINTY_FLOOR["suite"])
                w = sum(max(0.0, mean - ran) for _, ran in g["todo"])
                entry.update(mean_s=mean, work_s=w, source="suite")
                plus_minus += w * rel
                work += w
            else:
                ests = [stored.get(c.key) for c, _ in g["todo"]]
                known = [(e, ran) for e, (_, ran) in zip(ests, g["todo"]) if e is not None and e.seconds is not None]
                unestimated += len(g["todo"]) - len(known)
                if known:
                    w = sum(max(0.0, e.seconds - ran) for e, ran in known)
                    entry.update(mean_s=statistics.fmean(e.seconds for e, _ in known), work_s=w, source="stored")
                    plus_minus += sum(e.plus_minus for e, _ in known)
                    work += w
        elif g["times"]:
            entry["mean_s"] = statistics.fmean(g["times"])
        out_groups.append(entry)

    workers = max(1, len(live))
    done = [rec for _, state, rec in states if state == CellState.COMPLETED]
    both = [r for r in done if r.predicted_time_s and cell_time_s(r) is not None]
    predicted = sum(r.predicted_time_s for r in both)
    actual_of_predicted = sum(cell_time_s(r) for r in both)
    return {
        "suite": suite.name, "counts": counts, "live_workers": len(live), "groups": out_groups,
        "work_s": work, "left_s": work / workers, "plus_minus_s": plus_minus / workers,
        "unestimated": unestimated,
        "actual_s": sum(cell_time_s(r) or 0.0 for r in done),
        "predicted_cells": len(both), "predicted_s": predicted, "predicted_actual_s": actual_of_predicted,
        "ratio": actual_of_predicted / predicted if predicted else None,
    }
