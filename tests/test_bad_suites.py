"""The malformed-suite corpus (tests/bad_suites/): every file is refused by `harness validate` and `harness run`
with exit 2, one line naming the file, the YAML line and the field, no traceback, nothing written, in under 2 s.

Each file says why it is bad on its first line and what the error must contain on its second
(`# expect: :LINE: field: message`, LINE counted in the file itself). Run in-process (the CLI's main), so the
whole corpus takes seconds; a few cases go through a real `python -m harness` subprocess too.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import pytest

from conftest import ROOT, real_glue_dir, run_cli
from harness.cli import main

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


def _cli(*argv) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def _assert_refused(path: Path, code: int, out: str, err: str, took: float, expect: str) -> None:
    lines = err.splitlines()
    assert code == 2, (path.name, code, err)
    assert len(lines) == 1, (path.name, err)
    assert lines[0].startswith(f"error: {path}:"), lines[0]
    assert expect in lines[0], (path.name, lines[0])
    assert "Traceback" not in err and out == "", (path.name, out, err)
    assert took < 2.0, f"{path.name}: {took:.2f}s"


def test_the_corpus_is_large_enough():
    assert len(FILES) >= 60
    assert all(expected(p) for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bad_suite_is_refused_by_validate_and_run(path, machine):
    before = sorted(os.listdir(CORPUS))
    expect = expected(path)
    _assert_refused(path, *_cli("validate", path), expect)
    db, out = machine / "db" / "h.db", machine / "out"
    _assert_refused(path, *_cli("run", path, "--db", f"sqlite:///{db}", "--output-dir", out), expect)
    assert list(machine.iterdir()) == [], "a refused suite wrote something"
    assert sorted(os.listdir(CORPUS)) == before


def test_a_hundred_thousand_seeds_are_refused_fast(machine):
    """Duplicate scans are linear and the grid cap applies before any cell is built (a quadratic scan hung)."""
    path = machine / "seeds.yaml"
    path.write_text("name: many\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\nseeds: ["
                    + ", ".join(map(str, range(100_000))) + "]\n")
    code, out, err, took = _cli("validate", path)
    assert code == 2 and "100,000 cells" in err and "--max-cells" in err, err
    assert took < 3.0, took   # ~1.2 s on an idle 2-core machine, most of it reading 600 kB of YAML
    path.write_text(path.read_text().replace("99999]", "0]"))   # one seed twice: found in linear time
    code, out, err, took = _cli("validate", path, "--max-cells", 200_000)
    assert code == 2 and ":5: seeds[99999]: the same as seeds[0]" in err, err
    assert took < 3.0, took


@pytest.mark.parametrize("name", ["alias_bomb", "not_utf8", "deep_nesting", "lr_dot_inf"])
def test_bad_suite_through_a_real_subprocess(name, tmp_path):
    path = CORPUS / f"{name}.yaml"
    db, out = tmp_path / "db" / "h.db", tmp_path / "out"
    for argv in (("validate", path), ("run", path, "--db", f"sqlite:///{db}", "--output-dir", out)):
        t0 = time.perf_counter()
        proc = run_cli(*argv, cwd=tmp_path, timeout=60)
        took = time.perf_counter() - t0
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}:") and expected(path) in lines[0], lines
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        assert took < 10, took   # an interpreter start included; validation itself is in-process-tested above
    assert list(tmp_path.iterdir()) == []
