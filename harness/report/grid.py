"""A suite's cells as the store holds them, for the board's Grid page: each with its state (stale by the queue's
own SQL rule), the suites and models a store holds (queued cells included), FLOPs per run."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import case, func, select

from harness.spec.status import CellState, Status
from harness.store.schema import RunRecord as R

GRID_COLUMNS = ["id", "cell_key", "model", "task", "method_label", "seed", "learning_rate", "status", "error",
                "attempts", "worker_id", "host", "pid", "slurm_job_id", "slurm_array_task_id", "started_at",
                "heartbeat_at", "train_time_s", "eval_time_s"]


def cells_frame(store, suite: str, lease_timeout_s: float) -> tuple[pd.DataFrame, object]:
    """The suite's cells (top-level rows only: stages and member tasks are parts of a cell), each with its
    CellState in `state` (stale by the queue's own SQL rule), and the database's clock, which heartbeat ages are
    measured on (the rule's clock: never this machine's)."""
    have = store.columns()
    cols = [getattr(R, c) for c in GRID_COLUMNS if c in have]
    stale = case((store.stale_rule(lease_timeout_s), 1), else_=0).label("stale")   # (a store from before leases too)
    with store.snapshot() as conn:   # the clock and the rows from one state (as `harness status` reads them)
        now = store.clock()
        result = conn.execute(select(*cols, stale).where(R.suite == suite, R.parent_id.is_(None)).order_by(R.id))
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    for c in GRID_COLUMNS:
        if c not in frame.columns:
            frame[c] = None
    frame["state"] = [CellState.STALE.value if s else str(st) for s, st in zip(frame["stale"], frame["status"])]
    return frame.drop(columns="stale"), now


def suites_models(store) -> pd.DataFrame:
    """Every suite and model in the store, queued cells included (a suite in progress is listed before its first
    result), in the order they were first queued, with how many of their cells are completed."""
    if not store.columns():
        return pd.DataFrame(columns=["suite", "model", "cells", "completed"])
    done = func.sum(case((R.status == Status.COMPLETED.value, 1), else_=0))
    with store.reading() as conn:
        rows = conn.execute(select(R.suite, R.model, func.count(), done).where(R.parent_id.is_(None))
                            .group_by(R.suite, R.model).order_by(func.min(R.id))).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=["suite", "model", "cells", "completed"])


def with_flops(store, runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` (runs_frame) with each run's train_flops, read by id where the frame does not carry the column yet
    (None for runs that counted none, and for stores from before the column)."""
    if "train_flops" in runs.columns:
        return runs
    if runs.empty or "train_flops" not in store.columns():
        return runs.assign(train_flops=None)
    with store.reading() as conn:
        flops = dict(conn.execute(select(R.id, R.train_flops).where(R.train_flops.is_not(None))).all())
    return runs.assign(train_flops=[flops.get(int(i)) for i in runs["id"]])
