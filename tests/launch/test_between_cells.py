"""What a worker does between its cells: the cell's leftovers collected, and the process's long-lived objects
(the libraries the cells import, the first cell's leftovers) kept out of every later collection, so that a cell's
clean-up does not walk them again (harness/launch/runner.py, _freeze_libraries and _release_memory). In a fresh
interpreter: the collector's state is the process's."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT, suite_yaml, write_suite

# A worker process stand-in: two million long-lived tracked objects (after a real cell torch, transformers and
# adapters leave ~470,000), the run's cells counted as they start, every full (generation 2) collection timed in the
# collecting thread's CPU time: the wall clock would also count waits for a core (the tests run two files at once).
_WORKER = """
import gc, json, sys, time
long_lived = [[i] for i in range(2_000_000)]
import harness.launch.runner as runner
from harness.cli import main

started = [0]
train = runner.train_and_evaluate
def counted(*args, **kwargs):
    started[0] += 1
    return train(*args, **kwargs)
runner.train_and_evaluate = counted

full, t0 = [], [0.0]
def timed(phase, info):
    if phase == "start":
        t0[0] = time.thread_time()
    elif info["generation"] == 2:
        full.append([started[0], time.thread_time() - t0[0]])
gc.callbacks.append(timed)
gc.collect()   # before any cell (counted as cell 0): what walking the long-lived objects costs
code = main(sys.argv[1:])
gc.callbacks.remove(timed)
print(json.dumps({"code": code, "cells": started[0], "full": full}))
"""


def test_a_workers_later_cells_do_not_walk_the_long_lived_objects_again(tmp_path, tiny_bert, small_glue):
    suite = write_suite(tmp_path / "s.yaml", suite_yaml(
        tiny_bert, "between", "[full, {name: houlsby, size: 4, learning_rate: 1e-3}, {name: lora, rank: 2}]",
        "[rte]", "{max_steps: 2}"))
    proc = subprocess.run([sys.executable, "-c", _WORKER, "run", str(suite), "--db", f"sqlite:///{tmp_path / 'h.db'}",
                           "--output-dir", str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] == 0 and out["cells"] == 3
    before = [took for cell, took in out["full"] if cell == 0]
    first = [took for cell, took in out["full"] if cell == 1]
    later = [took for cell, took in out["full"] if cell >= 2]
    # the objects are enough to see: a full collection before any cell walks them all
    assert max(before) > 0.1, out["full"]
    # every cell, the first included, still collects as it ends (its model and optimizer must not outlive it) ...
    assert len(first) >= 2 and len(later) >= 2, out["full"]
    # ... without walking the process's long-lived objects again (before: 0.3-0.6 s each, twice per later cell;
    # the first cell's three walked them until its libraries were frozen before it: 0.36 s each here)
    assert max(first) < 0.05 and max(later) < 0.05, out["full"]


_BEFORE_FIRST_CELL = """
import gc, json, sys
import harness.launch.runner as runner   # what a worker has imported when it claims its first cell

full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and full.append(1))
runner._freeze_libraries()
print(json.dumps({"full": len(full), "enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
                  "imported": sorted(m for m in ("datasets", "transformers.models.auto.tokenization_auto")
                                     if m in sys.modules)}))
"""


def test_the_libraries_a_worker_imports_before_its_first_cell_are_not_collected_as_they_import():
    """Before its first cell a worker imports what every cell imports and freezes it (runner._freeze_libraries).
    Its collector's automatic full collections during those imports walked the whole process three times (~0.5 s
    of every worker on a 2-core AMD EPYC) to find ~6,000 objects of garbage: the collector is off while they import
    (their garbage is frozen with them), and on again after."""
    proc = subprocess.run([sys.executable, "-c", _BEFORE_FIRST_CELL], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] == ["datasets", "transformers.models.auto.tokenization_auto"], out
    assert out["frozen"] > 300_000, out   # the libraries' objects
    assert out["full"] == 0 and out["enabled"], out
