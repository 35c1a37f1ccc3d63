"""A store that cannot be opened, an export that cannot be written, a count of 0: every command refuses it the way
`validate` refuses a bad suite: exit 2, one line `error: OPTION: ...`, no traceback, nothing written."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.helpers import ROOT, assert_refused, call_cli, listing, run_cli
from tests.helpers import fixture_store

SUITE = ROOT / "suites" / "demo.yaml"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once by us, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# bad store -> (URL of it under tmp_path, what the one line says)
BAD_STORES = {
    "text file posing as a database": (lambda tmp: f"sqlite:///{tmp / 'h.db'}", "file is not a database"),
    "closed PostgreSQL port": (lambda tmp: f"postgresql+psycopg://harness:s3cret@127.0.0.1:{closed_port()}/harness",
                               "127.0.0.1"),
    "folder under a regular file": (lambda tmp: f"sqlite:///{tmp / 'notes.txt' / 'sub' / 'h.db'}", "not a folder"),
    "in memory (sqlite://)": (lambda tmp: "sqlite://", "in-memory"),
    "in memory (:memory:)": (lambda tmp: "sqlite:///:memory:", "in-memory"),
    # its schema at a revision this harness does not have: run and ingest failed in Alembic with a traceback
    # (exit 1), the readers read it as if it were theirs
    "written by a newer harness": (lambda tmp: newer_store(tmp / "newer.db"), "revision 9999"),
    # a value the SQLite driver cannot take: the readers, which open the file read-only themselves, never looked
    # at the URL's query and read the store (exit 0); the writers refused it
    "a driver argument's bad value": (lambda tmp: store_at(tmp / "s.db") + "?timeout=abc", "timeout=abc"),
}

def store_at(path) -> str:
    """A store of this harness's schema, empty, at rest."""
    from harness.store.db import Store

    Store(f"sqlite:///{path}").engine.dispose()
    return f"sqlite:///{path}"


def newer_store(path) -> str:
    """A store whose schema a later harness migrated to revision 9999, at rest."""
    import sqlite3

    url = store_at(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()
    return url


# every command that opens a store; RECORDS is a folder with a record.json for ingest
COMMANDS = {
    "status": ["status", SUITE],
    "export": ["export"],
    "ingest": ["ingest", "RECORDS"],
    "compare": ["compare", "1", "2"],
    "ablate": ["ablate", "1"],
    "board": ["board", "--port", "0"],
}


def cli(tmp_path, args) -> subprocess.CompletedProcess:
    """`harness ARGS` in this process; `board` (which starts Streamlit when it accepts the store) in a subprocess
    of its own session, stopped with all it started if it is still running after a minute."""
    if args[0] != "board":
        return call_cli(*args)
    proc = subprocess.Popen([sys.executable, "-m", "harness", *map(str, args)], cwd=tmp_path, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("store", BAD_STORES)
def test_a_store_that_cannot_be_opened_is_refused_in_one_line(tmp_path, monkeypatch, command, store):
    monkeypatch.chdir(tmp_path)   # anything written to a relative default would land here too
    (tmp_path / "h.db").write_text("these are my notes, not a database\n")
    (tmp_path / "notes.txt").write_text("a regular file\n")
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "record.json").write_text("{}\n")
    make_url, expect = BAD_STORES[store]
    url = make_url(tmp_path)
    args = [str(tmp_path / "records") if a == "RECORDS" else a for a in COMMANDS[command]] + ["--db", url]
    before = listing(tmp_path)
    line = assert_refused(cli(tmp_path, args), expect)
    assert line.startswith("error: --db: "), line
    assert "s3cret" not in line, line   # the password of a URL is never printed
    assert listing(tmp_path) == before, "a refused command writes nothing"


def test_a_worker_refuses_a_store_a_newer_harness_wrote_before_training(tmp_path, monkeypatch):
    """`harness run` on it failed in Alembic ("Can't locate revision identified by '9999'"), a traceback, exit 1."""
    monkeypatch.chdir(tmp_path)
    url = newer_store(tmp_path / "newer.db")
    before = listing(tmp_path)
    line = assert_refused(call_cli("run", SUITE, "--db", url, "--output-dir", tmp_path / "out"), "revision 9999")
    assert line.startswith("error: --db: ") and "newer harness" in line, line
    assert listing(tmp_path) == before, "a refused command writes nothing"


def test_a_postgresql_store_a_newer_harness_wrote_is_refused_by_a_reader_and_a_worker(tmp_path, monkeypatch,
                                                                                      pg_server):
    """The same refusal on a real server: export read it as its own, a worker's migration failed in Alembic. The
    URL's libpq arguments still go to the driver (it connected, and read the revision)."""
    import psycopg

    from harness.store.db import Store

    monkeypatch.chdir(tmp_path)
    url = pg_server.create_database(f"newer_{os.getpid()}_{tmp_path.name}"[:60])
    Store(url).engine.dispose()
    conninfo = f"host=127.0.0.1 port={pg_server.port} user=postgres dbname={url.rsplit('/', 1)[1]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    for args in (["export"], ["run", SUITE, "--output-dir", tmp_path / "out"]):
        r = call_cli(*args, "--db", f"{url}?application_name=harness-test&connect_timeout=5")
        assert assert_refused(r, "revision 9999").startswith("error: --db: ")
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999",)]
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert listing(tmp_path) == {}, "a refused command writes nothing"


def test_slurm_refuses_a_store_a_newer_harness_wrote_as_its_workers_would(tmp_path, monkeypatch):
    """`harness slurm` leaves a store it cannot reach to its workers (a login node may not reach the database), and
    read the newer harness's refusal as "cannot reach": it printed a script every array task then refused."""
    import sqlite3

    from harness.launch.output_binding import bind_output_dir
    from harness.store.db import Store

    monkeypatch.chdir(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'newer.db'}")
    bind_output_dir(str(tmp_path / "out"), store)
    store.engine.dispose()
    with sqlite3.connect(tmp_path / "newer.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()
    before = listing(tmp_path)
    line = assert_refused(call_cli("slurm", SUITE, "--workers", "2", "--dry-run", "--db", f"sqlite:///{tmp_path / 'newer.db'}",
                                   "--output-dir", tmp_path / "out"), "revision 9999")
    assert line.startswith("error: --db: "), line
    assert listing(tmp_path) == before, "a refused command writes nothing"


def test_a_default_store_from_harness_db_in_memory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DB", "sqlite://")
    assert_refused(call_cli("export"), "in-memory")
    assert listing(tmp_path) == {}


def test_a_postgresql_server_that_never_answers_is_given_up_on(tmp_path):
    """A host that accepts the TCP connection and then says nothing (a hung server, a firewall dropping its
    replies): libpq's own default waits forever, which froze every command and a worker's heartbeat; the store
    gives up after its connect timeout and the command refuses the store in one line."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)   # the kernel completes the handshake; nobody ever reads or answers
        url = f"postgresql+psycopg://harness:s3cret@127.0.0.1:{silent.getsockname()[1]}/harness"
        try:
            proc = subprocess.run([sys.executable, "-m", "harness", "status", str(SUITE), "--db", url], cwd=tmp_path,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                                  timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("harness status waited 2 minutes on a PostgreSQL server that never answers")
    line = assert_refused(proc, "timeout")
    assert "s3cret" not in line, line
    assert listing(tmp_path) == {}


def test_a_connect_timeout_set_for_libpq_is_not_overridden(tmp_path):
    """$PGCONNECT_TIMEOUT (or a service file, the URL) is the user's: the harness's 10 s default overrode it (review)."""
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"postgresql+psycopg://harness@127.0.0.1:{silent.getsockname()[1]}/harness"
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "harness", "status", str(SUITE), "--db", url], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "PGCONNECT_TIMEOUT": "2"},
                              capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
    assert_refused(proc, "timeout")
    assert took < 8, f"gave up after {took:.1f} s, not libpq's 2"


@pytest.mark.parametrize("opener", ["export", "status", "a worker's Store"])
def test_an_sqlite_timeout_in_the_url_is_how_long_a_lock_is_waited_for(tmp_path, opener):
    """`?timeout=1` was accepted and checked, but every connection then set SQLite's busy timeout to the harness's
    fixed 30 s (the read-only engine never passed the URL's query on at all): a command waited out another's lock
    for 30 s. Here another connection holds the store locked for up to 8 s: the command gives up after its 1 s
    (before: it waited the lock out, 8 s, and went on)."""
    import sqlite3
    import threading
    import time

    from harness.store.db import Store

    url = store_at(tmp_path / "s.db") + "?timeout=1"
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")   # readers of a WAL store wait too
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("SELECT count(*) FROM sqlite_master").fetchone()
    release = threading.Timer(8, holder.close)   # (its exclusive locking mode keeps the lock till it closes)
    release.start()
    started = time.monotonic()
    try:
        if opener == "a worker's Store":
            with pytest.raises(Exception, match="database is locked"):
                Store(url)
        else:
            args = ["export"] if opener == "export" else ["status", SUITE]   # read-only engines, both
            assert_refused(call_cli(*args, "--db", url), "database is locked")
        took = time.monotonic() - started
    finally:
        release.cancel()
        release.join()
        holder.close()
    assert 0.9 < took < 5, f"gave up after {took:.1f} s, not the URL's 1 s"


@pytest.mark.parametrize("value", ["-1", "inf", "nan", "1e10", "0", "0.0004"])
def test_an_sqlite_timeout_its_busy_timeout_cannot_hold_is_refused(tmp_path, value):
    """SQLite's busy timeout is milliseconds in 32 bits: -1, inf, nan and 1e10 s all read as 0, no wait at all,
    now that the URL's timeout is the busy timeout (a reader and a worker alike); 0, and anything under a
    millisecond, is that wait itself, and was taken: two workers opening a fresh store together failed 8 of 20
    times on each other's lock ("database is locked"), where 0.1 s and the default failed none."""
    from harness.spec.errors import InputError
    from harness.store.db import Store

    url = f"{store_at(tmp_path / 's.db')}?timeout={value}"
    expect = f"--db: timeout={value}: SQLite's busy timeout must be from 0.001 to 2147483 seconds"
    assert_refused(call_cli("export", "--db", url), expect)
    with pytest.raises(InputError, match=expect):
        Store(url)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "h.db"
    return path, fixture_store.build(path)


def _export_targets(tmp):
    (tmp / "results").mkdir()
    (tmp / "notes.txt").write_text("a regular file\n")
    return {
        "the store's own file": (lambda db: db, "store's own database file"),
        "a link to the store's file": (lambda db: (tmp / "link.csv").symlink_to(db) or tmp / "link.csv",
                                       "store's own database file"),
        "a folder": (lambda db: tmp / "results", "is a folder"),
        "a missing folder": (lambda db: tmp / "missing" / "runs.csv", "does not exist"),
        "a folder that is a file": (lambda db: tmp / "notes.txt" / "runs.csv", "is not a folder"),
        # realpath drops the slash: a markdown export was written as the file `new` (exit 0)
        "a new folder": (lambda db: f"{tmp / 'new'}/", "names a folder (it ends in /)"),
    }


@pytest.mark.parametrize("target", ["the store's own file", "a link to the store's file", "a folder",
                                    "a missing folder", "a folder that is a file", "a new folder"])
@pytest.mark.parametrize("fmt", ["csv", "markdown"])
def test_export_refuses_an_output_it_cannot_or_must_not_write(tmp_path, store, target, fmt):
    db, url = store
    where, expect = _export_targets(tmp_path)[target]
    out = where(db)
    before, store_bytes = listing(tmp_path), db.read_bytes()
    line = assert_refused(call_cli("export", "--db", url, "--format", fmt, "-o", out), expect)
    assert line.startswith("error: -o: "), line
    assert listing(tmp_path) == before and db.read_bytes() == store_bytes, "a refused export writes nothing"
    assert call_cli("export", "--db", url).stdout.startswith("id,suite,cell_key"), "the store is still a store"


def test_export_writes_its_file_whole_with_no_temporary_left(tmp_path, store):
    _, url = store
    r = call_cli("export", "--db", url, "-o", tmp_path / "runs.csv")
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path) == ["runs.csv"]
    assert (tmp_path / "runs.csv").read_text() == call_cli("export", "--db", url).stdout


@pytest.mark.parametrize("target", ["an existing file", "no file yet"])
def test_export_through_a_link_writes_the_link_s_target_and_keeps_the_link(tmp_path, store, target):
    """The file was written under a temporary name beside the link and renamed over the link itself: the link
    became a plain file and its target kept its old content (and "wrote" was printed)."""
    _, url = store
    (tmp_path / "papers").mkdir()
    real = tmp_path / "papers" / "runs.csv"
    if target == "an existing file":
        real.write_text("old\n")
    (tmp_path / "link.csv").symlink_to(real)
    r = call_cli("export", "--db", url, "-o", tmp_path / "link.csv")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "link.csv").is_symlink() and os.readlink(tmp_path / "link.csv") == str(real)
    assert real.read_text() == call_cli("export", "--db", url).stdout
    assert sorted(os.listdir(tmp_path)) == ["link.csv", "papers"] and os.listdir(tmp_path / "papers") == ["runs.csv"]


def test_export_to_a_fifo_writes_into_it_and_never_replaces_it(tmp_path, store):
    """A FIFO (as /dev/stdout's target, or a device) was replaced by a plain file holding the export: the reader
    got nothing. It is written as it is. The reader opens its end first (non-blocking: no thread, and a FIFO that
    got replaced fails the test instead of hanging it); the table fits in the pipe's buffer."""
    import stat

    _, url = store
    fifo = tmp_path / "table.md"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = call_cli("export", "--db", url, "--table", "leaderboard", "--format", "markdown", "-o", fifo)
        assert r.returncode == 0, r.stderr
        got = os.read(reader, 1 << 16).decode()
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO is still a FIFO"
    expected = call_cli("export", "--db", url, "--table", "leaderboard", "--format", "markdown").stdout
    assert got == expected and 0 < len(expected) < 1 << 16
    assert os.listdir(tmp_path) == ["table.md"]


def test_export_to_dev_stdout_appends_where_the_shell_appends(tmp_path, store):
    """`harness export -o /dev/stdout >> log`: /dev/stdout resolves to the log file, which the atomic write
    replaced (its earlier lines gone) and a plain reopen would truncate; the descriptor is written as the shell
    opened it."""
    _, url = store
    log = tmp_path / "log"
    log.write_text("earlier line\n")
    with open(log, "a") as out:
        r = subprocess.run([sys.executable, "-m", "harness", "export", "--db", url, "--table", "leaderboard",
                            "--format", "markdown", "-o", "/dev/stdout"], stdout=out, stderr=subprocess.PIPE,
                           text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    expected = call_cli("export", "--db", url, "--table", "leaderboard", "--format", "markdown").stdout
    assert log.read_text() == "earlier line\n" + expected


@pytest.mark.parametrize("args, option", [
    (["status", SUITE, "--num-processes", "0"], "--num-processes"),
    (["compare", "1", "2", "--resamples", "0"], "--resamples"),
    (["slurm", SUITE, "--workers", "1", "--gpus-per-worker", "x", "--dry-run"], "--gpus-per-worker"),
])
def test_a_count_below_one_is_refused_like_validate_refuses_it(tmp_path, args, option):
    r = run_cli(*args, "--db", f"sqlite:///{tmp_path / 'h.db'}", cwd=tmp_path)
    line = assert_refused(r, option)
    assert line.startswith(f"error: {option}"), line
    assert os.listdir(tmp_path) == []
