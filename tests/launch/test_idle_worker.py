"""A worker with nothing to do says so from the store alone (harness.launch.summary), before it imports the
training libraries; any cell it could train, wait for or retry sends it on to the runner."""

from __future__ import annotations

import argparse
import re

import pytest

from harness.cli.run import _nothing_to_do
from harness.launch.summary import nothing_to_do
from harness.launch.workers import RANK_VARIABLES, launcher_ranks
from harness.plan.suite import parse_suite
from harness.spec.status import Status
from harness.store.db import Store
from harness.store.lease import current_worker

SUITE = "name: idle\nmodels: [minilm]\ntasks: [rte]\nmethods: [houlsby]\nseeds: [{seeds}]\n{extra}"


def suite(tmp_path, seeds="1, 2", extra=""):
    path = tmp_path / "idle.yaml"
    text = SUITE.format(seeds=seeds, extra=extra)
    path.write_text(text)
    return parse_suite(text, str(path))


def claim(store, s):
    return store.claim_next(s.name, [c.key for c in s.cells()], current_worker(), lease_timeout_s=3600)


def test_idle_only_once_every_cell_is_finished(tmp_path, db_url, monkeypatch):
    s, out = suite(tmp_path), str(tmp_path / "out")
    store = Store(db_url)
    assert nothing_to_do(s, store, out, retry_failed=False) is None       # no rows yet: the runner enqueues them
    store.enqueue(s.cells())
    assert nothing_to_do(s, store, out, retry_failed=False) is None       # pending
    first = claim(store, s)
    assert nothing_to_do(s, store, out, retry_failed=False) is None       # one running: its lease may go stale
    store.finish(first, Status.COMPLETED, {"score": 61.0})
    second = claim(store, s)
    store.finish(second, Status.FAILED, {"error": "boom"})

    lines = nothing_to_do(s, store, out, retry_failed=False)
    assert lines is not None and len(lines) == 2, lines                   # no SQLite on a network share: no warning
    assert lines[0].startswith("suite idle: 2 cells, 1 already completed (skipped), 1 failed before (skipped; ")
    assert "0 running elsewhere, 0 to run; worker " in lines[0]
    assert lines[1] == "suite idle: this worker ran 0 cell(s): 0 completed, 0 failed; no claimable cell left"
    assert nothing_to_do(s, store, out, retry_failed=True) is None        # the failure is to be retried

    grown = suite(tmp_path, seeds="1, 2, 3")                              # a cell without a row: to be trained
    assert nothing_to_do(grown, store, out, retry_failed=False) is None
    ablating = suite(tmp_path, extra="ablate:\n  - {method: houlsby}\n")   # analyses after the cells: the runner's
    assert ablating.cells() == s.cells() and nothing_to_do(ablating, store, out, retry_failed=False) is None
    assert {r.status for r in store.records("idle")} == {Status.COMPLETED, Status.FAILED}   # nothing changed

    # `harness run`'s check: only where this process is a launcher's only rank (the keys count the ranks)
    args = argparse.Namespace(db=db_url, output_dir=out, retry_failed=False)
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert _masked(_nothing_to_do(s, args)) == _masked(lines)
    monkeypatch.setenv("PMI_SIZE", "2")
    assert _nothing_to_do(s, args) is None


def test_a_worker_start_reads_five_columns_of_its_suites_rows(tmp_path, db_url):
    """Every worker start counts and settles the suite's rows (summary.queue_summary, nothing_to_do): it read
    whole rows, every JSON column of every cell (config, env, metrics, history), 1.19 s of the 1.34 s start-up
    read on a 10,000-cell SQLite store (bench/bench_settle.py; 0.036 s for four columns), and a PostgreSQL server
    sent them to every task of a Slurm array. It reads the cell key, status, attempt, worker and a failure's error
    (settle keeps only a broken group's checkpoint)."""
    from sqlalchemy import event

    from harness.launch.summary import queue_summary

    s, out = suite(tmp_path), str(tmp_path / "out")
    store = Store(db_url)
    store.enqueue(s.cells())
    store.finish(claim(store, s), Status.COMPLETED, {"score": 61.0, "history": [{"step": 1}], "env": {"a": 1}})
    store.finish(claim(store, s), Status.FAILED, {"error": "boom"})
    statements = []
    event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, sql, *args: statements.append(sql))
    n = queue_summary(store, s, {c.key for c in s.cells()}, out)
    assert (n[Status.COMPLETED], n[Status.FAILED], n[Status.PENDING]) == (1, 1, 0)
    assert nothing_to_do(s, store, out, retry_failed=False) is not None
    reads = [sql for sql in statements if "FROM runs" in sql]
    assert len(reads) == 2, statements
    assert not [sql for sql in reads if re.search(r"runs\.(history|env|config|metrics)\b", sql)], reads


def _masked(lines: list[str]) -> list[str]:
    return [re.sub(r"worker \S+", "worker W", line) for line in lines]   # a worker id is new in every process


@pytest.mark.parametrize("launcher", ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"])
def test_a_rank_of_a_launch_is_counted_as_accelerate_counts_it(monkeypatch, launcher):
    """torchrun / accelerate launch, MPICH or Intel MPI, Open MPI, MVAPICH: accelerate's own count of the ranks."""
    from accelerate.utils.environment import get_cpu_distributed_information

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert launcher_ranks() == get_cpu_distributed_information().world_size == 1
    monkeypatch.setenv(launcher, "3")
    assert launcher_ranks() == get_cpu_distributed_information().world_size == 3
