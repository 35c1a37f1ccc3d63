"""Shared fixtures: tiny random models (fast unit tests), small GLUE-layout files, the real GLUE directory, the
stores. Plain functions and classes the tests import live in tests/helpers/."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import pytest

from tests.helpers.files import glue_dir_searched, make_tiny_model, real_glue_dir, write_small_glue

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The README's `HARNESS_DATA_DIR=../shared/data/glue python -m pytest -q` gives a path relative to where pytest
# starts; made absolute once, here, so every harness subprocess (some run in other directories) finds the data.
if os.environ.get("HARNESS_DATA_DIR"):
    os.environ["HARNESS_DATA_DIR"] = os.path.abspath(os.path.expanduser(os.environ["HARNESS_DATA_DIR"]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """The README runs the tests two files at a time (pytest-xdist's `-n 2 --dist loadfile`: the suite is mostly
    interpreter starts and waits, one core busy). A test whose assertion depends on wall time is marked `alone`:
    it holds an exclusive lock, from its fixtures' set-up to their teardown, that every other test holds shared,
    so it never runs beside another. In one process (no xdist) there is no lock."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        return (yield)
    with open(os.path.join(tempfile.gettempdir(), f"harness-tests-{run}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH)
        return (yield)   # closing the file releases the lock


@pytest.fixture(scope="session", autouse=True)
def one_peaks_file(tmp_path_factory):
    """Matmul peaks cached in one file for the whole session, every subprocess included, as a machine keeps them
    across its suites (HARNESS_PEAKS_FILE): each test's fresh output folder would otherwise time them again at
    its cells' ends (1-3 s per cell end on a 2-core CPU). Under xdist, one file for both workers: in the folder
    above theirs. Never a developer's own file. Tests of the cache itself unset it
    (tests/train/test_precision_measured.py)."""
    from harness.train.peaks import FILE_ENV

    xdist = os.environ.get("PYTEST_XDIST_WORKER")
    folder = tmp_path_factory.getbasetemp().parent if xdist else tmp_path_factory.mktemp("peaks")
    os.environ[FILE_ENV] = str(folder / "device_peaks.json")


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The real GLUE files; a test that needs them is skipped, with the reason, where they are missing."""
    path = real_glue_dir()
    if path is None:
        pytest.skip(f"real GLUE files not found (no RTE/train.tsv under {glue_dir_searched()}): "
                    "set HARNESS_DATA_DIR to the GLUE data folder")
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def small_glue(tmp_path_factory) -> Path:
    return write_small_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the session (stopped at the end)."""
    from tests.helpers.postgres import own_server

    yield from own_server()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty store: an SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'h.db'}"
    server = request.getfixturevalue("pg_server")
    return server.create_database(f"t_{os.getpid()}_{len(os.listdir(tmp_path.parent))}_{tmp_path.name}"[:60])
