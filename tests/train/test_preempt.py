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

from tests.helpers import ROOT, read_stderr_until, suite_yaml, write_suite
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


HP = "batch_size: 8, learning_rate: 1e-4"


@pytest.mark.parametrize("stop_step, sig, budget, hparams", [
    (8, signal.SIGUSR1, "{epochs: 2}", HP),        # in the middle of the second epoch
    (6, signal.SIGUSR2, "{epochs: 2}", HP),        # on the last batch of the first epoch (the epoch's eval follows)
    (3, signal.SIGTERM, "{max_steps: 9}", HP),
    # on an eval_steps evaluation: the checkpoint holds the loss since that evaluation (none), so the next one's
    # train_loss is the mean over the steps after it alone
    (4, signal.SIGTERM, "{epochs: 2}", HP + ", eval_steps: 4"),
])
def test_resumed_cell_equals_uninterrupted(tmp_path, tiny_bert, small_glue, monkeypatch, signals, capfd,
                                           stop_step, sig, budget, hparams):
    cell = _one_cell(tmp_path, tiny_bert, budget=budget, hparams=hparams)
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
    # the FLOP tallies come with the checkpoint: the resumed cell counts the steps trained before the stop
    assert resumed["train_flops"] == pytest.approx(reference["train_flops"], rel=1e-9)
    assert resumed["eval_flops"] == pytest.approx(reference["eval_flops"], rel=1e-9)
    # every evaluation alike: step, epoch, metrics, score and the train_loss since the evaluation before
    assert resumed["history"] == reference["history"]
    a, b = np.load(out / "predictions.npz"), np.load(tmp_path / "ref" / "predictions.npz")
    assert sorted(a.files) == sorted(b.files) and all((a[k] == b[k]).all() for k in a.files)


def _stopped_checkpoint(tmp_path, tiny_bert, small_glue, monkeypatch):
    cell = _one_cell(tmp_path, tiny_bert)
    _signal_at_step(monkeypatch, 2)
    with pytest.raises(Preempted):
        _run(cell, small_glue, tmp_path / "cell")
    monkeypatch.undo()
    preempt.reset()
    return cell, tmp_path / "cell" / checkpoint.FILE


def test_checkpoint_from_other_setup_is_ignored(tmp_path, tiny_bert, small_glue, monkeypatch, signals, capfd):
    _stopped_checkpoint(tmp_path, tiny_bert, small_glue, monkeypatch)
    (tmp_path / "o").mkdir()
    other = _one_cell(tmp_path / "o", tiny_bert, budget="{max_steps: 5}")
    result = _as_dict(_run(other, small_glue, tmp_path / "cell"))
    err = capfd.readouterr().err
    assert "written by a different setup (" in err and "total_steps: 12 there, 5 here" in err
    assert result["steps"] == 5


@pytest.mark.parametrize("field", ["code", "mixed_precision", "device", "version"])
def test_checkpoint_from_other_code_precision_or_device_is_not_resumed(tmp_path, tiny_bert, small_glue,
                                                                       monkeypatch, signals, capfd, field):
    """`auto` resolves differently on other hosts, and code changes between a stop and a resume: either would mix
    two setups under one record. A checkpoint of another format version (2 held rank 0's tallies alone) is refused
    the same way."""
    import torch

    cell, path = _stopped_checkpoint(tmp_path, tiny_bert, small_glue, monkeypatch)
    state = torch.load(path, weights_only=True)
    state["meta"][field] = "something else"
    torch.save(state, path)
    result = _as_dict(_run(cell, small_glue, tmp_path / "cell"))
    assert f"{field}: 'something else' there" in capfd.readouterr().err
    assert result["steps"] == 12 and f"{field}: 'something else' there" in result["checkpoint_refused"]


def test_loading_and_replaying_a_checkpoint_is_not_training_time(tmp_path, tiny_bert, small_glue, monkeypatch,
                                                                  signals):
    """The resume (reading the file, replaying the batches trained before the stop) is the record's
    extra.resume_s, outside train_time_s: the training loop's clock is made to jump 1000 s during the resume."""
    import dataclasses
    import types

    from harness.train import recipe

    cell, _ = _stopped_checkpoint(tmp_path, tiny_bert, small_glue, monkeypatch)
    offset, real_resume = [0.0], checkpoint.CellCheckpoint.resume

    def slow_resume(self):
        counters = real_resume(self)
        offset[0] += 1000.0
        return counters

    monkeypatch.setattr(checkpoint.CellCheckpoint, "resume", slow_resume)
    monkeypatch.setattr(recipe, "time", types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + offset[0]))
    result = _run(cell, small_glue, tmp_path / "cell")
    assert result.steps == 12 and result.resume_s >= 1000 and 0 < result.train_time_s < 1000
    known = {f.name for f in dataclasses.fields(result)} | {"extra"}
    assert result.columns(known)["extra"]["resume_s"] == result.resume_s   # stored in the row's extra


SEQUENCE = "[{sequence: [rte, stsb], adapter: new}]"   # stage 1 trains a fresh adapter on stage 0's, frozen


def _nudged_handover(monkeypatch):
    """Stage 0 hands over other weights than it did before the stop: a rerun that did not end bit for bit where
    the first one did (GPU kernels that are not deterministic; `auto` choosing another precision for stage 0 on
    the node a requeued task lands on)."""
    from harness.train import recipe

    real = recipe.handover_state

    def nudged(model):
        state = real(model)
        name = next(k for k in sorted(state) if ".harness." in k and state[k].is_floating_point())
        state[name] = state[name] + 1e-3
        return state

    monkeypatch.setattr(recipe, "handover_state", nudged)


def test_a_later_stage_resumes_only_on_the_stage_it_was_trained_on(tmp_path, tiny_bert, small_glue, monkeypatch,
                                                                  signals, capfd):
    """A sequential cell stopped in stage 1 trains stage 0 again when it resumes (only the stopped stage has a
    checkpoint). Where stage 0 hands over the same weights, stage 1 continues from its checkpoint and the cell
    ends as an uninterrupted one. Where it hands over others, stage 1's checkpoint was trained on top of a stage
    0 that the record no longer holds (its frozen stage-0 adapter is the rerun's): stage 1 starts over, and the
    record says why."""
    import shutil

    cell = _one_cell(tmp_path, tiny_bert, tasks=SEQUENCE, budget="{max_steps: 6}")
    reference = _as_dict(_run(cell, small_glue, tmp_path / "ref"))
    _signal_at_step(monkeypatch, 9)   # stage 0's 6 steps, then 3 of stage 1's
    with pytest.raises(Preempted, match="at step 3/6"):
        _run(cell, small_glue, tmp_path / "cell")
    shutil.copytree(tmp_path / "cell", tmp_path / "copy")
    monkeypatch.undo()
    preempt.reset()
    capfd.readouterr()

    same = _as_dict(_run(cell, small_glue, tmp_path / "cell"))
    assert "resumed from its checkpoint at step 3/6" in capfd.readouterr().err
    assert same["score"] == reference["score"] and same["history"] == reference["history"]

    _nudged_handover(monkeypatch)
    other = _as_dict(_run(cell, small_glue, tmp_path / "copy"))
    err = capfd.readouterr().err
    assert "resumed from its checkpoint" not in err
    assert "start:" in other["checkpoint_refused"] and other["steps"] == 6


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):   # what a malicious pickle does: run code when loaded
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path, tiny_bert, small_glue, monkeypatch, signals,
                                                          capfd):
    import torch

    cell, path = _stopped_checkpoint(tmp_path, tiny_bert, small_glue, monkeypatch)
    marker = tmp_path / "pwned"
    state = torch.load(path, weights_only=True)
    state["payload"] = _Planted(str(marker))
    torch.save(state, path)
    result = _as_dict(_run(cell, small_glue, tmp_path / "cell"))
    assert not marker.exists() and result["steps"] == 12
    assert "not a checkpoint this harness can load safely" in capfd.readouterr().err


def test_the_loss_scaler_state_is_saved_and_restored(tmp_path):
    """fp16's GradScaler: a resumed run must continue with the scale it had, or it skips steps the uninterrupted
    run took."""
    import torch
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    acc.scaler.scale(torch.ones(()))   # the scale tensor exists from the first scaled loss on
    acc.scaler.update(new_scale=123.0)
    model = torch.nn.Linear(2, 2)
    ckpt = checkpoint.CellCheckpoint(str(tmp_path), "k", acc, model, None, None, 4)
    ckpt.wrap([])
    ckpt.save({"step": 1, "epoch_idx": 0, "micro": 0})
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    fresh = checkpoint.CellCheckpoint(str(tmp_path), "k", acc, model, None, None, 4)
    fresh.wrap([])
    assert fresh.resume()["step"] == 1
    assert acc.scaler.get_scale() == 123.0


def _worker(tmp_path, suite, db, glue, *extra, env=None):
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--db", db, "--output-dir", str(tmp_path / "out"),
           "--data-dir", str(glue), "--no-progress", *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("via_relay", [False, True])
def test_kill_usr1_on_a_worker_checkpoints_and_the_next_worker_resumes(tmp_path, tiny_bert, small_glue, via_relay):
    """A real `kill -USR1` on `harness run` (or on the relay a launcher runs under): exit 3, cell pending with its
    checkpoint; the next worker resumes it and records the uninterrupted score."""
    from harness.store.db import Store

    budget, hp = "{max_steps: 40}", "batch_size: 8, learning_rate: 1e-4, eval_steps: 10"
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
    read_stderr_until(w, "eval step 10 ")   # training is under way
    w.send_signal(signal.SIGUSR1)
    _, err = w.communicate(timeout=300)
    assert w.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "SIGUSR" in err and "checkpointed" in err
    store = Store(db)
    (row,) = [r for r in store.records("k") if r.parent_id is None]
    assert str(row.status) == "pending" and row.attempts == 1
    (ckpt,) = checkpoint.paths_under(str(tmp_path / "out" / "k"))
    step = checkpoint.torch.load(ckpt, weights_only=True)["counters"]["step"]
    assert 10 <= step < 40
    assert (row.checkpoint_step, row.checkpoint_total_steps) == (step, 40)   # what `harness status` prices

    again = _worker(tmp_path, suite, db, small_glue)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert f"resumed from its checkpoint at step {step}/40" in err
    (row,) = [r for r in Store(db).records("k") if r.parent_id is None]
    (ref_row,) = [r for r in Store(db).records("r") if r.parent_id is None]
    assert str(row.status) == "completed" and row.attempts == 2
    assert row.score == ref_row.score and row.steps == 40 and row.checkpoint_step is None
    assert not checkpoint.paths_under(str(tmp_path / "out" / "k")), "deleted once the cell completed"
    rec = json.loads((tmp_path / "out" / "k" / row.cell_key / "record.json").read_text())
    assert rec["score"] == ref_row.score


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_two_rank_ddp_worker_under_the_relay_checkpoints_and_resumes(tmp_path, tiny_bert, small_glue, sig):
    """`accelerate launch --multi_gpu` (torch's elastic agent: ranks in sessions of their own, its own SIGTERM
    handler) under the relay: USR2 to the relay, or SIGTERM to every process as `scancel` sends it, reaches both
    ranks; they checkpoint at one step and give the cell back, and the next worker resumes it to the end."""
    import psutil

    from harness.store.db import Store
    from tests.train.test_distributed import LAUNCH, free_port

    hp = "batch_size: 4, learning_rate: 1e-4, eval_steps: 10"
    suite = write_suite(tmp_path / "d.yaml", suite_text(tiny_bert, name="d", budget="{max_steps: 60}", hparams=hp))
    db = f"sqlite:///{tmp_path / 'h.db'}"
    args = [str(ROOT / "harness" / "run.py"), str(suite), "--db", db, "--output-dir", str(tmp_path / "out"),
            "--data-dir", str(small_glue), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    w = subprocess.Popen([sys.executable, "-m", "harness.launch.relay", *LAUNCH, free_port(), *args], cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    read_stderr_until(w, "eval step 10 ", timeout=300)
    if sig == signal.SIGTERM:   # scancel: SIGTERM to every process of the step at once
        for p in [psutil.Process(w.pid), *psutil.Process(w.pid).children(recursive=True)]:
            p.send_signal(signal.SIGTERM)
    else:
        w.send_signal(sig)
    _, err = w.communicate(timeout=300)
    assert "checkpointed" in err, err[-3000:]
    (row,) = [r for r in Store(db).records("d") if r.parent_id is None]
    assert str(row.status) == "pending"
    (ckpt,) = checkpoint.paths_under(str(tmp_path / "out" / "d"))
    step = checkpoint.torch.load(ckpt, weights_only=True)["counters"]["step"]
    assert 10 <= step < 60

    again = subprocess.run([*LAUNCH, free_port(), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from its checkpoint at step {step}/60" in again.stderr
    (row,) = [r for r in Store(db).records("d") if r.parent_id is None]
    assert str(row.status) == "completed" and row.steps == 60 and row.num_processes == 2


def test_deepspeed_engine_state_and_counters_come_from_one_step(tmp_path, monkeypatch):
    """Under DeepSpeed the engine state is a folder (accelerate's save_state) beside checkpoint.pt. A kill after
    the new folder is written but before the manifest (checkpoint.pt) is: the resume reads the previous
    manifest, which names the previous folder, still there. (accelerate's save_state on a plain model stands in
    for the DeepSpeed engine: the manifest logic is the same.)"""
    import torch
    from accelerate import Accelerator

    from harness import atomic

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = acc.prepare(model, optimizer)

    def ckpt():
        c = checkpoint.CellCheckpoint(str(tmp_path), "k", acc, model, optimizer, None, 10)
        c.deepspeed = True
        c.wrap([])
        return c

    with torch.no_grad():
        model.weight.fill_(1.0)
    ckpt().save({"step": 3, "epoch_idx": 0, "micro": 0})
    with torch.no_grad():
        model.weight.fill_(2.0)
    real = atomic.write_file

    def killed(path, write):   # the step-5 engine folder is written; the process dies before the manifest
        if path.endswith(checkpoint.FILE):
            raise KeyboardInterrupt("killed")
        return real(path, write)

    monkeypatch.setattr(atomic, "write_file", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt().save({"step": 5, "epoch_idx": 0, "micro": 0})
    monkeypatch.undo()
    root = tmp_path / checkpoint.DEEPSPEED_DIR
    assert sorted(p.name for p in root.iterdir()) == ["step-3", "step-5"]   # step 3 is still referenced
    with torch.no_grad():
        model.weight.fill_(9.0)
    counters = ckpt().resume()
    assert counters["step"] == 3
    assert torch.all(acc.unwrap_model(model).weight == 1.0), "the engine state of the manifest's step"


@pytest.mark.parametrize("other", [{"ATEN_CPU_CAPABILITY": "default"}, {"OMP_NUM_THREADS": "2"}],
                         ids=["kernels", "threads"])
def test_a_checkpoint_from_other_cpu_kernels_is_not_resumed(tmp_path, tiny_bert, small_glue, other):
    """A CPU checkpoint resumed where torch runs other kernels: a requeued task that lands on a node of another
    instruction set (this project's "AMD EPYC" draws were AVX512-BF16 or AVX2 alone), played here by one machine
    with torch's kernels held at their portable level (ATEN_CPU_CAPABILITY=default), which changes a step's bits
    as another CPU does; or with another thread count (CPU kernels split their sums over the threads). The
    checkpoint names the CPU, its kernels and threads (as it names a GPU's model): the cell starts over and the
    record says why, instead of joining two numerics in one record."""
    import torch

    from harness.store.db import Store

    if "ATEN_CPU_CAPABILITY" in other and torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this CPU runs torch's portable kernels only: no other level to resume on")
    hp = "batch_size: 8, learning_rate: 1e-4, mixed_precision: 'no'"
    suite = write_suite(tmp_path / "k.yaml", suite_text(tiny_bert, name="k", budget="{max_steps: 40}", hparams=hp))
    db = f"sqlite:///{tmp_path / 'h.db'}"
    w = _worker(tmp_path, suite, db, small_glue, env={"OMP_NUM_THREADS": "1"})
    read_stderr_until(w, "cell ")   # claimed: the stop comes at an early step
    w.send_signal(signal.SIGUSR1)
    _, err = w.communicate(timeout=300)
    assert w.returncode == EXIT_PREEMPTED and "checkpointed" in err, err[-3000:]

    again = _worker(tmp_path, suite, db, small_glue, env={"OMP_NUM_THREADS": "1", **other})
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert "resumed from its checkpoint" not in err and "device:" in err, err[-3000:]
    (row,) = Store(db).records("k")
    assert row.steps == 40 and "device:" in row.extra["checkpoint_refused"]


def test_a_refused_checkpoint_s_step_is_not_priced_while_the_cell_starts_over(tmp_path, tiny_bert, small_glue):
    """The store keeps a given-back cell's checkpoint step, which `harness status` prices as done, and the claim
    that resumes it keeps it too. A worker on another setup (here another thread count; a requeue onto another
    device, precision or code alike) refuses the checkpoint and trains the cell from step 0: the row went on saying
    (step, 120) until the cell finished, pricing a cell that starts over as partly done. The row is emptied as its
    loop starts over."""
    from harness.store.db import Store

    hp = "batch_size: 8, learning_rate: 1e-4, mixed_precision: 'no', eval_steps: 10"
    suite = write_suite(tmp_path / "k.yaml", suite_text(tiny_bert, name="k", budget="{max_steps: 120}", hparams=hp))
    db = f"sqlite:///{tmp_path / 'h.db'}"
    w = _worker(tmp_path, suite, db, small_glue, env={"OMP_NUM_THREADS": "1"})
    read_stderr_until(w, "eval step 10 ")
    w.send_signal(signal.SIGUSR1)
    _, err = w.communicate(timeout=300)
    assert w.returncode == EXIT_PREEMPTED and "checkpointed" in err, err[-3000:]
    (row,) = Store(db, read_only=True).records("k")
    assert row.checkpoint_step >= 10 and row.checkpoint_total_steps == 120

    again = _worker(tmp_path, suite, db, small_glue, env={"OMP_NUM_THREADS": "2"})
    try:
        said = read_stderr_until(again, "eval step 10 ")   # started over, and under way
        (row,) = Store(db, read_only=True).records("k")
    finally:   # (stopped again: the rest of its 120 steps would only add time to the test)
        again.send_signal(signal.SIGUSR1)
        _, err = again.communicate(timeout=600)
    assert "starting the cell over" in said, said[-3000:]
    assert str(row.status) == "running" and (row.checkpoint_step, row.checkpoint_total_steps) == (None, None)
    assert again.returncode == EXIT_PREEMPTED, err[-3000:]



@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_stop_signal_ends_a_rank_waiting_for_peers_that_never_come(tmp_path, tiny_bert, small_glue, rank):
    """One rank of a 2-process launch whose other rank never comes waits in torch's rendezvous, inside C code
    where Python's handler does not run: a SIGTERM there did nothing (rank 0 was still waiting 60 s later, and
    would have until the rendezvous timed out, 30 min; Slurm's grace time ends such a rank in SIGKILL). Now it
    ends within seconds: one line, exit 3 (stopped), nothing queued. Rank 0 serves the rendezvous (a socket
    listening on MASTER_PORT); rank 1 connects to it, here to a socket that accepts and never answers."""
    import select
    import socket

    import sqlite3

    import psutil

    master = socket.socket()
    master.bind(("127.0.0.1", 0))
    port = master.getsockname()[1]
    if rank == "0":
        master.close()   # the port is rank 0's to listen on
    else:
        master.listen()
    suite = write_suite(tmp_path / "j.yaml", suite_text(tiny_bert, name="j"))
    db = f"sqlite:///{tmp_path / 'h.db'}"
    w = _worker(tmp_path, suite, db, small_glue, env={"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": "2",
                                                     "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})

    def waiting() -> bool:
        if rank == "1":
            return bool(select.select([master], [], [], 0.2)[0])   # rank 1's connection, never accepted
        time.sleep(0.2)
        return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in psutil.Process(w.pid).net_connections(kind="tcp"))

    try:
        deadline = time.time() + 120
        while not waiting():
            assert w.poll() is None and time.time() < deadline, w.communicate()[1][-3000:]
        time.sleep(1)
        w.send_signal(signal.SIGTERM)
        try:
            _, err = w.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            w.kill()
            err = w.communicate()[1]
            raise AssertionError("still waiting for the other rank 30 s after a SIGTERM:\n" + err[-3000:])
    finally:
        master.close()
    assert w.returncode == EXIT_PREEMPTED, err[-3000:]
    assert err.strip().splitlines()[-1] == ("harness: SIGTERM received while waiting for the other ranks to join: "
                                            "stopping; no cell was claimed"), err[-3000:]
    with sqlite3.connect(tmp_path / "h.db") as con:   # nothing queued: the store was not even given its tables
        assert not con.execute("SELECT name FROM sqlite_master WHERE name = 'runs'").fetchall()


def _stopped_before_joining(tmp_path, env: dict, script: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """A process of a launch (env) that got a stop signal and then runs `script`, with HARNESS_SLURM_REQUEUE=1 in
    Slurm job 77 and a fake scontrol that records what it was asked. Returns the process and the requeues asked."""
    from tests.helpers.slurm_cluster import SCONTROL_SHOWS_RUNNING

    fake_bin, asked = tmp_path / "bin", tmp_path / "scontrol.args"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/bash\n{SCONTROL_SHOWS_RUNNING}echo "$@" >> {asked}\n')
    (fake_bin / "scontrol").chmod(0o755)
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_JOB_ID")},
           "PYTHONPATH": str(ROOT), "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "77",
           "HARNESS_SLURM_REQUEUE": "1", **env}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    calls = asked.read_text().splitlines() if asked.exists() else []
    return done, [c for c in calls if c.startswith("requeue")]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_rank_0_of_an_mpi_launch_requeues_when_stopped_before_the_join(tmp_path, rank):
    """An MPI launcher (mpirun, srun --mpi) sets PMI_SIZE / PMI_RANK, not RANK: accelerate copies the rank into
    RANK only inside PartialState, after its imports. A stop signal that came before (during the worker's imports)
    ends the process at the join's start, and rank 0 alone requeues the Slurm task, as run_suite's end does;
    every rank read the unset RANK as 0 and each ran `scontrol requeue` on the one job."""
    script = ("import os, signal\nfrom harness.train import preempt\npreempt.install()\n"
              "os.kill(os.getpid(), signal.SIGTERM)\nfrom harness.launch.runner import _joining\n"
              "with _joining():\n    pass\nprint('joined')\n")
    done, requeues = _stopped_before_joining(tmp_path, {"PMI_SIZE": "2", "PMI_RANK": rank}, script)
    assert done.returncode == EXIT_PREEMPTED and "joined" not in done.stdout, done.stderr[-3000:]
    assert requeues == (["requeue 77"] if rank == "0" else []), done.stderr[-3000:]


@pytest.mark.parametrize("on_stop", ["time.sleep(8)", "1 / 0"])
def test_a_stop_during_the_join_ends_the_process_even_when_the_join_ends_meanwhile(tmp_path, on_stop):
    """A stop signal that reaches a rank just as its join completes: the watcher has taken it and is requeueing
    the task (scontrol, up to a minute on a busy controller; 8 s here), and the main thread is out of the wait. It
    went on after 5 s, opened the store and ran the suite while the watcher's exit could come at any moment (a
    cell claimed and dropped mid-training, its lease left to go stale); it waits for that exit instead. A requeue
    that raised ended the watcher without the exit: the rank went on as if no signal had come."""
    script = ("import os, signal, time\nfrom harness.train import preempt\npreempt.install()\n"
              f"with preempt.ends_wait('joining', lambda: {on_stop}):\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(0.5)   # the join completes meanwhile\n"
              "print('went on after the stop', flush=True)\n")
    done, _ = _stopped_before_joining(tmp_path, {}, script)
    assert done.returncode == EXIT_PREEMPTED and "went on" not in done.stdout, (done.stdout, done.stderr[-3000:])
    if on_stop == "1 / 0":   # said, not swallowed: the requeue did not happen
        assert "could not finish (ZeroDivisionError" in done.stderr, done.stderr[-3000:]


# `harness run` as the CLI starts it, whose process gets a stop signal while it imports what it needs (the moment
# harness.plan.grid is first looked up: the parser's first slow import, pydantic's), as a Slurm warning or a chaos
# SIGTERM can come in a worker's first second
SIGNALLED_WHILE_IMPORTING = """
import os, signal, sys

class Signal:
    def find_spec(self, name, path=None, target=None):
        if name == "harness.plan.grid":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), getattr(signal, os.environ["STOP_SIGNAL"]))
        return None

sys.meta_path.insert(0, Signal())
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
def test_a_stop_signal_while_the_worker_imports_stops_it_as_a_stop(tmp_path, tiny_bert, small_glue, sig):
    """The stop handlers were installed after the parser's and `harness run`'s own imports (0.35-0.6 s after the
    interpreter's start on a 2-core CPU): a stop signal before them ended the worker by the signal's default action
    (-15 / -10, 22 of 386 processes in bench/chaos_workers.py), so its Slurm task was not requeued. They are
    installed before the parser is built: the worker claims nothing and ends EXIT_PREEMPTED, as a stop between
    cells ends it."""
    from harness.spec.status import Status
    from harness.store.db import Store

    suite = write_suite(tmp_path / "s.yaml", suite_yaml(tiny_bert, "s", "[bitfit]", "[rte]", "{max_steps: 2}", HP))
    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = subprocess.run([sys.executable, "-c", SIGNALLED_WHILE_IMPORTING, "run", str(suite), "--db", db,
                           "--output-dir", str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "STOP_SIGNAL": sig},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, (proc.returncode, proc.stderr[-3000:])
    assert f"{sig} received" in proc.stderr and "no further cell claimed" in proc.stderr, proc.stderr[-3000:]
    (row,) = Store(db).records("s")
    assert (row.status, row.attempts) == (Status.PENDING, 0)
