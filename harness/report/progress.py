"""How long a grid takes: the predicted time of planned cells (`harness estimate`, the line in `validate`,
`predicted_time_s` at each claim) and the time left of a suite in progress (`harness status`, the board's Grid
page). Pure functions over the store and the suite: no torch.

A cell's prediction is its rate (harness.report.throughput: seconds per training and per dev example, from the
stored runs that match it best: same model, method, task (and regime) and precision, else another task of its
kind, else same model and method, else same model; always on its device and its process count) times what it will
process (its planned examples and evaluations, from its budget, hparams and the task's size), ± the rate's
relative uncertainty. The grid's uncertainty is the cells' summed: cells predicted from the same runs err
together, so they do not average out. A linear probe's encoder runs once per feature set
(harness.report.throughput.feature_sets, training and dev data apart): each pass is charged to the first cell of
its set that no completed run in the store (on the device) computed, and every cell gets its head's epochs.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

from harness.report.throughput import (MATCH_LEVELS, UNCERTAINTY_FLOOR, CellPlan, DataSizes, Observation, Rate,
                                       PASS_SECONDS, cell_feature_sets, device_of, encoder_pass_s, spread,
                                       devices, observation, pick_device, plan_cell, rate_for, stored_feature_sets,
                                       precision_key, regime_key, stored_observations, task_kind, timed_passes)
from harness.report.text import checkpoint_step
from harness.spec.cell import budget_text
from harness.spec.methods import FEATURE_ROLES
from harness.spec.status import CellState, Regime, Status

__all__ = ["MATCH_LEVELS", "UNCERTAINTY_FLOOR", "CellEstimate", "CellPlan", "DataSizes", "Estimate", "Observation",
           "Rate", "cell_states", "device_time", "devices", "estimate", "hours", "observation", "pick_device",
           "plan_cell", "predict", "predict_claimed", "rate_for", "row_states", "stored_observations", "task_kind",
           "time_left", "validate_line", "work_text"]

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
    encoder_pass_s: float | None = None   # of `seconds`: the frozen encoder's one pass over its data (the first
                                          # cell of a feature set), else None
    threads: list[int] | None = None      # the torch thread counts of the runs it comes from, where recorded


@dataclass
class Estimate:
    cells: list[CellEstimate]
    device: str | None
    observations: int              # stored runs the rates come from (on `device`, on the cells' process counts)
    seconds: float = 0.0           # total over the predicted cells: each its run's wall time
    plus_minus: float = 0.0
    missing: int = 0               # cells without a prediction
    levels: dict = field(default_factory=dict)   # match level -> cells
    device_seconds: float = 0.0    # the same total in device time (device_time: a K-process cell's wall x K)
    device_plus_minus: float = 0.0
    # cells priced by runs of several thread counts (a worker's --threads-per-worker changes its speed; estimates
    # do not match on it, harness.report.throughput.Observation), and the thread counts of those cells' runs
    pooled_threads: int = 0
    threads: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["device_hours"], out["plus_minus_hours"] = self.device_seconds / 3600, self.device_plus_minus / 3600
        return out


def device_time(seconds: float, processes: int) -> float:
    """A cell's device time: the wall time of its run (what a rate prices, and a record measures) on each of its
    processes' devices. Every number this package calls device-hours is this (work_text)."""
    return seconds * processes


def work_text(device_s: float | None, plus_minus: float | None, processes: int) -> str:
    """How `harness estimate`, `validate` and `status` say a grid's work, from its device time (device_time) and
    the cells' process count: "N device-hours", and for K > 1 processes the wall hours of those K-process runs
    beside it (a K-process grid's device-hours are K times the sum of its cells' wall times, which its lines
    print)."""
    text = f"{hours(device_s, plus_minus)} device-hours"
    if processes > 1 and device_s is not None:
        wall_pm = None if plus_minus is None else plus_minus / processes
        text += f" ({hours(device_s / processes, wall_pm)} h of {processes}-process runs, {processes} devices each)"
    return text


def predict(cell, plan: CellPlan | None, rate: Rate | None, features: bool = False,
            passes: tuple[str, ...] = (), no_rate: str | None = None) -> CellEstimate:
    """`features`: the cell reads cached frozen features; `passes`: the roles ("train", "eval") whose features
    are not computed yet, so this cell runs that encoder pass; `no_rate`: why `rate` is None (default: no stored
    run of the model)."""
    def unknown(why: str) -> CellEstimate:
        return CellEstimate(cell.key, cell.label, None, None, None, 0, why)

    if plan is None:
        return unknown("the task's size is unknown (no local file, no stored run, no max_train_samples)")
    if rate is None:
        return unknown(no_rate or f"no stored run of {cell.model}")
    train_s, eval_s, once = rate.train_s, rate.eval_s or 0.0, None
    needs_pass = rate.features and (not features or bool(passes))
    if needs_pass and rate.extract_s is None:
        return unknown(f"no stored run of {cell.model} timed its encoder's pass")
    if rate.features and not features:
        # a cell that runs its encoder every step, from runs that ran it once: their pass per example, each epoch
        train_s += rate.extract_s
        eval_s += rate.eval_extract_s
    elif rate.features and passes:
        once = (("train" in passes) * plan.train_set * rate.extract_s
                + ("eval" in passes) * plan.eval_set * rate.eval_extract_s)
    seconds = plan.train_examples * train_s + plan.eval_examples * eval_s
    if cell.budget.get("time_limit_min"):
        # training stops at the first step past the limit, its evaluations so far counted in, then evaluates once
        # more (harness/train/recipe.py): a bound, however many steps and evaluations the budget plans. Each stage
        # of a sequence is a loop of its own, with its own limit (a multi-task cell is one loop)
        loops = len(cell.tasks) if cell.regime == Regime.SEQUENTIAL else 1
        seconds = min(seconds, loops * 60.0 * cell.budget["time_limit_min"] + plan.eval_set * eval_s)
    seconds += once or 0.0
    rel = max(rate.rel, rate.pass_rel) if needs_pass else rate.rel
    return CellEstimate(cell.key, cell.label, seconds, seconds * rel, rate.level, rate.n, encoder_pass_s=once,
                        threads=list(rate.threads) or None)


def estimate(cells, store=None, *, device: str | None = None, data_dir: str | None = None,
             observations: list[Observation] | None = None, sizes: DataSizes | None = None,
             floor: float = 0.0, probe_floor: float | None = None) -> Estimate:
    """Each cell's predicted train + eval seconds ± uncertainty from stored throughput on `device` (a stored
    device's name or a part of it; None: the device with most stored runs), and the total, in the order given
    (the first cell of a feature set runs its encoder pass). `observations` (default: every completed run of
    `store`) lets a caller pass its own (a pilot's), and `floor` raise every rate's relative uncertainty to at
    least that (one pilot per rate has no spread of its own); `probe_floor` (default: `floor`) that of a cell
    reading cached frozen features. Frozen features that a completed run of `store` on
    the device computed count as cached, whatever the observations."""
    obs = stored_observations(store) if observations is None else observations
    cells = list(cells)
    # the runs that can price a cell: those on the device, on a process count of the cells (rate_for); so the
    # default device is the one with most such runs (most runs of any count could be a device that prices none)
    counts = {c.num_processes for c in cells}
    on_counts = [o for o in obs if o.processes in counts]
    dev = pick_device(on_counts if device is None and on_counts else obs, device)
    obs = [o for o in obs if o.device == dev]
    sizes = sizes or DataSizes(store, data_dir)
    cached = stored_feature_sets(store, dev) if store is not None else set()
    out = Estimate([], dev, sum(o.processes in counts for o in obs))
    rates: dict[tuple, Rate | None] = {}   # one lookup per (model, method, task, regime, precision, path, processes)
    for cell in cells:
        keys = cell_feature_sets(cell)
        match = (cell.model, cell.method, cell.task, regime_key(cell.regime), task_kind(cell.task),
                 precision_key(cell.hparams), keys is not None, cell.num_processes)
        if match not in rates:
            rate = rate_for(obs, *match[:6], dev, features=match[6], processes=match[7])
            least = probe_floor if match[6] and probe_floor is not None else floor
            rates[match] = (replace(rate, rel=max(rate.rel, least), pass_rel=max(rate.pass_rel, least))
                            if rate is not None and least else rate)
        passes = tuple(role for role, key in zip(FEATURE_ROLES, keys or ()) if key not in cached)
        est = predict(cell, plan_cell(cell, sizes), rates[match], features=keys is not None, passes=passes,
                      no_rate=_no_run_why(obs, cell) if rates[match] is None else None)
        out.cells.append(est)
        if est.seconds is None:   # (a first cell of a feature set without an estimate leaves its pass to the next)
            out.missing += 1
            continue
        cached.update(keys or ())   # the grid's later cells of these sets read them
        out.seconds += est.seconds
        out.plus_minus += est.plus_minus
        out.device_seconds += device_time(est.seconds, cell.num_processes)
        out.device_plus_minus += device_time(est.plus_minus, cell.num_processes)
        out.levels[est.level] = out.levels.get(est.level, 0) + 1
        if est.threads and len(est.threads) > 1:
            out.pooled_threads += 1
            out.threads = sorted(set(out.threads) | set(est.threads))
    return out


def _no_run_why(obs: list[Observation], cell) -> str:
    """Why no stored run on the device prices `cell`: none of its model, or none on its process count."""
    others = sorted({o.processes for o in obs if o.model == cell.model} - {cell.num_processes})
    if not others:
        return f"no stored run of {cell.model}"
    return (f"no stored run of {cell.model} on {cell.num_processes} process(es) (its runs here trained on "
            f"{' or '.join(map(str, others))}: one process count's time is not another's)")


def predict_claimed(store, claim, cell, device: str, data_dir: str | None) -> float | None:
    """At a claim: the cell's predicted train + eval seconds from the store's completed runs on this very device
    (none there: no prediction), written into its row (Store.predict). Advice only: any failure to predict is
    logged and the cell trains anyway."""
    try:
        obs = [o for o in stored_observations(store) if o.device == device]
        if not obs:
            return None
        (est,) = estimate([cell], store, device=device, data_dir=data_dir, observations=obs).cells
        if est.seconds is not None:
            store.predict(claim, est.seconds)
        return est.seconds
    except Exception as exc:   # noqa: BLE001
        # one line: a store error's message goes on with its SQL and parameters
        logging.getLogger(__name__).warning("no predicted time for cell %s: %s", cell.key,
                                            (str(exc).splitlines() or [type(exc).__name__])[0])
        return None


def _digits(value: float, significant: int) -> str:
    """`value` to that many significant digits, whole from there up, never in e-notation: `:.3g` wrote a grid's
    1,000 hours as "1e+03" and a ± of 150 as "1.5e+02", and a cell of 0.1 s as "2.8e-05" hours (below 0.0001):
    "0.000028"."""
    text = f"{value:.{significant}g}"
    if "e+" in text:
        return f"{value:.0f}"
    if "e-" in text:   # as many decimals as put the same significant digits after the zeros
        mantissa, exponent = text.split("e-")
        return f"{value:.{int(exponent) + len(mantissa.replace('.', '').lstrip('-')) - 1}f}"
    return text


def hours(seconds: float | None, plus_minus: float | None = None) -> str:
    """Seconds in hours: 3 significant digits (2 under 0.01 h), the ± 2."""
    if seconds is None:
        return "?"
    text = _digits(seconds / 3600, 3 if seconds >= 36 else 2)
    return text + (f" ± {_digits(plus_minus / 3600, 2)}" if plus_minus is not None else "")


def measure_advice(processes: int) -> str:
    """How to get a first estimate: a pilot, where the cells run in one process (a pilot trains in this one
    process, which prices no N-process cell: `harness estimate` refuses it there)."""
    if processes == 1:
        return "run `harness estimate --pilot SUITE` for an estimate"
    return (f"a first completed run on {processes} processes prices the rest (`harness estimate --pilot` trains in "
            f"one process, which prices no {processes}-process cell)")


def validate_line(cells, store, data_dir: str | None = None) -> str:
    """The line `harness validate` prints."""
    cells = list(cells)
    try:
        est = estimate(cells, store, data_dir=data_dir) if store is not None else None
    except ValueError:
        est = None
    processes = max((c.num_processes for c in cells), default=1)   # (a suite's cells share one count)
    if est is None or not est.observations or est.missing == len(est.cells):
        return f"no stored throughput: {measure_advice(processes)}"
    missing = f"; {est.missing} cell(s) without one" if est.missing else ""
    return (f"estimated {work_text(est.device_seconds, est.device_plus_minus, processes)} from {est.observations} "
            f"stored runs on {est.device}{missing} (`harness estimate` per cell)")


# --- a suite in progress ----------------------------------------------------------------------------------------

def lease_timeout_s(value: float | None = None) -> float:
    """--lease-timeout-s, else $HARNESS_LEASE_TIMEOUT_S, else the default (the workers' own rule)."""
    from harness.spec.status import lease_timeout

    return lease_timeout(value)


def cell_states(suite, store, num_processes: int = 1, lease_timeout: float | None = None) -> list[tuple]:
    """(cell, CellState, record or None) per cell of the suite, in grid order: as harness.launch.runner's
    status_rows, without importing the launch layer."""
    records = store.by_key(suite.name) if store is not None and store.columns() else {}
    stale = store.stale_keys(suite.name, lease_timeout_s(lease_timeout)) if records else set()
    out = []
    for cell in suite.cells(num_processes=num_processes):
        rec = records.get(cell.key)
        out.append((cell, _state(rec, cell.key in stale), rec))
    return out


def rows_beside(store, suite: str, keys) -> tuple[int, int, list[str]]:
    """(how many of the suite's rows in the store are no cell among `keys`, how many of those are queued or running
    (stale included), which the tables count as seeds and settings to come (selection.unfinished_settings),
    every suite the store holds rows of):
    `harness status` counts the cells of the suite's YAML, so a store without any row of the suite (another
    suite's, a mistyped --db) read as every cell pending, and rows of cells removed from the YAML since they were
    queued (or queued with another process count) went uncounted without a word. Stage and member rows are
    parts of a cell, not cells."""
    from sqlalchemy import select

    from harness.stats.selection import evaluation_key   # (pandas: only where a store's rows are read)
    from harness.store.schema import RunRecord as R

    if store is None or not store.columns():
        return 0, 0, []
    keys = set(keys)
    with store.reading() as conn:
        suites = list(conn.execute(select(R.suite).distinct().order_by(R.suite)).scalars())
        rows = conn.execute(select(R.cell_key, R.status, R.suite, R.model, R.task, R.task_version, R.method,
                                   R.method_label, R.method_params, R.hparams, R.budget, R.num_processes)
                            .where(R.suite == suite, R.parent_id.is_(None))).all()
    # an evaluation-only cell's repeats (other seeds or budgets of it, queued before plan/grid.py ran it once) are
    # one run to the tables (selection.without_evaluation_repeats), never claimed: not settings to come
    evaluations = [evaluation_key(row) for row in rows]
    alike = Counter(k for k in evaluations if k is not None)
    beside = [(row, k) for row, k in zip(rows, evaluations) if row.cell_key not in keys]
    to_come = [row for row, k in beside if row.status in (Status.PENDING, Status.RUNNING) and alike.get(k, 0) < 2]
    return len(beside), len(to_come), suites


def row_states(store, suite: str, lease_timeout: float | None = None) -> list[tuple]:
    """(cell, CellState, record) per cell of the suite that the store has a row of (queued or run), in id order,
    each cell rebuilt from its row's configuration: cell_states for a reader that knows the suite by its name, not
    its YAML (the board), so the cells not queued yet are missing. A row whose configuration does not rebuild
    into a cell (written by another tool, say) comes with None for its cell."""
    from harness.spec.cell import Cell

    def cell_of(row):
        try:
            return Cell.from_config(suite, row.config)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    rows = [r for r in store.records(suite) if r.parent_id is None] if store.columns() else []
    stale = store.stale_keys(suite, lease_timeout_s(lease_timeout)) if rows else set()
    return [(cell_of(r), _state(r, r.cell_key in stale), r) for r in rows]


def checkpointed_share(rec, steps_ran: float | None = None) -> float:
    """The share of a cell's steps its checkpoint holds (the store's checkpoint_step of checkpoint_total_steps,
    written when a stop signal gave it back), 0 without one: a resumed cell runs only the steps after it.
    `steps_ran`: for a cell under a time limit, the steps its setting's completed cells ran (the limit stops the
    loop before the steps it plans, and the time it has left counts on, harness/train/recipe.py: a checkpoint
    at half of what the limit allows has half of the cell's time left, not most of it)."""
    step, total = checkpoint_step(rec)
    if step is None:
        return 0.0
    if steps_ran:
        total = min(total, steps_ran)
    return min(1.0, max(0.0, step / total))


def limit_steps(cell, done_records) -> float | None:
    """The mean steps the completed runs `done_records` of a time-limited cell's setting ran (checkpointed_share's
    steps_ran); None for a cell without a time limit, or none of them with a step count."""
    steps = [rec.steps for rec in done_records if rec.steps]
    return sum(steps) / len(steps) if cell.budget.get("time_limit_min") and steps else None


def _state(rec, stale: bool) -> CellState:
    return CellState.PENDING if rec is None else CellState.STALE if stale else CellState(rec.status)


def cell_time_s(rec, earlier_eval_s: float = 0.0) -> float | None:
    """A completed cell's time: train + eval (what `predicted_time_s` predicts). A sequence's row holds the whole
    sequence's training time but its last stage's evaluation time: `earlier_eval_s` is its earlier stages'
    (stages_eval_s)."""
    if rec.train_time_s is None:
        return None
    return rec.train_time_s + (rec.eval_time_s or 0.0) + earlier_eval_s


def stages_eval_s(store, records) -> dict[int, float]:
    """{row id: its earlier stages' summed evaluation time} for the sequential cells' rows among `records` (each
    stage's is in its own row, harness/train/recipe.py)."""
    from sqlalchemy import func, select

    from harness.store.queue import chunks
    from harness.store.schema import RunRecord as R

    ids = [rec.id for rec in records if rec is not None and rec.regime == Regime.SEQUENTIAL]
    out: dict[int, float] = {}
    if store is None or not ids:
        return out
    with store.reading() as conn:
        for part in chunks(ids):
            out.update(conn.execute(select(R.parent_id, func.coalesce(func.sum(R.eval_time_s), 0.0))
                                    .where(R.parent_id.in_(part), R.regime == Regime.SEQUENTIAL_STAGE.value)
                                    .group_by(R.parent_id)).all())
    return out


def _suite_fallback(g: dict, made: set):
    """A setting's (work_key) prediction for a cell left that the store does not predict: the mean time of its
    completed cells, and its relative uncertainty. A linear probe's cells: the mean without their encoder pass
    (what a later cell of a feature set takes), plus the group's measured pass for each feature set not made yet
    (by a completed cell of the suite, a stored run, or an earlier cell left, which is charged it); a set whose
    pass no completed cell timed leaves its cells without a prediction (None, 0)."""
    heads, passes = [], {role: [] for role in FEATURE_ROLES}
    for cell, rec, seconds in g["done"]:
        ff = (rec.extra or {}).get("frozen_features")
        heads.append(seconds - encoder_pass_s(ff))
        if ff:
            made.update(cell_feature_sets(cell) or ())
            timed = timed_passes(ff)
            for role in FEATURE_ROLES:
                if timed[role]:
                    passes[role].append(ff[PASS_SECONDS[role]])
    times = heads if g["probe"] else g["times"]
    mean = statistics.fmean(times) if times else None
    rel = max(spread(times), UNCERTAINTY_FLOOR["suite"]) if times else 0.0

    def predict_left(cell) -> tuple[float | None, float]:
        keys = cell_feature_sets(cell)
        if mean is None or keys is None:
            return mean, rel
        new = [role for role, key in zip(FEATURE_ROLES, keys) if key not in made]
        if any(not passes[role] for role in new):
            return None, 0.0
        made.update(keys)
        return mean + sum(statistics.fmean(passes[role]) for role in new), rel

    return predict_left


# hparams that change how a step updates the weights, not how many steps and examples a cell computes (clipping
# is always on: max_grad_norm > 0)
WORK_NEUTRAL = ("learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm")


def work_key(cell) -> str:
    """What a cell's time depends on: its setting less the seed and the WORK_NEUTRAL hparams (a sweep's usual axes).
    time_left averages the completed cells of one work key, so a (method, task)'s cells of other budgets, batch
    sizes or method parameters are predicted apart (houlsby.yaml: 3 and 20 epochs)."""
    from harness.spec.cell import config_key

    config = cell.config()
    config["hparams"] = {k: v for k, v in config["hparams"].items() if k not in WORK_NEUTRAL}
    return config_key(config, without=("seed",))


def _no_estimate_why(group_done: bool, stored: CellEstimate | None, device: str | None) -> str:
    """Why a cell left has no estimate in time_left: its setting has completed cells only where it is a linear
    probe whose feature set's encoder pass none of them timed (else their mean predicts it). The stored runs
    looked at are those of one device (`device`), which is named: "no stored run of roberta-base" was said of a
    store holding its runs on another device, and `harness status` and the Grid page named no device at all where
    the time left was unknown, though both name it beside a time left."""
    if group_done:
        return "neither a completed cell of its setting nor a stored run timed its feature set's encoder pass"
    if stored is None or not stored.why:
        return "no completed cell of its setting in this suite and no stored throughput"
    on = f", on {device}," if device else ""
    return f"no completed cell of its setting in this suite and{on} {stored.why}"


def time_left(store, states: list[tuple], *, data_dir: str | None = None, now=None) -> dict:
    """The time left of a suite in progress. Per setting (work_key: method and its parameters, task, budget,
    hparams; seeds, learning rates and the other WORK_NEUTRAL hparams pooled): the mean time of this suite's
    completed cells of it x its cells still to run (pending, stale, running: each less the share of its steps its
    checkpoint holds (checkpointed_share), a running one also less the time it has run since its claim, its ± the
    same share of the cell's); a setting with no completed cell yet is predicted from stored throughput
    (`estimate`, on the device of this suite's completed cells, scaled to the cell's planned examples), and so are
    the cells that read cached frozen features (a mean would spread the one cell that ran the encoder over the
    others, which do not). A cell the store does not predict takes its group's mean (_suite_fallback: a probe's
    without the pass, plus the group's measured pass where its set is new). The work left is divided by the live
    workers (distinct workers holding a lease with a fresh heartbeat; none: as if one). Groups are reported per
    model, method variant (its row label), task and budget.

    Returns {"counts": {state: n, "total": n}, "live_workers": n, "groups": [{model, method, variant (its row label),
    task, budget (as the tables print it), completed, left, mean_s, work_s, source: "suite" | "stored" |
    "stored+suite" (cell by cell) | None}],
    "stored_device", "work_s": seconds of work left (the cells' wall times), "device_s": the same in device time
    (device_time: a K-process cell's x K), "left_s": wall seconds left (work / workers; None when no cell
    left has an estimate), "plus_minus_s", "unestimated": cells left without an estimate, "unestimated_why": why
    (sorted), "actual_s": train + eval of the completed cells, "predicted_s" / "predicted_actual_s" / "ratio": the
    completed cells that have a predicted_time_s, their predicted sum, actual sum and actual / predicted}. `states`:
    cell_states (a suite's YAML and the store) or row_states (the store alone; a row that is not a cell comes as
    None and is counted without an estimate); `data_dir`: where the tasks' files are, for their sizes (None: the
    stored runs' and the caps); `now`: the clock running cells' elapsed time is read on (default: this machine's;
    the board passes the database's, which stamped started_at)."""
    from harness.store.lease import utcnow

    now = now or utcnow()
    counts = {str(s): 0 for s in CellState}
    for _, state, _ in states:
        counts[str(state)] += 1
    counts["total"] = len(states)
    live = {rec.worker_id for _, state, rec in states if state == CellState.RUNNING and rec.worker_id}
    todo_states = (CellState.PENDING, CellState.STALE, CellState.RUNNING)
    not_cells = sum(1 for cell, state, _ in states if cell is None and state in todo_states)
    states = [(cell, state, rec) for cell, state, rec in states if cell is not None]
    done = [rec for _, state, rec in states if state == CellState.COMPLETED]
    earlier = stages_eval_s(store, done)
    took = {rec.id: cell_time_s(rec, earlier.get(rec.id, 0.0)) for rec in done}   # None: no train time

    groups: dict[tuple, dict] = {}   # per (method variant, task, work key): cells of equal work
    for cell, state, rec in states:
        g = groups.setdefault((cell.row_label, cell.task, work_key(cell)),
                              {"model": cell.model, "method": cell.method, "variant": cell.row_label,
                               "task": cell.task, "budget": budget_text(cell.budget), "todo": [], "done": []})
        if state == CellState.COMPLETED and took[rec.id] is not None:
            g["done"].append((cell, rec, took[rec.id]))
        elif state in todo_states:
            ran = 0.0
            if state == CellState.RUNNING and rec.started_at is not None:
                ran = max(0.0, (now - rec.started_at).total_seconds())
            g["todo"].append((cell, ran, state, rec))
    for g in groups.values():
        ran_steps = limit_steps(g["todo"][0][0], [rec for _, rec, _ in g["done"]]) if g["todo"] else None
        g["todo"] = [(cell, ran, state, checkpointed_share(rec, ran_steps)) for cell, ran, state, rec in g["todo"]]
        g["times"] = [seconds for _, _, seconds in g["done"]]
        g["todo"].sort(key=lambda t: t[2] != CellState.RUNNING)   # the cell computing a pass now is charged it
        g["probe"] = any(cell_feature_sets(c) is not None for c, *_ in g["todo"])
        g["stored"] = not g["times"] or g["probe"]

    need_stored = [c for g in groups.values() if g["stored"] for c, *_ in g["todo"]]
    stored, stored_device, made = {}, None, set()
    if need_stored and store is not None:
        try:
            obs = stored_observations(store)
            # on the device of this suite's completed cells where the store has times of it, else its main one
            mine = Counter(device_of(rec.env) for _, state, rec in states if state == CellState.COMPLETED)
            device = next((d for d, _ in mine.most_common() if d in {o.device for o in obs}), None)
            est = estimate(need_stored, store, device=device, data_dir=data_dir, observations=obs)
            stored, stored_device = {e.key: e for e in est.cells}, est.device
            made = stored_feature_sets(store, stored_device)
        except Exception as exc:   # noqa: BLE001 -- advice only: the suite's own means below
            logging.getLogger(__name__).warning("time left: no estimate from stored throughput: %s", exc)

    shown: dict[tuple, dict] = {}   # what the caller sees: per (model, method variant, task, budget)
    work, device_s, why = 0.0, 0.0, set()
    plus_minus, unestimated = 0.0, not_cells
    if not_cells:
        why.add("its row's stored configuration is not a cell's")
    for g in groups.values():
        # a model's or a budget's cells never share a row: its mean per cell would be of neither
        entry = shown.setdefault((g["model"], g["variant"], g["task"], g["budget"]), {
            "model": g["model"], "method": g["method"], "variant": g["variant"], "task": g["task"],
            "budget": g["budget"], "completed": 0, "left": 0, "times": [], "predicted": [], "work_s": None,
            "sources": set()})
        entry["completed"] += len(g["times"])
        entry["left"] += len(g["todo"])
        entry["times"] += g["times"]
        if not g["todo"]:
            continue
        w, pm, sources, predicted = 0.0, 0.0, set(), []
        fallback = _suite_fallback(g, made)
        for cell, ran, _, share_done in g["todo"]:
            e = stored.get(cell.key) if g["stored"] else None
            if e is not None and e.seconds is not None:
                seconds, rel = e.seconds, (e.plus_minus / e.seconds if e.seconds else 0.0)
                sources.add("stored")
                made.update(cell_feature_sets(cell) or ())   # its pass, if any, is in its estimate
            else:
                seconds, rel = fallback(cell)
                if seconds is None:
                    unestimated += 1
                    why.add(_no_estimate_why(bool(g["done"]), e, stored_device))
                    continue
                sources.add("suite")
            # what its checkpoint has not done yet, less what a running cell has run since its claim resumed it,
            # and that work's ±
            left = max(0.0, seconds * (1.0 - share_done) - ran)
            w, pm = w + left, pm + left * rel
            device_s += device_time(left, cell.num_processes)
            predicted.append(seconds)
        if predicted:
            entry["predicted"] += predicted
            entry["work_s"] = (entry["work_s"] or 0.0) + w
            entry["sources"] |= sources
            work += w
            plus_minus += pm
    out_groups = []
    for entry in shown.values():
        times, predicted, sources = entry["times"], entry["predicted"], entry["sources"]
        # the cells left's mean prediction; with none left, the completed cells' mean time
        mean = (statistics.fmean(predicted) if predicted
                else statistics.fmean(times) if times and not entry["left"] else None)
        out_groups.append({"model": entry["model"], "method": entry["method"], "variant": entry["variant"],
                           "task": entry["task"], "budget": entry["budget"], "completed": entry["completed"],
                           "left": entry["left"], "mean_s": mean, "work_s": entry["work_s"],
                           "source": "+".join(sorted(sources)) or None})

    workers = max(1, len(live))
    todo = sum(len(g["todo"]) for g in groups.values()) + not_cells
    both = [r for r in done if r.predicted_time_s and took[r.id] is not None]
    predicted = sum(r.predicted_time_s for r in both)
    actual_of_predicted = sum(took[r.id] for r in both)
    return {
        "counts": counts, "live_workers": len(live), "groups": out_groups,
        "stored_device": stored_device,   # the device whose stored throughput predicted cells (None: none did)
        # None: cells are left and none of them has an estimate
        # the work: its cells' wall times (a worker runs one cell at a time), and their device time (device_time)
        "work_s": work, "device_s": device_s, "left_s": None if todo and unestimated == todo else work / workers,
        "plus_minus_s": plus_minus / workers,
        "unestimated": unestimated, "unestimated_why": sorted(why),   # why those cells have none
        "actual_s": sum(took[r.id] or 0.0 for r in done),
        "predicted_cells": len(both), "predicted_s": predicted, "predicted_actual_s": actual_of_predicted,
        "ratio": actual_of_predicted / predicted if predicted else None,
    }
