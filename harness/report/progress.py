"""Time left for a suite in progress.

Minimal version written for the board's Grid page (helper E); `harness status` (helper D) owns this module and
its fuller estimate replaces this one at merge. The board reads seconds_left (or left_s), live_workers and
per_group (or groups) from the dict `time_left(store, suite)` returns.
"""

from __future__ import annotations

from harness.report.grid import time_left_from_rows


def time_left(store, suite: str, lease_timeout_s: float | None = None) -> dict:
    """{seconds_left, live_workers, per_group} of a suite in progress: see time_left_from_rows."""
    return time_left_from_rows(store, suite, lease_timeout_s)
