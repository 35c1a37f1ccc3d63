"""End to end on a tiny random BERT and small GLUE-layout files: run, record, skip, resume, fail, budgets."""

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli, write_suite
from harness.spec.tasks import get_task
from harness.store.db import Store
from harness.train import host_memory


def suite_text(model, extra_methods="", budget="{epochs: 1}", tasks="[rte, stsb]", hparams=""):
    return f"""
name: tiny
models: ["{model}"]
tasks: {tasks}
methods:
  - full
  - {{name: houlsby, size: 4, learning_rate: 1e-3}}
{extra_methods}
budgets:
  - {budget}
hparams:
  batch_size: 8
  learning_rate: 1e-4
{hparams}
"""


@pytest.fixture()
def workdir(tmp_path, small_glue):
    return tmp_path


def run(workdir, suite, *extra, data=None, env=None):
    db = f"sqlite:///{workdir / 'h.db'}"
    return run_cli("run", suite, "--db", db, "--output-dir", workdir / "out", "--data-dir", data, *extra,
                   cwd=workdir, env=env)


# python's own import report (PYTHONPROFILEIMPORTTIME): "import time: SELF | CUMULATIVE | NAME", NAME indented by
# how deep the import nested; a top-level package's name has no dot
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| *([A-Za-z_]\w*)$", re.M)


def rows(workdir):
    return {r.cell_key: r for r in Store(f"sqlite:///{workdir / 'h.db'}").records()}


def test_run_records_everything_then_skips(workdir, tiny_bert, small_glue):
    suite = write_suite(workdir / "s.yaml", suite_text(tiny_bert))
    proc = run(workdir, suite, data=small_glue)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the worker closed the store as it ended, so SQLite wrote its log into the file: the file alone (copied,
    # mailed) holds every run; it was left in h.db-wal, and a copy of h.db held none of them
    assert not (workdir / "h.db-wal").exists()
    shutil.copyfile(workdir / "h.db", workdir / "copy.db")
    with sqlite3.connect(workdir / "copy.db") as copy:
        assert copy.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone() == (4,)
    copy.close()
    recs = rows(workdir)
    assert len(recs) == 4 and {r.status for r in recs.values()} == {"completed"}
    for r in recs.values():
        assert r.score is not None and r.metrics and r.best_metrics and r.history
        assert r.trainable_params > 0 and r.total_params >= r.trainable_params
        assert r.train_time_s > 0 and r.train_examples_per_s > 0 and r.train_tokens_per_s > 0
        assert r.peak_memory_mb > 0 and r.num_processes == 1
        # a CPU cell says how malloc was set while it trained (harness/train/host_memory.py)
        assert not host_memory.glibc_malloc() or r.extra["host_allocator"]["malloc"].startswith("glibc")
        if r.peak_memory_kind == "peak_rss_cell":   # and the RSS its peak counted from (train/measure.py)
            assert 0 < r.extra["rss_at_start_mb"] <= r.peak_memory_mb
        assert r.env["torch"] and r.env["transformers"] and r.env["adapters"] and r.env["python"]
        assert "git_commit" in r.env and "git_dirty" in r.env and r.env["host"]
        assert r.train_examples == 48 and r.eval_examples == 21
        assert r.steps == 6 and r.epochs_done == 1.0  # 48 examples / batch 8
        on_disk = json.loads((workdir / "out" / "tiny" / r.cell_key / "record.json").read_text())
        assert on_disk["score"] == r.score and on_disk["cell_key"] == r.cell_key
        # the bytes each split came from, by content: a score says which data it is a score of
        folder = Path(small_glue).resolve() / get_task(r.task).local_dir
        for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            assert r.extra["data_sources"][r.task][split] == f"file:{folder / name}:sha256:{digest}"
        assert on_disk["extra"]["data_sources"] == r.extra["data_sources"]
        # and the model it loaded, by content (test_model_source.py): a folder edited between cells is told apart
        assert r.extra["model_source"].startswith(f"dir:{os.path.abspath(tiny_bert)}:sha256:")
        assert on_disk["extra"]["model_source"] == r.extra["model_source"]
        assert (workdir / "out" / "tiny" / r.cell_key / "predictions.npz").is_file()
        words = shlex.split(r.command, comments=True)   # the command that re-runs it reads the same data
        assert words[words.index("--data-dir") + 1] == str(small_glue)
    stsb = next(r for r in recs.values() if r.task == "stsb")
    assert set(stsb.metrics) == {"pearson", "spearman"}
    assert stsb.score == pytest.approx((stsb.metrics["pearson"] + stsb.metrics["spearman"]) / 2)
    houlsby = next(r for r in recs.values() if r.method == "houlsby")
    assert houlsby.added_params == 2 * 2 * (2 * 4 * 32 + 32 + 4) and houlsby.trainable_pct < 10

    # launched again: nothing trained, and nothing of the training libraries imported (their import was most of
    # such a launch: 4.6-6.6 s against 1.6-1.8 s on a 2-core CPU, bench/RESULTS.md)
    again = run(workdir, suite, data=small_glue, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert again.returncode == 0
    assert "4 already completed (skipped)" in again.stderr and "0 to run" in again.stderr
    assert "this worker ran 0 cell(s)" in again.stderr
    imported = {m.group(1) for m in IMPORT_LINE.finditer(again.stderr)}
    assert "sqlalchemy" in imported and not imported & {"torch", "transformers", "adapters", "accelerate"}
    assert {k: r.finished_at for k, r in rows(workdir).items()} == {k: r.finished_at for k, r in recs.items()}

    status = run_cli("status", suite, "--db", f"sqlite:///{workdir / 'h.db'}", cwd=workdir)
    assert status.returncode == 0 and "4 cells: 4 completed" in status.stdout
    fresh = run_cli("status", suite, "--db", f"sqlite:///{workdir / 'none.db'}", cwd=workdir)
    assert fresh.returncode == 0 and "4 cells: 4 pending" in fresh.stdout and not (workdir / "none.db").exists()


def _glue_copy(workdir, small_glue):
    data = workdir / "glue"
    shutil.copytree(small_glue, data)
    return data


def test_failed_cell_is_recorded_and_the_suite_goes_on(workdir, tiny_bert, small_glue):
    # MRPC files that exist (every check before training passes) but are not in the GLUE layout: that cell fails
    # with the reason, the others complete
    data = _glue_copy(workdir, small_glue)
    (data / "MRPC").mkdir()
    for split in ("train", "dev"):
        (data / "MRPC" / f"{split}.tsv").write_text("a\tb\n1\t2\n")
    suite = write_suite(workdir / "s.yaml", suite_text(tiny_bert, tasks="[mrpc, rte]"))
    proc = run(workdir, suite, data=data)
    assert proc.returncode == 1
    recs = list(rows(workdir).values())
    failed = [r for r in recs if r.status == "failed"]
    assert len(failed) == 2 and all(r.task == "mrpc" for r in failed)
    assert "MRPC/train.tsv has no column(s)" in failed[0].error.splitlines()[0]
    # one line per failed cell on screen; the traceback is in the store and the cell's error.log
    assert "Traceback" not in proc.stderr
    assert len([l for l in proc.stderr.splitlines() if "FAILED" in l]) == 2
    assert "Traceback (most recent call last)" in failed[0].error
    assert (workdir / "out" / "tiny" / failed[0].cell_key / "error.log").is_file()
    assert sum(r.status == "completed" for r in recs) == 2
    # failed cells are not retried by default ...
    again = run(workdir, suite, data=data)
    assert again.returncode == 0 and "2 failed before (skipped" in again.stderr
    assert [r.attempts for r in rows(workdir).values() if r.status == "failed"] == [1, 1]
    # ... only with --retry-failed
    retry = run(workdir, suite, "--retry-failed", data=data)
    assert retry.returncode == 1
    assert [r.attempts for r in rows(workdir).values() if r.task == "mrpc"] == [2, 2]


def test_nan_loss_fails_the_cell(workdir, tiny_bert, small_glue):
    # learning rates above 1 are refused before training now, so the non-finite loss comes from the data: STS-B
    # scores of +-1e20, finite numbers whose squared error overflows float32 (a "nan" score is a malformed row,
    # skipped; the head starts at their mean, 0); the RTE cells of the same suite complete
    data = _glue_copy(workdir, small_glue)
    train = data / "STS-B" / "train.tsv"
    head, *body = train.read_text().splitlines()
    train.write_text("\n".join([head] + [line.rsplit("\t", 1)[0] + ("\t1e20" if i % 2 else "\t-1e20")
                                          for i, line in enumerate(body)]) + "\n")
    suite = write_suite(workdir / "s.yaml", suite_text(tiny_bert, tasks="[stsb, rte]"))
    proc = run(workdir, suite, data=data)
    assert proc.returncode == 1
    by_task = {}
    for r in rows(workdir).values():
        by_task.setdefault(r.task, []).append(r)
    assert all(r.status == "failed" and r.error.startswith("FloatingPointError: loss is not finite at step")
               for r in by_task["stsb"])
    assert all(r.status == "completed" for r in by_task["rte"])  # the suite went on


def test_budgets_are_exact(workdir, tiny_bert, small_glue):
    suite = write_suite(workdir / "s.yaml", f"""
name: budgets
models: ["{tiny_bert}"]
tasks: [rte]
methods: [linear_probe]
budgets:
  - {{max_steps: 5}}
  - {{epochs: 0.5}}
  - {{epochs: 2, max_train_samples: 16, max_eval_samples: 5}}
  - {{epochs: 100, time_limit_min: 0.02}}
  - {{epochs: 2, max_steps: 3}}
hparams:
  batch_size: 8
  eval_steps: 2
""")
    proc = run(workdir, suite, data=small_glue)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_budget = {json.dumps(r.budget, sort_keys=True): r for r in rows(workdir).values()}
    r = by_budget['{"max_steps": 5}']
    assert r.steps == 5 and r.stopped_by == "max_steps" and [h["step"] for h in r.history] == [2, 4, 5]
    r = by_budget['{"epochs": 0.5}']
    assert r.steps == 3 and r.epochs_done == 0.5 and r.stopped_by == "epochs"
    r = by_budget['{"epochs": 2.0, "max_eval_samples": 5, "max_train_samples": 16}']
    assert r.train_examples == 16 and r.eval_examples == 5 and r.steps == 4 and r.epochs_done == 2.0
    r = by_budget['{"epochs": 100.0, "time_limit_min": 0.02}']
    assert r.stopped_by == "time_limit" and r.steps < 600   # stopped by the clock, long before its 100 epochs
    r = by_budget['{"epochs": 2.0, "max_steps": 3}']
    assert r.steps == 3 and r.stopped_by == "max_steps"
    best = max(h["score"] for h in r.history)
    assert r.best_score == best and r.score == r.history[-1]["score"]


def test_resume_after_a_killed_run(workdir, tiny_bert, small_glue):
    """Kill the process for real in the middle of the suite: finished cells stay, the interrupted one reruns."""
    suite = write_suite(workdir / "s.yaml", suite_text(tiny_bert, budget="{epochs: 3}",
                                                       extra_methods="  - linear_probe\n  - {name: lora, rank: 2}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--db", f"sqlite:///{workdir / 'h.db'}",
                             "--output-dir", str(workdir / "out"), "--data-dir", str(small_glue)],
                            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    done = 0
    while time.time() < deadline and done < 2:
        time.sleep(0.3)
        if (workdir / "h.db").exists():
            try:
                with sqlite3.connect(workdir / "h.db") as c:
                    done = c.execute("select count(*) from runs where status='completed'").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = rows(workdir)
    completed = {k for k, r in before.items() if r.status == "completed"}
    assert len(completed) >= 2 and len(completed) < 8
    resumed = run(workdir, suite, data=small_glue)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(completed)} already completed (skipped)" in resumed.stderr
    after = rows(workdir)
    assert len(after) == 8 and all(r.status == "completed" for r in after.values())
    for key in completed:  # untouched
        assert after[key].finished_at == before[key].finished_at and after[key].attempts == 1
    rerun = [k for k, r in before.items() if r.status == "running"]
    assert all(after[k].attempts == 2 for k in rerun)


def test_export_csv_has_the_documented_columns(workdir, tiny_bert, small_glue):
    import csv
    import io

    suite = write_suite(workdir / "s.yaml", suite_text(tiny_bert, tasks="[rte]"))
    assert run(workdir, suite, data=small_glue).returncode == 0
    proc = run_cli("export", "--format", "csv", "--db", f"sqlite:///{workdir / 'h.db'}", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    table = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(table) == 2
    for col in ("suite", "cell_key", "model", "task", "method", "method_params", "budget", "seed", "learning_rate",
                "status", "score", "metric_accuracy", "trainable_params", "total_params", "trainable_pct",
                "train_time_s", "peak_memory_mb", "train_examples_per_s", "num_processes"):
        assert col in table[0], col
    assert {row["method"] for row in table} == {"full", "houlsby"}
    assert float(table[0]["score"]) == pytest.approx(float(table[0]["metric_accuracy"]))
    out = workdir / "r.csv"
    assert run_cli("export", "--db", f"sqlite:///{workdir / 'h.db'}", "-o", out, cwd=workdir).returncode == 0
    assert out.read_text() == proc.stdout
