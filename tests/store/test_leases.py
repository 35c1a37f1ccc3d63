"""Leases on the store's side (SQLite and a real PostgreSQL server): taking over the lease of a process that is
gone (exactly once, only on the same host identity) and lease times on the database's clock, whatever the
workers' clocks say."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT
from tests.helpers.clock import skew_clock
from harness.spec.status import Status
from harness.store import lease, queue
from harness.store.db import Store


def one_cell(tmp_path, name="l"):
    from harness.plan.suite import parse_suite

    return parse_suite(f"name: {name}\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n",
                       str(tmp_path / f"{name}.yaml")).cells()


HOLDER = """
import pickle, sys
import harness.store.lease as lease
if sys.argv[3] != "-":
    lease.host_identity = lambda: sys.argv[3]     # this process plays a machine with that host id
from harness.store.db import Store
cells = pickle.loads(bytes.fromhex(sys.argv[2]))
store = Store(sys.argv[1])
store.enqueue(cells)
claim = store.claim_next(cells[0].suite, [c.key for c in cells], lease.current_worker(), lease_timeout_s=3600)
print(claim.worker_id)
"""


def claimed_by_a_process_that_exits(db_url, cells, host_id="-") -> str:
    """A real worker process claims the cell and exits without a word (as after kill -9): its lease stays."""
    proc = subprocess.run([sys.executable, "-c", HOLDER, db_url, pickle.dumps(cells).hex(), host_id],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = Store(db_url).records(cells[0].suite)
    assert row.status == Status.RUNNING and row.worker_id == proc.stdout.strip()
    return row.worker_id


def test_two_workers_taking_over_one_gone_lease_claim_it_once(tmp_path, db_url, monkeypatch):
    """Worker a judges the dead worker's process gone; before a's claim, worker b (same host, another Store on the
    same database) takes the cell over. a's claim must then find nothing: the lease it judged is no longer there."""
    cells = one_cell(tmp_path)
    suite, keys = cells[0].suite, [c.key for c in cells]
    dead = claimed_by_a_process_that_exits(db_url, cells)
    store_a, store_b = Store(db_url), Store(db_url)
    a, b = lease.current_worker(), lease.current_worker()
    real_gone, claims = queue.process_gone, {}

    def judged_then_b_claims(pid):
        gone = real_gone(pid)
        if "b" not in claims:          # between a's judgement and a's claim, b claims (b's own judgement included)
            claims["b"] = None
            claims["b"] = store_b.claim_next(suite, keys, b, lease_timeout_s=3600)
        return gone

    monkeypatch.setattr(queue, "process_gone", judged_then_b_claims)
    claims["a"] = store_a.claim_next(suite, keys, a, lease_timeout_s=3600)
    assert claims["b"] is not None and claims["b"].previous_status == Status.RUNNING and claims["b"].attempt == 2
    assert claims["a"] is None                               # exactly one of the two took the dead worker's cell
    (row,) = Store(db_url).records(suite)
    assert row.worker_id == b.worker_id != dead and row.attempts == 2
    store_b.finish(claims["b"], Status.COMPLETED, {"score": 1.0})


def test_host_identity_is_boot_and_pid_namespace(monkeypatch):
    files = {"/proc/sys/kernel/random/boot_id": "boot-1", "/etc/machine-id": "machine-1"}
    monkeypatch.setattr(lease, "_first_line", files.get)
    monkeypatch.setattr(lease, "_pid_namespace", lambda: "4026531836")   # the root namespace: the same everywhere
    first = lease.host_identity()
    assert first and first == lease.host_identity() and "/" not in first
    files["/proc/sys/kernel/random/boot_id"] = "boot-2"                 # another machine (or a reboot)
    assert lease.host_identity() not in (None, first)
    files["/proc/sys/kernel/random/boot_id"] = "boot-1"
    monkeypatch.setattr(lease, "_pid_namespace", lambda: "4026532999")  # another container on that kernel
    assert lease.host_identity() not in (None, first)
    del files["/etc/machine-id"]
    assert lease.host_identity() is not None                           # the boot id alone still tells kernels apart
    del files["/proc/sys/kernel/random/boot_id"]
    assert lease.host_identity() is None                               # unknown: no "process gone" shortcut
    w = lease.current_worker()
    assert w.host_id is None and lease.host_id_of(w.worker_id) is None


def test_a_lease_of_another_host_with_the_same_hostname_waits_for_the_timeout(tmp_path, db_url, monkeypatch):
    """Two machines with one hostname (and one root PID namespace number): the holder runs on machine X; for a
    worker on machine Y its pid means nothing, so Y waits for the lease timeout. A worker on X sees it gone."""
    cells = one_cell(tmp_path)
    suite, keys = cells[0].suite, [c.key for c in cells]
    claimed_by_a_process_that_exits(db_url, cells, host_id="hmachineX")
    store = Store(db_url)
    monkeypatch.setattr(lease, "host_identity", lambda: "hmachineY", raising=False)
    on_y = lease.current_worker()
    assert on_y.host == store.records(suite)[0].host                    # the same hostname
    assert store.claim_next(suite, keys, on_y, lease_timeout_s=3600) is None
    assert store.stale_keys(suite, 3600) == set()
    monkeypatch.setattr(lease, "host_identity", lambda: "hmachineX", raising=False)
    on_x = lease.current_worker()
    claim = store.claim_next(suite, keys, on_x, lease_timeout_s=3600)
    assert claim is not None and claim.previous_status == Status.RUNNING and claim.attempt == 2


def test_a_worker_without_host_identity_never_judges_a_process_gone(tmp_path, db_url, monkeypatch):
    cells = one_cell(tmp_path)
    suite, keys = cells[0].suite, [c.key for c in cells]
    claimed_by_a_process_that_exits(db_url, cells, host_id="-")        # a real holder, real host identity
    monkeypatch.setattr(lease, "_first_line", lambda path: None)        # no /proc here: identity unknown
    worker = lease.current_worker()
    assert worker.host_id is None
    assert Store(db_url).claim_next(suite, keys, worker, lease_timeout_s=3600) is None


def test_a_skewed_worker_clock_neither_expires_a_live_lease_nor_keeps_a_dead_one(tmp_path, db_url, monkeypatch):
    cells = one_cell(tmp_path)
    suite, keys = cells[0].suite, [c.key for c in cells]
    store = Store(db_url)
    store.enqueue(cells)
    holder, other = lease.current_worker(), lease.current_worker()   # one pid: never "gone" for each other

    skew_clock(monkeypatch, -5)                   # the holder's clock is 5 hours behind
    claim = store.claim_next(suite, keys, holder, lease_timeout_s=300)
    assert claim is not None and store.heartbeat(claim)
    for hours in (0, 5, -5):                      # to a worker with any clock the fresh lease is live
        skew_clock(monkeypatch, hours)
        assert store.stale_keys(suite, 300) == set()
        assert store.claim_next(suite, keys, other, lease_timeout_s=300) is None

    skew_clock(monkeypatch, 5)                    # the holder's clock 5 hours ahead: one heartbeat, then it dies
    assert store.heartbeat(claim)
    skew_clock(monkeypatch, 0)
    assert store.stale_keys(suite, 300) == set()   # live just after it
    deadline = time.monotonic() + 30              # dead after the timeout (1 s), as `harness status` shows: not
    while store.stale_keys(suite, 1) != set(keys) and time.monotonic() < deadline:   # 5 hours on
        time.sleep(0.1)
    assert store.stale_keys(suite, 1) == set(keys)
    taken = store.claim_next(suite, keys, other, lease_timeout_s=1)
    assert taken is not None and taken.previous_status == Status.RUNNING
    assert not store.heartbeat(claim)                 # the holder's lease is gone
    row = store.get(taken.id)
    assert row.claimed_at == row.heartbeat_at and abs(row.heartbeat_at - lease.utcnow()) < dt.timedelta(minutes=1)


def test_rows_written_with_python_times_compare_right_with_the_database_clock(tmp_path, db_url):
    """Leases written before the database's clock was used (Python datetimes, microseconds) stay comparable."""
    from sqlalchemy import update

    from harness.store.schema import RunRecord as R

    cells = one_cell(tmp_path)
    suite, keys = cells[0].suite, [c.key for c in cells]
    store = Store(db_url)
    store.enqueue(cells)
    claim = store.claim_next(suite, keys, lease.current_worker(), lease_timeout_s=300)
    for age_s, stale in ((0, False), (290, False), (310, True), (7200, True)):
        with store.engine.begin() as conn:
            conn.execute(update(R).where(R.id == claim.id).values(
                heartbeat_at=lease.utcnow() - dt.timedelta(seconds=age_s, microseconds=123456)))
        assert store.stale_keys(suite, 300) == (set(keys) if stale else set()), age_s


def test_retry_failed_by_worker_age_not_its_clock(tmp_path, db_url, monkeypatch):
    """--retry-failed takes failures from before this worker started, never its own: on the database's clock,
    so a worker whose clock is behind still retries an old failure, and one ahead never retries its own."""
    cells = one_cell(tmp_path)
    suite, keys = cells[0].suite, [c.key for c in cells]
    store = Store(db_url)
    store.enqueue(cells)
    first = store.claim_next(suite, keys, lease.current_worker(), lease_timeout_s=300)
    store.finish(first, Status.FAILED, {"error": "boom"})
    time.sleep(0.05)
    skew_clock(monkeypatch, -5)
    behind = lease.current_worker()               # started after that failure, its clock 5 hours behind
    retry = store.claim_next(suite, keys, behind, retry_failed=True, lease_timeout_s=300)
    assert retry is not None and retry.previous_status == Status.FAILED
    store.finish(retry, Status.FAILED, {"error": "boom again"})
    assert store.claim_next(suite, keys, behind, retry_failed=True, lease_timeout_s=300) is None   # its own
    skew_clock(monkeypatch, 5)
    ahead = lease.current_worker()
    own = store.claim_next(suite, keys, ahead, retry_failed=True, lease_timeout_s=300)
    assert own is not None                        # the failure is older than this worker: retried
    store.finish(own, Status.FAILED, {"error": "and again"})
    assert store.claim_next(suite, keys, ahead, retry_failed=True, lease_timeout_s=300) is None


def test_a_store_error_after_the_claim_wrote_its_lease_leaves_the_cell_as_it_was(tmp_path, db_url):
    """The claim's UPDATE went through and the next statement of its transaction fails (the store errs): the whole
    claim is rolled back, so the cell is not left leased to a worker that never learns it holds it. (An error
    after the commit, an acknowledgement lost on the way or a later read of the worker, ends the worker: its
    lease is then one of a process that is gone, taken over at once on its host and after the timeout anywhere:
    test_two_workers_taking_over_one_gone_lease_claim_it_once, test_faults' `claim`.)"""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    cells = one_cell(tmp_path)
    store = Store(db_url)
    store.enqueue(cells)
    seen = []

    def fail_after_the_lease(conn, cursor, statement, params, context, executemany):
        seen.append(statement.split()[0].upper())
        if seen[-1] == "DELETE" and "UPDATE" in seen:   # the old attempt's child rows, after the lease is written
            raise OperationalError(statement, params, Exception("injected: disk I/O error"))

    event.listen(store.engine, "before_cursor_execute", fail_after_the_lease)
    with pytest.raises(OperationalError):
        store.claim_next(cells[0].suite, [cells[0].key], lease.current_worker())
    event.remove(store.engine, "before_cursor_execute", fail_after_the_lease)
    (row,) = Store(db_url).records(cells[0].suite)
    assert (row.status, row.attempts, row.worker_id, row.heartbeat_at) == (Status.PENDING, 0, None, None)
    claim = store.claim_next(cells[0].suite, [cells[0].key], lease.current_worker())
    assert claim is not None and claim.attempt == 1
    store.engine.dispose()


def _fails_once(store, cells, worker):
    claim = store.claim_next(cells[0].suite, [c.key for c in cells], worker, lease_timeout_s=300)
    store.finish(claim, Status.FAILED, {"error": "boom"})


def test_retry_failed_never_takes_the_workers_own_failure_after_a_wait(tmp_path, db_url):
    """A worker fails its cell at once; its next claim (--retry-failed) is held up for a second before it
    reads the rows (a paused process, a loaded machine): its own failure is not retried, while a failure from
    before it started still is, after the same wait. (The flaky form of this: test_retry_failed_by_worker_age_not_
    its_clock under a loaded suite.)"""
    from sqlalchemy import event

    old, own = one_cell(tmp_path, "old"), one_cell(tmp_path, "own")
    store = Store(db_url)
    store.enqueue(old + own)
    _fails_once(store, old, lease.current_worker())
    # the cutoff may come early by what passes between the claim's two clock readings (a GC pass, a descheduled
    # process): the failure from before the worker is well before it
    time.sleep(0.5)
    worker = lease.current_worker()
    _fails_once(store, own, worker)

    def pause(conn, cursor, statement, params, context, executemany):
        # once per claim, before its read of the rows (each SELECT paused: 3 s a claim, the same test)
        if statement.lstrip().upper().startswith("SELECT RUNS.ID, RUNS.CELL_KEY"):
            time.sleep(1.0)

    event.listen(store.engine, "before_cursor_execute", pause)
    try:
        assert store.claim_next(own[0].suite, [own[0].key], worker, retry_failed=True) is None
        retried = store.claim_next(old[0].suite, [old[0].key], worker, retry_failed=True)
    finally:
        event.remove(store.engine, "before_cursor_execute", pause)
    assert retried is not None and retried.previous_status == Status.FAILED
    store.engine.dispose()


def test_retry_failed_waiting_for_another_writers_lock_keeps_its_own_failure(tmp_path):
    """SQLite: another connection holds the write lock for a second while a worker that just failed its cell claims
    with --retry-failed; the claim waits for the lock (the busy timeout) and must still find nothing to retry."""
    import sqlite3
    import threading

    url = f"sqlite:///{tmp_path / 'store.db'}"
    cells = one_cell(tmp_path)
    store = Store(url)
    store.enqueue(cells)
    worker = lease.current_worker()
    _fails_once(store, cells, worker)
    locked, other = threading.Event(), sqlite3.connect(tmp_path / "store.db", check_same_thread=False)

    released = []

    def hold_the_lock():
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(1.0)
        released.append(time.monotonic())
        other.rollback()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    locked.wait(10)
    claim = store.claim_next(cells[0].suite, [cells[0].key], worker, retry_failed=True)
    claimed = time.monotonic()
    holder.join()
    other.close()
    # it did wait for the other writer: it ended after the lock was let go (not "took 0.9 s": this thread may
    # start its claim late on a loaded machine)
    assert released and claimed > released[0], (released, claimed)
    assert claim is None
    store.engine.dispose()
