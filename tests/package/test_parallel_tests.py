"""The README's test command runs two test files at a time (pytest-xdist, `-n 2 --dist loadfile`); a test marked
`alone` must never run beside another (tests/conftest.py). Checked with a real `pytest -n 2` over two small
files whose tests write down when they ran."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT

RECORD = """
import os, time
import pytest

def ran(name, seconds):
    start = time.time()
    time.sleep(seconds)
    with open(os.environ["RAN_LOG"], "a") as f:
        f.write(f"{name} {os.environ.get('PYTEST_XDIST_WORKER')} {start} {time.time()}\\n")
"""


def test_an_alone_test_never_runs_beside_another(tmp_path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_protocol  # the lock\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    alone: never beside another test\n")
    (tmp_path / "record.py").write_text(RECORD)
    # two files of 13 tests each, one per worker, side by side; the alone test is in the middle of one of them
    (tmp_path / "test_a.py").write_text("import pytest\nfrom record import ran\n" + "".join(
        "\n@pytest.mark.alone\ndef test_alone():\n    ran('alone', 1.5)\n" if i == 6 else
        f"\ndef test_a{i}():\n    ran('a{i}', 0.3)\n" for i in range(13)))
    (tmp_path / "test_b.py").write_text("from record import ran\n" + "".join(
        f"\ndef test_b{i}():\n    ran('b{i}', 0.3)\n" for i in range(13)))
    log = tmp_path / "ran.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "RAN_LOG": str(log)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", "-p",
                           "no:cacheprovider", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {name: (worker, float(start), float(end))
            for name, worker, start, end in (line.split() for line in log.read_text().splitlines())}
    assert len(runs) == 26 and {w for w, _, _ in runs.values()} == {"gw0", "gw1"}, runs

    def overlap(a, b):
        return runs[a][1] < runs[b][2] and runs[b][1] < runs[a][2]

    others = [n for n in runs if n != "alone"]
    assert not [n for n in others if overlap("alone", n)], runs
    # the lock holds the others apart only from the alone test: ordinary tests of two files do run side by side
    assert any(overlap(a, b) for a in others if a[0] == "a" for b in others if b[0] == "b"), runs
