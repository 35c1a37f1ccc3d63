"""Stop signals and mid-cell checkpoints: a cell stopped by SIGUSR1/SIGUSR2/SIGTERM is checkpointed, given back,
and resumed by the next claim with the same final weights and dev metric as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, suite_yaml, write_suite
from harness.spec.errors import EXIT_PREEMPTED, Preempted
from harness.train import checkpoint, preempt


def suite_text(model, name="p", budget="{epochs: 2}", methods="[{name: houlsby, size: 4, learning_rate: 1e-3}]",
               tasks="[rte]", hparams="batch_size: 8, learning_rate: 1e-4"):
    return suite_yaml(model, name, methods, tasks, budget, hparams)


def _one_cell(tmp_path, tiny_bert, **kw):
    from harness.plan.suite import load_suite

    suite = load_suite(str(write_suite(tmp_path / "p.yaml", suite_text(tiny_bert, **kw))))
    cells = suite.cells()
    assert len(cells) == 1
    return cells[0]


@pytest.fixture
def signals():
    """The real handlers, installed as the CLI does; the flag is cleared afterwards."""
    old = {s: signal.getsignal(s) for s in preempt.STOP_SIGNALS}
    preempt.install()
    preempt.reset()
    yield
    preempt.reset()
    for s, h in old.items():
        signal.signal(s, h)


def _signal_at_step(monkeypatch, step: int, sig=signal.SIGUSR1):
    """Sends a real signal to this process when the loop checks the stop flag for the `step`-th time (once per
    optimizer step)."""
    calls = {"n": 0}
    real = preempt.requested

    def requested():
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), sig)
        return real()

    monkeypatch.setattr(preempt, "requested", requested)
    return calls


def _run(cell, glue, out):
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    ctx = RunContext(data_dir=str(glue), cache_dir=None, show_progress=False)
    return train_and_evaluate(cell, ctx, output_dir=str(out))


def _as_dict(result):
    return result if isinstance(result, dict) else result.__dict__


@pytest.mark.parametrize("stop_step, sig, budget", [
    (8, signal.SIGUSR1, "{epochs: 2}"),            # in the middle of the second epoch
    (6, signal.SIGUSR2, "{epochs: 2}"),            # on the last batch of the first epoch (the epoch's eval follows)
    (3, signal.SIGTERM, "{max_steps: 9}"),
])
def test_resumed_cell_equals_uninterrupted(tmp_path, tiny_bert, small_glue, monkeypatch, signals, capfd,
                                           stop_step, sig, budget):
    cell = _one_cell(tmp_path, tiny_bert, budget=budget)
    reference = _as_dict(_run(cell, small_glue, tmp_path / "ref"))
    assert not checkpoint.paths_under(str(tmp_path / "ref"))

    _signal_at_step(monkeypatch, stop_step, sig)
    out = tmp_path / "cell"
    with pytest.raises(Preempted, match=f"at step {stop_step}/"):
        _run(cell, small_glue, out)
    assert (out / checkpoint.FILE).is_file()
    assert not [f for f in os.listdir(out) if ".tmp-" in f], "no temporary file left behind"
    saved = checkpoint.torch.load(out / checkpoint.FILE, weights_only=False)
    assert saved["counters"]["step"] == stop_step and saved["weights"] and saved["optimizer"]["state"]

    monkeypatch.undo()
    preempt.reset()
    capfd.readouterr()
    resumed = _as_dict(_run(cell, small_glue, out))
    assert f"resumed from its checkpoint at step {stop_step}/" in capfd.readouterr().err
    assert resumed["steps"] == reference["steps"]
    assert resumed["score"] == reference["score"] and resumed["metrics"] == reference["metrics"]
    strip = lambda h: [{k: v for k, v in e.items()} for e in h]   # noqa: E731
    assert strip(resumed["history"]) == strip(reference["history"])
    a, b = np.load(out / "predictions.npz"), np.load(tmp_path / "ref" / "predictions.npz")
    assert sorted(a.files) == sorted(b.files) and all((a[k] == b[k]).all() for k in a.files)


def test_checkpoint_from_other_setup_is_ignored(tmp_path, tiny_bert, small_glue, monkeypatch, signals, capfd):
    cell = _one_cell(tmp_path, tiny_bert)
    _signal_at_step(monkeypatch, 2)
    with pytest.raises(Preempted):
        _run(cell, small_glue, tmp_path / "cell")
    monkeypatch.undo()
    preempt.reset()
    (tmp_path / "o").mkdir()
    other = _one_cell(tmp_path / "o", tiny_bert, budget="{max_steps: 5}")
    result = _as_dict(_run(other, small_glue, tmp_path / "cell"))
    assert "written by a different run" in capfd.readouterr().err and result["steps"] == 5


def _worker(tmp_path, suite, db, glue, *extra, env=None):
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--db", db, "--output-dir", str(tmp_path / "out"),
           "--data-dir", str(glue), "--no-progress", *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc, pattern: str, timeout=180) -> str:
    seen, deadline = "", time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
        if pattern in line:
            return seen
    raise AssertionError(f"{pattern!r} not seen: {seen[-2000:]}")


@pytest.mark.parametrize("via_relay", [False, True])
def test_kill_usr1_on_a_worker_checkpoints_and_the_next_worker_resumes(tmp_path, tiny_bert, small_glue, via_relay):
    """A real `kill -USR1` on `harness run` (or on the relay a launcher runs under): exit 3, cell pending with its
    checkpoint; the next worker resumes it and records the uninterrupted score."""
    from harness.store.db import Store

    budget, hp = "{max_steps: 120}", "batch_size: 8, learning_rate: 1e-4, eval_steps: 10"
    suite = write_suite(tmp_path / "k.yaml", suite_text(tiny_bert, name="k", budget=budget, hparams=hp))
    ref_suite = write_suite(tmp_path / "r.yaml", suite_text(tiny_bert, name="r", budget=budget, hparams=hp))
    db = f"sqlite:///{tmp_path / 'h.db'}"
    ref = _worker(tmp_path, ref_suite, db, small_glue)
    assert ref.wait(timeout=600) == 0, ref.stderr.read()[-3000:]

    extra_env = {}
    w = _worker(tmp_path, suite, db, small_glue, env=extra_env)
    if via_relay:
        w.kill(), w.wait()
        cmd = [sys.executable, "-m", "harness.launch.relay", sys.executable, "-m", "harness", "run", str(suite),
               "--db", db, "--output-dir", str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"]
        w = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(w, "eval step 10 ")   # training is under way
    w.send_signal(signal.SIGUSR1)
    _, err = w.communicate(timeout=300)
    assert w.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "SIGUSR" in err and "checkpointed" in err
    store = Store(db)
    (row,) = [r for r in store.records("k") if r.parent_id is None]
    assert str(row.status) == "pending" and row.attempts == 1
    (ckpt,) = checkpoint.paths_under(str(tmp_path / "out" / "k"))
    step = checkpoint.torch.load(ckpt, weights_only=False)["counters"]["step"]
    assert 10 <= step < 120

    again = _worker(tmp_path, suite, db, small_glue)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert f"resumed from its checkpoint at step {step}/120" in err
    (row,) = [r for r in Store(db).records("k") if r.parent_id is None]
    (ref_row,) = [r for r in Store(db).records("r") if r.parent_id is None]
    assert str(row.status) == "completed" and row.attempts == 2
    assert row.score == ref_row.score and row.steps == 120
    assert not checkpoint.paths_under(str(tmp_path / "out" / "k")), "deleted once the cell completed"
    rec = json.loads((tmp_path / "out" / "k" / row.cell_key / "record.json").read_text())
    assert rec["score"] == ref_row.score
