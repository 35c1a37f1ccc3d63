"""The store: records, uniqueness per (suite, cell), SQLite WAL, read-only access."""

import sqlite3
import time

import pytest
from sqlalchemy.exc import OperationalError

from harness.spec.status import Status
from harness.store.db import Store
from harness.store.schema import RUN_COLUMNS
from harness.plan.suite import parse_suite

SUITE = "name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full, linear_probe]\n"


def test_start_finish_and_restart(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    cell = parse_suite(SUITE, "s.yaml").cells()[0]
    claim = store.start(cell, cell.config(), "cmd", "out")
    rid = claim.id
    assert store.get(rid).status == Status.RUNNING
    store.finish(claim, Status.FAILED, {"error": "ValueError: boom"})
    rec = store.by_key("s")[cell.key]
    assert rec.status == Status.FAILED and rec.error == "ValueError: boom" and rec.finished_at is not None
    # running it again reuses the row: one record per (suite, cell)
    claim2 = store.start(cell, cell.config(), "cmd", "out")
    assert claim2.id == rid and claim2.attempt == 2
    rec = store.get(rid)
    assert rec.status == Status.RUNNING and rec.error is None and rec.attempts == 2
    store.finish(claim2, Status.COMPLETED, {"score": 71.5, "metrics": {"accuracy": 71.5}, "env": {"torch": "x"}})
    assert store.get(rid).as_dict()["metrics"] == {"accuracy": 71.5}
    assert len(store.records()) == 1


def test_same_cell_in_two_suites_is_two_records(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    a = parse_suite(SUITE, "a.yaml").cells()[0]
    b = parse_suite(SUITE.replace("name: s", "name: t"), "b.yaml").cells()[0]
    assert a.key == b.key
    store.start(a, a.config(), "", "")
    store.start(b, b.config(), "", "")
    assert len(store.records()) == 2 and len(store.records("t")) == 1


def test_sqlite_is_wal_and_read_only_mode_refuses_writes(tmp_path):
    path = tmp_path / "h.db"
    store = Store(f"sqlite:///{path}")
    cell = parse_suite(SUITE, "s.yaml").cells()[0]
    store.start(cell, cell.config(), "", "")
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ro = Store(f"sqlite:///{path}", read_only=True)
    assert len(ro.records()) == 1
    with pytest.raises(OperationalError, match="readonly"):
        ro.start(cell, cell.config(), "", "")


def test_read_only_store_does_not_create_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        Store(f"sqlite:///{tmp_path / 'none.db'}", read_only=True)
    assert not (tmp_path / "none.db").exists()


def test_the_migrations_build_the_declared_schema(tmp_path):
    """A column declared in harness.store.schema without an Alembic revision (or the reverse) fails here."""
    from harness.store.schema import CHECKPOINT, IDENTITY, LEASE, RESULTS

    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    assert sorted(store.columns()) == sorted(RUN_COLUMNS)
    assert sorted(IDENTITY + LEASE + CHECKPOINT + RESULTS) == sorted(RUN_COLUMNS)   # every column is of one kind


def test_the_revisions_read_from_the_migration_files_are_the_ones_alembic_reads():
    """check_revision reads the files' revisions as text (no Alembic on a read): one declared in a way that reading
    misses would refuse this harness's own stores, or take a newer one's."""
    from harness.store.schema import _migrations, known_revisions

    _, scripts = _migrations()
    assert known_revisions() == ({s.revision for s in scripts.walk_revisions()}, scripts.get_current_head())


def test_alembic_run_by_hand_waits_for_a_worker_s_write_lock(tmp_path):
    """`alembic upgrade head` on a store (the migrations' env.py given a URL, not the store's connection) made its
    own engine with the SQLite driver's 5 s busy timeout: while a worker held the write lock 15 s it failed with
    "database is locked" after 5 s, where Store's own migration waited and migrated. It uses the store's engine
    now (its busy timeout, 30 s). The lock is held 7 s here, by another process."""
    import subprocess
    import sys

    from alembic import command

    from harness.store.schema import _migrations

    db = tmp_path / "h.db"
    cfg, scripts = _migrations()
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{db}")
    command.upgrade(cfg, scripts.get_revision(scripts.get_current_head()).down_revision)   # one behind
    held = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time, pathlib\n"
                               "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                               "c.execute('BEGIN IMMEDIATE')\npathlib.Path(sys.argv[2]).touch()\ntime.sleep(7)\n"
                               "c.execute('COMMIT')\n", str(db), str(held)])
    try:
        deadline = time.time() + 60
        while not held.exists() and time.time() < deadline:
            time.sleep(0.05)
        command.upgrade(cfg, "head")
    finally:
        holder.wait(timeout=60)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select version_num from alembic_version").fetchall() == [(scripts.get_current_head(),)]


def test_a_read_only_command_imports_no_alembic(tmp_path):
    """Only a writer migrates: asking Alembic which revisions there are cost each read ~0.25 s (its imports, then
    each migration file's)."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    url = f"sqlite:///{tmp_path / 'h.db'}"
    Store(url).engine.dispose()
    code = (f"import sys\nfrom harness.cli import main\nassert main(['export', '--db', {url!r}]) == 0\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "[]", out.stdout[-2000:] + out.stderr[-2000:]


def test_a_writer_imports_alembic_only_for_a_store_it_migrates(tmp_path):
    """A writer (each worker, each `harness run`) opening a store at the newest revision asked Alembic whether it
    was: ~0.1 s of CPU per process (its imports, its script directory). A current store is told from its version
    table now, without Alembic; a store one revision behind is still migrated, by Alembic."""
    import os
    import subprocess
    import sys

    import sqlalchemy as sa
    from alembic import command

    from harness.store.schema import _migrations
    from tests.helpers import ROOT

    cfg, scripts = _migrations()
    head = scripts.get_current_head()
    current, behind = f"sqlite:///{tmp_path / 'current.db'}", f"sqlite:///{tmp_path / 'behind.db'}"
    Store(current).engine.dispose()
    cfg.set_main_option("sqlalchemy.url", behind)
    command.upgrade(cfg, scripts.get_revision(head).down_revision)
    for url, imported in ((current, False), (behind, True)):
        code = (f"import sys\nfrom harness.store.db import Store\nStore({url!r}).engine.dispose()\n"
                f"print(any(m.split('.')[0] == 'alembic' for m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0 and out.stdout.split() == [str(imported)], url + out.stdout + out.stderr[-2000:]
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select version_num from alembic_version")).scalars().all() == [head]
        engine.dispose()


def store_from_before_migrations(path, rows: list[dict], analyses: list[dict] = ()) -> str:
    """An SQLite store as a harness from before migrations left it (no alembic_version, none of the columns
    added since, adapter_bytes, adapter_path and extra among them), holding `rows` of suite "s" (cell, status,
    more columns) and `analyses` (run_id, kind, payload). Returns its URL."""
    import datetime as dt
    import importlib.util

    import sqlalchemy as sa

    from harness.store.schema import MIGRATIONS

    spec = importlib.util.spec_from_file_location("baseline", f"{MIGRATIONS}/versions/0001_baseline.py")
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    engine = sa.create_engine(f"sqlite:///{path}")
    old_columns = [c for c in baseline._runs_columns() if c.name not in ("adapter_bytes", "adapter_path", "extra")]
    meta = sa.MetaData()
    runs = sa.Table("runs", meta, *old_columns, sa.UniqueConstraint("suite", "cell_key"))
    table = sa.Table("analyses", meta, *[sa.Column(n, t) for n, t in (
        ("id", sa.Integer), ("run_id", sa.Integer), ("suite", sa.String), ("kind", sa.String),
        ("created_at", sa.DateTime), ("payload", sa.JSON))])
    meta.create_all(engine)
    with engine.begin() as conn:
        for row in rows:
            cell = row["cell"]
            conn.execute(runs.insert(), {**{k: v for k, v in cell.config().items() if k in runs.c}, "suite": "s",
                                         "cell_key": cell.key, "attempts": 1, "created_at": dt.datetime(2026, 1, 1),
                                         "method_label": cell.method, "config": cell.config(),
                                         **{k: v for k, v in row.items() if k != "cell"}})
        for row in analyses:
            conn.execute(table.insert(), {"suite": "s", "created_at": dt.datetime(2026, 1, 1), **row})
    engine.dispose()
    return f"sqlite:///{path}"


def test_a_store_from_before_migrations_is_upgraded_in_place(tmp_path):
    """A store an earlier harness created (no alembic_version, and without columns added later) opens, keeps
    its rows, gains the new columns and takes part in claims."""
    import sqlalchemy as sa

    from harness.store.lease import current_worker

    cell = parse_suite(SUITE, "s.yaml").cells()[0]
    url = store_from_before_migrations(tmp_path / "old.db", [{"cell": cell, "status": "failed", "error": "old"}])
    store = Store(url)
    assert {"adapter_bytes", "extra", "worker_id", "heartbeat_at"} <= store.columns()
    fresh = Store(f"sqlite:///{tmp_path / 'new.db'}")

    def revision(s):
        with s.engine.connect() as conn:
            return conn.execute(sa.text("select version_num from alembic_version")).scalar()

    assert revision(store) == revision(fresh) and store.columns() == fresh.columns()   # as if created new
    (old,) = store.records("s")
    assert old.status == Status.FAILED and old.error == "old"
    claim = store.claim_next("s", [cell.key], current_worker(), retry_failed=True)
    assert claim is not None and claim.attempt == 2


def test_a_store_of_an_older_revision_is_read_as_it_is(tmp_path):
    """A reader opens a store read-only and never migrates it: on one from before the columns of later revisions
    (a harness upgraded, no worker run yet), `harness status` and `compare` failed with a traceback (no such
    column: runs.train_flops, then runs.heartbeat_at; an ablation: analyses.status). Its rows read with those
    columns empty, a running row without a heartbeat as stale (the staleness rule's missing heartbeat), an
    analysis from before analyses had a status as completed; the file stays as it was."""
    from tests.helpers import at_rest, call_cli

    full, probe = parse_suite(SUITE, "s.yaml").cells()
    (tmp_path / "db").mkdir()
    url = store_from_before_migrations(tmp_path / "db" / "old.db", [
        {"cell": full, "status": "completed", "score": 61.25, "metrics": {"accuracy": 61.25}},
        {"cell": probe, "status": "running"}], [{"run_id": 1, "kind": "adapter_ablation", "payload": {"spans": []}}])
    (tmp_path / "s.yaml").write_text(SUITE)
    before = at_rest(tmp_path / "db")

    store = Store(url, read_only=True)
    done, running = store.records("s")
    assert (done.score, done.metrics, done.train_flops, done.worker_id) == (61.25, {"accuracy": 61.25}, None, None)
    assert store.get(done.id).score == 61.25 and store.stale_keys("s", 60.0) == {probe.key}
    assert [(a.run_id, a.payload, a.status) for a in store.analyses("s")] == [(done.id, {"spans": []}, None)]
    proc = call_cli("status", tmp_path / "s.yaml", "--db", url)
    assert proc.returncode == 0 and "2 cells: 1 completed (50%), 1 stale (50%)" in proc.stdout, \
        proc.stdout + proc.stderr[-2000:]
    proc = call_cli("compare", str(done.id), str(running.id), "--db", url)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert at_rest(tmp_path / "db") == before, "nothing written"


def _open_fresh_stores(folder, t0, period, rounds, errors):
    """One of several processes: round r, all of them open the same new store file at the same instant, t0 + r
    * period (sleeping until then wakes them together, closer than a barrier does)."""
    for r in range(rounds):
        time.sleep(max(0.0, t0 + r * period - time.time()))
        try:
            Store(f"sqlite:///{folder}/s{r}.db").engine.dispose()
        except Exception as e:   # InputError: "--db: cannot open the store ...: database is locked"
            errors.put(f"round {r}: {e}")


def test_processes_that_open_a_new_store_together_all_get_it(tmp_path):
    """The ranks of a DDP cell, or the workers of one machine, open a fresh SQLite store at the same moment. Each
    connection switches the file to WAL; SQLite refused the racing switches at once ("database is locked", without
    waiting out busy_timeout) and a rank died with exit 2 (here 4-15 of the 120 opens failed before the fix)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs, rounds, period = 4, 30, 0.15
    errors = ctx.Queue()
    t0 = time.time() + 0.5
    workers = [ctx.Process(target=_open_fresh_stores, args=(tmp_path, t0, period, rounds, errors))
               for _ in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    failed = []
    while not errors.empty():
        failed.append(errors.get())
    assert [w.exitcode for w in workers] == [0] * procs
    assert failed == [], f"{len(failed)} of {procs * rounds} opens failed: {failed[:3]}"
    for r in range(rounds):
        with sqlite3.connect(tmp_path / f"s{r}.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_enqueue_says_how_many_rows_it_added_on_either_backend(db_url):
    """enqueue returns the rows it added: on PostgreSQL it returned -1 (psycopg's many-row insert has no row count)
    for 2 new cells. A row another process queued between enqueue's read and its insert is not counted."""
    from sqlalchemy import event

    first, second = parse_suite(SUITE, "s.yaml").cells()
    store, other = Store(db_url), Store(db_url)
    assert store.enqueue([first, second]) == 2
    assert store.enqueue([first, second]) == 0
    late = parse_suite(SUITE.replace("name: s", "name: t"), "t.yaml").cells()

    @event.listens_for(store.engine, "before_cursor_execute")
    def queue_one_first(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO runs") and not other.records("t"):
            other.enqueue(late[:1])   # committed on a connection of its own, after enqueue read none

    assert store.enqueue(late) == 1
    assert len(store.records("t")) == 2
