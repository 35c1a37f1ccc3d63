"""End-of-suite ablations as work items: every worker that finishes a suite runs `run_ablations`; each ablation
is claimed by one of them (real processes on one SQLite file and on a real PostgreSQL server), leased like a
cell (a stale claim is taken over, a late finish refused), and asked-for ones (`harness ablate`) still add rows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select, update

from tests.helpers import ROOT
from harness.spec.status import Status
from harness.store.db import Store
from harness.store.lease import current_worker
from harness.store.schema import AnalysisRecord

SUITE = """
name: abl
models: [minilm]
tasks: [rte, mrpc]
methods: [{name: houlsby, size: 8}]
seeds: [1, 2]
ablate: [{method: houlsby, runs: all}]
"""

ABLATER = """
import sys, time
import harness.analysis.ablate as ablate_module
from harness.launch.runner import run_ablations
from harness.plan.suite import parse_suite
from harness.store.db import Store

def fake_ablate(rec, ctx, trust_remote_code=False):   # the claims are under test, not the re-scoring
    time.sleep(0.3)
    return {"num_layers": 1, "baseline": rec.score, "spans": [[0, 0, rec.score - 1.0]]}

ablate_module.ablate = fake_ablate
url, text, go = sys.argv[1], sys.argv[2], float(sys.argv[3])
suite = parse_suite(text, "abl.yaml")
store = Store(url)
while time.time() < go:
    time.sleep(0.002)
print("failed", run_ablations(suite, store, None, lambda line: print(line, flush=True)))
"""


def completed_store(url: str) -> list[int]:
    from harness.plan.suite import parse_suite

    store = Store(url)
    ids = []
    for i, cell in enumerate(parse_suite(SUITE, "abl.yaml").cells()):
        claim = store.start(cell, cell.config(), "cmd", None)
        store.finish(claim, Status.COMPLETED, {"score": 70.0 + i, "metrics": {"accuracy": 70.0 + i}})
        ids.append(claim.id)
    return ids


def test_workers_finishing_a_suite_together_ablate_each_run_once(tmp_path, db_url):
    ids = completed_store(db_url)
    go = time.time() + 6
    procs = [subprocess.Popen([sys.executable, "-c", ABLATER, db_url, SUITE, str(go)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert out.strip().endswith("failed 0"), out
        outs.append(out)
    assert sum(out.count("ablation of run") for out in outs) == len(ids)      # each ran once, in one worker
    store = Store(db_url)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AnalysisRecord)).scalar_one() == len(ids)
    got = store.analyses("abl", "adapter_ablation")
    assert sorted(a.run_id for a in got) == sorted(ids)
    assert all(a.payload["spans"] for a in got)
    # a later worker finds nothing left to do
    proc = subprocess.run([sys.executable, "-c", ABLATER, db_url, SUITE, "0"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0 and "ablation of run" not in proc.stdout, proc.stdout + proc.stderr
    assert len(Store(db_url).analyses("abl")) == len(ids)


def test_an_analysis_claim_is_a_lease(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    run_id = completed_store(url)[0]
    store = Store(url)
    w1 = dataclasses.replace(current_worker(), worker_id="w1")
    w2 = dataclasses.replace(current_worker(), worker_id="w2", started_at=dt.datetime.utcnow())
    first = store.claim_analysis(run_id, "adapter_ablation", w1, lease_timeout_s=300)
    assert first is not None
    assert store.claim_analysis(run_id, "adapter_ablation", w2, lease_timeout_s=300) is None   # live lease
    assert store.heartbeat_analysis(first)
    assert store.analyses("abl") == []                          # a claim is not a result
    with store.engine.begin() as conn:                          # w1 stalls: its lease goes stale
        conn.execute(update(AnalysisRecord).values(heartbeat_at=dt.datetime.utcnow() - dt.timedelta(hours=1)))
    second = store.claim_analysis(run_id, "adapter_ablation", w2, lease_timeout_s=300)
    assert second is not None and second.id == first.id
    assert not store.finish_analysis(first, {"spans": [[0, 0, 1.0]]})   # too late: not recorded
    assert store.fail_analysis(second, "boom")
    assert store.claim_analysis(run_id, "adapter_ablation", w2, lease_timeout_s=300) is None   # failed since w2 began
    w3 = dataclasses.replace(current_worker(), worker_id="w3", started_at=dt.datetime.utcnow())
    third = store.claim_analysis(run_id, "adapter_ablation", w3, lease_timeout_s=300)
    assert third is not None and store.finish_analysis(third, {"spans": [[0, 0, 2.0]]})
    # the same finish again: a retry whose first try committed and lost its answer (an outage: runner's
    # with_store_retry) finds its own result, not "another worker took it over"; w1's stays refused
    assert store.finish_analysis(third, {"spans": [[0, 0, 2.0]]})
    assert not store.finish_analysis(first, {"spans": [[0, 0, 1.0]]})
    assert [a.payload["spans"] for a in store.analyses("abl")] == [[[0, 0, 2.0]]]
    # asked for by hand: a row of its own, the suite's one kept; the newest is the run's analysis in every table
    store.add_analysis(run_id, "adapter_ablation", {"spans": []})
    assert [a.payload["spans"] for a in store.analyses("abl")] == [[]]
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AnalysisRecord)).scalar_one() == 2


# harness run whose ablations get Slurm's warning signal while the first one runs (the re-scoring itself faked)
STOPPED_IN_ABLATIONS = """
import os, signal, sys
import harness.analysis.ablate as ablate_module
from harness.cli import main

def fake_ablate(rec, ctx, trust_remote_code=False):
    os.kill(os.getpid(), signal.SIGUSR2)
    return {"num_layers": 1, "baseline": rec.score, "spans": [[0, 0, rec.score - 1.0]]}

ablate_module.ablate = fake_ablate
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_stop_signal_during_the_ablations_requeues_the_worker_with_the_rest_left(tmp_path, tiny_bert, small_glue):
    """A worker that got Slurm's warning signal in its end-of-suite ablations ran every one left (past its time
    limit, where they are long), ended 0 and did not requeue its task: the ablations it had not reached waited for
    someone to run the suite again. It now claims no further one after the signal, ends 3 and requeues its task."""
    from harness.plan.suite import parse_suite
    from tests.helpers.slurm_cluster import SCONTROL_SHOWS_RUNNING

    text = SUITE.replace("[minilm]", f'["{tiny_bert}"]').replace("[rte, mrpc]", "[rte]")   # 2 runs to ablate
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    for i, cell in enumerate(parse_suite(text, "abl.yaml").cells()):
        claim = store.start(cell, cell.config(), "cmd", None)
        store.finish(claim, Status.COMPLETED, {"score": 70.0 + i, "metrics": {"accuracy": 70.0 + i}})
    store.engine.dispose()
    suite = tmp_path / "abl.yaml"
    suite.write_text(text)
    asked, fake_bin = tmp_path / "scontrol.args", tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/bash\n{SCONTROL_SHOWS_RUNNING}echo "$@" >> {asked}\n')
    (fake_bin / "scontrol").chmod(0o755)
    done = subprocess.run([sys.executable, "-c", STOPPED_IN_ABLATIONS, "run", str(suite), "--db", url,
                           "--output-dir", str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{fake_bin}:{os.environ['PATH']}",
                               "SLURM_JOB_ID": "77", "HARNESS_SLURM_REQUEUE": "1"})
    assert done.returncode == 3 and "no further ablation claimed" in done.stderr, done.stderr[-3000:]
    assert asked.exists() and asked.read_text().split() == ["requeue", "77"], done.stderr[-3000:]
    assert len(Store(url).analyses("abl")) == 1   # the one it ran; the other is nobody's claim


# run_ablations (as ABLATER's) whose first claim finds its run deleted by hand: DELETE FROM runs before the claim
# (since the worker read the suite's runs: the ablations before it take minutes), or right after it
DELETED_BY_HAND = """
import sys
import harness.analysis.ablate as ablate_module
from sqlalchemy import text
from harness.launch.runner import run_ablations
from harness.plan.suite import parse_suite
from harness.store.db import Store

ablate_module.ablate = lambda rec, ctx, trust_remote_code=False: {"num_layers": 1, "baseline": rec.score,
                                                                   "spans": [[0, 0, rec.score - 1.0]]}
url, text_, when = sys.argv[1], sys.argv[2], sys.argv[3]
store = Store(url)
real, deleted = Store.claim_analysis, []

def by_hand(run_id):
    other = Store(url)
    with other.engine.begin() as conn:
        assert conn.execute(text("DELETE FROM runs WHERE id = :id"), {"id": run_id}).rowcount == 1
    other.engine.dispose()
    deleted.append(run_id)

def claim_analysis(self, run_id, *args, **kwargs):
    if not deleted and when == "before":
        by_hand(run_id)
    claim = real(self, run_id, *args, **kwargs)
    if not deleted and when == "after":
        by_hand(run_id)
    return claim

Store.claim_analysis = claim_analysis
print("failed", run_ablations(parse_suite(text_, "abl.yaml"), store, None, lambda line: print(line, flush=True)))
print("deleted", deleted[0])
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_run_deleted_by_hand_before_its_ablation_is_one_failed_line(tmp_path, db_url, when):
    """A run deleted from the store by hand while a worker finished the suite: its claim read the run's suite with
    scalar_one() and ended the worker in NoResultFound's traceback, the ablations left unrun (deleted right after
    the claim, the failure's own line read rec.id of None: AttributeError's traceback). It is one failed line, as
    `harness ablate` says it (eb086fd); the other runs are ablated, and the worker ends 1."""
    url = db_url
    ids = completed_store(url)
    proc = subprocess.run([sys.executable, "-c", DELETED_BY_HAND, url, SUITE, when], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr[-3000:]
    deleted = int(proc.stdout.split()[-1])
    assert "failed 1" in proc.stdout, proc.stdout
    removed = (f"ablation of run {deleted} FAILED: run {deleted}: it was removed from the store before its ablation "
               f"was claimed: no ablation of it" if when == "before" else f"ablation of run {deleted} FAILED: ")
    assert removed in proc.stdout, proc.stdout
    assert sorted(a.run_id for a in Store(url).analyses("abl")) == sorted(set(ids) - {deleted})
