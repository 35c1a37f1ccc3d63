"""A suite's cells as the store holds them, for the board's Grid page: each with its state (stale by the queue's
own SQL rule), the suites and models a store holds (queued cells included), FLOPs per run."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import case, func, select

from harness.spec.status import CellState, Status
from harness.store.queue import db_now, stale_lease
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
    stale = case((stale_lease(lease_timeout_s), 1), else_=0).label("stale")
    with store.engine.connect() as conn:
        now = conn.execute(select(db_now())).scalar_one()
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
    with store.engine.connect() as conn:
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
    with store.engine.connect() as conn:
        flops = dict(conn.execute(select(R.id, R.train_flops).where(R.train_flops.is_not(None))).all())
    return runs.assign(train_flops=[flops.get(int(i)) for i in runs["id"]])


def encoder_passes(store, suite: str) -> dict[int, float]:
    """{run id: seconds of its frozen encoder's one pass, inside its train + eval time} of the suite's completed
    cells that read cached frozen features."""
    from harness.report.throughput import encoder_pass_s
    from harness.spec.methods import methods_with

    with store.engine.connect() as conn:
        rows = conn.execute(select(R.id, R.extra["frozen_features"]).where(
            R.suite == suite, R.parent_id.is_(None), R.status == Status.COMPLETED.value,
            R.method.in_(methods_with("frozen_encoder")))).all()
    return {i: encoder_pass_s(ff) for i, ff in rows if ff}


def time_left_from_rows(store, suite: str, lease_timeout_s: float | None = None) -> dict:
    """Seconds until the suite's cells that are not done (pending, running, stale) are: per (task, method
    variant), the mean train + eval time of its completed cells (else of all completed cells) times the cells
    left, summed and divided by the live workers (distinct workers holding a fresh lease; at least one). A linear
    probe's completed cells count without their encoder pass: this assumes the cells left of its group read the
    features those computed (the same model and data; `harness status SUITE.yaml` tells feature sets apart). From
    the store's rows alone (the board knows a suite by its name, not its YAML)."""
    from harness.spec.status import lease_timeout

    frame, _ = cells_frame(store, suite, lease_timeout(lease_timeout_s))
    done = frame[frame["state"] == Status.COMPLETED.value]
    took = (done["train_time_s"].fillna(0) + done["eval_time_s"].fillna(0)).astype(float)
    # a linear probe's encoder ran once for the cells that share its features: its later cells take the time
    # of the head alone (harness/train/features.py)
    passes = encoder_passes(store, suite) if len(done) else {}
    took = took - [passes.get(int(i), 0.0) for i in done["id"]]
    overall = float(took.mean()) if len(took) else None
    live = frame[frame["state"] == CellState.RUNNING.value]["worker_id"].dropna().nunique()
    groups, total, unknown = [], 0.0, False
    for (task, method), g in frame.groupby(["task", "method_label"], sort=False):
        left = int(g["state"].isin([CellState.PENDING.value, CellState.RUNNING.value, CellState.STALE.value]).sum())
        mine = took[took.index.isin(g.index)]
        mean = float(mine.mean()) if len(mine) else overall
        if left and mean is None:
            unknown = True
        seconds = left * mean if mean is not None else None
        total += seconds or 0.0
        groups.append({"task": task, "method": method, "completed": int(len(mine)), "left": left,
                       "mean_s": mean, "seconds": seconds})
    workers = max(live, 1)
    return {"seconds_left": None if unknown else total / workers, "live_workers": int(live), "per_group": groups}
