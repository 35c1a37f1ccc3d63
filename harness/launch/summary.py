"""What a worker says about its suite as it starts and ends, and whether anything is left for it at all: read from
the store alone (SQLAlchemy; no torch, transformers, adapters or accelerate), so that a worker with nothing to
claim answers before it imports them: `harness run` on a finished 56-cell suite took 1.6-1.8 s instead of
4.6-6.6 s on a 2-core CPU (bench/RESULTS.md, 2026-12-05, ninth session).
Such workers are common: launching a finished suite again, `harness run --workers N` on a suite another machine
finished, the array tasks of a Slurm job that start after the cells ran out (their `accelerate launch` still
imports torch; the worker it starts no longer does)."""

from __future__ import annotations

from harness.launch import attempt, broken_group
from harness.plan.grid import Suite
from harness.spec import layout
from harness.spec.status import Status
from harness.store.lease import Worker


def queue_summary(store, suite: Suite, keys: set[str], output_dir: str) -> dict[Status, int]:
    """Counts per status of the suite's cells in the store (a cell without a row is in no count); a recorded
    cell whose accepted files were left in its attempt folder (a kill between the commit and the moves) gets
    them moved into place."""
    rows = _rows(store, suite, keys)
    _settle(rows, suite, output_dir)
    return _counts(rows)


def _rows(store, suite: Suite, keys: set[str]) -> list:
    """The cells' key, status, attempt, worker and a failure's error (Store.cell_statuses): all that counting and
    settling read."""
    return [rec for rec in store.cell_statuses(suite.name) if rec.cell_key in keys]


def _counts(rows: list) -> dict[Status, int]:
    counts = {s: 0 for s in Status}
    for rec in rows:
        counts[rec.status] = counts.get(rec.status, 0) + 1
    return counts


def _settle(rows: list, suite: Suite, output_dir: str) -> None:
    """The moves a kill cut short, finished: of completed cells and failed ones alike (a failure's record.json
    and error.log left in its attempt folder were never moved in, the cell folder holding no record of what the
    store holds, unless a --retry-failed claim came). The checkpoint a kill left goes, but a broken group's
    failure's (its retry resumes it: the row's error says which failure it was)."""
    run_layout = layout.RunLayout(output_dir)
    for rec in rows:
        if rec.status in (Status.COMPLETED, Status.FAILED):
            attempt.settle(run_layout.cell_dir(suite.name, rec.cell_key), rec.attempts, rec.worker_id,
                           completed=rec.status == Status.COMPLETED,
                           keep_checkpoint=rec.status == Status.FAILED and broken_group.recorded(rec.error))


def start_line(suite: Suite, cells: int, n: dict[Status, int], retry_failed: bool, worker: Worker,
               num_processes: int) -> str:
    slurm = (f", Slurm job {worker.slurm_job_id}" + (f" task {worker.slurm_array_task_id}"
             if worker.slurm_array_task_id is not None else "") if worker.slurm_job_id else "")
    return (f"suite {suite.name}: {cells} cells, {n[Status.COMPLETED]} already completed (skipped), "
            f"{n[Status.FAILED]} failed before ({'retried' if retry_failed else 'skipped; --retry-failed runs them'}), "
            f"{n[Status.RUNNING]} running elsewhere, {n[Status.PENDING]} to run; worker {worker.worker_id} with "
            f"{num_processes} process(es){slurm}")


def end_line(suite: Suite, done: int, failures: int) -> str:
    return (f"suite {suite.name}: this worker ran {done} cell(s): {done - failures} completed, {failures} failed; "
            f"no claimable cell left")


def nothing_to_do(suite: Suite, store, output_dir: str, retry_failed: bool) -> list[str] | None:
    """The lines an idle worker says, where this one process (no other rank of a launcher) has nothing to do:
    every cell has a row, none is pending or running (a running one may go stale and be taken over, so the
    worker must stay), none is a failure to retry, and the suite has no end-of-suite analyses (`ablate`: they
    are claimed after the cells, by the runner). Else None: the runner decides, cell by cell. What is claimable
    is harness.store.queue's WorkQueue.claim_next; this is the conservative side of it: every row it could
    claim or the runner would wait for is pending, running or (with retry_failed) failed."""
    from harness.store.engine import sqlite_location_warning
    from harness.store.lease import current_worker

    if suite.model.ablate:
        return None
    keys = {c.key for c in suite.cells(num_processes=1)}
    rows = _rows(store, suite, keys)
    n = _counts(rows)
    if len(rows) < len(keys) or n[Status.PENDING] or n[Status.RUNNING] or (retry_failed and n[Status.FAILED]):
        return None
    _settle(rows, suite, output_dir)   # as the runner would have: a finished suite's files all in place
    warning = sqlite_location_warning(store.url)
    return ([f"warning: {warning}"] if warning else []) + [
        start_line(suite, len(keys), n, retry_failed, current_worker(), 1), end_line(suite, 0, 0)]
