"""A worker's or reader's clock set off from the database's, for the tests of lease times on the database's clock."""

from __future__ import annotations

import datetime as dt

from harness.store import lease, queue


def skew_clock(monkeypatch, hours: float) -> None:
    """This process's clock (every harness use of it: harness.store.lease.utcnow and the queue's copy) runs `hours`
    off."""
    real = dt.datetime.now

    def utcnow():
        return real(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=hours)

    for module in (lease, queue):
        monkeypatch.setattr(module, "utcnow", utcnow)
