"""The malformed-suite corpus (tests/bad_suites/): every file is refused by `harness validate`, `harness run` and
`harness estimate --pilot` with exit 2, one line naming the file, the YAML line and the field, no traceback,
nothing written. (How fast: bench/bench_validate.py.)

Each file says why it is bad on its first line and what the error must contain on its second
(`# expect: :LINE: field: message`, LINE counted in the file itself). Run in-process (the CLI's main), so the
whole corpus takes seconds; a few cases go through a real `python -m harness` subprocess too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import ROOT, assert_refused, call_cli, real_glue_dir, run_cli

CORPUS = ROOT / "tests" / "bad_suites"
FILES = sorted(CORPUS.glob("*.yaml"))
# files whose encoding cannot carry the header
NO_HEADER = {"utf16.yaml": ":1: not UTF-8 text (byte 0xff at column 1)"}


def expected(path: Path) -> str:
    if path.name in NO_HEADER:
        return NO_HEADER[path.name]
    header = path.read_bytes().split(b"\n", 2)[1].decode("ascii")
    assert header.startswith("# expect: "), f"{path.name}: second line must be '# expect: ...'"
    return header.removeprefix("# expect: ")


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """The environment the corpus is judged in: offline, the real GLUE files, an empty working directory."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    glue = real_glue_dir()
    if glue is not None:
        monkeypatch.setenv("HARNESS_DATA_DIR", str(glue))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_corpus_is_large_enough():
    assert len(FILES) >= 60
    assert all(expected(p) for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bad_suite_is_refused_by_validate_and_run(path, machine):
    before = sorted(os.listdir(CORPUS))
    expect = expected(path)
    assert_refused(call_cli("validate", path), expect, where=path)
    db, out = machine / "db" / "h.db", machine / "out"
    assert_refused(call_cli("run", path, "--db", f"sqlite:///{db}", "--output-dir", out), expect, where=path)
    # a pilot trains here too (before: a model not cached offline or missing data failed each pilot, minutes, and
    # the estimate exited 0 with "0 ± 0 device-hours")
    assert_refused(call_cli("estimate", path, "--pilot"), expect, where=path)
    assert list(machine.iterdir()) == [], "a refused suite wrote something"
    assert sorted(os.listdir(CORPUS)) == before


# `harness params` counts from configs alone and reads no data (it has no --data-dir): a suite whose only fault is
# its data folder is not refused by it
DATA_ONLY = {"data_dir_missing", "data_dir_without_task"}


@pytest.mark.parametrize("path", [p for p in FILES if p.stem not in DATA_ONLY],
                         ids=[p.stem for p in FILES if p.stem not in DATA_ONLY])
def test_bad_suite_is_refused_by_params(path, machine):
    """params ran the schema only: a LoRA rank over the model's width, an adapter path that is not there, a
    max_length over the model's positions printed a table (exit 0); an adapter size over the width failed in the
    method's set-up, without the file, line and field."""
    assert_refused(call_cli("params", path), expected(path), where=path)
    assert list(machine.iterdir()) == [], "a refused suite wrote something"


@pytest.mark.timeout(300)   # a hang guard, not a speed check (a quadratic scan hung); speed: bench/bench_validate.py
def test_a_hundred_thousand_seeds_are_refused(machine):
    """The grid cap applies before any cell is built, and a duplicate among 100,000 seeds is found (the scans
    are linear)."""
    path = machine / "seeds.yaml"
    path.write_text("name: many\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\nseeds: ["
                    + ", ".join(map(str, range(100_000))) + "]\n")
    line = assert_refused(call_cli("validate", path), "100,000 cells", where=path)
    assert "--max-cells" in line, line
    path.write_text(path.read_text().replace("99999]", "0]"))   # one seed twice
    assert_refused(call_cli("validate", path, "--max-cells", 200_000), ":5: seeds[99999]: the same as seeds[0]",
                   where=path)


def test_a_task_from_the_hub_not_cached_offline_says_how_to_get_it(machine, monkeypatch):
    """No local data and the hub's data set not cached: the refusal names the way to fill the cache, as a model's
    does (before: only what was missing)."""
    import datasets.config

    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", machine / "no-cache")   # read at its import
    path = machine / "hub.yaml"
    path.write_text("name: hub\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n")
    assert_refused(call_cli("validate", path), ":3: tasks[0]: no data for rte: no --data-dir, data_dir or "
                   "$HARNESS_DATA_DIR, and nyu-mll/glue is not cached while the hub is offline (`harness prefetch "
                   "SUITE` on a machine with internet fills the cache, or give the local files)", where=path)


@pytest.mark.parametrize("where", ["XDG_CACHE_HOME", "HF_DATASETS_CACHE"])
def test_a_hub_data_set_is_looked_for_where_datasets_reads_it(tmp_path, where):
    """validate looked for the hub's cached data in a folder it worked out by hand: with XDG_CACHE_HOME set (no
    HF_HOME), data cached where `datasets` reads it was "not cached" (refused, exit 2). Now `datasets.config`'s
    folder; with HF_DATASETS_CACHE elsewhere, a copy under $HF_HOME is not the one read. A subprocess: datasets
    reads the variables once, at its import."""
    import subprocess
    import sys

    (tmp_path / "xdg" / "huggingface" / "datasets" / "nyu-mll___glue" / "rte").mkdir(parents=True)
    path = tmp_path / "hub.yaml"
    path.write_text("name: hub\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_DATA_DIR", "HF_HOME", "HF_DATASETS_CACHE")}
    env.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    if where == "HF_DATASETS_CACHE":
        env.update(HF_HOME=str(tmp_path / "xdg" / "huggingface"), HF_DATASETS_CACHE=str(tmp_path / "elsewhere"))
    proc = subprocess.run([sys.executable, "-m", "harness", "validate", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    if where == "XDG_CACHE_HOME":
        assert proc.returncode == 0 and "data: the Hugging Face hub" in proc.stdout, proc.stdout + proc.stderr
    else:
        assert_refused(proc, "nyu-mll/glue is not cached while the hub is offline", where=path)


@pytest.mark.parametrize("name", ["alias_bomb", "not_utf8", "deep_nesting", "lr_dot_inf"])
def test_bad_suite_through_a_real_subprocess(name, tmp_path):
    path = CORPUS / f"{name}.yaml"
    db, out = tmp_path / "db" / "h.db", tmp_path / "out"
    for argv in (("validate", path), ("run", path, "--db", f"sqlite:///{db}", "--output-dir", out)):
        assert_refused(run_cli(*argv, cwd=tmp_path, timeout=120), expected(path), where=path)
    assert list(tmp_path.iterdir()) == []
