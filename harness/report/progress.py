"""Time left for a suite in progress.

Minimal version written for the board's Grid page (helper E); `harness status` (helper D) owns this module and
its fuller estimate replaces this one at merge. The board reads seconds_left (or left_s), live_workers and
per_group (or groups) from the dict `time_left(store, suite)` returns.
"""

from __future__ import annotations

from harness.report.grid import cells_frame
from harness.spec.status import CellState, Status


def time_left(store, suite: str, lease_timeout_s: float | None = None) -> dict:
    """Seconds until the suite's cells that are not done (pending, running, stale) are: per (task, method
    variant), the mean train + eval time of its completed cells (else of all completed cells) times the cells
    left, summed and divided by the live workers (distinct workers holding a fresh lease; at least one)."""
    from harness.launch.worker import lease_timeout

    frame, _ = cells_frame(store, suite, lease_timeout(lease_timeout_s))
    done = frame[frame["state"] == Status.COMPLETED.value]
    took = (done["train_time_s"].fillna(0) + done["eval_time_s"].fillna(0)).astype(float)
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
