"""Experiment trackers through accelerate (`log_with`, `--log-with`): real TensorBoard event files, a real MLflow
store (SQLite), a real W&B offline run folder; one tracker run per cell, continued after a stop signal; a
tracker whose package is missing refused by `validate`. No mocks: every check reads what the tracker wrote."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, read_stderr_until, write_suite
from tests.helpers.cli import assert_refused, run_cli
from harness.spec.errors import EXIT_PREEMPTED
from harness.store.db import Store
from harness.train import checkpoint


def tracked_suite(model, name: str, log_with: str, budget="{max_steps: 6}", log_every=2, tasks="[rte]",
                  methods="[{name: houlsby, size: 4, learning_rate: 1e-3}]", seeds="[1, 2]",
                  hparams="batch_size: 8, learning_rate: 1e-4, eval_steps: 3") -> str:
    return f"""
name: {name}
models: ["{model}"]
tasks: {tasks}
methods: {methods}
budgets: [{budget}]
seeds: {seeds}
hparams: {{{hparams}}}
log_with: {log_with}
log_every: {log_every}
"""


def worker(tmp_path, suite, glue, *extra, env=None, wait=True):
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--db", f"sqlite:///{tmp_path / 'h.db'}",
           "--output-dir", str(tmp_path / "out"), "--data-dir", str(glue), "--no-progress", *extra]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true",
                **(env or {})}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard's own reader finds in a run folder (all its event files): tag -> (step, value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_records(path):
    """The records of a W&B run file (run-ID.wandb), which wandb ships no reader for: a 7-byte header, then
    LevelDB's log format (32 KiB blocks; each chunk: crc32, length, type FULL/FIRST/MIDDLE/LAST) of protobufs."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, chunks = open(path, "rb").read(), 7, b""
    assert data[:4] == b":W&B", data[:7]
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:   # a block's padding
            pos += left
            continue
        chunks, pos = chunks + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def wandb_history(run_dir) -> tuple[str, str, list[tuple[int, list[str]]]]:
    """An offline run folder's run id, name and history rows: (step, the keys logged at it)."""
    (data,) = [f for f in os.listdir(run_dir) if f.endswith(".wandb")]
    run_id, name, rows = None, None, []
    for record in wandb_records(os.path.join(run_dir, data)):
        if record.WhichOneof("record_type") == "run":
            run_id, name = record.run.run_id, record.run.display_name
        elif record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
            rows.append((int(items["_step"]), sorted(k for k in items if not k.startswith("_"))))
    return run_id, name, rows


def mlflow_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment} in {uri}"
    return client, client.search_runs([exp.experiment_id])


def steps_of(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def test_two_cells_write_tensorboard_events_and_one_mlflow_run_each(tmp_path, tiny_bert, small_glue):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    suite = write_suite(tmp_path / "t.yaml", tracked_suite(
        tiny_bert, "tr", f'{{tensorboard: {{logging_dir: tb}}, mlflow: {{tracking_uri: "{uri}"}}}}'))
    proc = worker(tmp_path, suite, small_glue)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: cell" not in proc.stderr, proc.stderr[-3000:]
    recs = {r.cell_key: r for r in Store(f"sqlite:///{tmp_path / 'h.db'}").records("tr")}
    assert len(recs) == 2 and all(r.status == "completed" for r in recs.values())

    # TensorBoard: the suite's logging_dir (relative to the suite file), one folder per cell
    for key, rec in recs.items():
        found = scalars(tmp_path / "tb" / key / "tr")
        assert [s for s, _ in found["train/loss"]] == [2, 4, 6]   # every log_every steps, each once
        assert all(v > 0 for _, v in found["train/loss"])
        assert [s for s, _ in found["train/learning_rate"]] == [2, 4, 6]
        assert [s for s, _ in found["dev/score"]] == [3, 6]        # every evaluation (eval_steps 3, and the end)
        assert found["dev/score"][-1][1] == pytest.approx(rec.score)
        assert found["final/score"] == [(6, pytest.approx(rec.score))]
        assert found["final/trainable_params"][0][1] == rec.trainable_params

    # MLflow: one run per cell in the suite's experiment, its params, tags and metrics
    client, runs = mlflow_runs(uri, "tr")
    assert sorted(r.info.run_name for r in runs) == sorted(f"tr/{k}" for k in recs)
    for run in runs:
        key = run.data.tags["cell_key"]
        rec = recs[key]
        assert run.info.status == "FINISHED"
        assert {k: run.data.tags[k] for k in ("model", "task", "method", "seed")} == {
            "model": rec.model, "task": "rte", "method": rec.method_label, "seed": str(rec.seed)}
        assert run.data.params["hparams.learning_rate"] == "0.001"   # the method's override, resolved
        assert run.data.params["method_params.size"] == "4" and run.data.params["seed"] == str(rec.seed)
        assert run.data.params["budget.max_steps"] == "6"
        assert steps_of(client, run.info.run_id, "train/loss") == [2, 4, 6]
        assert steps_of(client, run.info.run_id, "dev/score") == [3, 6]
        assert run.data.metrics["final/score"] == pytest.approx(rec.score)
        assert run.data.metrics["final/train_time_s"] == pytest.approx(rec.train_time_s)
        assert run.data.metrics["final/trainable_params"] == rec.trainable_params


def test_a_cell_stopped_by_usr1_continues_its_mlflow_run_and_tensorboard_folder(tmp_path, tiny_bert, small_glue):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    suite = write_suite(tmp_path / "k.yaml", tracked_suite(
        tiny_bert, "k", f'{{tensorboard: null, mlflow: {{tracking_uri: "{uri}"}}}}', budget="{max_steps: 40}",
        log_every=5, seeds="[1]", hparams="batch_size: 8, learning_rate: 1e-4, eval_steps: 10"))
    w = worker(tmp_path, suite, small_glue, wait=False)
    read_stderr_until(w, "eval step 10 ")   # training is under way
    w.send_signal(signal.SIGUSR1)
    _, err = w.communicate(timeout=300)
    assert w.returncode == EXIT_PREEMPTED, err[-3000:]
    (ckpt,) = checkpoint.paths_under(str(tmp_path / "out" / "k"))
    counters = checkpoint.torch.load(ckpt, weights_only=True)["counters"]
    stop, kept = counters["step"], counters["trackers"]
    assert 10 <= stop < 40
    client, runs = mlflow_runs(uri, "k")
    (first,) = runs
    assert first.info.status == "KILLED"   # stopped, not finished
    # the run id travels with the checkpoint (TensorBoard's: its run folder, under the tensorboard root)
    assert set(kept) == {"mlflow", "tensorboard"} and kept["mlflow"] == first.info.run_id
    assert steps_of(client, first.info.run_id, "train/loss") == list(range(5, stop + 1, 5))

    again = worker(tmp_path, suite, small_glue)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from its checkpoint at step {stop}/" in again.stderr
    client, runs = mlflow_runs(uri, "k")
    (run,) = runs   # the same run, not a second one
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    # the steps continue where the stop left them: each logged once, in one series
    assert steps_of(client, run.info.run_id, "train/loss") == list(range(5, 41, 5))
    assert steps_of(client, run.info.run_id, "dev/score") == list(range(10, 41, 10))
    (rec,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records("k")
    assert run.data.metrics["final/score"] == pytest.approx(rec.score)
    assert run.data.params["cell_key"] == rec.cell_key and kept["tensorboard"] == f"{rec.cell_key}/k"

    # TensorBoard (default folder: the output directory's tensorboard/): both attempts' events in one folder
    found = scalars(tmp_path / "out" / "tensorboard" / rec.cell_key / "k")
    assert [s for s, _ in found["train/loss"]] == list(range(5, 41, 5))
    assert len([f for f in os.listdir(tmp_path / "out" / "tensorboard" / rec.cell_key / "k")
                if f.startswith("events.out.tfevents")]) == 2


def _mlflow_suite(tmp_path, tiny_bert, max_steps: int):
    """(MLflow's tracking URI, suite "k"): one seed logged to MLflow alone every 5 steps, evaluated every 10."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    suite = write_suite(tmp_path / "k.yaml", tracked_suite(
        tiny_bert, "k", f'{{mlflow: {{tracking_uri: "{uri}"}}}}', budget=f"{{max_steps: {max_steps}}}", log_every=5,
        seeds="[1]", hparams="batch_size: 8, learning_rate: 1e-4, eval_steps: 10"))
    return uri, suite


def test_a_worker_killed_outright_leaves_no_mlflow_run_running(tmp_path, tiny_bert, small_glue):
    """SIGKILL ends a worker without a word to MLflow: its run read RUNNING forever beside the FINISHED run of the
    worker that trained the cell again (lease audit). The next worker to start the cell marks it KILLED."""
    uri, suite = _mlflow_suite(tmp_path, tiny_bert, max_steps=30)
    w = worker(tmp_path, suite, small_glue, wait=False)
    read_stderr_until(w, "eval step 10 ")
    w.kill()
    w.communicate(timeout=60)
    _, (dead,) = mlflow_runs(uri, "k")
    assert dead.info.status == "RUNNING"   # what the kill left

    again = worker(tmp_path, suite, small_glue)   # the same host: the dead worker's lease is taken at once
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"MLflow run {dead.info.run_id} was left running" in again.stderr
    _, runs = mlflow_runs(uri, "k")
    status = {r.info.run_id: r.info.status for r in runs}
    assert status.pop(dead.info.run_id) == "KILLED" and list(status.values()) == ["FINISHED"]

    # a worker of another store (its own output folder) starting the same suite's cell on the same MLflow server:
    # the cell's key is the same, the run left running is not its store's, and stays as it is
    from harness.plan.suite import parse_suite
    from harness.train.tracking import Trackers, for_cell

    client, _ = mlflow_runs(uri, "k")
    live = client.create_run(dead.info.experiment_id, tags=dict(dead.data.tags))
    (cell,) = parse_suite(open(suite).read(), str(suite)).cells()
    mlflow_dir = {"mlflow": {"tracking_uri": uri}}
    for_cell(Trackers("k", mlflow_dir, str(tmp_path / "elsewhere")), cell)._end_runs_left_running(uri)
    assert client.get_run(live.info.run_id).info.status == "RUNNING"
    for_cell(Trackers("k", mlflow_dir, str(tmp_path / "out")), cell)._end_runs_left_running(uri)   # its own store's
    assert client.get_run(live.info.run_id).info.status == "KILLED"


def test_wandb_offline_writes_its_run_folder(tmp_path, tiny_bert, small_glue):
    suite = write_suite(tmp_path / "w.yaml", tracked_suite(tiny_bert, "wb", "[wandb]", seeds="[1]"))
    proc = worker(tmp_path, suite, small_glue, "--log-with", "wandb",
                  env={"WANDB_MODE": "offline", "WANDB_API_KEY": "", "WANDB_DIR": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: cell" not in proc.stderr, proc.stderr[-3000:]
    (rec,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records("wb")
    root = tmp_path / "out" / "wandb"
    runs = [d for d in os.listdir(root) if d.startswith("offline-run-")]
    assert len(runs) == 1, os.listdir(root)
    run_dir = root / runs[0]
    (data,) = [f for f in os.listdir(run_dir) if f.endswith(".wandb")]   # run-ID.wandb: what `wandb sync` uploads
    assert data == f"run-{runs[0].rsplit('-', 1)[1]}.wandb"
    # its records (protobuf; wandb ships no Python reader any more): the run's name, params, tags and metrics
    records = (run_dir / data).read_bytes()
    for text in (f"wb/{rec.cell_key}", "hparams.learning_rate", "seed:1", "train/loss", "dev/score",
                 "final/score", "final/trainable_params"):
        assert text.encode() in records, text


def test_validate_refuses_a_tracker_that_is_not_installed_with_the_install_line(tmp_path, tiny_bert):
    suite = write_suite(tmp_path / "a.yaml", tracked_suite(tiny_bert, "a", "[tensorboard, aim]"))
    assert_refused(run_cli("validate", suite), 'log_with[1]: tracker "aim" is not installed; pip install aim',
                   where=suite)
    ok = write_suite(tmp_path / "b.yaml", tracked_suite(tiny_bert, "b", "[tensorboard, mlflow, wandb]"))
    proc = run_cli("validate", ok)
    assert proc.returncode == 0, proc.stderr
    assert "trackers: tensorboard, mlflow, wandb (one run per cell, log_every 2 steps" in proc.stdout


@pytest.mark.parametrize("log_with, expect", [
    ("[tensorbord]", 'log_with[0]: unknown tracker "tensorbord" (did you mean "tensorboard"?)'),
    ("[mlflow, mlflow]", 'log_with[1]: tracker "mlflow" is named twice'),
    ("{wandb: {id: abc}}", "log_with.wandb.id: set by the harness for each cell"),
    ("{tensorboard: {purge_step: 3}}", "log_with.tensorboard.purge_step: set by the harness for each cell"),
    ("{tensorboard: {logging_dir: ../../elsewhere}}", "leaves the suite's folder"),
    ("7", "log_with: a tracker name, a list of names or a mapping name -> settings (got 7)"),
    ("{mlflow: [1]}", "log_with: a tracker name, a list of names or a mapping"),
])
def test_bad_log_with_is_refused_naming_the_field(tmp_path, tiny_bert, log_with, expect):
    suite = write_suite(tmp_path / "bad.yaml", tracked_suite(tiny_bert, "bad", log_with))
    assert_refused(run_cli("validate", suite), expect, where=suite)


def test_run_refuses_a_bad_log_with_option_before_anything_is_written(tmp_path, tiny_bert, small_glue):
    suite = write_suite(tmp_path / "o.yaml", tracked_suite(tiny_bert, "o", "[tensorboard]"))
    for option, expect in (("tensorboard,mlfow", '--log-with: unknown tracker "mlfow"'),
                           ("comet_ml", '--log-with: tracker "comet_ml" is not installed; pip install comet-ml')):
        proc = run_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                       "--data-dir", small_glue, "--log-with", option)
        assert_refused(proc, expect)
    assert not (tmp_path / "h.db").exists() and not (tmp_path / "out").exists()


def test_two_processes_log_one_run_from_the_main_process_only(tmp_path, tiny_bert, small_glue):
    """A DDP cell (2 ranks over gloo): one MLflow run and one TensorBoard event file, not one per rank."""
    from tests.train.test_distributed import LAUNCH, free_port

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    suite = write_suite(tmp_path / "d.yaml", tracked_suite(
        tiny_bert, "dd", f'{{tensorboard: null, mlflow: {{tracking_uri: "{uri}"}}}}', budget="{max_steps: 4}",
        seeds="[1]", hparams="batch_size: 4, learning_rate: 1e-4"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = LAUNCH + [free_port(), str(ROOT / "harness" / "run.py"), str(suite), "--db", f"sqlite:///{tmp_path / 'h.db'}",
                    "--output-dir", str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "with 2 process(es)" in proc.stderr and "warning: cell" not in proc.stderr
    (rec,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records("dd")
    client, runs = mlflow_runs(uri, "dd")
    (run,) = runs
    assert steps_of(client, run.info.run_id, "train/loss") == [2, 4]
    assert run.data.metrics["final/score"] == pytest.approx(rec.score)
    folder = tmp_path / "out" / "tensorboard" / rec.cell_key / "dd"
    assert len([f for f in os.listdir(folder) if f.startswith("events.out.tfevents")]) == 1
    assert [s for s, _ in scalars(folder)["train/loss"]] == [2, 4]


def test_a_sequential_cell_is_one_run_its_stages_numbered_on(tmp_path, tiny_bert, small_glue):
    """Each stage has its own Accelerator; the cell still has one tracker run, the second stage's steps after
    the first's, each stage's dev metrics under its task."""
    from harness.plan.suite import load_suite
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate
    from harness.train.tracking import Trackers

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    suite = load_suite(str(write_suite(tmp_path / "s.yaml", tracked_suite(
        tiny_bert, "sq", "[tensorboard]", tasks="[{sequence: [rte, stsb]}]", budget="{max_steps: 4}",
        seeds="[1]", hparams="batch_size: 8, learning_rate: 1e-4"))))
    (cell,) = suite.cells()
    trackers = Trackers("sq", {"tensorboard": {}, "mlflow": {"tracking_uri": uri}}, str(tmp_path / "out"), 2)
    ctx = RunContext(data_dir=str(small_glue), cache_dir=None, show_progress=False, trackers=trackers)
    result = train_and_evaluate(cell, ctx, output_dir=str(tmp_path / "cell"))
    client, runs = mlflow_runs(uri, "sq")
    (run,) = runs
    assert steps_of(client, run.info.run_id, "train/loss") == [2, 4, 6, 8]
    assert steps_of(client, run.info.run_id, "dev/rte/score") == [4]
    assert steps_of(client, run.info.run_id, "dev/stsb/score") == [8]
    assert run.data.metrics["final/score"] == pytest.approx(result.score)
    assert run.data.metrics["final/train_time_s"] == pytest.approx(result.train_time_s)   # both stages
    # ... and so are its FLOPs and MFU, as the record has them (they were the last stage's alone)
    assert result.stages[0].train_flops > 0
    assert run.data.metrics["final/train_flops"] == pytest.approx(result.train_flops)
    assert run.data.metrics["final/mfu"] == pytest.approx(result.mfu)
    # params logged once (by the first stage: MLflow would refuse them again), the schedule among them
    assert [k for k in run.data.params if k.startswith("schedule")] and run.data.params["cell_key"] == cell.key
    found = scalars(tmp_path / "out" / "tensorboard" / cell.key / "sq")
    assert [s for s, _ in found["train/loss"]] == [2, 4, 6, 8]


@contextlib.contextmanager
def usr1_at_check(monkeypatch, n: int):
    """A real SIGUSR1 at the loop's n-th stop-flag check (one per optimizer step, stages numbered on), the stop
    handlers installed as a worker has them; restored on leaving."""
    from harness.train import preempt

    old = {s: signal.getsignal(s) for s in preempt.STOP_SIGNALS}
    preempt.install()
    preempt.reset()
    calls, real = {"n": 0}, preempt.requested

    def requested():
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real()

    monkeypatch.setattr(preempt, "requested", requested)
    try:
        yield
    finally:
        monkeypatch.undo()
        preempt.reset()
        for s, h in old.items():
            signal.signal(s, h)


@pytest.mark.parametrize("refused", [False, True])
def test_a_sequential_cell_stopped_in_its_second_stage_logs_each_point_once(tmp_path, tiny_bert, small_glue,
                                                                            monkeypatch, refused):
    """Resuming a sequential cell trains its first stage again (its hand-over) before the second stage's
    checkpoint: that rerun's points are in the run already (they started a second MLflow run and went into the
    TensorBoard folder twice). A refused checkpoint (another thread count) starts the cell over in a new run,
    which gets the first stage's points too, and a TensorBoard folder of its own."""
    import torch

    from harness.plan.suite import load_suite
    from harness.spec.errors import Preempted
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate
    from harness.train.tracking import Trackers

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    suite = load_suite(str(write_suite(tmp_path / "s.yaml", tracked_suite(
        tiny_bert, "sq", "[tensorboard]", tasks="[{sequence: [rte, stsb]}]", budget="{max_steps: 4}",
        seeds="[1]", hparams="batch_size: 8, learning_rate: 1e-4"))))
    (cell,) = suite.cells()

    def run():
        trackers = Trackers("sq", {"tensorboard": {}, "mlflow": {"tracking_uri": uri}}, str(tmp_path / "out"), 2)
        ctx = RunContext(data_dir=str(small_glue), cache_dir=None, show_progress=False, trackers=trackers)
        return train_and_evaluate(cell, ctx, output_dir=str(tmp_path / "cell"))

    with usr1_at_check(monkeypatch, 6), pytest.raises(Preempted, match="at step 2/4"):   # the second stage's step 2
        run()
    threads = torch.get_num_threads()
    if refused:
        torch.set_num_threads(threads + 1)
    try:
        result = run()
    finally:
        torch.set_num_threads(threads)
    assert (result.checkpoint_refused is not None) == refused
    client, runs = mlflow_runs(uri, "sq")
    (run,) = [r for r in runs if r.info.status == "FINISHED"]
    assert len(runs) == (2 if refused else 1)   # a refused checkpoint leaves the stopped run KILLED
    for key, steps in (("train/loss", [2, 4, 6, 8]), ("dev/rte/score", [4]), ("dev/stsb/score", [8])):
        assert steps_of(client, run.info.run_id, key) == steps, key
    assert run.data.metrics["final/score"] == pytest.approx(result.score)
    assert run.data.params["cell_key"] == cell.key   # the new run's params too
    # TensorBoard: the run's folder, each point once; a new run moves the stopped run's folder aside (its points
    # and the new run's were one series, every step twice)
    folder = tmp_path / "out" / "tensorboard" / cell.key / "sq"
    found = scalars(folder)
    assert [s for s, _ in found["train/loss"]] == [2, 4, 6, 8]
    assert [s for s, _ in found["dev/rte/score"]] == [4]
    assert os.path.isdir(f"{folder}.earlier-1") == refused
    if refused:
        assert [s for s, _ in scalars(f"{folder}.earlier-1")["train/loss"]] == [2, 4, 6]


def test_a_resumed_cell_logs_the_train_loss_an_uninterrupted_one_logs(tmp_path, tiny_bert, small_glue,
                                                                       monkeypatch):
    """A stop between two tracker points (log_every 3, stopped at step 4): the point at step 6 is the mean over
    steps 4-6's micro-batches, the two before the stop included, as in the run never stopped; the checkpoint
    keeps the tracker's running loss and its count (before, the resumed point averaged steps 5-6 alone)."""
    from harness.plan.suite import load_suite
    from harness.spec.errors import Preempted
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate
    from harness.train.tracking import Trackers

    suite = load_suite(str(write_suite(tmp_path / "r.yaml", tracked_suite(
        tiny_bert, "r", "[tensorboard]", budget="{max_steps: 9}", log_every=3, seeds="[1]",
        hparams="batch_size: 8, learning_rate: 1e-4, eval_steps: 100"))))
    (cell,) = suite.cells()

    def run(name):
        trackers = Trackers("r", {"tensorboard": {}}, str(tmp_path / name), 3)
        ctx = RunContext(data_dir=str(small_glue), cache_dir=None, show_progress=False, trackers=trackers)
        return train_and_evaluate(cell, ctx, output_dir=str(tmp_path / name / "cell"))

    reference = run("ref")
    with usr1_at_check(monkeypatch, 4), pytest.raises(Preempted, match="at step 4/"):   # the 4th optimizer step
        run("cell")
    resumed = run("cell")
    assert resumed.score == reference.score and resumed.history == reference.history
    want = scalars(tmp_path / "ref" / "tensorboard" / cell.key / "r")["train/loss"]
    got = scalars(tmp_path / "cell" / "tensorboard" / cell.key / "r")["train/loss"]
    assert [s for s, _ in want] == [3, 6, 9]
    assert got == want


RESUME_WITHOUT_IDS = """
import os, sys
from accelerate import Accelerator
from harness.plan.suite import parse_suite
from harness.train.tracking import Trackers, for_cell

cell = parse_suite("name: k\\nmodels: [minilm]\\ntasks: [rte]\\nmethods: [full]\\n", "k.yaml").cells()[0]
tracked = for_cell(Trackers("k", {"tensorboard": None}, sys.argv[1]), cell)
folder = tracked.tensorboard_dir()
os.makedirs(folder)
open(os.path.join(folder, "events.out.tfevents.earlier"), "w").close()
acc = Accelerator(cpu=True, **tracked.accelerator_kwargs())
tracked.start(acc, resume_ids={})   # a checkpoint written before TensorBoard's folder was kept as its id
tracked.finish(acc)
print(sorted(os.listdir(os.path.dirname(folder))), "events.out.tfevents.earlier" in os.listdir(folder))
"""


def test_a_checkpoint_that_kept_no_tensorboard_id_appends_to_its_folder(tmp_path):
    """A cell resumed from a checkpoint written before TensorBoard had an id (its trackers {}) is the same run:
    its folder was moved aside as an earlier run's and the resumed half logged into an empty one (review)."""
    proc = subprocess.run([sys.executable, "-c", RESUME_WITHOUT_IDS, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["['k']", "True"], proc.stdout   # not moved aside to k.earlier-1


ATTEMPT = """
import json, os, signal, sys
from harness.plan.suite import parse_suite
from harness.train import preempt
from harness.train.context import RunContext
from harness.train.recipe import train_and_evaluate
from harness.train.tracking import Trackers

root, model, glue, sig, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
(cell,) = parse_suite(f'''
name: kk
models: ["{model}"]
tasks: [rte]
methods: [{{name: houlsby, size: 4, learning_rate: 1e-3}}]
budgets: [{{max_steps: 12}}]
seeds: [1]
hparams: {{batch_size: 8, learning_rate: 1e-4, eval_steps: 3}}
''', os.path.join(root, "kk.yaml")).cells()
preempt.install()
real = preempt.requested
checks = iter(range(1, 10**6))

def requested():   # the n-th stop check of this attempt (one per optimizer step) sends it a real signal
    if next(checks) == n:
        os.kill(os.getpid(), getattr(signal, sig))
    return real()

preempt.requested = requested
trackers = Trackers("kk", {"tensorboard": {}, "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db"}},
                    os.path.join(root, "out"), 2)
ctx = RunContext(data_dir=glue, cache_dir=None, show_progress=False, trackers=trackers)
result = train_and_evaluate(cell, ctx, output_dir=os.path.join(root, "cell"))
print(json.dumps({"key": cell.key, "score": result.score, "history": result.history}))
"""


def test_a_cell_killed_after_its_resume_logs_each_step_once_when_resumed_again(tmp_path, tiny_bert, small_glue):
    """A cell stopped at step 4 (checkpoint), resumed, then killed outright (SIGKILL) at step 9: the next worker
    resumes it from step 4 again and trains steps 5-9 once more. The killed attempt had logged steps 6 and 8
    (train) and 6 (dev) into the same MLflow run and TensorBoard folder: each of them showed twice, one series
    going back in steps. Each step once, and the dev scores the record's."""
    import json

    def attempt(sig: str, n: int):
        return subprocess.run([sys.executable, "-c", ATTEMPT, str(tmp_path), str(tiny_bert), str(small_glue), sig,
                               str(n)], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})

    stopped = attempt("SIGUSR1", 4)
    assert "Preempted: SIGUSR1 at step 4/12" in stopped.stderr, stopped.stderr[-3000:]
    killed = attempt("SIGKILL", 5)   # resumed at step 4: its 5th check is step 9's
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "resumed from its checkpoint at step 4/12" in killed.stderr
    done = attempt("SIGUSR1", 0)
    assert done.returncode == 0 and "resumed from its checkpoint at step 4/12" in done.stderr, done.stderr[-3000:]
    record = json.loads(done.stdout.splitlines()[-1])
    evaluations = [(h["step"], pytest.approx(h["score"])) for h in record["history"]]
    assert [s for s, _ in evaluations] == [3, 6, 9, 12]

    found = scalars(tmp_path / "out" / "tensorboard" / record["key"] / "kk")
    assert [s for s, _ in found["train/loss"]] == [2, 4, 6, 8, 10, 12]
    assert found["dev/score"] == evaluations
    client, (run,) = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "kk")
    assert run.info.status == "FINISHED"
    assert steps_of(client, run.info.run_id, "train/loss") == [2, 4, 6, 8, 10, 12]
    assert [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, "dev/score"),
                                                key=lambda m: m.step)] == evaluations
    assert run.data.metrics["final/score"] == pytest.approx(record["score"])


def test_wandb_offline_a_resumed_cell_writes_a_second_folder_of_the_same_run(tmp_path, tiny_bert, small_glue,
                                                                             monkeypatch):
    """wandb cannot resume a run offline (it ignores `resume`): the resumed attempt writes a folder of its own,
    under the run id the checkpoint kept, which `wandb sync` uploads after the first into that run. The two
    hold every step once between them: the first up to the stop, the second from the step after it."""
    from harness.plan.suite import load_suite
    from harness.spec.errors import Preempted
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate
    from harness.train.tracking import Trackers

    monkeypatch.setenv("WANDB_SILENT", "true")
    suite = load_suite(str(write_suite(tmp_path / "w.yaml", tracked_suite(
        tiny_bert, "wr", "[wandb]", budget="{max_steps: 8}", seeds="[1]",
        hparams="batch_size: 8, learning_rate: 1e-4, eval_steps: 3"))))
    (cell,) = suite.cells()

    def run():
        trackers = Trackers("wr", {"wandb": {"mode": "offline"}}, str(tmp_path / "out"), 2)
        ctx = RunContext(data_dir=str(small_glue), cache_dir=None, show_progress=False, trackers=trackers)
        return train_and_evaluate(cell, ctx, output_dir=str(tmp_path / "cell"))

    with usr1_at_check(monkeypatch, 5), pytest.raises(Preempted, match="at step 5/8"):
        run()
    (ckpt,) = checkpoint.paths_under(str(tmp_path / "cell"))
    kept = checkpoint.torch.load(ckpt, weights_only=True)["counters"]["trackers"]["wandb"]
    result = run()
    root = tmp_path / "out" / "wandb"
    folders = sorted(d for d in os.listdir(root) if d.startswith("offline-run-"))   # DATE-ID: in start order
    assert len(folders) == 2 and all(d.endswith(f"-{kept}") for d in folders), folders
    first, second = (wandb_history(root / d) for d in folders)
    assert first[:2] == second[:2] == (kept, f"wr/{cell.key}")
    assert [s for s, _ in first[2]] == [2, 3, 4]
    assert [s for s, _ in second[2]] == [6, 8]   # train 6, dev 6, train 8, dev 8 and the summary: one row a step
    assert "final/score" in second[2][-1][1] and "dev/score" in second[2][0][1]
    assert [h["step"] for h in result.history] == [3, 6, 8]


FROZEN = """
import os, sys, time
from pathlib import Path
from harness.launch import runner, worker
class Frozen(worker.Heartbeat):   # no beat, no step past the first until GO: a worker frozen after its resume
    _lost = False
    def _beat(self):
        while not Path(os.environ["GO"]).exists():
            time.sleep(0.05)
        super()._beat()
    @property
    def lost(self):
        if not Path(os.environ["GO"]).exists():
            Path(os.environ["FROZEN"]).touch()
            while not Path(os.environ["GO"]).exists():
                time.sleep(0.05)
            self._lost = not self.store.heartbeat(self.claim)
        return self._lost
    @lost.setter
    def lost(self, value):
        self._lost = value
runner.Heartbeat = Frozen
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_worker_that_lost_a_resumed_cell_leaves_the_new_holders_mlflow_run_finished(tmp_path, tiny_bert,
                                                                                      small_glue):
    """A stopped cell resumed by worker A, which froze (no heartbeat) until B took the stale lease over, resumed
    the same checkpoint, continued the same MLflow run and finished it. A, awake again, found its lease lost and
    ended that run as KILLED: the completed cell's one run read KILLED. A lost lease leaves the run as it is."""
    uri, suite = _mlflow_suite(tmp_path, tiny_bert, max_steps=40)
    first = worker(tmp_path, suite, small_glue, wait=False)
    read_stderr_until(first, "eval step 10 ")
    first.send_signal(signal.SIGUSR1)
    assert first.wait(timeout=300) == EXIT_PREEMPTED
    _, (run,) = mlflow_runs(uri, "k")
    frozen, go = tmp_path / "frozen", tmp_path / "go"
    lease = {"HARNESS_HEARTBEAT_S": "0.5", "HARNESS_LEASE_TIMEOUT_S": "3"}
    a = subprocess.Popen([sys.executable, "-c", FROZEN, "run", str(suite), "--db", f"sqlite:///{tmp_path / 'h.db'}",
                          "--output-dir", str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                            "FROZEN": str(frozen), "GO": str(go), **lease},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        read_stderr_until(a, "resumed from its checkpoint")
        while not frozen.exists():
            assert a.poll() is None
            time.sleep(0.1)
        b = worker(tmp_path, suite, small_glue, env=lease)   # takes the stale lease over, resumes, finishes
        assert b.returncode == 0 and "taking over a stale lease" in b.stderr, b.stderr[-3000:]
        assert mlflow_runs(uri, "k")[1][0].info.status == "FINISHED"
        go.touch()
        _, err = a.communicate(timeout=300)
    finally:
        go.touch()
        if a.poll() is None:
            a.kill()
    assert "lease lost" in err, err[-3000:]
    _, runs = mlflow_runs(uri, "k")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run.info.run_id, "FINISHED")]


LOST = """
import sys
import mlflow
from accelerate import Accelerator
from mlflow.tracking import MlflowClient
from harness.plan.suite import parse_suite
from harness.train.tracking import Trackers, for_cell

root, mode = sys.argv[1], sys.argv[2]
unreachable = mode == "unreachable"
uri = f"sqlite:///{root}/mlflow.db"
(cell,) = parse_suite("name: k\\nmodels: [minilm]\\ntasks: [rte]\\nmethods: [full]\\n", f"{root}/k.yaml").cells()
tracking = for_cell(Trackers("k", {"mlflow": {"tracking_uri": uri}}, f"{root}/out"), cell)
client = MlflowClient(uri)
held = client.create_run(client.create_experiment("k")).info.run_id   # the holder's run: it trains on
acc = Accelerator(**tracking.accelerator_kwargs())
tracking.start(acc, resume_ids={"mlflow": held}, resume_step=10)      # this worker resumed the same run, then
if unreachable:                                                       # found its lease lost
    def gone(*a, **k):
        raise ConnectionError("MLflow is unreachable")
    MlflowClient.get_run = MlflowClient.set_terminated = gone
if mode == "older":   # MLflow 2.10's run stack (the oldest MLflow the harness takes): a plain list
    from mlflow.tracking import fluent
    local, fluent._active_run_stack = fluent._active_run_stack, list(fluent._active_run_stack.get())
tracking.finish(acc, "lost")
if mode == "older":   # what is left active, back where this MLflow keeps it
    local.get()[:], fluent._active_run_stack = fluent._active_run_stack, local
run = MlflowClient(uri).get_run(held) if not unreachable else None
print(mlflow.active_run() is None, run and run.info.status, run and run.info.end_time)
"""


@pytest.mark.parametrize("mlflow_is", ["reachable", "unreachable", "older"])
def test_a_worker_that_lost_its_lease_leaves_the_holders_running_mlflow_run_untouched(tmp_path, mlflow_is):
    """A worker that found its lease lost while the new holder still trains the cell (the same MLflow run, resumed
    from one checkpoint) ended that run with status RUNNING and an end time, which the holder's FINISHED later
    overwrote; and where MLflow could not be read then, its tracker stayed open in this process. Now it leaves the
    run untouched (RUNNING, no end time) and closes its own side of it: no active run is left. "older": MLflow
    2.10's run stack, a plain list where later ones keep a thread-local; closing it failed there ("could not
    finish"), the run stayed active and MLflow's exit handler ended the holder's run FINISHED."""
    proc = subprocess.run([sys.executable, "-c", LOST, str(tmp_path), mlflow_is], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr[-3000:]
    expect = "True None None" if mlflow_is == "unreachable" else "True RUNNING None"
    assert proc.stdout.split("\n")[-2] == expect, proc.stdout + proc.stderr[-2000:]
