"""Bad input found by an audit of every command (one line `error: OPTION: ...`, exit 2, nothing written): options
checked only after the store or the output folders were created, errors that surfaced as tracebacks, and options
accepted that could never work. Each case runs the CLI as a user does and compares the folder before and after."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import (ROOT, assert_refused, at_rest, call_cli, fixture_store, listing, run_cli, suite_yaml,
                           write_suite)

SUITE = ROOT / "suites" / "demo.yaml"


@pytest.fixture()
def suite(tmp_path, tiny_bert):
    return write_suite(tmp_path / "s.yaml", suite_yaml(tiny_bert, "s", "[full]", "[rte]", "{epochs: 1}"))


@pytest.mark.parametrize("flags, option", [
    (["--heartbeat-s", "-1"], "--heartbeat-s"), (["--heartbeat-s", "nan"], "--heartbeat-s"),
    (["--lease-timeout-s", "inf"], "--lease-timeout-s"),
    (["--lease-timeout-s", "10", "--heartbeat-s", "30"], "--lease-timeout-s (10) must be at least twice"),
    (["--heartbeat-s", "1e300", "--lease-timeout-s", "1e301"], "--heartbeat-s: must be at most 31536000 seconds"),
])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_checks_the_lease_timing_before_it_creates_the_store(tmp_path, suite, flags, option, workers):
    """The lease timing was checked by each worker: after the store was created, and with two workers as a
    traceback per worker (exit 1). A heartbeat past what a thread can wait (1e300 s) was a traceback in the
    heartbeat thread while the cell trained, its lease never renewed."""
    before = listing(tmp_path)
    r = call_cli("run", suite, "--workers", workers, "--db", f"sqlite:///{tmp_path / 'db' / 'h.db'}",
                 "--output-dir", tmp_path / "out", *flags)
    assert_refused(r, option)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("name, value, expect", [
    ("HARNESS_HEARTBEAT_S", "0", "$HARNESS_HEARTBEAT_S: must be a positive number of seconds, not 0.0"),
    ("HARNESS_LEASE_TIMEOUT_S", "inf", "$HARNESS_LEASE_TIMEOUT_S: must be a positive number of seconds, not inf"),
    ("HARNESS_LEASE_TIMEOUT_S", "10", "$HARNESS_LEASE_TIMEOUT_S (10) must be at least twice --heartbeat-s (30)"),
    ("HARNESS_FINISH_TRIES", "abc", "$HARNESS_FINISH_TRIES: not a whole number: 'abc'"),
    ("HARNESS_FINISH_TRIES", "0", "$HARNESS_FINISH_TRIES: must be at least 1 (got 0)"),
    ("HARNESS_FINISH_BACKOFF_S", "abc", "$HARNESS_FINISH_BACKOFF_S: not a number of seconds: 'abc'"),
    ("HARNESS_FINISH_BACKOFF_S", "nan", "$HARNESS_FINISH_BACKOFF_S: must be a non-negative number of seconds, "
                                      "not nan"),
    ("HARNESS_FINISH_BACKOFF_S", "-1", "$HARNESS_FINISH_BACKOFF_S: must be a non-negative number of seconds, "
                                     "not -1.0"),
    ("HARNESS_FINISH_BACKOFF_S", "1e20", "$HARNESS_FINISH_BACKOFF_S: must be at most 31536000 seconds (a year)"),
    ("HARNESS_PEAK_FLOPS", "fast", "$HARNESS_PEAK_FLOPS: not FLOP/s: 'fast'; give a number"),
    ("HARNESS_PEAK_FLOPS", "inf", "$HARNESS_PEAK_FLOPS: the peak must be a positive number of FLOP/s, not 'inf'"),
    ("HARNESS_PEAK_FLOPS", "fp32=1e12", "$HARNESS_PEAK_FLOPS: no precision 'fp32' in 'fp32=1e12' (the "
                                        "precisions: no, bf16, fp16)"),
    ("HARNESS_PEAK_FLOPS", "bf16=1e12,no=x", "$HARNESS_PEAK_FLOPS: not FLOP/s: 'bf16=1e12,no=x'"),
    ("HARNESS_PEAKS_FILE", "/", "$HARNESS_PEAKS_FILE: / is a folder, not a file"),
    ("HARNESS_PEAKS_FILE", "/proc/version/peaks.json", "$HARNESS_PEAKS_FILE: /proc/version is a file, not a "
                                                     "folder"),
    ("LOCAL_WORLD_SIZE", "abc", "$LOCAL_WORLD_SIZE: not a whole number: 'abc'"),
    ("LOCAL_RANK", "abc", "$LOCAL_RANK: not a whole number: 'abc'"),
])
def test_a_variable_the_workers_read_is_named_when_refused_before_anything_is_written(tmp_path, suite, monkeypatch,
                                                                                     name, value, expect):
    """The error named --heartbeat-s or --lease-timeout-s, which the user had not given. The retries of a finish
    or a claim ($HARNESS_FINISH_*) were read at the first claim, after the store was created ('abc': a
    traceback), 0 tries silently 1, and a backoff of nan or inf taken (a hang once the store failed). A bad
    $HARNESS_PEAK_FLOPS failed each cell at its start, the store created ('no=x' only at the end of an fp32
    cell's training); inf made every MFU 0, and a precision it cannot name (fp32) was ignored, the peak measured.
    A $HARNESS_PEAKS_FILE that is a folder or under a file was silently never written (the rates timed again).
    LOCAL_WORLD_SIZE='abc' (torchrun's; each cell's thread warning reads it) and LOCAL_RANK='abc' (accelerate's
    int() of it) were tracebacks, the store created."""
    monkeypatch.setenv(name, value)
    before = listing(tmp_path)
    r = call_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out")
    assert assert_refused(r, expect).startswith(f"error: ${name}")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("master_addr", [None, "127.0.0.1"])
def test_a_world_size_no_launcher_set_is_refused_before_anything_is_written(tmp_path, suite, monkeypatch,
                                                                            master_addr):
    """WORLD_SIZE=2 without a launcher (left in a shell, set by hand): plain `harness run` ended in accelerate's
    ValueError traceback (MASTER_ADDR unset), the store created; with MASTER_ADDR set too it waited for a second
    rank that never came (11 min, deaf to timeout's SIGTERM: a subprocess here, with a timeout)."""
    for name in ("RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    before = listing(tmp_path)
    r = run_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                env={"WORLD_SIZE": "2", **({"MASTER_ADDR": master_addr} if master_addr else {})}, timeout=120)
    assert_refused(r, "$WORLD_SIZE: 2 processes, but $RANK is unset: no launcher started this one",
                   where="$WORLD_SIZE")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("size,rank", [("PMI_SIZE", "PMI_RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
                                       ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK")])
def test_an_mpi_size_no_launcher_set_is_refused_before_anything_is_written(tmp_path, suite, monkeypatch, size, rank):
    """An MPI launcher's size left in a shell (PMI_SIZE=2 without PMI_RANK: MPICH / Intel MPI; Open MPI's, MVAPICH's):
    accelerate starts a CPU group from any of them as from WORLD_SIZE, and `harness run` ended in its ValueError
    traceback (MASTER_ADDR unset), the store created. Refused like WORLD_SIZE, naming the rank variable that MPI
    launcher sets beside it."""
    from harness.launch.workers import RANK_VARIABLES

    for name in (*RANK_VARIABLES, rank, "RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    before = listing(tmp_path)
    r = run_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                env={size: "2"}, timeout=120)
    assert_refused(r, f"${size}: 2 processes, but ${rank} is unset: no launcher started this one", where=f"${size}")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("size,rank", [("PMI_SIZE", "PMI_RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")])
def test_an_mpi_launch_without_a_meeting_point_is_refused_before_anything_is_written(tmp_path, suite, monkeypatch,
                                                                                     size, rank):
    """A real MPI launch of CPU ranks (`mpirun -np 2 harness run`: its count and this rank's number set) without
    MASTER_ADDR, which mpirun does not set (accelerate launch --mpirun_hostfile does): accelerate forms the gloo
    group through torch's env:// rendezvous, and `harness run` ended in torch's ValueError traceback (MASTER_ADDR
    expected), the store's file created. Refused in one line naming what to export."""
    import torch

    from harness.launch.workers import RANK_VARIABLES

    if torch.cuda.is_available() or torch.distributed.is_mpi_available():
        pytest.skip("GPU ranks (a world each) or torch's MPI backend need no MASTER_ADDR")
    for name in (*RANK_VARIABLES, rank, "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    before = listing(tmp_path)
    r = run_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                env={size: "2", rank: "1"}, timeout=120)
    assert_refused(r, f"${size}: 2 processes, but $MASTER_ADDR is unset: their group meets at rank 0's host",
                   where=f"${size}")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("text", ["my notes\n", "[" * 100_000, '{"learning_rate": 1e-4}\n'],
                         ids=["notes", "nested past the decoder's limit", "another program's JSON"])
def test_a_peaks_file_that_is_another_file_is_refused_and_left_as_it_was(tmp_path, suite, monkeypatch, text):
    """HARNESS_PEAKS_FILE naming a file of the user's (no JSON): the first cell's end replaced it with the cache of
    matmul rates (and the check that refuses it met the nested one with a RecursionError traceback). A JSON object
    is one too unless it is a cache (every one the harness wrote has its "version") or empty: a config.json was
    taken, and written over the same way."""
    notes = tmp_path / "notes.txt"
    notes.write_text(text)
    monkeypatch.setenv("HARNESS_PEAKS_FILE", str(notes))
    before = listing(tmp_path)
    r = call_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out")
    assert_refused(r, f"$HARNESS_PEAKS_FILE: {notes} is not a peaks cache", where="$HARNESS_PEAKS_FILE")
    assert listing(tmp_path) == before and notes.read_text() == text


def test_a_large_file_named_as_the_peaks_cache_is_refused_unread(tmp_path, suite):
    """The check of HARNESS_PEAKS_FILE read the file whole: a 400 MB file named by mistake took 870 MB of memory
    (51 MB for a small one), a multi-GB one as much again. One larger than any cache is refused unread. (A
    sparse file: no disk used. The process copies its /proc status, with its peak memory, into a file.)"""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(512 << 20)
    rss = tmp_path / "rss"
    # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its parent's (pytest's, with torch loaded)
    script = ("import shutil, sys\nfrom harness.cli import main\ntry:\n    code = main(sys.argv[2:])\nfinally:\n"
              "    shutil.copy('/proc/self/status', sys.argv[1])\nraise SystemExit(code)\n")
    r = subprocess.run([sys.executable, "-c", script, str(rss), "run", str(suite), "--db",
                        f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_PEAKS_FILE": str(big)})
    assert_refused(r, f"$HARNESS_PEAKS_FILE: {big} is not a peaks cache", where="$HARNESS_PEAKS_FILE")
    (peak,) = [int(line.split()[1]) for line in rss.read_text().splitlines() if line.startswith("VmHWM:")]   # kB
    assert peak < 256 << 10, f"peak memory {peak >> 10} MB"
    assert not (tmp_path / "out").exists() and not (tmp_path / "h.db").exists()


@pytest.mark.parametrize("name, value, expect", [
    ("HARNESS_PEAKS_FILE", "notes", "$HARNESS_PEAKS_FILE: NOTES is not a peaks cache (a JSON file)"),
    ("HARNESS_PEAK_FLOPS", "fast", "$HARNESS_PEAK_FLOPS: not FLOP/s: 'fast'; give a number"),
])
def test_a_pilot_refuses_the_peak_variables_before_it_trains(tmp_path, suite, small_glue, monkeypatch, name, value,
                                                             expect):
    """`harness estimate --pilot` trains through the cells' loop, which reads both variables at a cell's start and
    end, but only `harness run` and `harness slurm` checked them: the pilot wrote its matmul-rate cache over the
    user's notes (exit 0), and a bad HARNESS_PEAK_FLOPS failed every pilot ("pilot 1: failed (ValueError: ...)",
    "1 cell(s) without an estimate", exit 0)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    monkeypatch.setenv(name, str(notes) if value == "notes" else value)
    before = listing(tmp_path)
    r = call_cli("estimate", suite, "--pilot", "--pilot-steps", "1", "--data-dir", small_glue)
    assert_refused(r, expect.replace("NOTES", str(notes)))
    assert listing(tmp_path) == before and notes.read_text() == "my notes\n"


def test_a_store_s_folder_that_cannot_be_created_is_refused_in_one_line(tmp_path, suite, small_glue):
    """/proc does not take new folders: makedirs' FileNotFoundError went up as a traceback (exit 1)."""
    r = call_cli("run", suite, "--data-dir", small_glue, "--output-dir", tmp_path / "out",
                 "--db", "sqlite:////proc/harness-test/h.db")
    assert_refused(r, "--db: cannot create the folder of the store /proc/harness-test/h.db")
    assert not (tmp_path / "out").exists()


def test_a_store_that_fails_to_open_leaves_no_folder_behind(tmp_path, suite, small_glue):
    """Its folders were created before the URL's arguments failed the driver: an empty folder stayed."""
    before = listing(tmp_path)
    r = call_cli("run", suite, "--data-dir", small_glue, "--output-dir", tmp_path / "out",
                 "--db", f"sqlite:///{tmp_path / 'new' / 'a' / 'h.db'}?timeout=abc")
    assert_refused(r, "--db: timeout=abc: ")
    assert listing(tmp_path) == before, "the folders made for the store were removed"


def test_a_store_url_the_driver_refuses_makes_no_folder(tmp_path, suite, small_glue, monkeypatch):
    """`?timeout=abc` is refused by the driver's argument parsing, which came after the store's folders were made
    (then removed again: from under another worker making the same new store). Now nothing is made first."""
    made = []
    real = os.makedirs
    monkeypatch.setattr(os, "makedirs", lambda path, *a, **k: made.append(str(path)) or real(path, *a, **k))
    r = call_cli("run", suite, "--data-dir", small_glue, "--output-dir", tmp_path / "out",
                 "--db", f"sqlite:///{tmp_path / 'new' / 'a' / 'h.db'}?timeout=abc")
    assert_refused(r, "--db: timeout=abc: ")
    assert [p for p in made if p.startswith(str(tmp_path / "new"))] == []

def test_ingest_of_records_that_are_all_refused_creates_no_store(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "record.json").write_text('{"suite": "s"}')
    r = call_cli("ingest", records, "--db", f"sqlite:///{tmp_path / 'new' / 'h.db'}")
    assert r.returncode == 2 and "refused" in r.stderr and "1 refused" in r.stdout
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("what", ["empty file", "another program's database"])
@pytest.mark.parametrize("command", [["compare", "1", "2"], ["ablate", "1"], ["export"],
                                     ["export", "--table", "leaderboard"], ["status", SUITE],
                                     ["board", "--address", "256.0.0.1"]])
def test_a_database_that_is_not_a_store_is_refused_and_left_as_it_was(tmp_path, what, command):
    """ablate opened it for writing and put the harness's tables into it; compare failed with a traceback; export
    printed an empty table and status every cell pending (exit 0), as if it were a store with nothing in it; the
    board served it as an empty store (given a bad --address here, so no server starts whatever the code does)."""
    path = tmp_path / "other.db"
    fixture_store.not_a_store(path, what)
    before = listing(tmp_path)
    assert_refused(call_cli(*command, "--db", f"sqlite:///{path}"), "is not a harness store (it has no runs table)")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("ref", ["no such run", "a full fine-tuning run"])
def test_ablate_refuses_a_run_before_it_opens_the_store_for_writing(tmp_path, ref):
    """The store was opened for writing (and migrated: an older store went from 0004 to 0005) before the runs
    given were found and checked; a full fine-tuning run was refused only after its data had been located."""
    from harness.store.db import Store

    url = fixture_store.build(tmp_path / "fx.db")
    store = Store(url, read_only=True)
    full = next(r for r in store.records() if r.method == "full" and r.status == "completed")
    store.engine.dispose()
    fixture_store.downgrade_to_0004(tmp_path / "fx.db")
    before = at_rest(tmp_path)
    if ref == "no such run":
        assert_refused(call_cli("ablate", "99999", "--db", url), 'run "99999": no run has this id or cell key')
    else:
        assert_refused(call_cli("ablate", str(full.id), "--db", url), f"run {full.id}: ablation needs a single-task "
                                                                     f"run of")
    assert at_rest(tmp_path) == before, "nothing written: the store is still at 0004"


def test_ablate_of_a_run_whose_store_keeps_no_adapter_folder_does_not_say_none(tmp_path):
    """The refusal read `run 7: no saved adapter (adapter methods save one; looked at None)`."""
    from harness.store.db import Store

    url = fixture_store.build(tmp_path / "fx.db")   # no predictions_dir: no run has an output folder
    store = Store(url, read_only=True)
    run = next(r for r in store.records() if r.method == "houlsby" and r.status == "completed")
    store.engine.dispose()
    before = at_rest(tmp_path)
    line = assert_refused(call_cli("ablate", str(run.id), "--db", url, "--cache-dir", tmp_path / "cache"),
                          f"run {run.id}: no saved adapter: the store keeps no adapter folder for it")
    assert "None" not in line
    assert at_rest(tmp_path) == before


def test_a_store_that_is_not_there_yet_is_named_by_export_and_all_pending_to_status(tmp_path):
    """export said "error: no store at ..." without naming the option; status before any worker has created the
    store reports every cell pending (and creates nothing)."""
    import json

    url = f"sqlite:///{tmp_path / 'nope.db'}"
    assert_refused(call_cli("export", "--db", url), f"--db: no store at {url}", where="--db")
    r = call_cli("status", SUITE, "--db", url, "--json")
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)["counts"]
    assert counts["pending"] == counts["total"] > 0
    assert listing(tmp_path) == {}


@pytest.mark.parametrize("command, flag", [("run", "--output-dir"), ("run", "--cache-dir"),
                                           ("slurm", "--output-dir")])
def test_an_output_folder_where_a_file_stands_is_refused(tmp_path, suite, command, flag):
    """run trained its cell, then failed to record it five times (NotADirectoryError); slurm wrote its script."""
    (tmp_path / "notes.txt").write_text("x")
    before = listing(tmp_path)
    extra = ["--workers", "1", "--dry-run"] if command == "slurm" else ["--output-dir", tmp_path / "out"]
    assert_refused(call_cli(command, suite, *extra, flag, tmp_path / "notes.txt" / "out"),
                   f"{flag}: {tmp_path / 'notes.txt'} is a file, not a folder")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("folder, expect", [("/proc/harness-test/out", "cannot create the folder"),
                                            ("/proc", "cannot write in the folder"),
                                            ("/sys", "cannot write in the folder")])
@pytest.mark.parametrize("command, flag", [("run", "--output-dir"), ("run", "--cache-dir"),
                                           ("slurm", "--output-dir"), ("ablate", "--cache-dir")])
def test_an_output_folder_that_cannot_be_created_is_refused(tmp_path, suite, small_glue, command, flag, folder,
                                                            expect):
    """/proc takes no new folder: run created its store, then failed with a traceback (--output-dir) or trained
    the cell and failed it (--cache-dir, exit 1, a failed record); slurm failed with a traceback writing its
    script. A folder that exists but takes no file (/proc, /sys; a read-only mount) was never tried: the same
    traceback (we run as root here, so a chmod'ed folder would not show it)."""
    args = {"run": ["run", suite, "--data-dir", small_glue, "--output-dir", tmp_path / "out"],
            "slurm": ["slurm", suite, "--workers", "1", "--data-dir", small_glue],
            "ablate": ["ablate", "1"]}[command]
    before = listing(tmp_path)
    assert_refused(call_cli(*args, "--db", f"sqlite:///{tmp_path / 'h.db'}", flag, folder),
                   f"{flag}: {expect} {folder}: ")
    assert listing(tmp_path) == before


def test_the_folder_check_never_removes_a_folder_another_process_made(tmp_path, monkeypatch):
    """DDP ranks and Slurm array workers check the same fresh --output-dir at once: the check created the folder
    and removed it again, so it also removed one that another worker had made in between (and was about to write
    in: that worker failed with FileNotFoundError). Here the other worker makes it during the check's first
    mkdir."""
    from harness.cli.common import resolve_user_paths

    out, real_mkdir = tmp_path / "a" / "out", os.mkdir

    def other_worker_first(path, *a, **k):
        if not out.exists():
            real_mkdir(out.parent)
            real_mkdir(out)
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", other_worker_first)
    resolve_user_paths(argparse.Namespace(output_dir=str(out)))
    monkeypatch.undo()
    assert out.is_dir(), "the check removed the folder another worker had made"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "out"], "the check left its probe behind"


def test_estimate_refuses_a_data_dir_option_that_is_not_a_folder(tmp_path, suite):
    """It answered "size unknown" for every cell (exit 0)."""
    (tmp_path / "notes.txt").write_text("x")
    assert_refused(call_cli("estimate", suite, "--data-dir", tmp_path / "notes.txt"),
                   f"--data-dir: data directory {tmp_path / 'notes.txt'} is not a folder")
    assert_refused(call_cli("estimate", suite, "--data-dir", tmp_path / "nothing"), "does not exist")


def test_board_refuses_a_port_or_address_it_cannot_serve(tmp_path):
    """Streamlit printed its banner, then a 53-line traceback (exit 1); an empty address served every interface."""
    db = ["--db", f"sqlite:///{tmp_path / 'none.db'}"]
    assert_refused(run_cli("board", "--port", "70000", *db), "--port: a port is 0-65535, not 70000")
    assert_refused(call_cli("board", "--address", "", *db), "--address: empty")
    assert_refused(call_cli("board", "--address", "not an address", *db), "is not an address of this machine")
    if open("/proc/sys/net/ipv4/ip_nonlocal_bind").read().strip() == "0":   # (else any address binds)
        assert_refused(call_cli("board", "--address", "192.0.2.1", *db), "--address: cannot serve on 192.0.2.1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_refused(call_cli("board", "--port", str(port), *db), f"--port: cannot serve on 127.0.0.1:{port}")
    assert not (tmp_path / "none.db").exists()


def test_board_refuses_a_lease_timeout_its_grid_page_cannot_read(tmp_path, monkeypatch):
    """The board served, and its grid page showed HARNESS_LEASE_TIMEOUT_S's error as a traceback. (The port is
    taken, so that a board which does not check the variable is refused for the port, not left serving.)"""
    monkeypatch.setenv("HARNESS_LEASE_TIMEOUT_S", "abc")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert_refused(call_cli("board", "--port", str(taken.getsockname()[1]), "--db",
                                f"sqlite:///{tmp_path / 'none.db'}"),
                       "$HARNESS_LEASE_TIMEOUT_S: not a number of seconds: 'abc'", where="$HARNESS_LEASE_TIMEOUT_S")
    assert listing(tmp_path) == {}


def test_export_names_a_suite_or_model_the_store_does_not_have(tmp_path):
    """An unknown --suite or --model printed an empty table with exit 0: a typo read as "nothing completed"."""
    from tests.helpers import fixture_store

    url = fixture_store.build(tmp_path / "fx.db")
    assert_refused(call_cli("export", "--db", url, "--suite", "f"), '--suite: the store has no runs of suite '
                                                                     '\'f\' (did you mean "fx"?)')
    assert_refused(call_cli("export", "--db", url, "--model", "bert-base"), "(it has: minilm)")
    assert call_cli("export", "--db", url, "--suite", "fx", "--model", "minilm").returncode == 0


def test_a_lease_timeout_that_never_expires_is_refused_by_status(tmp_path, suite):
    db = ["--db", f"sqlite:///{tmp_path / 'h.db'}"]
    assert_refused(call_cli("status", suite, *db, "--lease-timeout-s", "inf"), "--lease-timeout-s")
    r = run_cli("status", suite, *db, env={"HARNESS_LEASE_TIMEOUT_S": "abc"})
    assert_refused(r, "$HARNESS_LEASE_TIMEOUT_S: not a number of seconds", where="$HARNESS_LEASE_TIMEOUT_S")
    assert not (tmp_path / "h.db").exists()


def test_compare_names_the_variants_of_a_bare_method_and_refuses_options_it_would_ignore(tmp_path):
    from tests.helpers import fixture_store

    url = fixture_store.build(tmp_path / "fx.db")
    assert_refused(call_cli("compare", "full", "houlsby", "--task", "rte", "--db", url),
                   'no completed rte runs of "houlsby" (its variants here: houlsby(size=8,non_linearity=swish))')
    assert_refused(call_cli("compare", "1", "2", "--db", url, "--model", "minilm"), "--model: only with --task")
    assert_refused(call_cli("compare", "1", "2", "--db", url, "--suite", "nosuch"), "--suite: only with --task")


@pytest.mark.parametrize("ref", ["\u00b2", "99999999999999999999999"])
@pytest.mark.parametrize("command", ["compare", "ablate"])
def test_a_run_reference_that_is_no_id_is_looked_up_as_a_cell_key(tmp_path, command, ref):
    """A superscript two is a digit to str.isdigit but not to int (ValueError); a number past INTEGER overflowed
    the driver (OverflowError): both tracebacks. Neither can be an id: no run has it."""
    from tests.helpers import fixture_store

    url = fixture_store.build(tmp_path / "fx.db")
    store = (tmp_path / "fx.db").read_bytes()
    args = [ref, "1"] if command == "compare" else [ref]
    assert_refused(call_cli(command, *args, "--db", url), f'run "{ref}": no run has this id or cell key')
    # nothing written: the store as it was, its write-ahead log (where SQLite opens one) empty
    wal = tmp_path / "fx.db-wal"
    assert (tmp_path / "fx.db").read_bytes() == store and not (wal.exists() and wal.read_bytes())


def test_an_unknown_task_is_refused_naming_the_task_option(tmp_path, suite):
    """The error said `unknown task "nosuch"` without naming --task."""
    from tests.helpers import fixture_store

    url = fixture_store.build(tmp_path / "fx.db")
    for args in (["compare", "--task", "nosuch", "--db", url], ["compare", "full", "houlsby", "--task", "nosuch",
                                                                "--db", url], ["params", suite, "--task", "nosuch"]):
        assert_refused(call_cli(*args), '--task: unknown task "nosuch"', where="--task")


def test_slurm_refuses_to_wait_for_a_dry_run(tmp_path, suite):
    assert_refused(call_cli("slurm", suite, "--workers", "1", "--dry-run", "--wait"), "--wait: nothing is submitted")


@pytest.mark.parametrize("args, flag", [
    (["export", "--db", ""], "--db"), (["export", "-o", ""], "-o"),
    (["run", "SUITE", "--output-dir", " "], "--output-dir"), (["run", "SUITE", "--cache-dir", ""], "--cache-dir"),
    (["validate", "SUITE", "--data-dir", ""], "--data-dir"), (["estimate", "SUITE", "--db", ""], "--db"),
    (["estimate", "SUITE", "--from-store="], "--from-store"),
    (["estimate", "SUITE", "--device", ""], "--device"), (["export", "--suite", ""], "--suite"),
    (["compare", "1", "2", "--task", " "], "--task"),
    (["slurm", "SUITE", "--workers", "1", "--dry-run", "--partition", ""], "--partition"),
    (["slurm", "SUITE", "--workers", "1", "--dry-run", "--sbatch-arg", ""], "--sbatch-arg"),
])
def test_an_empty_option_is_refused_not_read_as_its_default(tmp_path, suite, args, flag, monkeypatch):
    """`--db "$URL"` with $URL unset wrote into the default store (results/harness.db in the current folder);
    `--device "$GPU"` priced the cells on the device with the most runs, `--suite ''` exported every suite."""
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    assert_refused(call_cli(*[suite if a == "SUITE" else a for a in args]),
                   f"{flag}: empty (leave the option out for its default)")
    assert listing(tmp_path) == before


def test_an_empty_suite_argument_and_an_unknown_option_are_named_by_their_subcommand(tmp_path, monkeypatch):
    """`harness validate ''` said "error: : cannot read suite file"; an unknown option after a subcommand pointed
    at `harness --help`, which does not list it."""
    monkeypatch.chdir(tmp_path)
    assert_refused(call_cli("validate", ""), "error: suite: empty; see harness validate --help")
    assert_refused(call_cli("validate", "s.yaml", "--bogus"),
                   "unrecognized arguments: --bogus; see harness validate --help")
    assert listing(tmp_path) == {}


@pytest.mark.parametrize("name", ["HARNESS_DB", "HARNESS_DATA_DIR", "HARNESS_WORKERS", "HARNESS_LEASE_TIMEOUT_S",
                                  "HARNESS_FINISH_TRIES", "HARNESS_PEAK_FLOPS", "HARNESS_PEAKS_FILE", "WORLD_SIZE",
                                  "LOCAL_RANK"])
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_environment_variable_is_refused_not_read_as_its_default(tmp_path, suite, name, value,
                                                                         monkeypatch):
    """`export HARNESS_DB=$PG_URL` with $PG_URL unset, in a job script, sent the workers to the local SQLite
    default instead of the cluster's store. The numbers' variables took their defaults the same way
    (`export HARNESS_WORKERS=$N`: one worker), and an empty WORLD_SIZE or LOCAL_RANK was accelerate's int()
    traceback, the store created. A command that does not read the variable is not refused."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    before = listing(tmp_path)
    assert_refused(call_cli("run", suite, "--output-dir", tmp_path / "out"), f"${name}: empty (unset it for the "
                                                                               f"default)")
    assert listing(tmp_path) == before
    assert call_cli("ls").returncode == 0


def test_a_store_url_from_harness_db_is_named_so_when_refused(tmp_path, monkeypatch):
    """The error named --db, which the user had not given."""
    monkeypatch.setenv("HARNESS_DB", "not a url")
    assert_refused(call_cli("export"), '$HARNESS_DB: not a database URL: "not a url"', where="$HARNESS_DB")
    monkeypatch.setenv("HARNESS_DB", f"sqlite:///{tmp_path / 'none.db'}")
    assert_refused(call_cli("compare", "1", "2"), f"$HARNESS_DB: no store at sqlite:///{tmp_path / 'none.db'}")
    assert_refused(call_cli("compare", "1", "2", "--db", "sqlite://"), "--db: ", where="--db")


@pytest.mark.parametrize("command", [["export"], ["ingest", "RECORDS"], ["run", "SUITE"]])
@pytest.mark.parametrize("form", ["folder", "trailing slash"])
def test_a_store_url_naming_a_folder_is_refused(tmp_path, suite, command, form):
    """A folder gave "disk I/O error"; `sqlite:///new/` (a trailing slash) made the folder `new` and failed."""
    (tmp_path / "records").mkdir()
    (tmp_path / "folder").mkdir()
    path = tmp_path / "folder" if form == "folder" else f"{tmp_path / 'new'}/"
    before = listing(tmp_path)
    args = [{"SUITE": suite, "RECORDS": tmp_path / "records"}.get(a, a) for a in command]
    r = call_cli(*args, "--db", f"sqlite:///{path}", "--output-dir", tmp_path / "out") if command[0] == "run" \
        else call_cli(*args, "--db", f"sqlite:///{path}")
    assert_refused(r, f"--db: {path} is a folder, not a database file")
    assert listing(tmp_path) == before


def test_prefetch_refuses_a_data_dir_that_is_not_there(tmp_path, suite):
    """It listed every task's data as missing (exit 1) instead of naming the option."""
    assert_refused(call_cli("prefetch", suite, "--check", "--data-dir", tmp_path / "nothing"),
                   f"--data-dir: data directory {tmp_path / 'nothing'} does not exist")


def test_prefetch_refuses_a_data_dir_from_the_environment_or_the_suite_that_is_not_there(tmp_path, suite,
                                                                                        monkeypatch):
    """Only --data-dir was checked: the same folder from $HARNESS_DATA_DIR or the suite's data_dir listed every
    task's data as missing (exit 1)."""
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "nothing"))
    assert_refused(call_cli("prefetch", suite, "--check"), f"data directory {tmp_path / 'nothing'} does not exist",
                   where="$HARNESS_DATA_DIR")
    own = write_suite(tmp_path / "own.yaml", suite.read_text() + "data_dir: nothing\n")
    assert_refused(call_cli("prefetch", own, "--check"), f"data_dir: data directory {tmp_path / 'nothing'} does not "
                                                         f"exist", where=own)


def test_an_output_folder_is_bound_to_the_store_whose_runs_it_holds(tmp_path, suite, small_glue):
    """Cell folders are named by cell, not by store: a second store running the same suite into the same folder
    moved its predictions, adapter and record.json over the first store's (whose rows still point there), and
    resumed its checkpoints. Now the folder names its store and another is refused, before anything is written."""
    import json

    out = tmp_path / "out"
    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    r = run_cli("run", suite, "--db", first, "--output-dir", out, "--data-dir", small_glue, "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    mark = json.loads((out / ".harness-store.json").read_text())
    from harness.store.db import Store

    assert mark["store_id"] == Store(first, read_only=True).identity() and mark["db"] == first
    before = listing(tmp_path)
    for command in (["run", suite], ["slurm", suite, "--workers", "1"]):
        assert_refused(call_cli(*command, "--db", second, "--output-dir", out, "--data-dir", small_glue),
                       f"--output-dir: {out} holds the runs of another store ({first}, id {mark['store_id'][:8]})")
    assert listing(tmp_path) == before, "nothing written: no store b.db, no script, no cell folder"
    again = run_cli("run", suite, "--db", first, "--output-dir", out, "--data-dir", small_glue, "--no-progress")
    assert again.returncode == 0 and "1 already completed" in again.stderr, again.stderr[-2000:]


@pytest.mark.parametrize("mark, expect", [("[" * 100000, "cannot read"), ("[]", "does not name a store")],
                         ids=["nested", "a list"])
def test_an_output_folder_mark_that_is_no_store_s_is_refused_in_one_line(tmp_path, suite, small_glue, mark, expect):
    """A mark nested past the JSON decoder's recursion limit was a RecursionError traceback (exit 1)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".harness-store.json").write_text(mark)
    before = listing(tmp_path)
    assert_refused(call_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                            "--data-dir", small_glue), expect, where="--output-dir")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("command, owner", [("slurm", "this store"), ("slurm", "another store"),
                                            ("run", "another store")])
def test_reading_the_store_an_output_folder_names_leaves_nothing_beside_it(tmp_path, suite, small_glue, command,
                                                                          owner):
    """slurm probes an SQLite store given, and the output folder's mark is checked against the store's id, both
    read-only: SQLite created the store's -shm and -wal for those reads and, read-only, could not remove them, so
    `harness slurm --dry-run` (which writes nothing) left both beside the store, and so did the refusals of slurm
    and run."""
    from harness.launch.output_binding import bind_output_dir
    from harness.store.db import Store

    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("a", "b")}
    for url in urls.values():
        Store(url).engine.dispose()
    store = Store(urls["a"])
    bind_output_dir(str(tmp_path / "out"), store)
    store.engine.dispose()
    assert not list(tmp_path.glob("*.db-*"))   # the stores at rest: no connection open
    before = listing(tmp_path)
    args = [command, suite, "--db", urls["a" if owner == "this store" else "b"], "--output-dir", tmp_path / "out",
            "--data-dir", small_glue] + (["--workers", "1", "--dry-run"] if command == "slurm" else [])
    r = call_cli(*args)
    if owner == "this store":
        assert r.returncode == 0 and r.stdout.startswith("#!"), r.stderr[-2000:]
    else:
        assert_refused(r, f"--output-dir: {tmp_path / 'out'} holds the runs of another store")
    assert listing(tmp_path) == before


def test_compare_refuses_a_run_compared_with_itself(tmp_path):
    """`compare 1 1` (or a run's id against its own cell key) printed a comparison: A-B +0.00, p = 1."""
    from harness.store.db import Store

    url = fixture_store.build(tmp_path / "fx.db", predictions_dir=str(tmp_path / "out"))
    key = Store(url, read_only=True).get(1).cell_key
    for b in ("1", key):
        assert_refused(call_cli("compare", "1", b, "--db", url), "B: run 1 is run A (1); give two different runs")
