"""A cell that raises what is not an Exception: the tokenizers library's Rust panics (pyo3_runtime.PanicException)
derive from BaseException. The cell is recorded failed with its reason and the worker goes on to the next cell;
an interrupt keeps its meaning (the worker stops)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT, suite_yaml, write_suite
from harness.spec.status import Status
from harness.store.db import Store

# `harness run` whose first cell (RAISE=panic) hits a real tokenizers panic at its second optimizer step (the
# loop asks preempt.requested at every step; the runner asks it once before each claim), or is interrupted there
# (RAISE=interrupt); or whose ablations panic (RAISE=ablation)
PANIC = r"""
import os, sys
from harness.analysis import ablate
from harness.train import preempt

def panic():   # a window's stride past what truncation leaves: tokenizers panics in Rust
    from tokenizers import Tokenizer, models, pre_tokenizers
    t = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.enable_truncation(max_length=4, stride=2, strategy="only_second")
    t.encode("a b a", "a b a b a b a b")

real, calls = preempt.requested, [0]

def requested():
    calls[0] += 1
    if calls[0] == 3 and os.environ["RAISE"] == "interrupt":
        raise KeyboardInterrupt
    if calls[0] == 3 and os.environ["RAISE"] == "panic":
        panic()
    return real()

preempt.requested = requested
if os.environ["RAISE"] == "ablation":
    ablate.ablate = lambda *a, **k: panic()
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _run(tmp_path, tiny_bert, small_glue, what: str, methods: str = "[full, {name: lora, rank: 2}]",
         extra: str = "") -> tuple[subprocess.CompletedProcess, list]:
    suite = write_suite(tmp_path / "s.yaml", suite_yaml(tiny_bert, "panics", methods, "[rte]", "{max_steps: 4}")
                        + extra)
    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = subprocess.run([sys.executable, "-c", PANIC, "run", str(suite), "--db", db, "--output-dir",
                           str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "RAISE": what},
                          capture_output=True, text=True, timeout=600)
    return proc, sorted(Store(db).records("panics"), key=lambda r: r.id)


def test_a_panic_inside_a_cell_fails_that_cell_and_the_worker_goes_on(tmp_path, tiny_bert, small_glue):
    """Before: the panic passed the runner's `except Exception`; the worker died with a traceback (exit 1), its
    first cell left running in the store until its lease went stale, the second cell never started."""
    proc, recs = _run(tmp_path, tiny_bert, small_glue, "panic")
    err = proc.stderr
    assert [r.status for r in recs] == [Status.FAILED, Status.COMPLETED], ([(r.status, r.error) for r in recs],
                                                                           err[-3000:])
    assert proc.returncode == 1, err[-3000:]   # EXIT_FAILED: a cell failed, the suite ran to its end
    assert "Traceback" not in err.split("panicked at", 1)[-1], err[-3000:]   # Rust's own note only, no Python one
    failed = recs[0]
    assert failed.error.startswith("PanicException: "), failed.error[:300]
    assert failed.score is None and failed.attempts == 1
    assert f"cell {failed.cell_key}: FAILED after" in err and "PanicException" in err
    assert (tmp_path / "out" / "panics" / failed.cell_key / "error.log").is_file()
    assert recs[1].score is not None


def test_an_interrupt_inside_a_cell_still_stops_the_worker(tmp_path, tiny_bert, small_glue):
    """Ctrl-C is no failure of the cell: it is given back (pending, its attempt's files gone) and the worker ends."""
    proc, recs = _run(tmp_path, tiny_bert, small_glue, "interrupt")
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr, proc.stderr[-3000:]
    assert f"cell {recs[0].cell_key}: interrupted; given back to the queue" in proc.stderr, proc.stderr[-3000:]
    assert [(r.status, r.error) for r in recs] == [(Status.PENDING, None)] * 2


def test_a_panic_in_an_ablation_fails_that_ablation_and_the_worker_ends_normally(tmp_path, tiny_bert, small_glue):
    """The suite's `ablate` entries run in the worker after its cells: a panic there ended it with a traceback,
    the ablation's work item left running (leased) until its lease went stale."""
    import sqlite3

    proc, recs = _run(tmp_path, tiny_bert, small_glue, "ablation", "[{name: lora, rank: 2}]",
                      "ablate: [{task: rte, method: lora}]\n")
    err = proc.stderr
    with sqlite3.connect(tmp_path / "h.db") as db:
        items = db.execute("SELECT run_id, status, error FROM analyses").fetchall()
    assert [(run_id, status) for run_id, status, _ in items] == [(recs[0].id, "failed")], (items, err[-3000:])
    assert items[0][2].startswith("PanicException: ")
    assert f"ablation of run {recs[0].id} FAILED: PanicException" in err, err[-3000:]
    assert proc.returncode == 1 and "Traceback" not in err.split("panicked at", 1)[-1], err[-3000:]
    assert [r.status for r in recs] == [Status.COMPLETED]
