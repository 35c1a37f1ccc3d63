"""`harness run --workers N --threads-per-worker M`: N processes on one store, each cell trained exactly once, the
threads each worker trained with in its records, a stop signal to the parent reaching every worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy.exc import OperationalError

from harness.spec.errors import EXIT_PREEMPTED
from harness.store.db import Store
from tests.helpers.cli import assert_refused, call_cli, run_cli
from tests.helpers.files import listing, suite_yaml, write_suite
from tests.helpers.slurm_cluster import SCONTROL_SHOWS_RUNNING

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _suite(tmp_path, tiny_bert, name, budget="{max_steps: 6}"):
    return write_suite(tmp_path / f"{name}.yaml", suite_yaml(
        tiny_bert, name, "[full, bitfit]", "[rte, cola]", budget, "batch_size: 8, learning_rate: 1e-4"))


def test_two_one_thread_workers_train_every_cell_once(tmp_path, tiny_bert, small_glue):
    suite = _suite(tmp_path, tiny_bert, "w")
    db = f"sqlite:///{tmp_path / 'fresh' / 'h.db'}"   # a store that does not exist yet: created once, before both
    (tmp_path / "fresh").mkdir()
    proc = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", small_glue,
                   "--workers", "2", "--threads-per-worker", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 workers x 1 thread(s)" in proc.stderr
    rows = [r for r in Store(db).records("w") if r.parent_id is None]
    assert len(rows) == 4 and all(str(r.status) == "completed" and r.attempts == 1 for r in rows)
    assert len({r.worker_id for r in rows}) == 2, "both workers claimed cells"
    for r in rows:
        rec = json.loads((tmp_path / "out" / "w" / r.cell_key / "record.json").read_text())
        assert rec["num_threads"] == 1 and r.num_threads == 1
    # the thread warning counts the workers sharing the machine: one thread each of two is their share
    assert "thread(s) per process but" not in proc.stderr


def test_a_thread_count_the_user_chose_is_not_warned_about(tmp_path, tiny_bert, small_glue):
    """`harness run --threads-per-worker 1` on a machine with 2 or more cores: every worker start warned that torch
    used fewer threads than the cores and blamed `accelerate launch` for OMP_NUM_THREADS=1 (bench/chaos_workers.py's
    every worker). The user chose it: no warning. Without the option, under an OMP_NUM_THREADS=1 of accelerate's,
    it still warns."""
    from harness.store.env import physical_cores

    if physical_cores() < 2:
        pytest.skip("one core: one thread is the machine's share, never warned about")
    suite = write_suite(tmp_path / "t.yaml", suite_yaml(tiny_bert, "t", "[bitfit]", "[rte]", "{max_steps: 2}"))
    args = ("--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out", "--data-dir", small_glue,
            "--no-progress")
    # OMP_NUM_THREADS as `accelerate launch` sets it; no marker this test process may hold from an in-process run
    env = {"HARNESS_WORKERS": "1", "OMP_NUM_THREADS": "1", "HARNESS_THREADS_SET": ""}
    chosen = run_cli("run", suite, *args, "--threads-per-worker", "1", cwd=tmp_path, env=env)
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    assert "thread(s) per process but" not in chosen.stderr, chosen.stderr[-3000:]
    (tmp_path / "h.db").unlink()
    shutil.rmtree(tmp_path / "out")
    unchosen = run_cli("run", suite, *args, cwd=tmp_path, env=env)
    assert unchosen.returncode == 0, unchosen.stderr[-3000:]
    assert "torch uses 1 thread(s) per process but" in unchosen.stderr, unchosen.stderr[-3000:]


def test_bad_worker_counts_are_refused(tmp_path, tiny_bert, small_glue):
    suite = _suite(tmp_path, tiny_bert, "b")
    db = tmp_path / "h.db"
    args = ("--db", f"sqlite:///{db}", "--output-dir", tmp_path / "out", "--data-dir", small_glue)
    assert_refused(run_cli("run", suite, *args, "--workers", "0", cwd=tmp_path), "--workers")
    assert_refused(run_cli("run", suite, *args, "--threads-per-worker", "two", cwd=tmp_path), "--threads-per-worker")
    # a superscript two is a digit to str.isdigit, not to int: both were tracebacks. The variables are read by
    # the options' rule (harness.spec.variables.whole_number) and named as the options are
    for name, value, expect in (("HARNESS_WORKERS", "many", "not a whole number: 'many'"),
                                ("HARNESS_WORKERS", "0", "must be at least 1 (got 0)"),
                                ("HARNESS_WORKERS", "\u00b2", "not a whole number: '\u00b2'"),
                                ("WORLD_SIZE", "\u00b2", "not a whole number: '\u00b2'"),
                                ("WORLD_SIZE", "-1", "must be at least 0 (got -1)")):
        assert_refused(run_cli("run", suite, *args, cwd=tmp_path, env={name: value}), expect, where=f"${name}")
    assert not db.exists() and not (tmp_path / "out").exists()


def test_the_workers_help_says_the_default_a_cpu_run_takes(monkeypatch):
    """`harness run --help` said "else 1" beside DEFAULT_CPU_WORKERS, the default's one place (a change to it
    would have left the help saying 1): the help says that constant, which default_workers gives on a CPU with
    the cores for it (a 64-core one here: on a machine with fewer cores than the constant it gives its cores, as
    the help says, and the test is not this machine's)."""
    import torch

    from harness.launch import workers
    from harness.launch.workers import default_workers

    monkeypatch.delenv("HARNESS_WORKERS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(workers, "physical_cores", lambda: 64)
    r = call_cli("run", "--help")
    assert r.returncode == 0
    said = " ".join(r.stdout.split())
    assert f"else 1 with a GPU, {default_workers()} on a CPU (at most its physical cores)" in said, said


def test_harness_workers_is_read_as_the_workers_option_is(monkeypatch):
    """HARNESS_WORKERS had its own rule beside --workers': ' 2 ' (int() reads it, as argparse does for --workers)
    was refused, the flag taken."""
    from harness.cli.common import positive_int
    from harness.launch.workers import workers_asked

    monkeypatch.setenv("HARNESS_WORKERS", " 2 ")
    assert workers_asked() == positive_int(" 2 ") == 2


def test_more_workers_than_cells_are_refused(tmp_path, tiny_bert, small_glue):
    """Every worker asked for was spawned: 10**20 of them ran until the kernel killed processes for memory, the
    store created first. Now at most one per cell of the grid (4 here)."""
    suite = _suite(tmp_path, tiny_bert, "n")
    before = listing(tmp_path)
    r = call_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                 "--data-dir", small_glue, "--workers", "5")
    assert_refused(r, "--workers: 5 workers, but suite n has 4 cell(s)")
    assert listing(tmp_path) == before


def test_a_harness_workers_default_above_the_cells_is_lowered_to_them(tmp_path, tiny_bert, small_glue):
    """HARNESS_WORKERS is a default: a machine's, or, exported where `harness slurm` submits, every array task's.
    Above a suite's cells it was refused like --workers: a small suite refused on that machine, and an array
    `harness slurm` had accepted (its --workers within the cells) ended every task 2, nothing trained. It is now
    lowered to the cells (one here: the worker trains it in this process, no local workers started)."""
    suite = write_suite(tmp_path / "one.yaml", suite_yaml(tiny_bert, "one", "[bitfit]", "[rte]", "{max_steps: 2}"))
    db = f"sqlite:///{tmp_path / 'h.db'}"
    r = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", small_glue, cwd=tmp_path,
                env={"HARNESS_WORKERS": str(10 ** 20)})
    assert r.returncode == 0 and "workers x" not in r.stderr, r.stderr[-3000:]
    (row,) = Store(db).records("one")
    assert str(row.status) == "completed"


def test_more_threads_than_the_machine_has_cpus_are_refused(tmp_path, tiny_bert, small_glue):
    """99999999999999999999 threads reached torch.set_num_threads after the store was created: a ValueError
    traceback (exit 1) and results/harness.db left behind."""
    suite = _suite(tmp_path, tiny_bert, "t")
    before = listing(tmp_path)
    for threads in (str(10 ** 20), str((os.cpu_count() or 1) + 1)):
        assert_refused(call_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir",
                                tmp_path / "out", "--data-dir", small_glue, "--threads-per-worker", threads),
                       f"--threads-per-worker: {threads} threads, but this machine has {os.cpu_count()} CPU(s)")
    assert listing(tmp_path) == before


def _running(db: str, path) -> list:
    """The cells running now; none while the store is not there yet (not opened before the parent creates it).
    The SQLite file exists a moment before its tables do: a slow machine's first poll can fall in between."""
    if not path.exists():
        return []
    try:
        return [r for r in Store(db, create=False).records("s") if str(r.status) == "running"]
    except OperationalError:
        return []


def _stop_two_workers(tmp_path, tiny_bert, small_glue, env=None):
    """`harness run --workers 2` on a long suite, SIGUSR1 to the parent once both workers hold a cell: the
    parent's exit code, its stderr and the store's URL."""
    suite = _suite(tmp_path, tiny_bert, "s", budget="{max_steps: 3000}")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    hp = {"HARNESS_HEARTBEAT_S": "1"}
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--db", db, "--output-dir", str(tmp_path / "out"),
           "--data-dir", str(small_glue), "--workers", "2", "--threads-per-worker", "1"]
    w = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT, **hp, **(env or {})},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:   # both workers hold a cell
        time.sleep(0.2)
        running = _running(db, tmp_path / "h.db")
        if len(running) == 2:
            break
    assert len(running) == 2, w.stderr.read()[-3000:] if w.poll() is not None else "workers never both ran"
    # at once: a worker still setting its cell up stops at its first optimizer step, checkpointed there
    w.send_signal(signal.SIGUSR1)
    _, err = w.communicate(timeout=300)
    return w.returncode, err, db


def test_a_stop_signal_to_the_parent_stops_every_worker(tmp_path, tiny_bert, small_glue):
    code, err, db = _stop_two_workers(tmp_path, tiny_bert, small_glue)
    assert code == EXIT_PREEMPTED, err[-3000:]
    assert err.count("stopped by a signal, checkpointed") == 2, err[-3000:]   # each worker's cell
    rows = [r for r in Store(db).records("s") if r.parent_id is None]
    assert sorted(str(r.status) for r in rows) == ["pending"] * 4   # given back, none left running


def test_workers_in_one_slurm_task_requeue_it_once_after_every_checkpoint(tmp_path, tiny_bert, small_glue):
    """Several workers in one Slurm array task ($HARNESS_WORKERS reaches the task through sbatch's --export=ALL):
    each stopped worker ran `scontrol requeue` on the task, and the first one ends every process of the task
    (the others in the middle of their checkpoint: a real cluster's log showed the second worker's requeue
    refused, "Job is pending execution"). The parent requeues it, once, when every worker has checkpointed.
    scontrol here is a fake that records its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\n{SCONTROL_SHOWS_RUNNING}echo "$*" >> "$CALLS"\n')
    (bin_dir / "scontrol").chmod(0o755)
    calls = tmp_path / "calls"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls), "HARNESS_SLURM_REQUEUE": "1",
           "SLURM_JOB_ID": "78", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "0"}
    code, err, _ = _stop_two_workers(tmp_path, tiny_bert, small_glue, env)
    assert code == EXIT_PREEMPTED, err[-3000:]
    assert calls.read_text() == "requeue 77_0\n", err[-3000:]
    done = "stopped by a signal, checkpointed"
    assert err.count(done) == 2 and err.rindex(done) < err.index("requeueing Slurm job 77_0"), err[-3000:]


# the parent of `harness run --workers 2`, stopped by a signal of its own at a moment the test picks
STOPPED_PARENT = """
import multiprocessing.context, os, signal, sys

if os.environ["STOP_AT"] == "import":   # as `harness run` reads its input, before any worker is started
    class Signal:
        def find_spec(self, name, path=None, target=None):
            if name == "harness.plan.preflight":
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGTERM)
            return None

    sys.meta_path.insert(0, Signal())
else:   # once both workers are started: their interpreters are still starting
    start = multiprocessing.context.SpawnProcess.start

    def started(self):
        start(self)
        if self.name.endswith("-1"):
            os.kill(os.getpid(), signal.SIGTERM)

    multiprocessing.context.SpawnProcess.start = started
if os.environ["STOP_AT"] == "nested":   # and a second stop signal while the parent passes the first on
    import multiprocessing.synchronize as synchronize
    sent = []

    def is_set(self):   # Event.is_set, with the second signal's handler run inside its lock
        with self._cond:
            if not sent:
                sent.append(os.kill(os.getpid(), signal.SIGUSR1))
            if self._flag.acquire(False):
                self._flag.release()
                return True
            return False

    synchronize.Event.is_set = is_set
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _stopped_parent(tmp_path, tiny_bert, small_glue, stop_at: str, timeout: float = 300):
    suite = _suite(tmp_path, tiny_bert, "s", budget="{max_steps: 2}")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = subprocess.run([sys.executable, "-c", STOPPED_PARENT, "run", str(suite), "--db", db, "--output-dir",
                           str(tmp_path / "out"), "--data-dir", str(small_glue), "--workers", "2",
                           "--threads-per-worker", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": ROOT, "STOP_AT": stop_at})
    rows = [r for r in Store(db).records("s") if r.parent_id is None] if (tmp_path / "h.db").exists() else []
    return proc, rows


def test_a_stop_signal_before_the_workers_start_starts_none(tmp_path, tiny_bert, small_glue):
    """The parent takes stop signals from before its parser (harness.cli.main), but passed on only those that came
    once its workers ran: one before (as it read the suite, checked the data, opened the store: seconds) was said
    ("SIGTERM received: stopping") and then lost, both workers trained every cell and the run ended 0, its Slurm
    task not requeued. Now no worker starts: exit 3, as a lone worker stopped before its first claim."""
    proc, rows = _stopped_parent(tmp_path, tiny_bert, small_glue, "import")
    assert proc.returncode == EXIT_PREEMPTED, (proc.returncode, proc.stderr[-3000:])
    assert "no worker started" in proc.stderr, proc.stderr[-3000:]
    assert not [r for r in rows if r.attempts], [(r.cell_key, str(r.status)) for r in rows]


def test_a_stop_signal_as_the_workers_start_stops_them_as_a_stop(tmp_path, tiny_bert, small_glue):
    """A stop signal the parent passed on while a worker's interpreter was still starting (before _worker installs
    its handlers: the spawn bootstrap imports this module and what it imports) ended that worker by the signal's
    default action (-15): the parent ended 1, its Slurm task not requeued. The parent passes a signal only to a
    worker whose handlers are in and keeps it for one still starting, which reads it once they are: each claims
    nothing and ends 3, and so does the parent."""
    proc, rows = _stopped_parent(tmp_path, tiny_bert, small_glue, "started")
    assert proc.returncode == EXIT_PREEMPTED, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.count("SIGTERM received; no further cell claimed") == 2, proc.stderr[-3000:]   # each worker
    assert not [r for r in rows if r.attempts], [(r.cell_key, str(r.status)) for r in rows]


def test_a_second_stop_signal_while_the_first_is_passed_on_ends_the_run_as_a_stop(tmp_path, tiny_bert, small_glue):
    """A second stop signal (Slurm's SIGUSR1 warning, then its SIGTERM; or both at once to the process group) whose
    handler ran while the first one's asked a worker's Event, holding the Event's lock: the nested handler waited
    for that lock forever, and the parent of `harness run --workers 2` hung with its workers (until Slurm's
    SIGKILL). The second only joins the stop now: each worker claims nothing and ends 3, and so does the parent."""
    proc, rows = _stopped_parent(tmp_path, tiny_bert, small_glue, "nested", timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, (proc.returncode, proc.stderr[-3000:])
    assert not [r for r in rows if r.attempts], [(r.cell_key, str(r.status)) for r in rows]
