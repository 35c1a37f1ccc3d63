"""Real multi-process runs: `accelerate launch` with 2 processes forming one DDP world over gloo on the CPU."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, write_suite
from harness.store.db import Store

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
          "--main_process_port"]


def free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(workdir, suite, data_dir, timeout=900, script=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = LAUNCH + [free_port(), str(script or ROOT / "harness" / "run.py"), str(suite), "--db",
                    f"sqlite:///{workdir / 'h.db'}", "--output-dir", str(workdir / "out"), "--data-dir", str(data_dir),
                    "--no-progress"]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def check_two_rank_world(rec, n_train, batch, dev):
    assert rec.status == "completed", rec.error
    assert rec.num_processes == 2 and rec.env["num_processes"] == 2
    assert rec.env["distributed_type"] == "DistributedType.MULTI_CPU"
    assert rec.config["effective_batch_size"] == 2 * batch
    # each rank saw half the data: one epoch is n_train / (2 * batch) optimizer steps, not n_train / batch
    assert rec.steps == -(-n_train // (2 * batch)) and rec.epochs_done == 1.0
    # the dev set was scored exactly once, whatever the last batch looked like
    assert rec.eval_examples == dev
    if rec.peak_memory_kind == "peak_rss_cell":   # the highest rank's peak, with the RSS it counted from
        assert 0 < rec.extra["rss_at_start_mb"] <= rec.peak_memory_mb
    data = np.load(os.path.join(rec.output_dir, "predictions.npz"))
    assert sorted(data["validation_idx"].tolist()) == list(range(dev))


def test_two_processes_train_one_ddp_world(tmp_path, tiny_bert, small_glue):
    suite = write_suite(tmp_path / "s.yaml", f"""
name: ddp
models: ["{tiny_bert}"]
tasks: [rte]
methods: [full, {{name: pfeiffer, size: 4}}]
budgets:
  - {{epochs: 1}}
hparams:
  batch_size: 4
  eval_batch_size: 4
""")
    proc = launch(tmp_path, suite, small_glue)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "with 2 process(es)" in proc.stderr
    recs = Store(f"sqlite:///{tmp_path / 'h.db'}").records()
    assert len(recs) == 2  # rank 1 wrote nothing of its own
    for rec in recs:
        check_two_rank_world(rec, n_train=48, batch=4, dev=21)  # 21 dev examples: uneven over 2 ranks


@pytest.mark.slow
def test_two_processes_on_the_embedded_model_and_real_glue(tmp_path, glue_dir):
    suite = write_suite(tmp_path / "s.yaml", """
name: ddp-minilm
models: [minilm]
tasks: [rte]
methods: [{name: houlsby, size: 16, learning_rate: 1e-3}]
budgets:
  - {epochs: 1, max_train_samples: 64, max_eval_samples: 37}
hparams:
  batch_size: 8
  eval_batch_size: 8
""")
    proc = launch(tmp_path, suite, glue_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (rec,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records()
    check_two_rank_world(rec, n_train=64, batch=8, dev=37)
    assert rec.total_params > 22_000_000 and 0 < rec.trainable_pct < 2


def test_two_processes_run_multitask_and_sequential_cells(tmp_path, tiny_bert, small_glue):
    """Multi-task steps use one head at a time (DDP must allow unused parameters); every rank draws the same
    task order; a sequential hand-over happens on every rank."""
    suite = write_suite(tmp_path / "s.yaml", f"""
name: ddp-mt
models: ["{tiny_bert}"]
tasks: [{{multitask: [rte, stsb], sampling: uniform}}, {{sequence: [rte, stsb]}}]
methods: [full]
budgets: [{{epochs: 1}}]
hparams: {{batch_size: 4, eval_batch_size: 4}}
""")
    proc = launch(tmp_path, suite, small_glue)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    joint = next(r for r in store.records() if r.regime == "multitask")
    assert joint.status == "completed" and joint.num_processes == 2
    assert joint.steps == 2 * -(-48 // (2 * 4))            # one epoch: each task's 6 batches per rank
    for member in store.children(joint.id):
        assert member.eval_examples == 21
        data = np.load(os.path.join(member.output_dir, "predictions.npz"))
        assert sorted(data["validation_idx"].tolist()) == list(range(21))
    last = next(r for r in store.records() if r.regime == "sequential")
    (first,) = store.children(last.id)
    assert last.extra["encoder_checksum"]["start"] == first.extra["encoder_checksum"]["end"]
    check_two_rank_world(last, n_train=48, batch=4, dev=21)
    # FLOPs summed over both ranks, a sequence's over its stages; MFU over 2 processes' peak
    assert joint.train_flops > 0 and joint.eval_flops > 0 and joint.mfu > 0
    assert last.train_flops > first.train_flops > 0 and last.eval_flops > first.eval_flops > 0
    assert last.flops_per_s == pytest.approx(last.train_flops / last.train_time_s)
    peak = last.extra["device_peak"]["flops_per_s"]
    assert last.mfu == pytest.approx(last.flops_per_s / (2 * peak))


def test_two_processes_score_every_squad_question_once(tmp_path, tiny_bert):
    """SQuAD evaluation under DDP: windows split over 2 ranks with an uneven last batch, gathered once each, so
    a saved adapter scored by 2 processes gives exactly the 1-process answers for every question."""
    import json

    from tests.helpers import run_cli, write_small_glue, write_small_squad

    data = write_small_squad(write_small_glue(tmp_path / "data"), n_train=16, n_dev=11)
    common = f'models: ["{tiny_bert}"]\ntasks: [squad]\nhparams: {{batch_size: 4, eval_batch_size: 3, max_length: 64, ' \
             f'doc_stride: 16}}\n'
    train = write_suite(tmp_path / "t.yaml", "name: qa-train\n" + common + "methods: [{name: houlsby, size: 4}]\n")
    proc = run_cli("run", train, "--db", f"sqlite:///{tmp_path / 'one.db'}", "--output-dir", tmp_path / "one",
                   "--data-dir", data, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    adapter = Store(f"sqlite:///{tmp_path / 'one.db'}").records()[0].adapter_path
    evaluate = write_suite(tmp_path / "e.yaml", "name: qa-eval\n" + common +
                           f"methods: [{{name: pretrained_adapter, path: {adapter}}}]\n")
    proc = run_cli("run", evaluate, "--db", f"sqlite:///{tmp_path / 'one.db'}", "--output-dir", tmp_path / "one",
                   "--data-dir", data, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = launch(tmp_path, evaluate, data)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = next(r for r in Store(f"sqlite:///{tmp_path / 'one.db'}").records() if r.suite == "qa-eval")
    two = Store(f"sqlite:///{tmp_path / 'h.db'}").records()[0]
    assert two.num_processes == 2 and two.eval_examples == one.eval_examples == 11
    answers = [json.load(open(os.path.join(r.output_dir, "predictions.json"))) for r in (one, two)]
    assert len(answers[0]) == 11 and answers[0] == answers[1]
    assert two.metrics == pytest.approx(one.metrics)


def test_two_processes_count_the_examples_accelerate_repeats_once(tmp_path, tiny_bert, small_glue):
    """42 training examples in batches of 4 over 2 ranks: accelerate fills each epoch's last round up with the
    epoch's first examples (48 rows), and 20 dev examples give rank 1 a last batch of 4 repeats. Those rows run,
    but the record's examples and tokens count the split's examples, as one process does (they counted 96
    examples, 1809 tokens against 84 and 1518), and eval_flops each dev example once, as the dev metrics do
    (+25%: the 4 longest examples again)."""
    from tests.helpers import run_cli

    body = f"""
models: ["{tiny_bert}"]
tasks: [rte]
methods: [{{name: lora, learning_rate: 1e-3}}]
budgets: [{{epochs: 2, max_train_samples: 42, max_eval_samples: 20}}]
hparams: {{batch_size: 4, eval_batch_size: 4}}
"""
    one, two = (write_suite(tmp_path / f"{n}.yaml", f"name: {n}" + body) for n in ("one", "two"))
    proc = run_cli("run", one, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                   "--data-dir", small_glue, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = launch(tmp_path, two, small_glue)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    (a,), (b,) = store.records("one"), store.records("two")
    assert b.num_processes == 2 and b.steps == 2 * -(-42 // (2 * 4)) and b.eval_examples == 20
    counted = lambda r: (r.train_examples_per_s * r.train_time_s, r.train_tokens_per_s * r.train_time_s)  # noqa: E731
    assert counted(b) == pytest.approx(counted(a), rel=1e-9), (counted(b), counted(a))
    assert counted(b)[0] == pytest.approx(2 * 42)
    # the same dev batches, each rank's scaled from its own first batch (the head's FLOPs are per example)
    assert b.eval_flops == pytest.approx(a.eval_flops, rel=2e-3), (b.eval_flops, a.eval_flops)


# harness/run.py whose rank 0 sends itself a real SIGTERM at its N-th stop-flag check (the runner's before it
# claims a cell, then one per optimizer step)
def lora_suite(model, hparams: str = "batch_size: 4, eval_batch_size: 8", tasks: str = "[rte]",
               methods: str = "", budget: str = "epochs: 2") -> str:
    """The small two-epoch LoRA cell most tests here train on two processes (`methods`: more after it): a suite's
    YAML after its name line."""
    return f"""
models: ["{model}"]
tasks: {tasks}
methods: [{{name: lora, learning_rate: 1e-3}}{methods}]
budgets: [{{{budget}}}]
hparams: {{{hparams}}}
"""


STOP_ON_RANK_0 = """
import os, signal, sys
from harness.cli import main
from harness.train import preempt
real, calls = preempt.requested, [0]
def requested():
    calls[0] += 1
    if calls[0] == {n} and os.environ.get("RANK") == "0":
        os.kill(os.getpid(), signal.SIGTERM)
    return real()
preempt.requested = requested
raise SystemExit(main(["run", *sys.argv[1:]]))
"""


def test_two_processes_resume_each_rank_its_own_counts(tmp_path, tiny_bert, small_glue):
    """Each rank counts its own tokens, examples, loss and FLOPs (the record sums them over ranks): a 2-process
    cell stopped and resumed counts what an uninterrupted one does. The stop, raised on rank 0 at step 4, is
    agreed on at the next sync, step 6: an eval_steps evaluation's step, whose loss since then is none."""
    from harness.train import checkpoint

    body = lora_suite(tiny_bert, "batch_size: 4, eval_batch_size: 8, eval_steps: 3")
    ref, cell = (write_suite(tmp_path / f"{n}.yaml", f"name: {n}" + body) for n in ("ref", "cell"))
    script = tmp_path / "stop.py"
    script.write_text(STOP_ON_RANK_0.format(n=5))
    for suite, run in ((ref, None), (cell, script), (cell, None)):
        proc = launch(tmp_path, suite, small_glue, script=run)
        assert ("stopped by a signal, checkpointed" in proc.stderr) == (run is not None), proc.stderr[-3000:]
        if run is not None:
            (path,) = checkpoint.paths_under(str(tmp_path / "out" / "cell"))
            assert checkpoint.torch.load(path, weights_only=True)["counters"]["step"] == 6
    assert "resumed from its checkpoint at step 6/12" in proc.stderr
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    (a,), (b,) = store.records("ref"), store.records("cell")
    assert b.status == "completed" and b.attempts == 2 and b.num_processes == 2 and b.steps == a.steps == 12
    assert b.score == a.score and b.history == a.history
    counted = lambda r: {"tokens": r.train_tokens_per_s * r.train_time_s,   # noqa: E731  (over both ranks)
                         "examples": r.train_examples_per_s * r.train_time_s,
                         "train_flops": r.train_flops, "eval_flops": r.eval_flops}
    assert counted(b) == pytest.approx(counted(a), rel=1e-9)


def stop_resume_and_reference(tmp_path, body: str, data, n: int) -> tuple[dict, Store]:
    """Suite "cell" (`body`) stopped by a SIGTERM on rank 0 at its n-th stop check (the runner's, then one per
    optimizer step), then run again (its resume), then suite "ref", the same cell uninterrupted: (the stop's
    checkpoint counters, the store)."""
    from harness.train import checkpoint

    ref, cell = (write_suite(tmp_path / f"{name}.yaml", f"name: {name}" + body) for name in ("ref", "cell"))
    script = tmp_path / "stop.py"
    script.write_text(STOP_ON_RANK_0.format(n=n))
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    proc = launch(tmp_path, cell, data, script=script)
    assert "SIGTERM received" in proc.stderr, proc.stderr[-3000:]
    assert "stopped by a signal, checkpointed" in proc.stderr, (store.records("cell")[0].status, proc.stderr[-3000:])
    (path,) = checkpoint.paths_under(str(tmp_path / "out" / "cell"))
    counters = checkpoint.torch.load(path, weights_only=True)["counters"]   # (the resumed cell removes the file)
    for suite in (cell, ref):
        proc = launch(tmp_path, suite, data)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from its checkpoint" not in proc.stderr   # (the reference's own run)
    return counters, store


def test_two_processes_stop_at_the_epoch_end_their_stop_reached(tmp_path, tiny_bert, small_glue):
    """Without eval_steps the ranks sync at each epoch's end (6 steps here) and every SYNC_EVERY steps: a stop
    raised on rank 0 at step 4 of 12 is agreed on at step 6's epoch-end sync. That sync passed no flags, so the
    stop waited for the cell's last step and the cell ran to its end (completed, no checkpoint). Checkpointed
    before the epoch's evaluation, the resumed run evaluates it: the same history and score as uninterrupted."""
    counters, store = stop_resume_and_reference(tmp_path, lora_suite(tiny_bert), small_glue, n=5)   # steps 1-4
    assert (counters["step"], counters["epoch_idx"], counters["micro"]) == (6, 0, 6)   # the epoch's end
    assert counters["history"] == []   # its evaluation not run yet: the resumed run runs it
    (a,), (b,) = store.records("ref"), store.records("cell")
    assert b.status == "completed" and b.attempts == 2 and b.steps == a.steps == 12
    assert [e["step"] for e in a.history] == [6, 12]
    assert b.score == a.score and b.history == a.history


def test_two_processes_stopped_at_a_multitask_epoch_end_with_accumulation_resume_exactly(tmp_path, tiny_bert,
                                                                                        small_glue):
    """A multi-task epoch of 9 micro-batches per rank with accumulation 2: its last micro-batch is a step of its
    own (closes_step: 5 steps, as planned), so a stop agreed on at the epoch's end checkpoints there with no
    gradient left waiting, and the resumed cell trains exactly as an uninterrupted one."""
    body = lora_suite(tiny_bert, "batch_size: 8, eval_batch_size: 8, gradient_accumulation_steps: 2",
                      tasks="[{multitask: [rte, stsb, cola], sampling: uniform}]")
    counters, store = stop_resume_and_reference(tmp_path, body, small_glue, n=3)   # steps 1-2
    assert (counters["step"], counters["epoch_idx"], counters["micro"]) == (5, 0, 9), counters   # the epoch's end
    assert counters["history"] == []   # its evaluation not run yet: the resumed run runs it
    a, b = ({r.task: r for r in store.records(name)} for name in ("ref", "cell"))
    assert set(a) == set(b) and len(a) == 4   # the joint row and a row per member
    assert [e["step"] for e in a["rte+stsb+cola"].history] == [5, 10]
    for task in a:
        assert b[task].score == a[task].score and b[task].history == a[task].history, task


# harness/run.py whose ranks each write the loss of every training micro-batch they run, one file per rank
LOG_LOSSES = """
import os, sys
from harness.cli import main
from harness.train.recipe import CellRun
real = CellRun.forward
def forward(self, t, batch):
    out = real(self, t, batch)
    if self.model.training:   # the loop's micro-batches, not an evaluation's
        with open(os.path.join({folder!r}, "losses-" + os.environ["RANK"] + ".txt"), "a") as f:
            f.write(repr(float(out.loss)) + "\\n")
    return out
CellRun.forward = forward
raise SystemExit(main(["run", *sys.argv[1:]]))
"""


def test_two_processes_report_the_train_loss_over_both_ranks_micro_batches(tmp_path, tiny_bert, small_glue):
    """Each rank trains on its own half of every optimizer step's examples: the history's train_loss and the
    tracker's train/loss are the mean over both ranks' micro-batches (they were rank 0's alone)."""
    from tests.train.test_tracking import scalars

    suite = write_suite(tmp_path / "s.yaml", "name: ddp-loss" + lora_suite(tiny_bert) + """
log_with: [tensorboard]
log_every: 3
""")
    script = tmp_path / "losses.py"
    script.write_text(LOG_LOSSES.format(folder=str(tmp_path)))
    proc = launch(tmp_path, suite, small_glue, script=script)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [[float(x) for x in (tmp_path / f"losses-{r}.txt").read_text().split()] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 12 and ranks[0] != ranks[1]   # 48 examples / (2 ranks x 4), twice
    mean = lambda a, b: (sum(ranks[0][a:b]) + sum(ranks[1][a:b])) / (2 * (b - a))   # noqa: E731
    (rec,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records()
    assert [e["step"] for e in rec.history] == [6, 12]   # an evaluation at each epoch's end
    assert [e["train_loss"] for e in rec.history] == pytest.approx([mean(0, 6), mean(6, 12)], rel=1e-9)
    found = scalars(tmp_path / "out" / "tensorboard" / rec.cell_key / "ddp-loss")["train/loss"]
    assert [s for s, _ in found] == [3, 6, 9, 12]
    assert [v for _, v in found] == pytest.approx([mean(0, 3), mean(3, 6), mean(6, 9), mean(9, 12)], rel=1e-6)


# harness/run.py whose rank 1 alone raises at its N-th optimizer step (rank 1 asks preempt.requested once a step)
FAIL_ON_RANK_1 = """
import os, sys
from harness.cli import main
from harness.train import preempt
real, calls = preempt.requested, [0]
def requested():
    calls[0] += 1
    if calls[0] == {n} and os.environ.get("RANK") == "1":
        raise MemoryError("out of memory on rank 1 alone")
    return real()
preempt.requested = requested
raise SystemExit(main(["run", *sys.argv[1:]]))
"""


def test_a_failure_on_one_rank_is_named_and_records_no_result(tmp_path, tiny_bert, small_glue):
    """Rank 1 alone fails mid-cell (its memory, its GPU) while rank 0 trains on: the group breaks, rank 0 records
    the cell failed, with no score, and its error can only name the broken connection; rank 1's own reason was
    said nowhere (it reached neither the screen nor the store), now a line of its own."""
    suite = write_suite(tmp_path / "s.yaml", "name: ddp-fail" + lora_suite(tiny_bert))
    script = tmp_path / "fail.py"
    script.write_text(FAIL_ON_RANK_1.format(n=3))
    proc = launch(tmp_path, suite, small_glue, script=script)
    assert proc.returncode != 0
    (rec,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records()
    assert rec.status == "failed" and rec.score is None and rec.steps is None, (rec.status, rec.error)
    assert "rank 1: cell " + rec.cell_key + ": FAILED after" in proc.stderr, proc.stderr[-3000:]
    assert "MemoryError: out of memory on rank 1 alone" in proc.stderr


# harness/run.py whose rank 1 is killed outright (SIGKILL, as the OOM killer does) at its N-th optimizer step
KILL_RANK_1 = """
import os, signal, sys
from harness.cli import main
from harness.train import preempt
real, calls = preempt.requested, [0]
def requested():
    calls[0] += 1
    if calls[0] == {n} and os.environ.get("RANK") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return real()
preempt.requested = requested
raise SystemExit(main(["run", *sys.argv[1:]]))
"""


def test_a_rank_killed_mid_cell_fails_the_cell_keeps_its_checkpoint_and_stops_the_worker(tmp_path, tiny_bert,
                                                                                            small_glue):
    """A cell stopped (the stop raised at step 4, checkpointed at step 6: eval_steps' sync) and resumed, then rank
    1's process killed at step 8: torch's launcher SIGTERMs rank 0, whose next collective finds the connection
    closed. Rank 0 said it would checkpoint (it cannot: that needs every rank), recorded only gloo's "Connection
    closed by peer", deleted the step-6 checkpoint and crashed with a traceback from the runner's broadcast (exit
    1). Now the record says what happened, the checkpoint stays for `--retry-failed` (which resumes it: checked by
    hand, completed at attempt 3 with the uninterrupted score), and the worker stops with one line and exit 6."""
    import re

    from harness.launch import broken_group
    from harness.train import checkpoint

    suite = write_suite(tmp_path / "s.yaml", "name: ddp-kill" + lora_suite(
        tiny_bert, "batch_size: 4, eval_batch_size: 8, eval_steps: 3", methods=", full"))
    stop, kill = tmp_path / "stop.py", tmp_path / "kill.py"
    stop.write_text(STOP_ON_RANK_0.format(n=5))
    kill.write_text(KILL_RANK_1.format(n=2))   # rank 1 asks once per step: the second step after the resume
    proc = launch(tmp_path, suite, small_glue, script=stop)
    assert "stopped by a signal, checkpointed" in proc.stderr, proc.stderr[-3000:]
    (path,) = checkpoint.paths_under(str(tmp_path / "out" / "ddp-kill"))
    proc = launch(tmp_path, suite, small_glue, script=kill)
    err = proc.stderr
    assert "resumed from its checkpoint at step 6/12" in err, err[-3000:]
    assert "[rank0]: Traceback" not in err, err[-3000:]
    assert re.search(r"rank\s*: 0 .*\n\s*exitcode\s*: 6 ", err), err[-3000:]   # the launcher's table of exits
    assert "(the cell is checkpointed and given back)" not in err   # the SIGTERM line promises no checkpoint
    assert "this worker stops (exit 6)" in err
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    (rec,) = [r for r in store.records() if r.status == "failed"]
    assert rec.attempts == 2 and rec.score is None and rec.steps is None
    first = rec.error.splitlines()[0]
    assert first.startswith("GroupBroken: another rank's process ended"), first
    assert broken_group.recorded(rec.error)   # so the next worker's settle keeps the checkpoint for the retry
    assert ("no checkpoint is possible without every rank, so the cell is recorded failed; `--retry-failed` runs "
            "it again, resuming from the cell's earlier checkpoint (kept)") in first, first
    assert "Connection closed by peer" in rec.error or "Connection reset by peer" in rec.error   # its cause
    assert checkpoint.torch.load(path, weights_only=True)["counters"]["step"] == 6
    (left,) = [r for r in store.records() if r.status != "failed"]
    assert left.status == "pending" and left.attempts == 0   # the worker ran no further cell


# harness/run.py with the DDP group's timeout cut to 30 s (it also bounds the set-up's collectives, where rank 1 waits
# for rank 0 to tokenize: a short one fails a slow machine there), and to {t} s by rank 0 at its N-th optimizer step,
# where rank 1 hangs (alive, not ended) for longer than that (30 s waited out were most of the test's time). The hung
# rank dies of a SIGTERM (its stop handler set back to the default): the launcher sends one only once rank 0 has
# ended, and would otherwise wait its 30 s grace to SIGKILL it.
HANG_RANK_1 = """
import datetime, os, signal, sys, time
import torch.distributed.distributed_c10d as c10d
from harness.cli import main
from harness.train import preempt
c10d.default_pg_timeout = datetime.timedelta(seconds=30)   # torch's default for gloo: 30 minutes
real, calls = preempt.requested, [0]
def requested():
    calls[0] += 1
    if calls[0] == {n} and os.environ.get("RANK") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep({sleep})   # a stalled file system, a deadlock
    elif calls[0] == {n}:
        c10d._set_pg_timeout(datetime.timedelta(seconds={t}))
    return real()
preempt.requested = requested
raise SystemExit(main(["run", *sys.argv[1:]]))
"""


def test_a_hung_rank_times_the_group_out_and_the_worker_says_so(tmp_path, tiny_bert, small_glue):
    """Rank 1 hangs mid-cell (its process still runs): rank 0's next collective times out. The record held only
    gloo's "Timed out waiting 30000ms for send operation", naming no other rank; the worker then tried the
    runner's broadcast to the hung rank, which failed in its turn ("Application timeout caused pair closure"),
    and crashed with a traceback (exit 1), an earlier checkpoint of the cell deleted. Now it is a broken group:
    the record says another rank did not join in time, and the worker stops with one line and exit 6."""
    import re

    suite = write_suite(tmp_path / "s.yaml", "name: ddp-hang" + lora_suite(tiny_bert))
    script = tmp_path / "hang.py"
    script.write_text(HANG_RANK_1.format(t=5, n=3, sleep=100))
    proc = launch(tmp_path, suite, small_glue, script=script)
    err = proc.stderr
    assert "[rank0]: Traceback" not in err, err[-3000:]
    assert re.search(r"rank\s*: 0 .*\n\s*exitcode\s*: 6 ", err), err[-3000:]
    assert ("suite ddp-hang: another rank did not join a collective within the DDP group's timeout (it hung, or "
            "fell far behind); this worker stops (exit 6)") in err, err[-3000:]
    (rec,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records()
    assert rec.status == "failed" and rec.score is None and rec.steps is None
    first = rec.error.splitlines()[0]
    assert first.startswith("GroupBroken: another rank did not join a collective within the DDP group's "
                            "timeout"), first
    assert "Timed out waiting 5000ms" in rec.error   # its cause


# harness/run.py with the DDP group's timeout cut to 30 s, and to {t} s by rank 0 after its first cell, whose rank 1
# hangs then, between cells (dying of the launcher's SIGTERM, as HANG_RANK_1's does)
HANG_RANK_1_BETWEEN_CELLS = """
import datetime, os, signal, sys, time
import torch.distributed.distributed_c10d as c10d
import harness.launch.runner as runner
from harness.cli import main
c10d.default_pg_timeout = datetime.timedelta(seconds=30)
real = runner._release_memory
def release():
    real()
    if os.environ.get("RANK") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep({sleep})   # before its next claim's broadcast: a stalled file system, a deadlock
    else:
        c10d._set_pg_timeout(datetime.timedelta(seconds={t}))
runner._release_memory = release
raise SystemExit(main(["run", *sys.argv[1:]]))
"""


def test_a_rank_hung_between_cells_is_told_as_a_hang(tmp_path, tiny_bert, small_glue):
    """Rank 1 hangs after the first cell: rank 0's broadcast of its next claim times out ("Timed out waiting ...
    for send operation"). The worker gave the claim back and stopped saying "another rank's process ended (or lost
    its connection)", while that process still ran; now it says the rank did not join in time."""
    suite = write_suite(tmp_path / "s.yaml", "name: ddp-hang2" + lora_suite(tiny_bert, methods=", full",
                                                                            budget="max_steps: 2"))
    script = tmp_path / "hang.py"
    script.write_text(HANG_RANK_1_BETWEEN_CELLS.format(t=5, sleep=60))
    proc = launch(tmp_path, suite, small_glue, script=script)
    err = proc.stderr
    assert "this worker stops (exit 6)" in err, err[-3000:]
    assert ("suite ddp-hang2: another rank did not join a collective within the DDP group's timeout (it hung, or "
            "fell far behind); cell ") in err, err[-3000:]
    assert "given back to the queue" in err
    recs = Store(f"sqlite:///{tmp_path / 'h.db'}").records()
    assert sorted(r.status for r in recs) == ["completed", "pending"], err[-3000:]


def test_a_broken_group_is_told_from_a_rank_s_own_failure():
    """How gloo words a peer's closed connection, and what the record says when it comes before the launcher's
    SIGTERM (no stop signal received yet) and after it."""
    from harness.launch.broken_group import broke, explained, timed_out

    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:51596: "
                        "Connection reset by peer. This is typically caused by a remote worker hanging")
    assert broke(gloo) and not broke(MemoryError("out of memory")) and not broke(RuntimeError("CUDA out of memory"))
    early, late = explained(gloo, None, False), explained(gloo, "SIGTERM", True)
    assert str(early).startswith("another rank's process ended (or lost its connection): the DDP group broke")
    assert str(early).endswith("`--retry-failed` runs it again (RuntimeError: " + str(gloo)[:120] + " …)")
    assert str(late).startswith("another rank's process ended and the launcher stopped this one (SIGTERM): ")
    assert "resuming from the cell's earlier checkpoint (kept) where its setup matches" in str(late)
    assert early.__cause__ is gloo and broke(early)
    hung = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting "
                        "30000ms for send operation to complete")
    assert broke(hung) and timed_out(hung) and not timed_out(gloo)
    assert broke(RuntimeError("Application timeout caused pair closure"))   # the next collective after it
    told = explained(hung, None, False)
    assert str(told).startswith("another rank did not join a collective within the DDP group's timeout (it hung")
    assert timed_out(told) and not timed_out(early)


# harness/run.py whose ranks each note every frozen-encoder pass they run; rank 0 returns from its first (a larger
# encoder's pass) only once rank 1 has got to the features: waiting for rank 0's in main_process_first, or running
# the pass itself (each rank notes when it has planned the cached-feature path, and when it then waits)
SLOW_ENCODER_PASS = """
import contextlib, os, sys, time
import accelerate
from harness.cli import main
from harness.train import features
rank, folder = os.environ["RANK"], {folder!r}
def path(name):
    return os.path.join(folder, name)
real_plan, real_first, real = features.plan, accelerate.Accelerator.main_process_first, features.encode
def plan(*args, **kwargs):
    out = real_plan(*args, **kwargs)
    open(path("planned-" + rank), "w").close()
    return out
@contextlib.contextmanager
def main_process_first(self):
    if os.path.exists(path("planned-" + rank)):
        open(path("waits-" + rank), "w").close()
    with real_first(self):
        yield
def encode(*args, **kwargs):
    out = real(*args, **kwargs)
    with open(path("passes-" + rank + ".txt"), "a") as f:
        f.write("pass\\n")
    if rank == "0" and len(open(path("passes-0.txt")).read().split()) == 1:
        deadline = time.monotonic() + 120
        while not any(os.path.exists(path(p)) for p in ("waits-1", "passes-1.txt")) and time.monotonic() < deadline:
            time.sleep(0.05)
    return out
features.plan, accelerate.Accelerator.main_process_first, features.encode = plan, main_process_first, encode
raise SystemExit(main(["run", *sys.argv[1:]]))
"""


def test_two_processes_run_a_probe_encoder_pass_once(tmp_path, tiny_bert, small_glue):
    """A linear probe's frozen-encoder pass runs on rank 0 alone; rank 1 reads its features from the cache. Both ranks
    ran it whenever rank 1 looked before rank 0 had written them, and the record summed both passes' FLOPs
    (train_flops 67.0M for a 33.4M pass and a 0.2M head; eval_flops counted rank 1's dev pass while the record's
    frozen_features said the dev features came from the cache)."""
    suite = write_suite(tmp_path / "s.yaml", f"""
name: ddp-probe
models: ["{tiny_bert}"]
tasks: [rte]
methods: [linear_probe]
budgets: [{{epochs: 2}}]
hparams: {{batch_size: 4, eval_batch_size: 4}}
""")
    script = tmp_path / "slow.py"
    script.write_text(SLOW_ENCODER_PASS.format(folder=str(tmp_path)))
    proc = launch(tmp_path, suite, small_glue, script=script)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ran = {r: (tmp_path / f"passes-{r}.txt").read_text().split() if (tmp_path / f"passes-{r}.txt").exists() else []
           for r in (0, 1)}
    assert ran == {0: ["pass", "pass"], 1: []}, ran   # the training split's, then the dev split's
    (rec,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records()
    computed = rec.extra["frozen_features"]
    assert computed["train_splits_computed"] == computed["eval_splits_computed"] == 1
    # the pass counted once: what the record names as the encoder pass, plus the head's own (under 2%)
    passes = rec.extra["flop_count"]["encoder_pass_flops"]
    assert passes["train"] < rec.train_flops < 1.02 * passes["train"], (rec.train_flops, passes)
    assert passes["eval"] < rec.eval_flops < 1.02 * passes["eval"], (rec.eval_flops, passes)


# harness/run.py with the DDP group's timeout scaled down from torch's 30 minutes to 5 s, and an ablation that
# lasts until rank 1's process has ended, 10 s at most (a large dev set's every span of layers): past the group's
# timeout wherever rank 1 still waits for rank 0, over at once where it does not (a fixed 10 s was waited out)
SLOW_ABLATION = """
import atexit, datetime, os, sys, time
import torch.distributed.distributed_c10d as c10d
c10d.default_pg_timeout = datetime.timedelta(seconds=5)
from harness.analysis import ablate
from harness.cli import main
ended = os.path.join({folder!r}, "rank-1-ended")
if os.environ["RANK"] == "1":
    atexit.register(lambda: open(ended, "w").close())
real = ablate.ablate
def slow(*args, **kwargs):
    deadline = time.monotonic() + 10
    while not os.path.exists(ended) and time.monotonic() < deadline:
        time.sleep(0.05)
    return real(*args, **kwargs)
ablate.ablate = slow
raise SystemExit(main(["run", *sys.argv[1:]]))
"""


def test_ablations_longer_than_the_group_timeout_end_the_run_well(tmp_path, tiny_bert, small_glue):
    """Rank 0 runs the suite's ablations alone; the other ranks waited for it at the group's closing barrier, which
    the group's timeout bounds: past it rank 1 failed ("Timed out waiting"), its launcher stopped rank 0 in its
    ablations, and the run ended 1 though every cell completed. The ranks now leave the group before them."""
    from harness.launch.runner import ABLATION

    suite = write_suite(tmp_path / "s.yaml", f"""
name: ab
models: ["{tiny_bert}"]
tasks: [rte]
methods: [{{name: houlsby, size: 4}}]
budgets: [{{max_steps: 2}}]
hparams: {{batch_size: 4, eval_batch_size: 4}}
ablate: [{{task: rte, method: houlsby}}]
""")
    script = tmp_path / "slow.py"
    script.write_text(SLOW_ABLATION.format(folder=str(tmp_path)))
    proc = launch(tmp_path, suite, small_glue, script=script)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    (run,) = store.records("ab")
    assert [a.run_id for a in store.analyses("ab", ABLATION)] == [run.id]
