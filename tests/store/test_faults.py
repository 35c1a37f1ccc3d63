"""The fault-injection matrix: a fault at each step of a cell's life, with two workers on one store (SQLite and a
real PostgreSQL server of the test's own), then a third worker that finishes whatever is left. Afterwards every
cell is completed exactly once, its files match its stored score (predictions re-scored), no attempt folder or
unaccepted record is left, and no secret (the store URL's password) appears in any file or row.

Faults: kill -9 right after a claim, mid-training, while the checkpoint is written (after a stop signal), before
the finish commits and after it commits (before the files move); SIGSTOP mid-training (the cell is taken over,
the frozen worker wakes to a lost lease); a store outage mid-training and during the finish; `harness ingest` of
the output folder racing the live workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, run_cli, suite_yaml, write_suite
from harness.plan.suite import load_suite
from harness.spec import layout
from harness.spec.status import Status
from harness.store.db import Store

SECRET = "s3cr3t-pw-7"
METHODS = "[full, {name: houlsby, size: 4, learning_rate: 1e-3}]"
TIMING = {"HARNESS_HEARTBEAT_S": "0.5", "HARNESS_LEASE_TIMEOUT_S": "3", "HARNESS_FINISH_BACKOFF_S": "0.5",
          "HARNESS_FINISH_TRIES": "8"}

# Runs `harness run` with one fault armed. FAULT names the point; it fires once (the marker file), in the first
# cell that reaches it; READY is touched when the point is reached for faults the test itself completes (outages).
INJECT = r"""
import os, signal, sys, time
from pathlib import Path

fault, fired, ready = os.environ["FAULT"], Path(os.environ["FIRED"]), Path(os.environ["READY"])

def once() -> bool:
    try:
        fd = os.open(fired, os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    os.close(fd)
    return True

from harness.train import preempt
real_requested, steps = preempt.requested, [0]

def requested():
    steps[0] += 1
    if steps[0] == 3 and fault in ("train", "stop", "outage_train", "checkpoint") and once():
        if fault == "train":
            os._exit(9)
        if fault == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)      # frozen here until the test sends SIGCONT
        if fault == "outage_train":
            ready.touch()
            time.sleep(4)                              # the store is down meanwhile; heartbeats fail
        if fault == "checkpoint":
            preempt._received.append(signal.SIGUSR1)   # a stop signal: the cell is checkpointed
    return real_requested()

preempt.requested = requested

if fault == "checkpoint":
    from harness import atomic
    real_write = atomic.write_file
    def write_file(path, write):
        if path.endswith("checkpoint.pt"):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write(atomic._temp_name(path))             # the checkpoint under its temporary name, never renamed
            os._exit(9)
        return real_write(path, write)
    atomic.write_file = write_file

from harness.store import queue
if fault == "claim":
    real_claim = queue.WorkQueue.claim_next
    def claim_next(self, *a, **kw):
        claim = real_claim(self, *a, **kw)
        if claim is not None and once():
            os._exit(9)
        return claim
    queue.WorkQueue.claim_next = claim_next

from harness.launch import attempt
if fault in ("before_commit", "outage_finish"):
    real_finish = attempt.finish_with_retry
    def finish_with_retry(store, claim, status, fields, children, before_commit, say, **kw):
        if fault == "outage_finish":
            if once():
                ready.touch()
                time.sleep(3)                          # the store goes down as the finish starts
            return real_finish(store, claim, status, fields, children, before_commit, say, **kw)
        def die(record, kids):
            before_commit(record, kids)
            if once():
                os._exit(9)
        return real_finish(store, claim, status, fields, children, die, say, **kw)
    attempt.finish_with_retry = finish_with_retry
if fault == "after_commit":
    real_promote = attempt.promote
    def promote(*a, **kw):
        if once():
            os._exit(9)
        return real_promote(*a, **kw)
    attempt.promote = promote

from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

FAULTS = ["claim", "train", "checkpoint", "before_commit", "after_commit", "stop", "outage_train",
          "outage_finish", "ingest_race"]


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """A PostgreSQL server of this module's own: the outage faults stop and start it."""
    from tests.helpers.postgres import own_server

    yield from own_server()


class Outage:
    """The store unavailable for a few seconds: PostgreSQL stopped and started; SQLite locked exclusively."""

    def __init__(self, backend: str, pg, path: Path | None):
        self.backend, self.pg, self.path = backend, pg, path

    def __enter__(self):
        if self.backend == "postgresql":
            self.pg.pause()
        else:
            import sqlite3

            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc):
        if self.backend == "postgresql":
            self.pg.resume()
        else:
            self.conn.execute("ROLLBACK")
            self.conn.close()


def _worker(tmp_path, suite, db, data, env, fault=None):
    cmd = ([sys.executable, "-c", INJECT] if fault else [sys.executable, "-m", "harness"]) + [
        "run", str(suite), "--db", db, "--output-dir", str(tmp_path / "out"), "--data-dir", str(data),
        "--no-progress"]
    return subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), **TIMING, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rescore(cell_dir: Path, task_name: str) -> float:
    from harness.spec.tasks import get_task
    from harness.tasks.kinds import kind_of

    task = get_task(task_name)
    arrays = np.load(cell_dir / layout.PREDICTIONS)
    (split,) = {k.rsplit("_", 1)[0] for k in arrays.files}
    return kind_of(task).sample_score(task, arrays[f"{split}_pred"], arrays[f"{split}_label"])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("fault", FAULTS)
def test_every_cell_completed_once_with_its_files_whatever_the_fault(tmp_path, tiny_bert, small_glue, pg, backend,
                                                                     fault):
    if backend == "postgresql":
        name = f"f_{fault}"
        db = pg.create_database(name).replace("postgres@", f"postgres:{SECRET}@")   # trust auth: not checked
    else:
        db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = write_suite(tmp_path / "f.yaml", suite_yaml(tiny_bert, "f", METHODS, "[rte]", "{max_steps: 12}",
                                                        "batch_size: 8, eval_steps: 4"))
    Store(db)   # the schema, before the workers race
    fired, ready = tmp_path / "fired", tmp_path / "ready"
    env = {"FIRED": str(fired), "READY": str(ready), "FAULT": fault}
    faulty = _worker(tmp_path, suite, db, small_glue, env, fault=None if fault == "ingest_race" else fault)
    other = _worker(tmp_path, suite, db, small_glue, env)
    workers, deadline = [faulty, other], time.time() + 600

    if fault.startswith("outage"):
        while not ready.exists():
            assert time.time() < deadline and faulty.poll() is None, faulty.communicate()[1][-3000:]
            time.sleep(0.05)
        with Outage(backend, pg, tmp_path / "h.db"):
            time.sleep(3)
    if fault == "ingest_race":   # an operator ingests the shared output folder while the workers run
        while any(w.poll() is None for w in workers) and time.time() < deadline:
            if (tmp_path / "out").exists():
                proc = run_cli("ingest", tmp_path / "out", "--db", db, cwd=tmp_path, env=TIMING)
                assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
            time.sleep(0.5)
    if fault == "stop":
        while not fired.exists() and time.time() < deadline:
            time.sleep(0.05)
        other.wait(timeout=600)          # it takes the frozen worker's cell over once the lease is stale
        faulty.send_signal(signal.SIGCONT)
    logs = [w.communicate(timeout=600)[1] for w in workers]
    # whoever is left, and a fresh worker for what the faults left (a killed cell is taken over at once)
    last = _worker(tmp_path, suite, db, small_glue, {})
    logs.append(last.communicate(timeout=600)[1])
    assert last.returncode == 0, logs[-1][-3000:]
    if fault not in ("ingest_race",):
        assert fired.exists() or fault.startswith("outage") or fault == "stop", "the fault never fired"

    store = Store(db)
    rows = store.records("f")
    cells = {c.key for c in load_suite(str(suite)).cells()}
    assert sorted(r.cell_key for r in rows) == sorted(cells), "one row per cell, nothing duplicated"
    out = tmp_path / "out"
    for row in rows:
        assert row.status == Status.COMPLETED, (row.cell_key, row.status, row.error)
        cell_dir = out / row.suite / row.cell_key
        rec = json.loads((cell_dir / layout.RECORD).read_text())
        assert (rec["score"], rec["worker_id"], rec["attempts"]) == (row.score, row.worker_id, row.attempts)
        assert not rec.get(layout.INGEST_ONLY)
        assert _rescore(cell_dir, row.task) == pytest.approx(row.score), "files match the stored score"
        assert not layout.attempt_dirs(str(cell_dir)), "no attempt folder left"
        assert not [p for p in cell_dir.iterdir() if layout.CHECKPOINT in p.name], "no checkpoint left"
    accepted = [p for p in out.rglob(layout.RECORD) if not layout.is_attempt_dir(str(p.relative_to(out)))]
    assert len(accepted) == len(cells)
    # no secret anywhere: files, rows, logs
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in json.dumps([r.as_dict() for r in rows], default=str)
    assert not any(SECRET in log for log in logs)


def test_a_result_holding_nan_is_stored_on_either_backend(db_url):
    """A NaN in a result's JSON (a correlation of constant predictions, a rate over no time): PostgreSQL refused
    the whole row at finish (`invalid input syntax for type json`), so the trained result was lost; SQLite stored
    `NaN`, which its JSON functions then refuse. Both now store strict JSON: the number as null."""
    from harness.plan.suite import parse_suite

    store = Store(db_url)
    (c,) = parse_suite("name: s\nmodels: [minilm]\ntasks: [stsb]\nmethods: [full]\n", "s.yaml").cells()
    claim = store.start(c, c.config(), "cmd", None)
    store.finish(claim, Status.COMPLETED, {"score": 0.0, "metrics": {"pearson": float("nan"), "spearmanr": 0.0},
                                            "extra": {"resume_s": float("inf"), "rates": [1.0, float("-inf")]}})
    (r,) = store.records("s")
    assert r.status == Status.COMPLETED and r.metrics == {"pearson": None, "spearmanr": 0.0}
    assert r.extra == {"resume_s": None, "rates": [1.0, None]}
    store.engine.dispose()
