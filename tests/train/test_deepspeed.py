"""Real DeepSpeed runs on the CPU: `accelerate launch` with the shipped DeepSpeed configs trains a cell with
DeepSpeed's CPU accelerator over gloo, and the record's numbers are the plain run's (ZeRO-1/2 keep whole
parameters: the same arithmetic). Skipped where deepspeed is not installed (it is an optional extra: CI skips
these)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, suite_yaml, write_suite
from tests.train.test_distributed import free_port
from harness.launch.slurm import shipped_config
from harness.store.db import Store

pytest.importorskip("deepspeed")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}


def _suite(tmp_path, name, tiny_bert, hparams: list):
    return write_suite(tmp_path / f"{name}.yaml", suite_yaml(
        tiny_bert, name, "[{name: full, learning_rate: 1e-3}]", "[rte]", "{epochs: 2}",
        ", ".join(["batch_size: 4, eval_batch_size: 4, mixed_precision: 'no'", *hparams])))


def _args(tmp_path, suite, data):
    return [str(suite), "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", str(tmp_path / "out"),
            "--data-dir", str(data), "--no-progress"]


def _deepspeed(tmp_path, suite, data, config="deepspeed_zero2", processes=1):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", shipped_config(config),
           "--num_processes", str(processes), "--main_process_port", free_port(),
           str(ROOT / "harness" / "run.py"), *_args(tmp_path, suite, data)]
    return subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)


def _plain(tmp_path, suite, data):
    cmd = [sys.executable, "-m", "harness", "run", *_args(tmp_path, suite, data)]
    env = {k: v for k, v in _env().items() if k != "DS_ACCELERATOR"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _record(tmp_path, suite):
    (rec,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records(suite)
    return rec


def _evaluations(rec):
    """(the steps evaluated at, the mean train loss before each)"""
    return [e["step"] for e in rec.history], [e["train_loss"] for e in rec.history]


def _same_training(rec, ref):
    (steps, losses), (ref_steps, ref_losses) = _evaluations(rec), _evaluations(ref)
    assert steps == ref_steps
    assert losses == pytest.approx(ref_losses, rel=1e-5)


def test_a_deepspeed_launch_on_a_cpu_trains_under_deepspeed_with_the_plain_runs_numbers(tmp_path, tiny_bert,
                                                                                         small_glue):
    ds = _deepspeed(tmp_path, _suite(tmp_path, "ds", tiny_bert, []), small_glue)
    assert ds.returncode == 0, ds.stderr[-3000:]
    plain = _plain(tmp_path, _suite(tmp_path, "plain", tiny_bert, []), small_glue)
    assert plain.returncode == 0, plain.stderr[-3000:]
    rec, ref = _record(tmp_path, "ds"), _record(tmp_path, "plain")
    assert rec.status == "completed", rec.error
    # accelerate told cpu=True drops DeepSpeed and trains plain DDP: the record would say MULTI_CPU
    assert rec.env["distributed_type"] == "DistributedType.DEEPSPEED"
    assert ref.env["distributed_type"] == "DistributedType.NO"
    for name in ("steps", "epochs_done", "trainable_params", "total_params", "train_flops", "eval_examples"):
        assert getattr(rec, name) == getattr(ref, name), name
    _same_training(rec, ref)
    assert rec.score == ref.score


def test_the_cells_accumulation_and_clipping_are_what_deepspeed_runs(tmp_path, tiny_bert, small_glue):
    """The shipped configs' (and accelerate's default) accumulation 1 and clipping 1.0 went into DeepSpeed's engine
    over the cell's: 2 epochs asked in steps of 2 batches trained 1 epoch of single batches, and a clipping norm of
    0.01 trained as 1.0, under a record naming the cell's values."""
    hparams = ["gradient_accumulation_steps: 2", "max_grad_norm: 0.01"]
    ds = _deepspeed(tmp_path, _suite(tmp_path, "ds", tiny_bert, hparams), small_glue)
    assert ds.returncode == 0, ds.stderr[-3000:]
    plain = _plain(tmp_path, _suite(tmp_path, "plain", tiny_bert, hparams), small_glue)
    assert plain.returncode == 0, plain.stderr[-3000:]
    rec, ref = _record(tmp_path, "ds"), _record(tmp_path, "plain")
    assert rec.env["distributed_type"] == "DistributedType.DEEPSPEED"
    assert ref.steps == 12 and ref.epochs_done == 2.0   # 48 examples in batches of 4, 2 per step, 2 epochs
    assert (rec.steps, rec.epochs_done) == (ref.steps, ref.epochs_done)
    _same_training(rec, ref)


def test_zero3_on_a_cpu_fails_the_cell_with_the_reason(tmp_path, tiny_bert, small_glue):
    """ZeRO-3 on DeepSpeed's CPU accelerator computes garbage (finite losses of 1e15 and more from the first
    step, also in a plain accelerate loop): refused, not recorded as completed."""
    proc = _deepspeed(tmp_path, _suite(tmp_path, "z3", tiny_bert, []), small_glue, config="deepspeed_zero3")
    rec = _record(tmp_path, "z3")
    assert rec.status == "failed", proc.stderr[-3000:]
    assert "ZeRO-3 on a CPU" in rec.error


def test_a_plain_run_on_a_cpu_trains_plain_with_a_deepspeed_variable_but_no_launcher(tmp_path, tiny_bert,
                                                                                     small_glue):
    """ACCELERATE_USE_DEEPSPEED=true left in a plain run's environment (exported by hand, inherited from a DeepSpeed
    job) is no DeepSpeed launch: no launcher set LOCAL_RANK, so Accelerate forms no DeepSpeed process group. The
    harness took the variable alone for a launch on a CPU, named the gloo backend for that world of one, and the
    run ended in a traceback before any cell ("Default process group has not been initialized"); told cpu=True
    as before, Accelerate trains it plain."""
    suite = _suite(tmp_path, "plain", tiny_bert, [])
    cmd = [sys.executable, "-m", "harness", "run", *_args(tmp_path, suite, small_glue)]
    env = {**{k: v for k, v in _env().items() if k != "LOCAL_RANK"}, "ACCELERATE_USE_DEEPSPEED": "true"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = _record(tmp_path, "plain")
    assert rec.status == "completed" and rec.env["distributed_type"] == "DistributedType.NO", rec.error
