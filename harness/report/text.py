"""Plain-text lines for the terminal: a cell's status, an ablation matrix, a paired comparison."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from harness.spec.status import CellState, share


def pct_text(v) -> str:
    """A share of parameters trained (%), as the tables and `harness params` print it: three decimals, and two
    significant digits where three decimals would not show one (a probe's head on a large model, 0.000306%, read
    "0.000", training nothing); 0.00996 rounds to 0.010 either way, so it prints as 0.01 does."""
    try:
        v = float(v)
    except (TypeError, ValueError):   # None, pd.NA: no share known
        return "–"
    if math.isnan(v):
        return "–"
    if 0 < abs(v) < 0.00995:
        return np.format_float_positional(v, precision=2, unique=False, fractional=False, trim="k")
    return f"{v:.3f}"


def lease_owner(rec) -> str:
    """worker, host, pid and Slurm job of a record's (last) lease."""
    host = getattr(rec, "host", None)
    if not host:
        return "an earlier harness"
    text = f"{host} pid {rec.pid}"
    if rec.slurm_job_id:
        text += f", Slurm job {rec.slurm_job_id}"
        if rec.slurm_array_task_id is not None:
            text += f"_{rec.slurm_array_task_id}"
        if rec.slurm_restart_count:
            text += f" (requeued {rec.slurm_restart_count}x)"
    return text


def ago(when, now=None) -> str:
    """How long ago, in `duration`'s words (status's running and stale lines say the same spans); `now` as _age_s."""
    return "never" if when is None else f"{duration(_age_s(when, now))} ago"


def status_line(status: str, cell, rec, now=None) -> str:
    """One line of `harness status`: status, cell key and label, then what the store says about it (lease ages at
    `now`: the database's clock, as _age_s)."""
    detail = ""
    step, total = checkpoint_step(rec)
    if status == CellState.PENDING and step is not None:   # given back by a stop signal: the next claim resumes it
        detail = f"checkpoint at step {step} of {total}, attempt {rec.attempts}"
    elif status == CellState.COMPLETED:
        # a completed row need not have a train time (an ingested record requires only its score)
        took = "train time ?" if rec.train_time_s is None else f"{rec.train_time_s:.0f}s"
        score = "?" if rec.score is None else f"{rec.score:.2f}"
        detail = f"score {score}  {took}  by {lease_owner(rec)}"
    elif status == CellState.FAILED:
        detail = (rec.error or "").splitlines()[0][:120] if rec.error else ""
    elif status in (CellState.RUNNING, CellState.STALE):
        detail = (f"by {lease_owner(rec)}, since {ago(rec.started_at, now)}, last heartbeat {ago(rec.heartbeat_at, now)}"
                  f", attempt {rec.attempts}" + (f", resumed from step {step} of {total}" if step is not None else ""))
    return f"{status:<10} {cell.key}  {cell.label}  {detail}".rstrip()


def checkpoint_step(rec) -> tuple[int | None, int | None]:
    """(step, total steps) of the checkpoint a cell's row says it holds (Store.release), or (None, None): none, or
    a store from before the columns (0006)."""
    step, total = getattr(rec, "checkpoint_step", None), getattr(rec, "checkpoint_total_steps", None)
    return (step, total) if step is not None and total else (None, None)


def format_ablation(rec, payload: dict) -> str:
    n = payload["num_layers"]
    lines = [f"run {rec.id} ({rec.task}, {rec.method_label}): dev score {payload['baseline']:.2f} with every "
             f"adapter (recorded {payload['recorded_score']:.2f}); change when layers first..last lose theirs:",
             "first\\last " + " ".join(f"{j:>7}" for j in range(n))]
    cells = {(i, j): s - payload["baseline"] for i, j, s in payload["spans"]}
    for i in range(n):
        lines.append(f"{i:>10} " + " ".join(f"{cells[(i, j)]:>+7.2f}" if (i, j) in cells else f"{'':>7}"
                                            for j in range(n)))
    return "\n".join(lines + run_notes(rec))


def run_notes(rec) -> list[str]:
    """The note of a stored run's task (the offline SQuAD split, ...) under a score of it, as the tables say it,
    judged by the data the run read (its record's extra.data_sources)."""
    from harness.report.export import note_lines
    from harness.report.provenance import run_data

    return note_lines([rec.task], {rec.task: [run_data((rec.extra or {}).get("data_sources"), rec.task)]})


def budget_note(result) -> str | None:
    """What a comparison of two variants (analysis.compare's Comparison) must say when their chosen settings are of
    different budgets (a suite with several budgets selects the budget on dev, as the tables' footnote says): None
    when they are of one."""
    if not result.budgets:
        return None
    a, b = (budget or "the default" for budget in result.budgets)
    return (f"The two variants' chosen settings differ in budget (A: {a}; B: {b}): the budget was selected on dev "
            f"with the other hyperparameters, so this comparison is not at one budget.")


def examples_note(result) -> str | None:
    """What a comparison must say when its two sides were scored on different dev examples (the tables'
    footnote says it of a column): its scores are on the examples both have, not the stored scores."""
    if not result.scored or set(result.scored) == {result.n_examples}:
        return None
    a, b = result.scored   # each side's most (its seeds may differ among themselves)
    sides = f"A: {a}, B: {b}" if a != b else f"up to {a} on each side"
    return (f"The runs were scored on different dev examples ({sides}): the scores above are both sides' on the "
            f"{result.n_examples} they share, not their stored scores.")


def comparison_notes(task: str, result) -> list[str]:
    """The task's note under a comparison's scores (as run_notes), judged by the data the compared runs read."""
    from harness.report.export import note_lines

    return note_lines([task], {task: list(result.data)})


def comparison_footer(task: str, result) -> list[str]:
    """Every line a comparison's scores need under them, as `harness compare` and the board's Analyses page say
    them: other dev examples, other budgets, the task's data note."""
    return [n for n in (examples_note(result), budget_note(result), *comparison_notes(task, result)) if n]


def format_comparison(what: str, result, task: str) -> str:
    notes = comparison_footer(task, result)
    return (f"{what}: {result.n_examples} paired dev examples\n"
            f"score A {result.score_a:.2f}  score B {result.score_b:.2f}  A-B {result.diff:+.2f}  "
            f"95% CI [{result.ci_low:+.2f}, {result.ci_high:+.2f}]  p = {result.p_value:.4f} two-sided "
            f"(paired bootstrap over dev examples, {result.resamples} resamples)" + "".join(f"\n{n}" for n in notes))


# --- `harness status`: the summary, the time left, who runs what, what failed ---------------------------------

def _age_s(when, now=None) -> float | None:
    """Seconds since `when`, a time the store stamped, measured at `now`: the database's clock (Store.clock), which
    stamped it; None: this machine's, right only where the two agree."""
    from harness.store.lease import utcnow

    return None if when is None else max(0.0, ((now or utcnow()) - when).total_seconds())


def duration(seconds: float | None, missing: str = "?") -> str:
    """A span of time as `harness status` and the board's Grid page print it: "45s", "2m05s", "1h05m", to the
    nearest second (below 0, a clock's skew: "0s"); `missing` where there is none (None, NaN: a table's empty cell)."""
    if seconds is None or seconds != seconds:
        return missing
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def time_left_source(stored_device: str | None) -> str:
    """Where a time left comes from (harness.report.progress.time_left), as `harness status` and the board's Grid
    page say it: the stored runs may be another machine's (the store's main device, before the suite completed a
    cell), so their device is named."""
    on = f" on {stored_device}" if stored_device else ""
    return f"from this suite's completed cells per setting, else stored throughput{on}"


def status_payload(suite, states, left: dict, num_processes: int, now=None) -> dict:
    """What `harness status --json` prints: counts (with percentages), the time-left estimate
    (harness.report.progress.time_left), the running and stale cells with their workers (ages at `now`: the
    database's clock, as _age_s), the failures with their one-line reasons."""
    counts = left["counts"]
    total = counts["total"] or 1
    held, failures = [], []
    for cell, state, rec in states:
        if state in (CellState.RUNNING, CellState.STALE):
            held.append({"key": cell.key, "label": cell.label, "state": str(state), "worker": rec.worker_id,
                         "host": rec.host, "pid": rec.pid, "slurm_job_id": rec.slurm_job_id,
                         "slurm_array_task_id": rec.slurm_array_task_id, "attempt": rec.attempts,
                         # stored naive on the database's UTC clock: said so, for a reader in another zone
                         "started_at": (rec.started_at.replace(tzinfo=dt.timezone.utc).isoformat()
                                        if rec.started_at else None),
                         "running_s": _age_s(rec.started_at, now),
                         "heartbeat_age_s": _age_s(rec.heartbeat_at, now)})
        elif state == CellState.FAILED:
            failures.append({"key": cell.key, "label": cell.label, "reason": failure_reason(rec)})
    estimate = {k: v for k, v in left.items() if k != "counts"}
    return {"suite": suite.name, "num_processes": num_processes, "counts": counts,
            "percent": {str(s): 100.0 * counts[str(s)] / total for s in CellState},
            "done": counts[CellState.PENDING] + counts[CellState.RUNNING] + counts[CellState.STALE] == 0,
            "estimate": estimate, "running": [h for h in held if h["state"] == CellState.RUNNING],
            "stale": [h for h in held if h["state"] == CellState.STALE], "failures": failures}


def failure_reason(rec) -> str:
    return (rec.error or "").strip().splitlines()[0][:200] if rec is not None and (rec.error or "").strip() else \
        "(no reason recorded)"


def _holder(h: dict) -> str:
    slurm = ""
    if h["slurm_job_id"]:
        slurm = f", Slurm job {h['slurm_job_id']}" + (f"_{h['slurm_array_task_id']}"
                                                       if h["slurm_array_task_id"] is not None else "")
    return (f"worker {h['worker'] or '?'} on {h['host'] or '?'}{slurm}, since {duration(h['running_s'])} ago, "
            f"heartbeat {duration(h['heartbeat_age_s'])} ago")


def status_report(p: dict) -> str:
    """The text of `harness status`: summary, time left, predicted vs actual, running, stale, failures."""
    from harness.report.progress import measure_advice, work_text

    c, e = p["counts"], p["estimate"]
    parts = ", ".join(f"{c[s]} {s} ({share(c[s], c['total'])})" for s in CellState if c[s])
    lines = [f"suite {p['suite']} ({p['num_processes']} process(es)): {c['total']} cells: {parts}"]
    lines += p.get("notes") or []   # what the counts do not show (harness.cli.status.store_notes)
    todo = c[CellState.PENDING] + c[CellState.RUNNING] + c[CellState.STALE]
    if todo:
        workers = (f"{e['live_workers']} live worker(s)" if e["live_workers"]
                   else "no live worker (as if one started now)")
        why = "; ".join(e["unestimated_why"])
        unknown = f"; {e['unestimated']} cell(s) without an estimate: {why}" if e["unestimated"] else ""
        if e["left_s"] is None:
            lines.append(f"time left: unknown (none of its {todo} cell(s) left has an estimate: {why}; "
                         f"{measure_advice(p['num_processes'])})")
        else:
            lines.append(f"time left: {duration(e['left_s'])} ± {duration(e['plus_minus_s'])} with {workers} "
                         f"({work_text(e['device_s'], None, p['num_processes'])} of work for {todo} cell(s), "
                         f"{time_left_source(e['stored_device'])}{unknown})")
    else:
        lines.append("all cells done" + (f" ({c[CellState.FAILED]} failed)" if c[CellState.FAILED] else ""))
    if e["predicted_cells"]:
        lines.append(f"predicted vs actual ({e['predicted_cells']} completed cell(s) with a prediction): predicted "
                     f"{duration(e['predicted_s'])}, actual {duration(e['predicted_actual_s'])} (ratio "
                     f"{e['ratio']:.2f})")
    for name, rows in (("running", p["running"]), ("stale (taken over by the next worker)", p["stale"])):
        if rows:
            lines.append(f"{name}:")
            lines += [f"  {h['key']}  {h['label']}  {_holder(h)}" for h in rows]
    if p["failures"]:
        lines.append("failed (`harness run --retry-failed` runs them again):")
        lines += [f"  {f['key']}  {f['label']}: {f['reason']}" for f in p["failures"]]
    return "\n".join(lines)
