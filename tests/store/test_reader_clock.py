"""What a reader of leases shows about them (`harness status`: since when a cell runs, how old its heartbeat is,
the time left) is measured on the database's clock, which stamped them, never on the reading machine's: a login
node whose clock is off must neither age a live lease nor rejuvenate a dead one. SQLite and a real PostgreSQL
server."""

from __future__ import annotations

import json
import re

from sqlalchemy import update

from tests.helpers.clock import skew_clock
from tests.helpers.cli import call_cli
from harness.plan.suite import load_suite
from harness.store import lease, queue
from harness.store.db import Store
from harness.store.schema import RunRecord


def test_status_ages_a_lease_on_the_database_clock(tmp_path, db_url, monkeypatch):
    """A cell claimed and last heard of ten minutes ago (a live lease at a one-hour timeout): `harness status` on a
    machine whose clock is two hours ahead said "since 2h10m ago, last heartbeat 2h10m ago" (running_s /
    heartbeat_age_s 7800) for a lease the same report counts as live (its staleness is the SQL rule's, on the
    database's clock), and on one two hours behind "0s ago" (0). Both: 10m."""
    path = tmp_path / "c.yaml"
    path.write_text("name: c\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n")
    cells = load_suite(str(path)).cells(num_processes=1)
    store = Store(db_url)
    store.enqueue(cells)
    claim = store.claim_next("c", [c.key for c in cells], lease.current_worker(), lease_timeout_s=3600)
    with store.engine.begin() as conn:   # claimed and last heard of ten minutes ago, on the database's clock
        conn.execute(update(RunRecord).where(RunRecord.id == claim.id).values(
            started_at=queue.db_now(-600), heartbeat_at=queue.db_now(-600)))
    store.engine.dispose()
    for hours in (2, -2):
        skew_clock(monkeypatch, hours)
        proc = call_cli("status", path, "--db", db_url, "--json", "--lease-timeout-s", "3600")
        assert proc.returncode == 0, proc.stderr
        (held,) = json.loads(proc.stdout)["running"]
        assert 590 < held["running_s"] < 660 and 590 < held["heartbeat_age_s"] < 660, (hours, held)
        proc = call_cli("status", path, "--db", db_url, "--all", "--lease-timeout-s", "3600")
        assert proc.returncode == 0, proc.stderr
        (line,) = [line for line in proc.stdout.splitlines() if "last heartbeat" in line]
        # 10m00s-10m59s, the JSON's bound (a loaded machine's four commands take seconds): not 2h10m, not 0s
        assert re.search(r"since 10m\d\ds ago, last heartbeat 10m\d\ds ago", line), (hours, line)
