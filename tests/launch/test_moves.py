"""Moving an attempt's files into its cell folder (harness.launch.attempt): two real processes settling one cell at
once, and a kill inside a move, never lose the accepted files; a result kept while the store was unreachable goes
where `harness ingest` finds it. Real folders, real processes, a real SQLite store."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ROOT
from harness.launch import attempt
from harness.spec import layout
from harness.spec.status import Status
from harness.store.db import Store
from harness.store.ingest import record_paths
from harness.store.lease import current_worker

WORKER = "w/1/-/x"
FOLDERS = ("adapter", "stage0-mrpc", "mrpc")


def _accepted_attempt(cell: Path, tag: str) -> Path:
    """An attempt folder as a kill between the commit and the moves leaves it (record.json still inside)."""
    src = Path(layout.attempt_dir(str(cell), 1, WORKER))
    for name in FOLDERS:
        (src / name).mkdir(parents=True)
        (src / name / "f").write_text(tag)
    (src / layout.PREDICTIONS).write_text(tag)
    (src / layout.RECORD).write_text("{}")
    return src


def _assert_moved_in(cell: Path, tag: str) -> None:
    for name in FOLDERS:
        assert (cell / name / "f").read_text() == tag, f"{name} lost"
    assert (cell / layout.PREDICTIONS).read_text() == tag and (cell / layout.RECORD).is_file()
    assert not layout.attempt_dirs(str(cell))
    assert not [p.name for p in cell.iterdir() if p.name.startswith(layout.REPLACED_PREFIX)]


# One settler of a cell. "late" lists the attempt folder, then waits (up to 3 s) for the other settler to be done
# before it moves anything: the interleaving in which two unsynchronised settles lose a folder (the late one sets
# the accepted folder aside for a source already moved). "early" settles as soon as the late one has listed.
SETTLER = r"""
import os, sys, time
from pathlib import Path
from harness.launch import attempt
from harness.spec import layout

cell, role, marks = sys.argv[1], sys.argv[2], Path(sys.argv[3])

def wait_for(name, seconds):
    deadline = time.time() + seconds
    while not (marks / name).exists() and time.time() < deadline:
        time.sleep(0.01)

if role == "late":
    real = os.listdir
    def listdir(path="."):
        names = real(path)
        if layout.is_attempt_dir(str(path)):
            (marks / "listed").touch()
            wait_for("early_done", 3)
        return names
    os.listdir = listdir
else:
    wait_for("listed", 60)
print(attempt.settle(cell, 1, sys.argv[4]))
(marks / f"{role}_done").touch()
"""


def test_two_processes_settling_one_cell_at_once_keep_every_accepted_file(tmp_path):
    cell = tmp_path / "out" / "s" / "k"
    _accepted_attempt(cell, "accepted")
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", SETTLER, str(cell), role, str(marks), WORKER], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role in ("late", "early")]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert sorted(out.strip() for out, _ in outs) == ["False", "True"], outs   # one of them moved the files
    _assert_moved_in(cell, "accepted")


KILLED_MID_REPLACE = r"""
import os, sys
from harness.launch import attempt
real = os.replace
def replace(src, dst):
    if os.path.basename(src) == "adapter" and os.sep + ".attempt-" in src:
        os._exit(9)   # the older adapter/ is set aside; its replacement never comes in
    return real(src, dst)
os.replace = replace
attempt.settle(sys.argv[1], 1, sys.argv[2])
"""


def test_a_kill_inside_a_replace_leaves_nothing_set_aside(tmp_path):
    """A cell folder already holding an older adapter/ (an earlier attempt's); the settle is killed between setting
    it aside and moving the new one in. The next settle puts every accepted file in place and nothing set aside
    stays behind."""
    cell = tmp_path / "out" / "s" / "k"
    (cell / "adapter").mkdir(parents=True)
    (cell / "adapter" / "f").write_text("older")
    _accepted_attempt(cell, "accepted")
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_REPLACE, str(cell), WORKER], timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr[-3000:]
    assert not (cell / "adapter").exists()   # set aside, as the kill left it
    assert attempt.settle(str(cell), 1, WORKER)
    _assert_moved_in(cell, "accepted")


def _one_cell_store(tmp_path):
    from harness.plan.suite import parse_suite

    (cell,) = parse_suite("name: m\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n",
                          str(tmp_path / "m.yaml")).cells()
    out = tmp_path / "out"
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    store.enqueue([cell], "cmd", str(out))
    return store, cell, out, Path(layout.RunLayout(str(out)).cell_dir(cell.suite, cell.key))


def _finish(store, claim, cell_dir: Path, status: Status, fields: dict, files: dict[str, str]) -> bool:
    """An attempt as the runner finishes it: its files, the accepted finish writing record.json, the moves.
    Whether the files moved into the cell folder."""
    src = Path(attempt.folder(str(cell_dir), claim))
    src.mkdir(parents=True)
    for name, text in files.items():
        (src / name).write_text(text)
    store.finish(claim, status, fields, [], before_commit=attempt.record_writer(str(src)))
    return attempt.promote(str(src), str(cell_dir))


def _keep(store, claim, cell_dir: Path, status: Status, fields: dict, files: dict[str, str]) -> str:
    """An attempt whose finish found the store unreachable on every try (runner: attempt.keep_for_ingest)."""
    leased = store.get(claim.id).as_dict()
    src = Path(attempt.folder(str(cell_dir), claim))
    src.mkdir(parents=True)
    for name, text in files.items():
        (src / name).write_text(text)
    return attempt.keep_for_ingest(leased, claim, status, fields, [], str(src), str(cell_dir))


def test_a_kept_result_holding_nan_is_recorded_by_the_next_claim_not_trained_again(tmp_path):
    """A result kept while the store was unreachable, with a NaN metric (its record.json keeps Python's bare NaN):
    the next claim reads it as `harness ingest` does, which refused it, so the cell was trained again. It is
    recorded, the NaN as null, as a live finish stores it."""
    store, cell, out, cell_dir = _one_cell_store(tmp_path)
    a = store.claim_next(cell.suite, [cell.key], current_worker())
    _keep(store, a, cell_dir, Status.COMPLETED, {"score": 50.0, "metrics": {"accuracy": 50.0, "f1": float("nan")}},
          {layout.PREDICTIONS: "trained by A"})
    assert '"f1": NaN' in (cell_dir / layout.RECORD).read_text()
    b = _take_over(store, cell)
    row = attempt.record_kept(store, b, attempt.folder(str(cell_dir), b), str(cell_dir), print)
    assert row is not None and row.status == Status.COMPLETED and row.worker_id == b.worker_id
    assert (row.score, row.metrics) == (50.0, {"accuracy": 50.0, "f1": None})


def test_a_completed_outage_result_replaces_an_earlier_failure_where_ingest_finds_it(tmp_path):
    store, cell, out, cell_dir = _one_cell_store(tmp_path)
    first = store.claim_next(cell.suite, [cell.key], current_worker())
    assert _finish(store, first, cell_dir, Status.FAILED, {"error": "boom"}, {attempt.ERROR_LOG: "boom"})
    time.sleep(0.05)   # --retry-failed takes failures from before the worker started
    retry = store.claim_next(cell.suite, [cell.key], current_worker(), retry_failed=True)
    path = _keep(store, retry, cell_dir, Status.COMPLETED, {"score": 80.0}, {layout.PREDICTIONS: "retry"})
    assert path == str(cell_dir / layout.RECORD)
    assert record_paths([str(out)]) == [path]   # what `harness ingest results/` reads
    rec = json.loads(Path(path).read_text())
    assert rec[layout.INGEST_ONLY] and rec["status"] == Status.COMPLETED and rec["score"] == 80.0
    assert (cell_dir / layout.PREDICTIONS).read_text() == "retry" and not (cell_dir / attempt.ERROR_LOG).exists()
    time.sleep(0.05)
    assert store.ingest(rec, lease_timeout_s=0.01) == "updated"   # its lease is stale by then: no worker holds it
    row = store.get(retry.id)
    assert row.status == Status.COMPLETED and row.score == 80.0


def _take_over(store, cell) -> object:
    """Another worker claims the cell once its lease is stale (as after a lease timeout)."""
    time.sleep(0.05)
    claim = store.claim_next(cell.suite, [cell.key], current_worker(), lease_timeout_s=0.01)
    assert claim is not None and claim.previous_status == Status.RUNNING
    return claim


def test_a_failed_attempt_never_replaces_a_kept_result_and_the_next_claim_records_it(tmp_path):
    """A's finish found the store unreachable: its completed result is kept in the cell folder. B had taken the
    cell over before that (A's heartbeats failed too) and fails: its failure is accepted, but the kept result
    stays. C claims the cell (--retry-failed) and records the kept result under its own claim, files untouched."""
    store, cell, out, cell_dir = _one_cell_store(tmp_path)
    a = store.claim_next(cell.suite, [cell.key], current_worker())
    b = _take_over(store, cell)
    kept = _keep(store, a, cell_dir, Status.COMPLETED, {"score": 71.5, "train_time_s": 12.0},
                 {layout.PREDICTIONS: "trained by A"})
    assert kept == str(cell_dir / layout.RECORD)
    assert not _finish(store, b, cell_dir, Status.FAILED, {"error": "CUDA OOM"}, {attempt.ERROR_LOG: "OOM"})
    rec = json.loads((cell_dir / layout.RECORD).read_text())
    assert rec[layout.INGEST_ONLY] and rec["score"] == 71.5 and rec["claim"]["worker_id"] == a.worker_id
    assert (cell_dir / layout.PREDICTIONS).read_text() == "trained by A" and record_paths([str(out)]) == [kept]
    assert store.get(a.id).status == Status.FAILED

    time.sleep(0.05)
    c = store.claim_next(cell.suite, [cell.key], current_worker(), retry_failed=True)
    row = attempt.record_kept(store, c, attempt.folder(str(cell_dir), c), str(cell_dir), print)
    assert row is not None and row.status == Status.COMPLETED and row.score == 71.5 and row.train_time_s == 12.0
    assert (row.worker_id, row.attempts) == (c.worker_id, 3)   # the claim that recorded it
    assert row.started_at == dt.datetime.fromisoformat(rec["started_at"])   # when A's attempt started
    assert row.extra["trained_by"] == {"worker_id": a.worker_id, "attempt": 1, "finished_at": rec["finished_at"]}
    accepted = json.loads((cell_dir / layout.RECORD).read_text())
    assert not accepted.get(layout.INGEST_ONLY) and accepted["score"] == 71.5
    assert (accepted["worker_id"], accepted["attempts"]) == (row.worker_id, row.attempts)
    assert (cell_dir / layout.PREDICTIONS).read_text() == "trained by A"
    assert not (cell_dir / attempt.ERROR_LOG).exists() and not layout.attempt_dirs(str(cell_dir))
    assert store.ingest(accepted) == "same"


def test_moving_an_attempt_in_leaves_a_newer_claims_folder_alone(tmp_path):
    """Worker A's failure is committed, then A stalls before its moves (a paused process, a slow file system);
    meanwhile worker B claims the cell again (--retry-failed) and trains into its own attempt folder. A's moves
    then swept every other attempt folder of the cell, B's included, under B's running training: its files went.
    Only the folders of earlier attempts (lost or killed ones) are swept; B's stays, and B's own moves later
    replace A's failure and sweep A's leftovers."""
    store, cell, out, cell_dir = _one_cell_store(tmp_path)
    a = store.claim_next(cell.suite, [cell.key], current_worker())
    lost = Path(layout.attempt_dir(str(cell_dir), 0, "killed-before"))   # an earlier attempt's leftovers
    lost.mkdir(parents=True)
    a_dir = Path(attempt.folder(str(cell_dir), a))
    a_dir.mkdir(parents=True)
    (a_dir / attempt.ERROR_LOG).write_text("A failed")
    store.finish(a, Status.FAILED, {"error": "boom"}, [], before_commit=attempt.record_writer(str(a_dir)))

    time.sleep(0.05)   # B starts after A's failure: --retry-failed takes it
    b = store.claim_next(cell.suite, [cell.key], current_worker(), retry_failed=True)
    assert b is not None and b.attempt == 2
    b_dir = Path(attempt.folder(str(cell_dir), b))
    b_dir.mkdir(parents=True)
    (b_dir / "train_log.jsonl").write_text("step 1\n")   # B, training

    assert attempt.promote(str(a_dir), str(cell_dir))   # A wakes up and moves its failure in
    assert (cell_dir / attempt.ERROR_LOG).read_text() == "A failed"
    assert (b_dir / "train_log.jsonl").read_text() == "step 1\n", "B's running attempt lost its files"
    assert not lost.exists() and not a_dir.exists()

    (b_dir / layout.PREDICTIONS).write_text("trained by B")
    store.finish(b, Status.COMPLETED, {"score": 60.0}, [], before_commit=attempt.record_writer(str(b_dir)))
    assert attempt.promote(str(b_dir), str(cell_dir))
    assert (cell_dir / layout.PREDICTIONS).read_text() == "trained by B" and (cell_dir / "train_log.jsonl").is_file()
    assert not (cell_dir / attempt.ERROR_LOG).exists() and not layout.attempt_dirs(str(cell_dir))
    assert json.loads((cell_dir / layout.RECORD).read_text())["score"] == 60.0


def test_settling_a_clean_recorded_cell_lists_its_folder_once(tmp_path, monkeypatch):
    """Every worker start settles every recorded cell of the suite (summary._settle): on a 10,000-cell grid on a
    network file system each metadata call counts, thousands of times over in a Slurm array. A cell whose moves
    were done (no attempt folder left) is listed once; its tree is not walked for checkpoints, since the
    finishing worker removes them before its moves (the walk made every start read every cell's whole tree)."""
    cell = tmp_path / "cell"
    for name in ("adapter", "stage0-mrpc/adapter"):
        (cell / name).mkdir(parents=True)
    (cell / layout.RECORD).write_text("{}")
    walked, listed = [], []
    real_walk, real_listdir = os.walk, os.listdir
    monkeypatch.setattr(os, "walk", lambda *a, **k: walked.append(a) or real_walk(*a, **k))
    monkeypatch.setattr(os, "listdir", lambda *a, **k: listed.append(a) or real_listdir(*a, **k))
    for completed in (True, False):
        assert not attempt.settle(str(cell), 1, WORKER, completed=completed)
    assert walked == [] and len(listed) == 2, (walked, listed)
    assert not (cell / layout.CELL_LOCK).exists()


def test_a_checkpoint_that_cannot_be_removed_is_said_not_a_traceback(tmp_path, monkeypatch, capsys):
    """A recorded cell's leftover checkpoint that the file system refuses to remove (a read-only mount, NFS's
    stale handle): removing it is advice (the result is recorded), so a worker says it and goes on; a traceback
    here ended every worker start of the suite (summary._settle) or a worker right after its commit."""
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / layout.CHECKPOINT).write_bytes(b"x")

    def refused(path, *a, **k):
        raise OSError(30, "Read-only file system", path)

    monkeypatch.setattr(os, "remove", refused)
    attempt.remove_checkpoints(str(cell))
    assert "could not be removed (Read-only file system)" in capsys.readouterr().err
    assert (cell / layout.CHECKPOINT).exists()


def test_a_kill_after_a_failures_commit_keeps_the_checkpoint_only_for_a_broken_group(tmp_path):
    """A failure committed, then a kill before the checkpoint's removal (its attempt folder left): the next worker's
    settle kept every failed cell's checkpoint, since a broken group's retry resumes it, so a `--retry-failed` of
    a training that raised (a NaN loss, an out-of-memory) resumed the failed training's state. The row's error
    tells them apart (broken_group.recorded): only a broken group's failure keeps it."""
    from harness.launch import summary
    from harness.plan.suite import parse_suite

    for error, kept in (("GroupBroken: another rank's process ended (or lost its connection): ...\nTraceback", True),
                        ("RuntimeError: the loss is nan\nTraceback", False)):
        store, cell, out, cell_dir = _one_cell_store(tmp_path / str(kept))
        claim = store.claim_next(cell.suite, [cell.key], current_worker())
        cell_dir.mkdir(parents=True)
        (cell_dir / layout.CHECKPOINT).write_bytes(b"an earlier stop's")
        src = Path(attempt.folder(str(cell_dir), claim))
        src.mkdir(parents=True)
        store.finish(claim, Status.FAILED, {"error": error}, [], before_commit=attempt.record_writer(str(src)))
        suite = parse_suite("name: m\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", str(tmp_path / "m.yaml"))
        summary.queue_summary(store, suite, {cell.key}, str(out))   # the next worker's start
        assert json.loads((cell_dir / layout.RECORD).read_text())["error"] == error
        assert (cell_dir / layout.CHECKPOINT).exists() == kept, error


def test_a_stale_read_of_a_settled_failure_leaves_a_retrys_checkpoint(tmp_path):
    """A worker starting reads the suite's rows, then settles each recorded cell; meanwhile a `--retry-failed` worker
    claimed a failure of it (its folder: the next attempt's) and, stopped by a signal, wrote the cell's checkpoint.
    The settle of the failure, read before that claim and moved in long ago, removed that checkpoint (every failed
    cell's, since 36865dd, where any attempt folder was there): the retry's resume lost, or its checkpoint's write cut
    short. A failure's checkpoint goes only where its own attempt's record.json is still to move (the kill after its
    commit that 36865dd is for)."""
    import time as _time

    from harness.launch import summary
    from harness.plan.suite import parse_suite

    store, cell, out, cell_dir = _one_cell_store(tmp_path)
    claim = store.claim_next(cell.suite, [cell.key], current_worker())
    assert _finish(store, claim, cell_dir, Status.FAILED, {"error": "RuntimeError: the loss is nan\nTraceback"}, {})
    suite = parse_suite("name: m\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", str(tmp_path / "m.yaml"))
    rows = summary._rows(store, suite, {cell.key})   # a worker's start: the failure, read
    _time.sleep(0.05)
    retry = store.claim_next(cell.suite, [cell.key], current_worker(), retry_failed=True)
    assert retry is not None and retry.attempt == 2
    Path(attempt.folder(str(cell_dir), retry)).mkdir()   # the retry's files go here
    (cell_dir / layout.CHECKPOINT).write_bytes(b"the retry's stop")
    summary._settle(rows, suite, str(out))   # that worker's settle, of the row as it read it
    assert (cell_dir / layout.CHECKPOINT).read_bytes() == b"the retry's stop"
    assert Path(attempt.folder(str(cell_dir), retry)).is_dir()


def test_a_retry_claim_of_a_failure_drops_the_failed_trainings_checkpoint(tmp_path):
    """A failure whose checkpoint no settle removes (its record moved in, no attempt folder left: `harness ingest`
    recorded a failure kept while the store was unreachable; or the retrying worker read the rows before the
    failure's commit and its worker was killed before the removal): a `--retry-failed` claim resumed the failed
    training. The claim carries the failure's first line, and the runner removes the checkpoint under the new lease
    before any rank reads it, except for a broken group's failure (its retry resumes the stop's checkpoint)."""
    from harness.launch import runner

    for error, kept in (("GroupBroken: another rank's process ended (or lost its connection): ...\nTraceback", True),
                        ("RuntimeError: the loss is nan\nTraceback", False)):
        store, cell, out, cell_dir = _one_cell_store(tmp_path / str(kept))
        claim = store.claim_next(cell.suite, [cell.key], current_worker())
        store.finish(claim, Status.FAILED, {"error": error})
        cell_dir.mkdir(parents=True)
        (cell_dir / layout.CHECKPOINT).write_bytes(b"an earlier stop's")
        time.sleep(0.05)   # a failure from before this worker's start is retried
        retry = store.claim_next(cell.suite, [cell.key], current_worker(), retry_failed=True)
        assert retry.previous_status == Status.FAILED and retry.previous_error == error.splitlines()[0]
        runner._drop_failed_training(retry, str(out))
        assert (cell_dir / layout.CHECKPOINT).exists() == kept, error
