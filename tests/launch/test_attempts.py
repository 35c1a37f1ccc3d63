"""An attempt's files are its own until the store accepts it: a worker that lost its lease stops and writes
nothing into the cell folder; a kill before the commit or between the commit and the moves leaves no record.json
that looks accepted; a store outage during finish is retried, and a lasting one leaves an ingestable record.
Real worker processes, a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, read_stderr_until, run_cli, suite_yaml, write_suite
from tests.helpers.slurm_cluster import SCONTROL_SHOWS_RUNNING
from tests.store.test_workers import _wait_for_claims, start_worker, trainings
from harness.spec import layout
from harness.spec.errors import EXIT_PREEMPTED, EXIT_STORE_UNREACHABLE
from harness.spec.status import Status
from harness.store.db import Store

HOULSBY = "[{name: houlsby, size: 4, learning_rate: 1e-3}]"


def _suite(tmp_path, model, budget="{max_steps: 6}"):
    return write_suite(tmp_path / "a.yaml", suite_yaml(model, "a", HOULSBY, "[rte]", budget))


def _cell_dir(tmp_path, row) -> Path:
    return tmp_path / "out" / row.suite / row.cell_key


def _accepted_records(root: Path) -> list[Path]:
    """record.json files outside attempt folders (what ingest, compare and ablate read)."""
    return [p for p in root.rglob(layout.RECORD) if not layout.is_attempt_dir(str(p.relative_to(root)))]


def _rescore(cell_dir: Path, row) -> float:
    from harness.spec.tasks import get_task
    from harness.tasks.kinds import kind_of

    task = get_task(row.task)
    arrays = np.load(cell_dir / layout.PREDICTIONS)
    (split,) = {k.rsplit("_", 1)[0] for k in arrays.files}
    return kind_of(task).sample_score(task, arrays[f"{split}_pred"], arrays[f"{split}_label"])


def _next_worker(tmp_path, suite, db, data) -> str:
    """A plain worker run on the suite after a kill (it settles what the kill left, trains what is left); its stderr."""
    again = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", data, "--no-progress",
                    cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    return again.stderr


def _assert_folder_is_the_row(cell_dir: Path, row) -> None:
    """The cell folder holds the accepted attempt's files, moved in whole: its record.json is the row's, no attempt
    folder is left, and the predictions score what the row says."""
    rec = json.loads((cell_dir / layout.RECORD).read_text())
    assert (rec["worker_id"], rec["attempts"], rec["score"]) == (row.worker_id, row.attempts, row.score)
    assert not layout.attempt_dirs(str(cell_dir)), "an attempt folder left in the cell's folder"
    assert _rescore(cell_dir, row) == pytest.approx(row.score)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_worker_that_lost_its_lease_stops_and_leaves_the_winners_files(tmp_path, tiny_bert, small_glue):
    """A is frozen (SIGSTOP) mid-cell, B takes the stale lease over and completes the cell; A wakes up, notices
    the lost lease at the next optimizer step, stops, and writes nothing into the cell folder."""
    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert, budget="{max_steps: 60}")   # B trains them all
    timing = ["--heartbeat-s", "0.5", "--lease-timeout-s", "3"]
    a = start_worker(tmp_path, suite, db, small_glue, *timing)
    lines_a = _wait_for_claims(a, 1)
    time.sleep(1.0)   # into its set-up / training
    a.send_signal(signal.SIGSTOP)
    try:
        b = start_worker(tmp_path, suite, db, small_glue, *timing)
        _, err_b = b.communicate(timeout=600)
        assert b.returncode == 0 and "taking over a stale lease" in err_b, err_b[-3000:]
        (row,) = Store(db).records("a")
        cell_dir = _cell_dir(tmp_path, row)
        before = _snapshot(cell_dir)
        assert (cell_dir / layout.RECORD).is_file() and (cell_dir / layout.ADAPTER).is_dir()
    finally:
        a.send_signal(signal.SIGCONT)
    _, err_a = a.communicate(timeout=600)
    err_a = lines_a + err_a
    assert a.returncode == 0, err_a[-3000:]
    assert "lease lost at step" in err_a, err_a[-3000:]
    stopped_at = int(err_a.split("lease lost at step ")[1].split("/")[0])
    assert stopped_at < 60
    assert _snapshot(cell_dir) == before, "the worker that lost its lease wrote into the cell folder"
    assert not layout.attempt_dirs(str(cell_dir)), "its attempt folder was removed"
    (row,) = Store(db).records("a")
    assert row.status == Status.COMPLETED and row.pid == b.pid and row.attempts == 2
    rec = json.loads((cell_dir / layout.RECORD).read_text())
    assert rec["worker_id"] == row.worker_id and rec["score"] == row.score
    assert rec["adapter_path"] == str(cell_dir / layout.ADAPTER)
    assert _rescore(cell_dir, row) == pytest.approx(row.score)


NO_BEATS = """
import os, sys, threading
from pathlib import Path
from sqlalchemy.exc import OperationalError
from harness.store.db import Store
real = Store.heartbeat
def heartbeat(self, claim):                  # the heartbeat thread's beats do not reach the store meanwhile
    if threading.current_thread().name.startswith("heartbeat-") and Path(os.environ["NO_BEATS"]).exists():
        raise OperationalError("UPDATE runs", {}, Exception("injected: no route to the store"))
    return real(self, claim)
Store.heartbeat = heartbeat
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_worker_signalled_after_losing_its_lease_writes_no_checkpoint(tmp_path, tiny_bert, small_glue):
    """A's heartbeats stop reaching the store mid-cell and A is frozen; B takes the stale lease over and trains
    the cell. A stop signal reaches A before any beat of its could tell it: A asks the store itself, finds the
    lease gone and stops without a checkpoint. Before, it wrote checkpoint.pt into the cell folder B trains in
    (what B's next resume, or a retry, reads; left in the folder of a completed cell)."""
    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert, budget="{max_steps: 3000}")
    no_beats = tmp_path / "no_beats"
    # A's own lease timeout is long: it never takes B's cell back while the test looks
    cmd = [sys.executable, "-c", NO_BEATS, "run", str(suite), "--db", db, "--output-dir", str(tmp_path / "out"),
           "--data-dir", str(small_glue), "--no-progress", "--heartbeat-s", "0.5", "--lease-timeout-s", "600"]
    a = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "NO_BEATS": str(no_beats)})
    b = None
    try:
        seen_a = _wait_for_claims(a, 1)
        time.sleep(1.0)   # into its training
        no_beats.touch()
        a.send_signal(signal.SIGSTOP)
        b = start_worker(tmp_path, suite, db, small_glue, "--heartbeat-s", "0.5", "--lease-timeout-s", "3")
        read_stderr_until(b, "taking over a stale lease")
        a.send_signal(signal.SIGUSR1)   # pending until A runs again
        a.send_signal(signal.SIGCONT)
        seen_a += read_stderr_until(a, "lease lost at step", "stopped by a signal")
        (row,) = Store(db).records("a")
        cell_dir = _cell_dir(tmp_path, row)
        assert b.poll() is None and row.pid == b.pid and row.status == Status.RUNNING   # B still trains it
        assert not (cell_dir / layout.CHECKPOINT).exists(), f"A checkpointed into B's cell folder: {seen_a[-300:]}"
        assert "lease lost at step" in seen_a, seen_a[-3000:]
        seen_a += a.communicate(timeout=120)[1]   # the signal stops A before any further claim
        assert a.returncode == EXIT_PREEMPTED and "stopped by a signal, checkpointed" not in seen_a, seen_a[-3000:]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()


KILLER = """
import os, sys
from harness.launch import attempt
if os.environ["KILL_AT"] == "before_commit":
    real = attempt.finish_with_retry
    def finish_with_retry(store, claim, status, fields, children, before_commit, say, **kw):
        def die(record, kids):
            before_commit(record, kids)      # record.json written ...
            os._exit(9)                      # ... and the process dies before the commit
        return real(store, claim, status, fields, children, die, say, **kw)
    attempt.finish_with_retry = finish_with_retry
elif os.environ["KILL_AT"] == "stop":           # a stop signal at the loop's second step: checkpointed, exit 3
    import signal
    from harness.train import preempt
    real, asked = preempt.requested, []
    def requested():
        asked.append(1)
        if len(asked) == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real()
    preempt.requested = requested
elif os.environ["KILL_AT"] == "in_moves":
    def discard(attempt_dir):
        os._exit(9)                          # record.json moved in last; killed before its folder is removed
    attempt.discard = discard
elif os.environ["KILL_AT"] == "after_moves":
    def remove_checkpoints(cell_dir):
        os._exit(9)                          # committed and moved into place; killed before the checkpoint goes
    attempt.remove_checkpoints = remove_checkpoints
else:
    def promote(*args, **kwargs):
        os._exit(9)                          # committed; killed before any file is moved into place
    attempt.promote = promote
if os.environ.get("FAIL_CELL"):              # the cell fails (after training: its files in the attempt folder)
    from harness.launch import runner
    real_train = runner.train_and_evaluate
    def train_and_evaluate(*args, **kwargs):
        real_train(*args, **kwargs)
        raise RuntimeError("injected: the cell fails")
    runner.train_and_evaluate = train_and_evaluate
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _run_killed(tmp_path, suite, db, data, kill_at, env=None):
    cmd = [sys.executable, "-c", KILLER, "run", str(suite), "--db", db, "--output-dir", str(tmp_path / "out"),
           "--data-dir", str(data), "--no-progress"]
    return subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT": kill_at,
                                                  **(env or {})},
                          capture_output=True, text=True, timeout=600)


def test_a_kill_between_a_failures_commit_and_its_moves_is_settled_by_the_next_worker(tmp_path, tiny_bert,
                                                                                       small_glue):
    """A worker killed between the commit of a failure and its moves: the next worker (without --retry-failed)
    settled only completed cells, so the failed cell's record.json and error.log stayed in the attempt folder for
    good: the cell folder held no record of the failure the store holds (`harness ingest` of the output folder
    into a fresh store lost the row; docs/cluster.md: "a kill between the commit and the renames: the next worker on
    the suite finishes them"). A failure's moves are finished as a completed cell's are."""
    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert)
    killed = _run_killed(tmp_path, suite, db, small_glue, "after_commit", env={"FAIL_CELL": "1"})
    assert killed.returncode == 9, killed.stderr[-3000:]
    (row,) = Store(db).records("a")
    cell_dir = _cell_dir(tmp_path, row)
    assert row.status == Status.FAILED and not (cell_dir / layout.RECORD).exists()
    assert "1 failed before" in _next_worker(tmp_path, suite, db, small_glue)
    assert not layout.attempt_dirs(str(cell_dir)), "the failure's files left in its attempt folder"
    rec = json.loads((cell_dir / layout.RECORD).read_text())
    assert (rec["status"], rec["worker_id"], rec["attempts"]) == ("failed", row.worker_id, row.attempts)
    assert "injected: the cell fails" in (cell_dir / "error.log").read_text()
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    ingested = run_cli("ingest", tmp_path / "out", "--db", fresh, cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    (copy,) = Store(fresh).records("a")
    assert (copy.status, copy.error, copy.attempts) == (row.status, row.error, row.attempts)


def test_a_kill_at_the_end_of_the_moves_leaves_no_attempt_folder_in_the_completed_cell(tmp_path, tiny_bert,
                                                                                      small_glue):
    """A worker killed after its record.json moved into the cell folder (the last move) and before its attempt
    folder was removed: the next worker's settle found no record.json to move and left the folder, empty, in the
    completed cell for good (the accepted finish's sweep of earlier attempts' folders, cut short the same way,
    left those too). It removes the attempt folders up to the accepted attempt's."""
    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert)
    killed = _run_killed(tmp_path, suite, db, small_glue, "in_moves")
    assert killed.returncode == 9, killed.stderr[-3000:]
    (row,) = Store(db).records("a")
    cell_dir = _cell_dir(tmp_path, row)
    assert row.status == Status.COMPLETED and (cell_dir / layout.RECORD).is_file()
    assert layout.attempt_dirs(str(cell_dir))
    _next_worker(tmp_path, suite, db, small_glue)
    _assert_folder_is_the_row(cell_dir, row)


@pytest.mark.parametrize("kill_at", ["before_commit", "after_commit"])
def test_kill_around_the_commit_leaves_no_record_that_looks_accepted(tmp_path, tiny_bert, small_glue, kill_at):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert)
    proc = _run_killed(tmp_path, suite, db, small_glue, kill_at)
    assert proc.returncode == 9, proc.stderr[-3000:]
    (row,) = Store(db).records("a")
    cell_dir = _cell_dir(tmp_path, row)
    assert not _accepted_records(tmp_path / "out"), "a record.json outside the attempt folder"
    assert not (cell_dir / layout.PREDICTIONS).exists() and not (cell_dir / layout.ADAPTER).exists()
    (kept,) = layout.attempt_dirs(str(cell_dir))
    assert (Path(kept) / layout.RECORD).is_file()
    if kill_at == "before_commit":
        assert row.status == Status.RUNNING and row.score is None
    else:
        assert row.status == Status.COMPLETED
    # the next worker: retrains the uncommitted cell, or finishes the moves of the committed one
    _next_worker(tmp_path, suite, db, small_glue)
    (row,) = Store(db).records("a")
    assert row.status == Status.COMPLETED and row.attempts == (2 if kill_at == "before_commit" else 1)
    assert _accepted_records(tmp_path / "out") == [cell_dir / layout.RECORD]
    _assert_folder_is_the_row(cell_dir, row)


def test_a_row_deleted_by_hand_and_run_again_leaves_no_attempt_folder_of_the_old_row(tmp_path, tiny_bert,
                                                                                     small_glue):
    """A cell's row deleted by hand (DELETE FROM runs) after two killed attempts, and the suite run again: the new
    row counts its claims from 1, and its accepted finish swept only the folders up to its own attempt, so the old
    row's attempt 2 stayed in the completed cell's folder for good (every later finish of the cell sweeps up to 1).
    A completed cell is never claimed again, so no later attempt can be training: its finish sweeps every other
    attempt folder. (The old folders are never moved in: settle moves only the row's own attempt and worker, and
    every worker id is new.)"""
    from sqlalchemy import text

    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert)
    for _ in range(2):
        assert _run_killed(tmp_path, suite, db, small_glue, "before_commit").returncode == 9
    (row,) = Store(db).records("a")
    cell_dir = _cell_dir(tmp_path, row)
    assert row.attempts == 2 and [layout.attempt_number(d) for d in layout.attempt_dirs(str(cell_dir))] == [1, 2]
    by_hand = Store(db)
    with by_hand.engine.begin() as conn:
        assert conn.execute(text("DELETE FROM runs WHERE suite = 'a'")).rowcount == 1
    by_hand.engine.dispose()
    _next_worker(tmp_path, suite, db, small_glue)
    (row,) = Store(db).records("a")
    assert row.status == Status.COMPLETED and row.attempts == 1
    _assert_folder_is_the_row(cell_dir, row)


@pytest.mark.parametrize("kill_at", ["after_commit", "after_moves"])
def test_a_kill_after_a_resumed_cells_commit_leaves_no_checkpoint_in_its_folder(tmp_path, tiny_bert, small_glue,
                                                                                 kill_at):
    """A cell stopped by a signal (its checkpoint in the cell folder) is resumed by the next worker, which is killed
    right after the store accepted its finish: before its files moved in, or before the checkpoint was deleted. The
    next worker finished the moves but left checkpoint.pt in the completed cell's folder for good (the runner
    deletes it only after its own moves; a completed cell is never claimed again). The next worker's settle now
    deletes it (a SIGKILL's window in bench/chaos_workers.py's runs); since 02cc532 the finishing worker deletes it
    before its moves, so a kill after them finds none to leave."""
    from harness.train import checkpoint

    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert)
    stopped = _run_killed(tmp_path, suite, db, small_glue, "stop")
    assert stopped.returncode == EXIT_PREEMPTED and "checkpointed" in stopped.stderr, stopped.stderr[-3000:]
    (row,) = Store(db).records("a")
    cell_dir = _cell_dir(tmp_path, row)
    assert checkpoint.held(str(cell_dir))
    killed = _run_killed(tmp_path, suite, db, small_glue, kill_at)
    assert killed.returncode == 9 and "resumed from its checkpoint" in killed.stderr, killed.stderr[-3000:]
    (row,) = Store(db).records("a")
    assert row.status == Status.COMPLETED and row.attempts == 2
    _next_worker(tmp_path, suite, db, small_glue)
    assert not checkpoint.paths_under(str(cell_dir)), "a checkpoint left in a completed cell's folder"
    _assert_folder_is_the_row(cell_dir, row)

def test_a_retry_of_a_failure_killed_before_its_checkpoint_went_starts_over(tmp_path, tiny_bert, small_glue):
    """A cell stopped by a signal (checkpointed), resumed, and failing (the training raised: not a broken group);
    its worker is killed after the failure's commit, before the checkpoint's removal. The next worker's settle kept
    it (failed cells keep theirs for a broken group's retry), so `--retry-failed` resumed the failed training's
    checkpoint instead of starting over. The row's error says it was no broken group: the checkpoint goes."""
    from harness.train import checkpoint

    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert)
    stopped = _run_killed(tmp_path, suite, db, small_glue, "stop")
    assert stopped.returncode == EXIT_PREEMPTED, stopped.stderr[-3000:]
    killed = _run_killed(tmp_path, suite, db, small_glue, "after_moves", env={"FAIL_CELL": "1"})
    assert killed.returncode == 9 and "resumed from its checkpoint" in killed.stderr, killed.stderr[-3000:]
    (row,) = Store(db).records("a")
    cell_dir = _cell_dir(tmp_path, row)
    assert row.status == Status.FAILED and checkpoint.held(str(cell_dir))
    retried = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", small_glue,
                      "--no-progress", "--retry-failed", cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "resumed from its checkpoint" not in retried.stderr, retried.stderr[-3000:]
    (row,) = Store(db).records("a")
    assert row.status == Status.COMPLETED and row.attempts == 3
    assert not checkpoint.paths_under(str(cell_dir))
    _assert_folder_is_the_row(cell_dir, row)


OUTAGE = """
import os, sys, time
from pathlib import Path
from harness.store.db import Store
real = Store.finish
calls = []
def finish(self, *args, **kwargs):
    if not calls:                            # the first finish: tell the test, wait until the server is down
        Path(os.environ["IN_FINISH"]).touch()
        while not Path(os.environ["SERVER_DOWN"]).exists():
            time.sleep(0.05)
    calls.append(1)
    return real(self, *args, **kwargs)
Store.finish = finish
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test's own (it is stopped and started again)."""
    from tests.helpers.postgres import own_server

    yield from own_server()


def _worker_through_an_outage(tmp_path, own_pg, script, suite, db, data, env, reached, down, lasting: bool,
                              timeout_s: float):
    """A worker (`script`: a harness entry point that touches `reached` where the outage is to begin, then waits
    there until `down` exists) run on the suite; PostgreSQL paused once `reached` exists, and resumed 1 s later
    (not `lasting`: the first two tries fail, 0.5 s apart at HARNESS_FINISH_BACKOFF_S=0.5) or after the worker
    ended. (process, its stderr)."""
    cmd = [sys.executable, "-c", script, "run", str(suite), "--db", db, "--output-dir", str(tmp_path / "out"),
           "--data-dir", str(data), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout_s
    while not reached.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    own_pg.pause()
    down.touch()
    if not lasting:
        time.sleep(1.0)
        own_pg.resume()
    _, err = proc.communicate(timeout=timeout_s)
    if lasting:
        own_pg.resume()
    return proc, err


@pytest.mark.parametrize("lasting", [False, True])
def test_store_outage_during_finish(tmp_path, tiny_bert, small_glue, own_pg, lasting):
    db = own_pg.create_database("outage")
    suite = _suite(tmp_path, tiny_bert)
    Store(db)   # the schema
    in_finish, down = tmp_path / "in_finish", tmp_path / "down"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IN_FINISH": str(in_finish), "SERVER_DOWN": str(down),
           "HARNESS_FINISH_TRIES": "3" if lasting else "6", "HARNESS_FINISH_BACKOFF_S": "0.5",
           # a short lease: the unrecorded cell's lease is stale by the time it is ingested
           "HARNESS_HEARTBEAT_S": "0.5", "HARNESS_LEASE_TIMEOUT_S": "2"}
    proc, err = _worker_through_an_outage(tmp_path, own_pg, OUTAGE, suite, db, small_glue, env, in_finish, down,
                                          lasting, 600)
    assert "recording failed" in err, err[-3000:]
    out = tmp_path / "out"
    if not lasting:
        assert proc.returncode == 0, err[-3000:]
        (row,) = Store(db).records("a")
        assert row.status == Status.COMPLETED
        cell_dir = _cell_dir(tmp_path, row)
        rec = json.loads((cell_dir / layout.RECORD).read_text())
        assert rec["score"] == row.score and not rec.get(layout.INGEST_ONLY)
        assert _rescore(cell_dir, row) == pytest.approx(row.score)
        return
    assert proc.returncode == EXIT_STORE_UNREACHABLE, err[-3000:]
    assert "harness ingest" in err
    (row,) = Store(db).records("a")
    assert row.status == Status.RUNNING      # never accepted
    (path,) = _accepted_records(out)
    rec = json.loads(path.read_text())
    assert rec[layout.INGEST_ONLY] is True and rec["claim"]["worker_id"] == row.worker_id
    assert rec["status"] == Status.COMPLETED and rec["cell_key"] == row.cell_key and rec["score"] is not None
    assert (path.parent / layout.PREDICTIONS).is_file() and (path.parent / layout.ADAPTER).is_dir()
    assert _rescore(path.parent, row) == pytest.approx(rec["score"])
    store, deadline = Store(db), time.time() + 60   # until the lease is stale (the heartbeats stopped with the server)
    while row.cell_key not in store.stale_keys("a", 2) and time.time() < deadline:
        time.sleep(0.1)
    loaded = run_cli("ingest", out, "--db", db, cwd=tmp_path, env={"HARNESS_LEASE_TIMEOUT_S": "2"})
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    (row,) = Store(db).records("a")
    assert row.status == Status.COMPLETED and row.score == rec["score"]


FULL_DISK = """
import errno, os, sys
from pathlib import Path
from harness.launch import attempt
real = attempt.record_writer
def record_writer(attempt_dir):
    write = real(attempt_dir)
    def full(record, kids):                  # record.json cannot be written while the test keeps the disk full
        if Path(os.environ["DISK_FULL"]).exists():
            Path(os.environ["FAILING"]).touch()
            raise OSError(errno.ENOSPC, "No space left on device", attempt_dir)
        return write(record, kids)
    return full
attempt.record_writer = record_writer
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


# The second worker of the finish-retry test: its start-up (the libraries every worker imports) while A trains, its
# first claim only once A's tries are failing. A claim any earlier found A's lease stale whenever A's heartbeats
# missed the test's 3 s lease timeout in training, on a loaded machine: B trained the cell too ([3] == [1], twice
# in a row with the full suite running beside), which is no failure of the finish's renewal under test.
CLAIMS_ONCE_FAILING = """
import os, sys, time
from pathlib import Path
import datasets, torch, transformers.models.auto   # noqa: F401
import harness.launch.runner   # noqa: F401
while not Path(os.environ["FAILING"]).exists():
    time.sleep(0.05)
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("tries, backoff, waits", [
    ("5", "4", [4, 8, 16, 32]),                        # the default's
    ("12", "4", [4, 8, 16, 32, 64, 128, 256] + [300] * 4),   # MAX_RETRY_WAIT_S
    ("2000", "0", [0] * 1999),
    ("3", "600", [600, 600]),                          # a first wait above the bound: that one, not doubled
])
def test_the_wait_between_two_tries_of_the_store_is_bounded(monkeypatch, tries, backoff, waits):
    """The wait doubled without end: HARNESS_FINISH_TRIES=30 waited 4 * 2**28 s (34 years) before its last try,
    and a backoff of 0 overflowed past 1,024 tries (float(4 * 2**1100): an OverflowError traceback, not "the store
    is unreachable")."""
    from harness.launch.attempt import StoreUnreachable, with_store_retry

    monkeypatch.setenv("HARNESS_FINISH_TRIES", tries)
    monkeypatch.setenv("HARNESS_FINISH_BACKOFF_S", backoff)
    slept, said = [], []
    monkeypatch.setattr(time, "sleep", slept.append)

    def down():
        raise OSError("the store is down")

    with pytest.raises(StoreUnreachable, match=f"claim failed {tries} times"):
        with_store_retry(down, "claim", said.append)
    assert slept == waits and len(said) == len(waits)


def test_a_finish_retried_past_the_lease_timeout_keeps_its_lease(tmp_path, tiny_bert, small_glue):
    """A trains the cell, then recording it fails (record.json cannot be written) for longer than the lease
    timeout and is retried. A renews its lease between the tries, so B, started meanwhile, waits instead of taking
    the trained cell over; A records it once the disk has room. Before, nothing renewed the lease after training:
    B took the cell over after the timeout and trained it again, and A's result was refused (attempt 2)."""
    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert)
    full, failing = tmp_path / "full", tmp_path / "failing"
    full.touch()
    timing = {"HARNESS_HEARTBEAT_S": "0.5", "HARNESS_LEASE_TIMEOUT_S": "3", "HARNESS_FINISH_TRIES": "12",
              "HARNESS_FINISH_BACKOFF_S": "0.1"}   # tries every 0.1 * 2^i s: well past the timeout in all
    cmd = [sys.executable, "-c", FULL_DISK, "run", str(suite), "--db", db, "--output-dir", str(tmp_path / "out"),
           "--data-dir", str(small_glue), "--no-progress"]
    a = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "DISK_FULL": str(full), "FAILING": str(failing),
                              **timing})
    seen_a = _wait_for_claims(a, 1)
    # B starts while A trains (A holds the cell), and claims once A's tries fail
    b = subprocess.Popen([sys.executable, "-c", CLAIMS_ONCE_FAILING, *cmd[3:]], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "FAILING": str(failing), **timing})
    deadline = time.time() + 600
    while not failing.exists():
        assert a.poll() is None and time.time() < deadline, seen_a + a.communicate()[1][-3000:]
        time.sleep(0.1)
    seen_b = read_stderr_until(b, "waiting for the cells still unfinished", "(attempt ")
    time.sleep(4)   # B keeps looking (every second) while A's tries fail, for longer than the lease timeout
    full.unlink()
    err_a = seen_a + a.communicate(timeout=600)[1]
    err_b = seen_b + b.communicate(timeout=600)[1]
    assert "recording failed" in err_a, err_a[-3000:]
    assert a.returncode == 0 and b.returncode == 0, (err_a[-3000:], err_b[-3000:])
    (row,) = Store(db).records("a")
    assert list(trainings([err_a, err_b]).values()) == [1], (err_a[-3000:], err_b[-3000:])   # trained once
    assert row.status == Status.COMPLETED and row.attempts == 1 and row.pid == a.pid
    cell_dir = _cell_dir(tmp_path, row)
    assert json.loads((cell_dir / layout.RECORD).read_text())["worker_id"] == row.worker_id
    assert _rescore(cell_dir, row) == pytest.approx(row.score)


UNREACHABLE = """
import sys
from harness.launch import attempt
def finish_with_retry(*args, **kwargs):   # every try of the finish failed with a store error
    raise attempt.StoreUnreachable("recording failed 5 times (last: OperationalError: injected)")
attempt.finish_with_retry = finish_with_retry
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_the_next_claim_records_a_result_kept_while_the_store_was_unreachable(tmp_path, tiny_bert, small_glue):
    """A worker trains the cell, finds the store unreachable on every try of its finish and exits 4, keeping the
    lease and its result (ingest_only) in the cell folder. The next worker takes the lease over (its process is
    gone) and records that result under its own claim: not trained again, the files untouched."""
    db = f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert)
    cmd = ["run", str(suite), "--db", db, "--output-dir", str(tmp_path / "out"), "--data-dir", str(small_glue),
           "--no-progress"]
    first = subprocess.run([sys.executable, "-c", UNREACHABLE, *cmd], cwd=tmp_path, timeout=600, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    assert first.returncode == EXIT_STORE_UNREACHABLE, first.stderr[-3000:]
    (row,) = Store(db).records("a")
    assert row.status == Status.RUNNING
    cell_dir = _cell_dir(tmp_path, row)
    kept = json.loads((cell_dir / layout.RECORD).read_text())
    assert kept[layout.INGEST_ONLY] and kept["status"] == Status.COMPLETED
    trained = _snapshot(cell_dir)

    again = run_cli(*cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "not trained again" in again.stderr and not trainings([again.stderr]), again.stderr[-3000:]
    (row,) = Store(db).records("a")
    assert row.status == Status.COMPLETED and row.score == kept["score"] and row.attempts == 2
    assert row.worker_id != kept["worker_id"]   # the claim that recorded it
    assert row.extra["trained_by"]["worker_id"] == kept["claim"]["worker_id"] == kept["worker_id"]
    assert row.train_time_s == kept["train_time_s"]
    rec = json.loads((cell_dir / layout.RECORD).read_text())
    assert not rec.get(layout.INGEST_ONLY) and (rec["worker_id"], rec["score"]) == (row.worker_id, row.score)
    after = _snapshot(cell_dir)
    for name in (layout.PREDICTIONS, layout.ADAPTER):
        assert after[name] == trained[name], f"{name} written again"
    assert not layout.attempt_dirs(str(cell_dir))
    assert _rescore(cell_dir, row) == pytest.approx(row.score)


PREEMPTED_IN_OUTAGE = """
import os, sys, time
from pathlib import Path
from harness.train import checkpoint
real = checkpoint.CellCheckpoint.save
def save(self, *args, **kwargs):   # the stop signal's checkpoint is written; then the store goes down
    real(self, *args, **kwargs)
    Path(os.environ["SAVED"]).touch()
    while not Path(os.environ["SERVER_DOWN"]).exists():
        time.sleep(0.05)
checkpoint.CellCheckpoint.save = save
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_store_outage_at_a_stop_signal_still_requeues_and_the_requeued_task_resumes(tmp_path, tiny_bert,
                                                                                        small_glue, own_pg):
    """Slurm's warning signal comes while the store is unreachable (a maintenance that takes both down): the
    worker checkpoints its cell but cannot give it back. It must still requeue its task (else the cell waits
    out the lease timeout, and with every array task stopped at once, nobody is left to take it); the
    requeued task, its lease's own next incarnation, takes the cell at once and resumes its checkpoint."""
    from harness.spec.errors import EXIT_PREEMPTED

    db = own_pg.create_database("stop_outage")
    suite = _suite(tmp_path, tiny_bert, budget="{max_steps: 40}")
    Store(db)   # the schema
    saved, down, asked = tmp_path / "saved", tmp_path / "down", tmp_path / "scontrol.args"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/bash\n{SCONTROL_SHOWS_RUNNING}echo "$@" >> {asked}\n')
    (fake_bin / "scontrol").chmod(0o755)
    slurm = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "HARNESS_SLURM_REQUEUE": "1",
             "HARNESS_LEASE_TIMEOUT_S": "3600", "SAVED": str(saved), "SERVER_DOWN": str(down)}
    cmd = [sys.executable, "-c", PREEMPTED_IN_OUTAGE, "run", str(suite), "--db", db, "--output-dir",
           str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), **slurm},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = _wait_for_claims(proc, 1)
    proc.send_signal(signal.SIGUSR2)
    deadline = time.time() + 300
    while not saved.exists():
        assert proc.poll() is None and time.time() < deadline, "".join(lines) + proc.communicate()[1][-3000:]
        time.sleep(0.1)
    own_pg.pause()
    down.touch()
    _, err = proc.communicate(timeout=300)
    own_pg.resume()
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert asked.read_text().split() == ["requeue", "4242"], err[-3000:]
    (row,) = Store(db).records("a")
    assert row.status == Status.RUNNING and row.slurm_job_id == "4242"   # the lease is kept, not given back
    assert (_cell_dir(tmp_path, row) / "checkpoint.pt").is_file()

    requeued = start_worker(tmp_path, suite, db, small_glue,
                            env={**slurm, "SLURM_RESTART_COUNT": "1", "HARNESS_SLURM_REQUEUE": "0"})
    _, err = requeued.communicate(timeout=600)
    assert requeued.returncode == 0, err[-3000:]
    assert "taking over a stale lease" in err and "resumed from its checkpoint at step 1/40" in err, err[-3000:]
    (row,) = Store(db).records("a")
    assert row.status == Status.COMPLETED and row.attempts == 2


def test_a_stop_signal_under_slurm_closes_the_store_before_its_requeue_ends_the_worker(tmp_path, tiny_bert,
                                                                                         small_glue):
    """`scontrol requeue` ends the job's processes at once (SIGKILL here, as the fake plays it). The worker
    requeued inside its loop, before the store was closed: the cell it had just given back, and the queue itself,
    were only in the -wal, and a copy of harness.db alone held no run. The requeue now comes after the close."""
    suite = _suite(tmp_path, tiny_bert, budget="{max_steps: 400}")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/bash\n{SCONTROL_SHOWS_RUNNING}kill -9 $PPID\n')
    (fake_bin / "scontrol").chmod(0o755)
    db = tmp_path / "h.db"
    w = start_worker(tmp_path, suite, f"sqlite:///{db}", small_glue,
                     env={"PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "77",
                          "HARNESS_SLURM_REQUEUE": "1"})
    _wait_for_claims(w, 1)
    w.send_signal(signal.SIGUSR2)
    _, err = w.communicate(timeout=300)
    assert w.returncode == -signal.SIGKILL and "scontrol requeue" in err, err[-3000:]   # the fake ended it
    assert not (tmp_path / "h.db-wal").exists()
    (tmp_path / "copy").mkdir()
    shutil.copy(db, tmp_path / "copy" / "h.db")   # the file alone
    (row,) = Store(f"sqlite:///{tmp_path / 'copy' / 'h.db'}").records("a")
    assert row.status == Status.PENDING and row.checkpoint_total_steps == 400, err[-3000:]


# harness run whose store fails to close (run_suite's engine.dispose), with a stop signal before its first claim
CLOSE_FAILS = """
import os, signal, sys
from harness.cli import main
from harness.launch import runner
from harness.train import preempt

class ClosingFails(runner.Store):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        def dispose(*args, **kwargs):
            raise OSError(5, "Input/output error")
        self.engine.dispose = dispose

runner.Store = ClosingFails
install = preempt.install
def install_and_stop():
    install()
    os.kill(os.getpid(), signal.SIGUSR2)
preempt.install = install_and_stop
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_stopped_worker_requeues_its_slurm_task_however_closing_the_store_ends(tmp_path, tiny_bert, small_glue):
    """The requeue comes after run_suite closes the store (2cc38b5); a close that raised (an I/O error as the
    -wal is written back) skipped it: the worker ended with a traceback, exit 1, and its task stayed out of the
    queue, its cells waiting for someone to submit the suite again. The close's error is now one warning line;
    the task is requeued, and the worker ends 3 as a stop signal makes it."""
    suite = _suite(tmp_path, tiny_bert)
    asked = tmp_path / "scontrol.args"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/bash\n{SCONTROL_SHOWS_RUNNING}echo "$@" >> {asked}\n')
    (fake_bin / "scontrol").chmod(0o755)
    cmd = [sys.executable, "-c", CLOSE_FAILS, "run", str(suite), "--db", f"sqlite:///{tmp_path / 'h.db'}",
           "--output-dir", str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{fake_bin}:{os.environ['PATH']}",
                               "SLURM_JOB_ID": "77", "HARNESS_SLURM_REQUEUE": "1"})
    assert asked.exists() and asked.read_text().split() == ["requeue", "77"], done.stderr[-3000:]
    assert done.returncode == EXIT_PREEMPTED and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "warning: closing the store" in done.stderr and "Input/output error" in done.stderr, done.stderr[-3000:]


NUL_FAILURE = """
import sys
from harness.launch import runner
def train_and_evaluate(*args, **kwargs):   # a failure whose message holds a NUL (text read from a broken file)
    raise ValueError("cannot parse the row 'premise\\x00hypothesis'")
runner.train_and_evaluate = train_and_evaluate
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_failure_whose_message_holds_a_nul_is_recorded_on_either_backend(tmp_path, tiny_bert, small_glue, db_url):
    """PostgreSQL's text cannot hold a NUL: the worker's finish failed on every try (`PostgreSQL text fields cannot
    contain NUL (0x00) bytes`, retried as a store outage), the cell stayed running, the worker stopped. The store
    keeps the text with each NUL replaced (values.store_text), on both backends the same, and the record.json
    beside it says the same, so ingesting it elsewhere stores the same value."""
    from harness.store.values import NUL_STORED_AS

    suite = _suite(tmp_path, tiny_bert)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_FINISH_TRIES": "2", "HARNESS_FINISH_BACKOFF_S": "0.1"}
    proc = subprocess.run([sys.executable, "-c", NUL_FAILURE, "run", str(suite), "--db", db_url, "--output-dir",
                           str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "recording failed" not in proc.stderr, proc.stderr[-3000:]   # 1: a cell failed
    (row,) = Store(db_url).records("a")
    first = f"ValueError: cannot parse the row 'premise{NUL_STORED_AS}hypothesis'"
    assert row.status == Status.FAILED and row.error.splitlines()[0] == first, row.error
    rec = json.loads((_cell_dir(tmp_path, row) / layout.RECORD).read_text())
    assert rec["error"] == row.error and not rec.get(layout.INGEST_ONLY)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    loaded = run_cli("ingest", tmp_path / "out", "--db", other)
    assert loaded.returncode == 0 and "1 added" in loaded.stdout, loaded.stdout + loaded.stderr
    assert Store(other).records("a")[0].error == row.error


def _polled_again(server, database: str, timeout: float = 120) -> None:
    """Waits until a connection to `database` on the restarted `server` is idle: the waiting worker's (it is the
    only client there), its poll answered."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True) as c:
        while not c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'idle'",
                            (database,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the worker never polled the restarted server"
            time.sleep(0.1)


@pytest.mark.parametrize("lasting", [False, True])
def test_a_waiting_worker_lives_through_a_database_restart(tmp_path, tiny_bert, small_glue, own_pg, lasting):
    """A worker with nothing left to claim polls the store while another worker's cell runs. PostgreSQL stopped
    for 2.5 s and started again: the poll that hit the outage (and the next one, on its pooled connection from
    before the restart) ended the worker with an OperationalError traceback, exit 1. Now it retries, waits on and
    ends with the suite (exit 0); a store that stays down ends it in one line, exit 4, holding no cell."""
    import dataclasses

    from harness.plan.suite import load_suite
    from harness.store.lease import current_worker

    db = own_pg.create_database("restart")
    suite = _suite(tmp_path, tiny_bert)
    store = Store(db)
    cells = load_suite(str(suite)).cells()
    store.enqueue(cells)
    other = dataclasses.replace(current_worker(), worker_id="elsewhere/1/-/x", host="elsewhere", pid=1, host_id=None)
    held = store.claim_next("a", [c.key for c in cells], other)   # a live lease of a worker on another host
    env = {"HARNESS_HEARTBEAT_S": "0.5", "HARNESS_LEASE_TIMEOUT_S": "120", "HARNESS_FINISH_BACKOFF_S": "0.5",
           "HARNESS_FINISH_TRIES": "2" if lasting else "5"}
    proc = start_worker(tmp_path, suite, db, small_glue, env=env)
    try:
        read_stderr_until(proc, "waiting for the cells still unfinished", timeout=120)
        own_pg.pause()
        seen = ""
        if not lasting:   # (a store that stays down: every try fails, the worker ends)
            seen = read_stderr_until(proc, done=lambda text: text.count("failed (OperationalError") >= 2, timeout=120)
            own_pg.resume()
            _polled_again(own_pg, "restart")   # and the worker waits on, the other worker's cell still running
            assert proc.poll() is None
            store.engine.dispose()   # this test's own pooled connections died with the server
            store.finish(held, "completed", {"score": 50.0})   # the other worker's cell ends: so does the suite
        err = seen + proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        if lasting:
            own_pg.resume()
    assert "Traceback" not in err and "failed (OperationalError" in err, err[-3000:]
    if lasting:
        assert proc.returncode == EXIT_STORE_UNREACHABLE, err[-3000:]
        assert "the store is unreachable: this worker stops" in err, err[-3000:]
        return
    assert proc.returncode == 0, err[-3000:]
    (row,) = Store(db).records("a")
    assert (row.status, row.worker_id, row.attempts) == (Status.COMPLETED, "elsewhere/1/-/x", 1)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_store_error_no_retry_mends_ends_a_waiting_worker_at_once(tmp_path, tiny_bert, small_glue, request,
                                                                     backend):
    """A waiting worker's poll that fails with an error of the query itself (here the runs table's column gone: a
    ProgrammingError, as a permission refused is) was retried like a restart and then said "the store is
    unreachable", exit 4, requeueing its Slurm task to fail the same way. Only errors of the connection are
    retried: this one ends the worker at once, as it did before the retry existed, naming the error. SQLite calls
    it an OperationalError, as it does a locked file: it was still retried there (its error code tells them
    apart), and the SQLite-only check for other hosts' leases after it ended the worker in a traceback."""
    import dataclasses

    import sqlalchemy as sa

    from harness.plan.suite import load_suite
    from harness.store.lease import current_worker

    db = request.getfixturevalue("own_pg").create_database("schema") if backend == "postgresql" else \
        f"sqlite:///{tmp_path / 'h.db'}"
    suite = _suite(tmp_path, tiny_bert)
    store = Store(db)
    cells = load_suite(str(suite)).cells()
    store.enqueue(cells)
    other = dataclasses.replace(current_worker(), worker_id="elsewhere/1/-/x", host="elsewhere", pid=1, host_id=None)
    store.claim_next("a", [c.key for c in cells], other)   # a live lease of a worker on another host: B waits
    env = {"HARNESS_HEARTBEAT_S": "0.5", "HARNESS_LEASE_TIMEOUT_S": "120", "HARNESS_FINISH_BACKOFF_S": "0.5",
           "HARNESS_FINISH_TRIES": "3"}
    proc = start_worker(tmp_path, suite, db, small_glue, env=env)
    try:
        read_stderr_until(proc, "waiting for the cells still unfinished", timeout=120)
        with store.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE runs RENAME COLUMN status TO status_moved"))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ("ProgrammingError" if backend == "postgresql" else "no such column") in err and "status" in err, \
        err[-3000:]
    assert "try 2/3" not in err and "the store is unreachable" not in err, err[-3000:]
    assert proc.returncode not in (0, EXIT_STORE_UNREACHABLE), err[-3000:]


AFTER_CLAIM = """
import os, sys, time
from pathlib import Path
from harness.store.db import Store
real = Store.claim_next
def claim_next(self, *args, **kwargs):       # the first claim: tell the test, wait until the server is down
    claim = real(self, *args, **kwargs)
    if claim is not None and not Path(os.environ["CLAIMED"]).exists():
        Path(os.environ["CLAIMED"]).touch()
        while not Path(os.environ["SERVER_DOWN"]).exists():
            time.sleep(0.05)
    return claim
Store.claim_next = claim_next
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("lasting", [False, True])
def test_a_store_outage_right_after_a_claim(tmp_path, tiny_bert, small_glue, own_pg, lasting):
    """PostgreSQL stopped right after a worker's claim committed: the row read back before training (the base of
    a record kept for ingest) was not retried, and the worker ended in an OperationalError traceback, exit 1,
    holding the lease until it went stale. Now it is retried as a claim is: a short outage trains the cell; a
    lasting one ends the worker in one line, exit 4, its lease kept for its requeued Slurm task."""
    db = own_pg.create_database("after_claim")
    suite = _suite(tmp_path, tiny_bert)
    Store(db)   # the schema
    claimed, down = tmp_path / "claimed", tmp_path / "down"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLAIMED": str(claimed), "SERVER_DOWN": str(down),
           "HARNESS_FINISH_TRIES": "2" if lasting else "6", "HARNESS_FINISH_BACKOFF_S": "0.5"}
    proc, err = _worker_through_an_outage(tmp_path, own_pg, AFTER_CLAIM, suite, db, small_glue, env, claimed, down,
                                          lasting, 300)
    assert "Traceback" not in err and "failed (OperationalError" in err, err[-3000:]
    (row,) = Store(db).records("a")
    if not lasting:
        assert proc.returncode == 0, err[-3000:]
        assert (row.status, row.attempts) == (Status.COMPLETED, 1)
        return
    assert proc.returncode == EXIT_STORE_UNREACHABLE, err[-3000:]
    assert "the store is unreachable" in err and "keeps its lease" in err, err[-3000:]
    assert (row.status, row.attempts) == (Status.RUNNING, 1)   # never trained, its lease kept


IN_ABLATION = """
import os, sys, time
from pathlib import Path
import harness.analysis.ablate as ablate_module
def ablate(rec, ctx, trust_remote_code=False):   # the store calls around it are under test, not the re-scoring
    Path(os.environ["ABLATING"]).touch()         # tell the test, wait until the server is down
    while not Path(os.environ["SERVER_DOWN"]).exists():
        time.sleep(0.05)
    return {"num_layers": 1, "baseline": rec.score, "spans": [[0, 0, rec.score - 1.0]]}
ablate_module.ablate = ablate
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("lasting", [False, True])
def test_a_store_outage_during_an_end_of_suite_ablation(tmp_path, tiny_bert, small_glue, own_pg, lasting):
    """PostgreSQL stopped while a worker ablated its suite's run: the ablation's store calls (its finish here) were
    not retried as a cell's are, and the worker ended in an OperationalError traceback. Now a short outage is
    retried and the ablation stored; a lasting one ends the worker in one line, exit 4."""
    db = own_pg.create_database("ablation")
    suite = write_suite(tmp_path / "a.yaml", suite_yaml(tiny_bert, "a", HOULSBY, "[rte]", "{max_steps: 6}")
                        + "ablate: [{method: houlsby}]\n")
    Store(db)   # the schema
    ablating, down = tmp_path / "ablating", tmp_path / "down"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ABLATING": str(ablating), "SERVER_DOWN": str(down),
           "HARNESS_FINISH_TRIES": "2" if lasting else "6", "HARNESS_FINISH_BACKOFF_S": "0.5"}
    proc, err = _worker_through_an_outage(tmp_path, own_pg, IN_ABLATION, suite, db, small_glue, env, ablating, down,
                                          lasting, 300)
    assert "Traceback" not in err and "failed (OperationalError" in err, err[-3000:]
    if not lasting:
        assert proc.returncode == 0, err[-3000:]
        assert len(Store(db).analyses("a", "adapter_ablation")) == 1
        return
    assert proc.returncode == EXIT_STORE_UNREACHABLE, err[-3000:]
    assert "the store is unreachable" in err and Store(db).analyses("a", "adapter_ablation") == [], err[-3000:]
