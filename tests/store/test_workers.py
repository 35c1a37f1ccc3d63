"""Exactly-once workers on one store (SQLite and a real PostgreSQL server): claims, leases, heartbeats, atomic
finish, stale and dead leases, concurrent writers, ingest and migrations."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import ROOT, read_stderr_until, run_cli, suite_yaml, write_suite
from harness.spec.status import Status
from harness.store.db import Store

CLAIM_LINE = re.compile(r"cell ([0-9a-f]{16}): .*\(attempt (\d+)")


def suite_text(model, methods="[full, {name: houlsby, size: 4, learning_rate: 1e-3}, bitfit]",
               budget="{epochs: 1}", tasks="[rte, stsb]", name="w"):
    return suite_yaml(model, name, methods, tasks, budget)


def start_worker(workdir: Path, suite: Path, db: str, data: Path, *extra, env=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--db", db, "--output-dir", str(workdir / "out"),
           "--data-dir", str(data), "--no-progress", *map(str, extra)]
    return subprocess.Popen(cmd, cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trainings(stderr_texts: list[str]) -> Counter:
    """How many times each cell started training, over every worker's log."""
    return Counter(m.group(1) for text in stderr_texts for m in CLAIM_LINE.finditer(text))


def test_concurrent_workers_train_every_cell_exactly_once(tmp_path, tiny_bert, small_glue, db_url):
    suite = write_suite(tmp_path / "w.yaml", suite_text(tiny_bert))
    workers = [start_worker(tmp_path, suite, db_url, small_glue) for _ in range(3)]
    logs = []
    for w in workers:
        out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
        logs.append(err)
    store = Store(db_url)
    rows = [r for r in store.records("w") if r.parent_id is None]
    assert len(rows) == 6 and {r.status for r in rows} == {Status.COMPLETED}
    counted = trainings(logs)
    assert counted == Counter({r.cell_key: 1 for r in rows}), counted      # each trained once, by one worker
    assert all(r.attempts == 1 for r in rows)
    assert len({r.worker_id for r in rows}) >= 2, "the workers shared the work"
    for r in rows:
        rec = json.loads((tmp_path / "out" / "w" / r.cell_key / "record.json").read_text())
        assert rec["status"] == "completed" and rec["score"] == r.score and rec["worker_id"] == r.worker_id
        assert r.host and r.pid and r.heartbeat_at >= r.claimed_at
    status = run_cli("status", suite, "--db", db_url, cwd=tmp_path)
    assert status.returncode == 0 and "6 cells: 6 completed" in status.stdout, status.stdout
    # a further worker finds nothing to do
    again = start_worker(tmp_path, suite, db_url, small_glue)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "6 already completed" in err and not trainings([err])


def _wait_for_claims(proc: subprocess.Popen, n: int, timeout: float = 120) -> str:
    """The worker's stderr up to its n-th claim."""
    return read_stderr_until(proc, done=lambda text: len(trainings([text])) >= n, timeout=timeout)


# ten epochs of the small RTE, a few seconds: a worker frozen or killed as it prints its claim (before its model
# is even loaded) is mid-cell, and the worker that takes the cell over trains it all
MID_CELL_BUDGET = "{max_steps: 60}"


def test_stalled_worker_loses_its_cell_after_the_lease_timeout(tmp_path, tiny_bert, small_glue, db_url):
    """A worker that stops heartbeating (frozen node: SIGSTOP) keeps its lease only until the timeout; then the
    next worker takes the cell over and completes it. When the frozen worker wakes up, its result is refused."""
    suite = write_suite(tmp_path / "w.yaml", suite_text(tiny_bert, methods="[full]", tasks="[rte]",
                                                        budget=MID_CELL_BUDGET))
    timing = ["--heartbeat-s", "0.5", "--lease-timeout-s", "3"]
    a = start_worker(tmp_path, suite, db_url, small_glue, *timing)
    lines_a = _wait_for_claims(a, 1)
    a.send_signal(signal.SIGSTOP)
    try:
        t0 = time.time()
        b = start_worker(tmp_path, suite, db_url, small_glue, *timing)
        _, err_b = b.communicate(timeout=600)
        assert b.returncode == 0, err_b[-3000:]
        assert "taking over a stale lease" in err_b and "(attempt 2" in err_b
        assert time.time() - t0 >= 3
    finally:
        a.send_signal(signal.SIGCONT)
    _, err_a = a.communicate(timeout=600)
    (row,) = Store(db_url).records("w")
    assert row.status == Status.COMPLETED and row.attempts == 2
    assert "lease lost" in "".join(lines_a) + err_a
    assert str(b.pid) == str(row.pid)                       # the result is the one that kept its lease


def test_killed_worker_cell_is_taken_over(tmp_path, tiny_bert, small_glue, db_url):
    """SIGKILL mid-cell: the process is gone, so a worker on the same host takes the cell over at once (on
    another host it would wait for the lease timeout, as above) and completes it; one row, two attempts."""
    suite = write_suite(tmp_path / "w.yaml", suite_text(tiny_bert, methods="[full]", tasks="[rte]",
                                                        budget=MID_CELL_BUDGET))
    a = start_worker(tmp_path, suite, db_url, small_glue, "--lease-timeout-s", "3600")
    _wait_for_claims(a, 1)
    a.send_signal(signal.SIGKILL)
    a.wait()
    (row,) = Store(db_url).records("w")
    assert row.status == Status.RUNNING
    b = start_worker(tmp_path, suite, db_url, small_glue, "--lease-timeout-s", "3600")
    _, err = b.communicate(timeout=600)
    assert b.returncode == 0 and "taking over a stale lease" in err, err[-2000:]
    (row,) = Store(db_url).records("w")
    assert row.status == Status.COMPLETED and row.attempts == 2 and row.pid == b.pid


CHILD_KILL = """
import os, pickle, sys
from harness.store.db import Store
cells = pickle.loads(bytes.fromhex(sys.argv[2]))
store = Store(sys.argv[1])
store.enqueue(cells)
claim = store.start(cells[0], cells[0].config(), "", "")
def die(record, children):
    open(sys.argv[3], "w").write(record["status"] + " " + str(len(children)))   # the files are in place ...
    os._exit(9)                                                                   # ... and the process dies
store.finish(claim, "completed", {"score": 1.0}, [("stage0", {"task": "mrpc", "score": 2.0}),
                                                  ("stage1", {"task": "rte", "score": 3.0})], before_commit=die)
"""


def test_kill_between_files_and_commit_leaves_a_claimable_cell(tmp_path, db_url):
    from harness.plan.suite import parse_suite

    cells = parse_suite("name: k\nmodels: [minilm]\ntasks: [{sequence: [mrpc, rte, stsb]}]\nmethods: [full]\n",
                        str(tmp_path / "k.yaml")).cells()
    marker = tmp_path / "written"
    proc = subprocess.run([sys.executable, "-c", CHILD_KILL, db_url, pickle.dumps(cells).hex(), str(marker)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert marker.read_text() == "completed 2"                  # it died inside finish, files written
    store = Store(db_url)
    rows = store.records("k")
    assert len(rows) == 1 and rows[0].status == Status.RUNNING and rows[0].score is None   # nothing half-recorded
    from harness.store.lease import current_worker

    claim = store.claim_next("k", [cells[0].key], current_worker(), lease_timeout_s=3600)
    assert claim is not None and claim.previous_status == "running" and claim.attempt == 2   # its process is gone
    store.finish(claim, Status.COMPLETED, {"score": 1.0}, [("stage0", {"task": "mrpc", "score": 2.0})])
    assert [c.score for c in store.children(claim.id)] == [2.0]


WRITER = """
import os, pickle, sys, time
from harness.store.db import Store
from harness.store.queue import LeaseLost
url, cells, go = sys.argv[1], pickle.loads(bytes.fromhex(sys.argv[2])), float(sys.argv[3])
store = Store(url)
while time.time() < go:
    time.sleep(0.005)
store.enqueue(cells, "writer", "out")                 # every writer inserts the same new cells at once
offset = int(sys.argv[4])
claims = finished = lost = 0
for i in range(len(cells)):
    cell = cells[(i + offset) % len(cells)]
    claim = store.start(cell, cell.config(), "writer", "out")
    claims += 1
    try:
        store.finish(claim, "completed", {"score": float(offset)})
        finished += 1
    except LeaseLost:
        lost += 1
print(claims, finished, lost)
"""


def test_32_concurrent_writers_lose_nothing(tmp_path, db_url):
    from harness.plan.suite import parse_suite

    cells = parse_suite("name: c\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\nseeds: "
                        + str(list(range(50))) + "\n", str(tmp_path / "c.yaml")).cells()
    Store(db_url)   # schema first: the writers race on rows, not on the migration (tested below)
    blob, go = pickle.dumps(cells).hex(), time.time() + 8
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db_url, blob, str(go), str(i)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(32)]
    totals = Counter()
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        claims, finished, lost = map(int, out.split())
        totals.update(claims=claims, finished=finished, lost=lost)
    rows = Store(db_url).records("c")
    assert len(rows) == 50                                       # each new cell inserted once, nobody crashed
    assert totals["claims"] == 32 * 50 == sum(r.attempts for r in rows)   # no attempt increment lost
    assert totals["finished"] + totals["lost"] == 32 * 50
    assert all(r.status == Status.COMPLETED for r in rows)


def test_workers_racing_on_a_new_store_migrate_it_once(tmp_path, db_url):
    code = "import sys; from harness.store.db import Store; Store(sys.argv[1]); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
    import sqlalchemy as sa

    with Store(db_url).engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalars().all() == ["0006"]
        assert len(conn.execute(sa.text("select store_id from store_info")).all()) == 1   # one identity


def test_ingest_loads_records_idempotently_and_never_overwrites_silently(tmp_path, tiny_bert, small_glue, db_url):
    """A node that could not reach the store ran into its own SQLite file; its record.json files are loaded
    into the shared store, multi-task member rows included."""
    suite = write_suite(tmp_path / "w.yaml", suite_text(tiny_bert, methods="[full]",
                                                        tasks="[rte, {multitask: [rte, stsb]}]"))
    node_db = f"sqlite:///{tmp_path / 'node.db'}"
    proc = run_cli("run", suite, "--db", node_db, "--output-dir", tmp_path / "out", "--data-dir", small_glue,
                   "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = run_cli("ingest", tmp_path / "out", "--db", db_url, cwd=tmp_path)
    assert first.returncode == 0 and "2 added" in first.stdout, first.stdout + first.stderr
    node, shared = Store(node_db), Store(db_url)
    for key, rec in node.by_key("w").items():
        got = shared.by_key("w")[key]
        assert (got.status, got.score, got.metrics, got.worker_id) == (rec.status, rec.score, rec.metrics,
                                                                       rec.worker_id)
        assert sorted((c.cell_key, c.score) for c in shared.children(got.id)) == \
            sorted((c.cell_key, c.score) for c in node.children(rec.id))
    assert any(shared.children(r.id) for r in shared.records("w") if r.parent_id is None)
    again = run_cli("ingest", tmp_path / "out", "--db", db_url, cwd=tmp_path)
    assert again.returncode == 0 and "2 same" in again.stdout
    # a different completed result for a stored cell: refused, unless --replace
    path = next((tmp_path / "out" / "w").glob("*/record.json"))
    rec = json.loads(path.read_text())
    rec["score"] = rec["score"] + 1.0
    path.write_text(json.dumps(rec))
    clash = run_cli("ingest", path, "--db", db_url, cwd=tmp_path)
    assert clash.returncode == 1 and "conflict" in clash.stderr
    assert Store(db_url).by_key("w")[rec["cell_key"]].score == rec["score"] - 1.0
    forced = run_cli("ingest", path, "--db", db_url, "--replace", cwd=tmp_path)
    assert forced.returncode == 0 and "1 updated" in forced.stdout
    assert Store(db_url).by_key("w")[rec["cell_key"]].score == rec["score"]
    status = run_cli("status", suite, "--db", db_url, cwd=tmp_path)
    assert "2 cells: 2 completed" in status.stdout, status.stdout
    if db_url.startswith("postgresql"):   # the board and exports read a server store, read-only
        out = run_cli("export", "--db", db_url, "--table", "runs", "--format", "csv", cwd=tmp_path)
        assert out.returncode == 0 and rec["cell_key"] in out.stdout
        ro = Store(db_url, read_only=True)
        assert len(ro.records("w")) == len(shared.records("w"))
        with pytest.raises(Exception, match="read-only"):
            ro.add_analysis(shared.records("w")[0].id, "x", {})


def test_long_labels_and_big_numbers_fit_on_postgresql(tmp_path, pg_server):
    """PostgreSQL enforces lengths and integer widths that SQLite ignores."""
    from dataclasses import replace

    from harness.plan.suite import parse_suite
    from harness.store.lease import current_worker

    url = pg_server.create_database("longlabels")
    (cell,) = parse_suite("name: l\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", str(tmp_path / "l.yaml")).cells()
    cell = replace(cell, model="org/" + "m" * 600, method_params={f"option_{i}": "v" * 20 for i in range(30)},
                   seed=2**32 - 1)
    store = Store(url)
    store.enqueue([cell])
    claim = store.claim_next("l", [cell.key], current_worker())
    rec = store.finish(claim, Status.COMPLETED, {"score": 1.0, "total_params": 7_000_000_000, "trainable_params": 3_500_000_000})
    assert len(rec.method_label) > 300 and rec.total_params == 7_000_000_000 and rec.seed == 2**32 - 1
