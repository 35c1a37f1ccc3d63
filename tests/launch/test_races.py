"""Interleavings of two workers on one store, each forced at the exact step where it matters: a real worker process
(the `harness run` CLI, with one store call wrapped to let the other worker act right there), a real SQLite file
and a real PostgreSQL server."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

from tests.helpers import ROOT, suite_yaml, write_suite
from harness.plan.suite import load_suite
from harness.spec.status import Status
from harness.store.db import Store
from harness.store.lease import Worker

# A worker whose first claim that finds nothing is followed at once by the other worker giving its cell back
# (a stop signal: Store.release), before this worker decides whether anything is left to wait for.
RELEASED_AFTER_AN_EMPTY_CLAIM = """
import pickle, sys
from harness.store.db import Store
other = [pickle.loads(bytes.fromhex(sys.argv.pop(1)))]
real = Store.claim_next
def claim_next(self, *args, **kwargs):
    got = real(self, *args, **kwargs)
    if got is None and other:
        assert self.release(other.pop())   # the other worker's own transaction, between this one's two reads
        print("released", file=sys.stderr, flush=True)
    return got
Store.claim_next = claim_next
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_cell_given_back_right_after_an_empty_claim_is_trained_not_left_queued(tmp_path, tiny_bert, small_glue,
                                                                                  db_url):
    """The only cell is held by another worker (another host, a live lease): this worker's claim finds nothing.
    Right then the other worker is stopped and gives the cell back (pending). The worker must not conclude that
    nothing is left (it read "no running cell" after the release): it waits, claims the cell and trains it.
    Before: it ended 0 ("ran 0 cell(s)") with the cell pending, until someone ran the suite again (a requeued
    Slurm task, hours later on a busy cluster)."""
    suite_path = write_suite(tmp_path / "r.yaml", suite_yaml(tiny_bert, "r", "[full]", "[rte]", "{max_steps: 2}"))
    cells = load_suite(str(suite_path)).cells(num_processes=1)
    store = Store(db_url)
    store.enqueue(cells)
    other = store.claim_next("r", [c.key for c in cells], Worker("elsewhere/7/-/ab", "elsewhere", 7),
                             lease_timeout_s=3600)
    assert other is not None
    store.engine.dispose()
    proc = subprocess.run(
        [sys.executable, "-c", RELEASED_AFTER_AN_EMPTY_CLAIM, pickle.dumps(other).hex(), "run", str(suite_path),
         "--db", db_url, "--output-dir", str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress",
         "--heartbeat-s", "0.5", "--lease-timeout-s", "3600"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "released" in proc.stderr, proc.stderr[-3000:]
    (row,) = [r for r in Store(db_url).records("r") if r.parent_id is None]
    assert (row.status, row.attempts) == (Status.COMPLETED, 2), proc.stderr[-3000:]
    assert row.worker_id != other.worker_id
    assert "this worker ran 1 cell(s): 1 completed" in proc.stderr
    # what it waited for, said truly: the cell was given back, not running on another worker (the line said that)
    assert ("no cell left to claim; waiting for the cells still unfinished (running on other workers, or given back "
            "since this worker's claim;") in proc.stderr, proc.stderr[-3000:]


def test_a_heartbeat_that_lands_after_the_finish_says_no_lost_lease(tmp_path, db_url, capsys):
    """The cell's training ends while its heartbeat is stuck in the store (a lock held past the thread's join, an
    outage); the worker records the result; then the beat reaches the store and finds the row completed. It said
    "lease lost ... its result will not be recorded" after the result was recorded, and set `lost`; the beat of an
    attempt that has ended says nothing: the finish decided (LeaseLost where the lease was lost)."""
    import threading

    from harness.launch.worker import Heartbeat

    suite_path = tmp_path / "h.yaml"
    suite_path.write_text("name: h\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n")
    cells = load_suite(str(suite_path)).cells(num_processes=1)
    store = Store(db_url)
    store.enqueue(cells)
    claim = store.claim_next("h", [cells[0].key], Worker("w/1/-/ab", "here", 1))
    stuck, beating = threading.Event(), threading.Event()
    real = store.heartbeat

    def heartbeat(c):
        beating.set()
        stuck.wait(60)   # the store answers only once the finish is in
        return real(c)

    store.heartbeat = heartbeat
    beat = Heartbeat(store, claim, 0.05)
    beat.__enter__()
    assert beating.wait(30)
    beat._stop.set()   # the attempt ended: __exit__, whose 10 s join gives up on the stuck beat (not waited out here)
    assert beat._thread.is_alive()
    store.finish(claim, Status.COMPLETED, {"score": 70.0})
    stuck.set()
    beat._thread.join(30)
    assert not beat._thread.is_alive()
    assert not beat.lost and "lease lost" not in capsys.readouterr().err
    assert store.get(claim.id).status == Status.COMPLETED
    store.engine.dispose()


def test_a_claim_on_a_store_locked_past_the_busy_timeout_is_retried_on_python_3_10(monkeypatch):
    """A claim that waited out SQLite's busy timeout ("database is locked") is retried like any outage; only an
    error of the query itself ("no such column") ends the worker at once. The two are told apart by SQLite's error
    code, which Python's sqlite3 puts on its exceptions from 3.11 on (sqlite_errorname); on 3.10, which the
    harness supports, the exception has no code, every SQLite error read as the query's, and a worker meeting a
    lock held past the busy timeout ended in a traceback instead of waiting. The error as 3.10 raises it: no code,
    SQLite's message."""
    import sqlite3

    import pytest
    from sqlalchemy.exc import OperationalError

    from harness.launch import attempt

    monkeypatch.setenv(attempt.FINISH_BACKOFF_ENV, "0.01")
    said = []

    def failing(message: str, times: int):
        left = [times]

        def call():
            if left[0]:
                left[0] -= 1
                raise OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError(message))
            return "claimed"
        return call

    locked = sqlite3.OperationalError("database is locked")
    assert getattr(locked, "sqlite_errorname", None) is None   # as Python 3.10 raises every SQLite error
    assert attempt.with_store_retry(failing("database is locked", 2), "claiming", said.append) == "claimed"
    assert len(said) == 2 and "try 2/5" in said[0]
    with pytest.raises(OperationalError, match="no such column"):
        attempt.with_store_retry(failing("no such column: runs.status", 1), "claiming", said.append)
    assert len(said) == 2


def test_asking_for_the_lease_at_a_stop_signal_waits_a_bounded_time_on_a_locked_store(tmp_path, monkeypatch, capsys):
    """A stop signal (Slurm's preemption: SIGKILL follows after KillWait, 30 s by default) makes the loop ask the
    store whether the lease is still this worker's before it checkpoints (Heartbeat.lost_now). The ask waited out
    the store's whole busy timeout (30 s by default; 10 s here) while another process held SQLite's write lock,
    eating the grace time the checkpoint needs. It waits at most LOST_NOW_WAIT_S; unanswered, it is as if the
    store were out of reach: the lease counts as held and the checkpoint is written."""
    import sqlite3
    import time

    from harness.launch import worker
    from harness.launch.worker import Heartbeat

    monkeypatch.setattr(worker, "LOST_NOW_WAIT_S", 1.0)
    suite_path = tmp_path / "h.yaml"
    suite_path.write_text("name: h\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n")
    cells = load_suite(str(suite_path)).cells(num_processes=1)
    db = tmp_path / "h.db"
    store = Store(f"sqlite:///{db}?timeout=10")
    store.enqueue(cells)
    claim = store.claim_next("h", [cells[0].key], Worker("w/1/-/ab", "here", 1))
    beat = Heartbeat(store, claim, 3600)   # no beat of its own during the test
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")   # another process's long write (an ingest of many records, say)
    try:
        t0 = time.monotonic()
        lost = beat.lost_now()
        waited = time.monotonic() - t0
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not lost and waited < 5, f"waited {waited:.1f} s for the store"
    assert "did not answer" in capsys.readouterr().err
    assert beat.lost_now() is False   # asked once: a later call does not wait again
    store.engine.dispose()
