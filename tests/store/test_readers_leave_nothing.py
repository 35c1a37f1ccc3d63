"""Commands that only read an SQLite store leave its folder exactly as it was: a read-only connection to a WAL store
creates the store's -shm and -wal and, being read-only, cannot remove them; a store no connection has open is read
without them (engine._sqlite_read_only_engine). A store a worker is writing is still read with locks, its last
commits included, and a read that a writer could have torn is refused."""

from __future__ import annotations

import os
import shutil

import pytest
from sqlalchemy import select

from harness.store.db import Store
from harness.store.schema import RunRecord
from tests.helpers import ROOT, call_cli, fixture_store


def stat_listing(root) -> dict:
    """Every file and folder under root: its size and modification time (what a read must leave as it was)."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.stat(os.path.join(folder, name))
            seen[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return seen


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("readers") / "fx.db"
    fixture_store.build(path)
    return path


@pytest.fixture
def at_rest_url(built, tmp_path):
    """The fixture store (24 runs, 1 failed) in a folder of its own, every connection closed."""
    (tmp_path / "db").mkdir()
    shutil.copyfile(built, tmp_path / "db" / "fx.db")
    assert sorted(os.listdir(tmp_path / "db")) == ["fx.db"]   # at rest: no connection open
    return f"sqlite:///{tmp_path / 'db' / 'fx.db'}"


SUITE = str(ROOT / "suites" / "demo.yaml")


@pytest.mark.parametrize("args, code", [
    (["status", SUITE], 0),
    (["status", SUITE, "--json"], 0),
    (["export"], 0),
    (["export", "--table", "best", "--suite", "fx"], 0),
    (["compare", "1", "4"], 2),        # no saved predictions: refused
    (["ablate", "1"], 2),              # full fine-tuning has no adapters to remove: refused
    (["estimate", SUITE, "--from-store", "{url}"], 0),
])
def test_a_command_that_reads_the_store_leaves_its_folder_as_it_was(at_rest_url, args, code):
    """Each left fx.db-shm (32 KiB) and an empty fx.db-wal beside a store that had neither."""
    folder = os.path.dirname(at_rest_url.removeprefix("sqlite:///"))
    before = stat_listing(folder)
    r = call_cli(*[a.format(url=at_rest_url) for a in args], "--db", at_rest_url)
    assert r.returncode == code, r.stderr[-2000:]
    assert stat_listing(folder) == before


def test_the_board_s_pages_leave_the_store_s_folder_as_it_was(at_rest_url, monkeypatch):
    """The board's loads (Leaderboard, Runs, Grid) each left the -shm and -wal of a store no worker had open."""
    from streamlit.testing.v1 import AppTest

    from harness.board import APP

    folder = os.path.dirname(at_rest_url.removeprefix("sqlite:///"))
    before = stat_listing(folder)
    monkeypatch.setenv("HARNESS_DB", at_rest_url)
    for page in ("Leaderboard", "Runs", "Grid"):
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.query_params.update({"page": page, "suite": "fx"})
        at.run()
        assert not at.exception, at.exception
        assert at.title[0].value == page
        assert stat_listing(folder) == before, page


def test_a_store_a_worker_is_writing_is_read_with_its_last_commits(tmp_path):
    """A writer's commit waits in the -wal until a checkpoint: a reader that read the file alone (immutable) would
    miss it. With the writer's connection open, the -wal is there and the store is read with locks."""
    url = fixture_store.build(tmp_path / "fx.db")
    writer = Store(url)
    with writer.engine.begin() as conn:   # one row changed, committed to the -wal; the writer's connection stays open
        conn.execute(RunRecord.__table__.update().where(RunRecord.id == 1).values(error="written by the worker"))
    assert os.path.getsize(f"{tmp_path / 'fx.db'}-wal") > 0
    reader = Store(url, read_only=True)
    with reader.snapshot():
        assert reader.get(1).error == "written by the worker"
    writer.engine.dispose()


def test_a_read_of_a_store_at_rest_that_a_writer_changed_is_refused(tmp_path):
    """A store at rest is read without locks: a writer that starts during the read and checkpoints (its last
    connection closing) rewrites the file under it. What was read could mix two states: refused, never returned."""
    from harness.store.engine import StoreChanged

    url = fixture_store.build(tmp_path / "fx.db")
    reader = Store(url, read_only=True)
    with pytest.raises(StoreChanged, match=r"was written while it was read"):
        with reader.snapshot() as conn:
            assert len(conn.execute(select(RunRecord.id)).all()) == 24
            writer = Store(url)
            with writer.engine.begin() as w:
                w.execute(RunRecord.__table__.update().where(RunRecord.id == 1).values(error="changed"))
            writer.engine.dispose()   # the last connection: its -wal goes into the file
    with reader.snapshot():   # a read that begins now sees the change
        assert reader.get(1).error == "changed"
    assert sorted(os.listdir(tmp_path)) == ["fx.db"]


def test_a_store_reached_through_a_symlink_that_a_worker_is_writing_is_read_with_its_last_commits(tmp_path):
    """SQLite puts the -wal beside the file the link names: looked for beside the link, none was found and the
    store was read at rest, from the file alone, without the worker's commit (error None)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").mkdir()
    fixture_store.build(tmp_path / "real" / "fx.db")
    os.symlink(tmp_path / "real" / "fx.db", tmp_path / "link" / "fx.db")
    url = f"sqlite:///{tmp_path / 'link' / 'fx.db'}"
    writer = Store(url)
    with writer.engine.begin() as conn:
        conn.execute(RunRecord.__table__.update().where(RunRecord.id == 1).values(error="written by the worker"))
    assert os.path.getsize(tmp_path / "real" / "fx.db-wal") > 0 and os.listdir(tmp_path / "link") == ["fx.db"]
    reader = Store(url, read_only=True)
    with reader.snapshot():
        assert reader.get(1).error == "written by the worker"
    writer.engine.dispose()


def test_status_watch_looks_again_after_a_worker_wrote_the_store_during_a_look(at_rest_url, monkeypatch):
    """A worker that opened, wrote and closed the store (its -wal checkpointed into the file) during one look of
    `harness status --watch` ended the watch: "error: --db: the store ... was written while it was read", exit 1.
    The torn look is not printed; the next one reads the store anew."""
    import json
    import time

    import harness.cli.status as status

    real_notes, looks = status.store_notes, []

    def notes_while_a_worker_writes(*args, **kwargs):
        looks.append(1)
        if len(looks) == 1:
            writer = Store(at_rest_url)
            with writer.engine.begin() as w:
                w.execute(RunRecord.__table__.update().where(RunRecord.id == 1).values(error="changed"))
            writer.engine.dispose()   # its last connection: the -wal goes into the file
        return real_notes(*args, **kwargs)

    sleeps = []

    def sleep(seconds):   # the watch's second wait ends it (Ctrl-C)
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(status, "store_notes", notes_while_a_worker_writes)
    monkeypatch.setattr(time, "sleep", sleep)
    r = call_cli("status", SUITE, "--db", at_rest_url, "--json", "--watch", "5")
    assert r.returncode == 0 and r.stderr == "", r.stderr[-2000:]
    assert len(looks) == 2 and sleeps == [5.0, 5.0]
    (report,) = r.stdout.splitlines()   # the torn look printed nothing
    assert "counts" in json.loads(report)


def test_slurm_s_output_folder_check_is_not_skipped_when_a_worker_wrote_the_store_during_it(at_rest_url, tmp_path,
                                                                                          monkeypatch):
    """`harness slurm` leaves a store it cannot reach to the workers (unreachable_ok); a store written during its
    read was taken for one it cannot reach, so the check of the output folder was skipped without a word."""
    from harness.launch.output_binding import bind_output_dir, check_output_dir
    from harness.store import engine

    other = Store(fixture_store.build(tmp_path / "other.db"))
    bind_output_dir(str(tmp_path / "out"), other)   # the folder is another store's
    other.engine.dispose()
    monkeypatch.setattr(engine, "_state_or_none", lambda path: None)   # every read of the store is written over
    with pytest.raises(engine.StoreChanged):
        check_output_dir(str(tmp_path / "out"), at_rest_url, unreachable_ok=True)
