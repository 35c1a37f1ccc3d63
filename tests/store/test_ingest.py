"""`harness ingest` against a live queue and against bad record.json files: a row a live worker holds is never
touched (SQLite and a real PostgreSQL server), ingest reads under a lock, and a record that is not what the
runner writes is refused with one line naming the file and the field, nothing written."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import event, update

from tests.helpers import call_cli
from harness import atomic
from harness.spec.layout import RECORD
from harness.spec.status import Status
from harness.store.db import Store
from harness.store.lease import Worker, current_worker
from harness.store.schema import RunRecord

SUITE = "name: ing\nmodels: [minilm]\ntasks: [rte, {multitask: [rte, stsb]}]\nmethods: [full]\n"


@pytest.fixture
def cells(tmp_path):
    from harness.plan.suite import parse_suite

    single, multi = parse_suite(SUITE, str(tmp_path / "ing.yaml")).cells()
    return single, multi


def finish_with_record(store, cell, out, status=Status.COMPLETED, score=70.0, worker=None, more=None):
    """What the runner does: claim, then finish with record.json written inside the transaction. `more`: further
    columns of the cell's row and of each stage / member row."""
    out.mkdir(parents=True, exist_ok=True)
    claim = store.start(cell, cell.config(), "cmd", str(out), worker=worker)
    children = ([(t, {"task": t, "score": score + i, "stage": i, "regime": "multitask_member", **(more or {})})
                 for i, t in enumerate(cell.tasks)] if cell.schedule else [])   # as the runner's

    def write(record, kids):
        atomic.write_json(str(out / RECORD), {**record, "children": kids})

    fields = {"score": score, "metrics": {"accuracy": score}} if status == Status.COMPLETED else {"error": "boom"}
    store.finish(claim, status, {**fields, **(more or {})}, children, before_commit=write)
    return json.loads((out / RECORD).read_text())


def ingest_edited(tmp_path, cell, edit) -> tuple[Store, str]:
    """A node's record of `cell`, edited (`edit(record) -> record`), ingested into a new shared store, which takes
    it (exit 0, "1 added"). Returns (the node's store, the shared store's URL)."""
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    path = tmp_path / "in" / RECORD
    path.parent.mkdir()
    path.write_text(json.dumps(edit(finish_with_record(node, cell, tmp_path / "out" / cell.key))))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    proc = call_cli("ingest", path, "--db", url)
    assert proc.returncode == 0 and "1 added" in proc.stdout, proc.stdout + proc.stderr
    return node, url


def live_worker(name: str) -> Worker:
    import dataclasses

    return dataclasses.replace(current_worker(), worker_id=f"{name}@elsewhere:1", host="elsewhere", pid=1)


def make_stale(url, run_id):
    with Store(url).engine.begin() as conn:
        conn.execute(update(RunRecord).where(RunRecord.id == run_id).values(
            heartbeat_at=dt.datetime.utcnow() - dt.timedelta(hours=2)))


# -- a live lease is never touched ----------------------------------------------------------------------------


def test_ingest_leaves_a_live_workers_row_alone_until_its_lease_is_stale(tmp_path, cells, db_url):
    """The README's disconnected-node workflow: a node wrote a failed record; meanwhile a live worker retries the
    cell on the shared store. Ingest skips it (and says so) while the lease is live, takes it once stale."""
    single, _ = cells
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    for _ in range(2):   # the node's second attempt: as far as the shared row below gets, so the lease decides
        finish_with_record(node, single, tmp_path / "out" / single.key, status=Status.FAILED)
    shared = Store(db_url)
    claim = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w1"))
    before = shared.get(claim.id).as_dict()

    proc = call_cli("ingest", tmp_path / "out", "--db", db_url)
    assert proc.returncode == 1, proc.stderr
    assert "skipped" in proc.stderr and single.key in proc.stderr and "1 leased" in proc.stdout
    assert shared.get(claim.id).as_dict() == before                       # not a column changed
    shared.finish(claim, Status.COMPLETED, {"score": 80.0})               # the worker's retry is kept
    assert shared.get(claim.id).score == 80.0

    # a second worker, then its lease goes stale: it may be alive but cut off from the store, still training,
    # so the node's record leaves the row alone; the worker's finish is kept
    claim = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w2"))
    make_stale(db_url, claim.id)
    before = shared.get(claim.id).as_dict()
    proc = call_cli("ingest", tmp_path / "out", "--db", db_url)
    assert proc.returncode == 1 and "1 leased" in proc.stdout, proc.stdout + proc.stderr
    assert "skipped" in proc.stderr and "stale" in proc.stderr
    assert shared.get(claim.id).as_dict() == before
    assert shared.heartbeat(claim)
    shared.finish(claim, Status.COMPLETED, {"score": 81.0})
    assert shared.get(claim.id).score == 81.0


def keep_for_ingest(store, claim, out, score):
    """What the runner does when the store stays unreachable through finish's retries: the record built from the
    row as leased, marked ingest_only with its claim, in the cell folder (harness.launch.attempt)."""
    from harness.launch import attempt

    leased = store.get(claim.id).as_dict()
    out.mkdir(parents=True, exist_ok=True)
    return attempt.keep_for_ingest(leased, claim, Status.COMPLETED, {"score": score, "metrics": {"accuracy": score}},
                                   [], attempt.folder(str(out), claim), str(out))


def test_a_result_kept_for_ingest_carries_no_checkpoint_step_into_the_row(tmp_path, cells, db_url):
    """A cell given back at step 11 of 120, resumed, finished while the store was down: the record was built from
    the row as leased, checkpoint step and all, and ingest wrote that step into the finished row (a live finish
    empties it), so a retry of the cell was priced as 11/120 done before it trained a step."""
    single, _ = cells
    shared = Store(db_url)
    first = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w1"))
    assert shared.release(first, progress=(11, 120))
    claim = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w2"))
    assert shared.get(claim.id).checkpoint_step == 11   # the claim keeps it: the resume's starting point
    kept = keep_for_ingest(shared, claim, tmp_path / "out" / single.key, 75.0)
    assert json.load(open(kept))["checkpoint_step"] is None
    make_stale(db_url, claim.id)
    proc = call_cli("ingest", tmp_path / "out", "--db", db_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = shared.get(claim.id)
    assert (row.status, row.score, row.checkpoint_step, row.checkpoint_total_steps) == ("completed", 75.0, None, None)


def test_a_stale_running_row_is_taken_only_by_its_own_attempts_record(tmp_path, cells, db_url):
    """A worker cut off from the store keeps its result as an ingest_only record under its claim. Ingest gives
    that record the row once the lease is stale (not while it is live); the record an earlier claim of the cell
    kept is older than the running attempt and leaves it alone."""
    single, _ = cells
    shared = Store(db_url)
    first = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w1"))
    keep_for_ingest(shared, first, tmp_path / "w1" / single.key, 60.0)      # w1 cut off; its lease went stale,
    make_stale(db_url, first.id)
    claim = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w2"))   # w2 took it over
    own = keep_for_ingest(shared, claim, tmp_path / "w2" / single.key, 75.0)

    proc = call_cli("ingest", tmp_path / "w2", "--db", db_url)               # w2's lease is live: left alone
    assert proc.returncode == 1 and "1 leased" in proc.stdout, proc.stdout + proc.stderr
    make_stale(db_url, claim.id)
    proc = call_cli("ingest", tmp_path / "w1", "--db", db_url)               # not the running attempt's own
    assert proc.returncode == 0 and "1 older" in proc.stdout, proc.stdout + proc.stderr
    assert shared.get(claim.id).status == Status.RUNNING
    proc = call_cli("ingest", own, "--db", db_url)
    assert proc.returncode == 0 and "1 updated" in proc.stdout, proc.stdout + proc.stderr
    row = shared.get(claim.id)
    assert (row.status, row.score, row.attempts, row.worker_id) == (Status.COMPLETED, 75.0, 2, claim.worker_id)


def test_a_record_never_takes_a_row_back_to_an_earlier_attempt(tmp_path, cells, db_url):
    """Attempt 1 fails (its record in the cell folder); attempt 2 (--retry-failed) is preempted: the row is
    pending at attempt 2. Ingesting the folder leaves it so, and says the record is older; a running row of a
    later attempt whose lease is stale is not taken by attempt 1's record either."""
    single, _ = cells
    shared = Store(db_url)
    finish_with_record(shared, single, tmp_path / "out" / single.key, status=Status.FAILED,
                       worker=live_worker("w1"))
    claim = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w2"))
    shared.release(claim)                                                    # preempted: back to the queue
    before = shared.get(claim.id).as_dict()
    assert (before["status"], before["attempts"], before["error"]) == (Status.PENDING, 2, None)

    proc = call_cli("ingest", tmp_path / "out", "--db", db_url)
    assert proc.returncode == 0 and "1 older" in proc.stdout, proc.stdout + proc.stderr
    assert "older" in proc.stderr and single.key in proc.stderr
    assert shared.get(claim.id).as_dict() == before

    claim = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w3"))
    make_stale(db_url, claim.id)
    proc = call_cli("ingest", tmp_path / "out", "--db", db_url)
    assert "1 older" in proc.stdout, proc.stdout + proc.stderr
    assert shared.heartbeat(claim)                                           # w3 still holds its attempt


def test_a_result_of_an_earlier_attempt_replaces_a_later_failure(tmp_path, cells, db_url):
    """Worker A, cut off from the store, keeps its completed result (attempt 1) in the cell folder; B takes the
    stale lease over (attempt 2) and fails. The cell folder ranks A's result above the failure; ingest called
    it "older" and left the failure in the tables. A result beats no result; the attempt counter stays at 2."""
    from harness.launch.attempt import keep_for_ingest as keep

    single, _ = cells
    shared = Store(db_url)
    cell_dir = tmp_path / "out" / single.key
    claim_a = shared.start(single, single.config(), "cmd", "out", worker=live_worker("wa"))
    leased = shared.get(claim_a.id).as_dict()
    make_stale(db_url, claim_a.id)
    claim_b = shared.start(single, single.config(), "cmd", "out", worker=live_worker("wb"))
    assert claim_b.attempt == 2
    shared.finish(claim_b, Status.FAILED, {"error": "CUDA out of memory"})
    attempt_dir = cell_dir / ".attempt-1-wa"
    attempt_dir.mkdir(parents=True)
    keep(leased, claim_a, Status.COMPLETED, {"score": 81.0, "metrics": {"accuracy": 81.0}}, [], str(attempt_dir),
         str(cell_dir))
    proc = call_cli("ingest", tmp_path / "out", "--db", db_url)
    assert proc.returncode == 0 and "1 updated" in proc.stdout, proc.stdout + proc.stderr
    row = shared.get(claim_b.id)
    assert (row.status, row.score, row.attempts) == (Status.COMPLETED, 81.0, 2)


def test_ingest_reads_the_row_under_a_lock(tmp_path, cells, db_url):
    """A worker whose lease went stale is committing its finish when ingest reads the row: ingest waits for it
    and then sees the completed result (kept: a failed record never replaces one) instead of overwriting it
    with a stale read."""
    single, _ = cells
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    record = finish_with_record(node, single, tmp_path / "out" / single.key, status=Status.FAILED)
    shared = Store(db_url)
    claim = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w1"))
    make_stale(db_url, claim.id)
    inside, go, outcome = threading.Event(), threading.Event(), []

    def in_finish(*_):
        inside.set()
        assert go.wait(30)

    finisher = threading.Thread(target=shared.finish, args=(claim, Status.COMPLETED, {"score": 90.0}),
                                kwargs={"before_commit": in_finish})
    finisher.start()
    assert inside.wait(30)
    reader, reading = Store(db_url), threading.Event()

    @event.listens_for(reader.engine, "before_cursor_execute")
    def locking(conn, cursor, statement, *args):   # a read that waits for the finisher's commit from here on
        if statement.startswith("BEGIN IMMEDIATE") or "FOR UPDATE" in statement:
            reading.set()

    @event.listens_for(reader.engine, "after_cursor_execute")
    def read(conn, cursor, statement, *args):      # a read that did not wait: it has the row as it was
        if statement.startswith("SELECT") and "FROM runs" in statement:
            reading.set()

    ingester = threading.Thread(target=lambda: outcome.append(reader.ingest(record)))
    ingester.start()
    assert reading.wait(60)  # ingest is now reading (or waiting for) the row
    go.set()
    finisher.join(60)
    ingester.join(60)
    assert outcome == ["kept"]
    rec = shared.get(claim.id)
    assert (rec.status, rec.score) == (Status.COMPLETED, 90.0)


def test_a_row_queued_between_ingest_s_read_and_its_insert_takes_the_record(tmp_path, cells, pg_server):
    """PostgreSQL locks only rows that are there: a worker queueing the suite (or another ingest of the record)
    inserted the cell's row after ingest read none, and ingest failed with a UniqueViolation traceback (two
    ingests of one record at once: 14 of 15 tries). It reads the row again: the queued row takes the record."""
    from sqlalchemy import event

    single, _ = cells
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    record = finish_with_record(node, single, tmp_path / "out" / single.key)
    url = pg_server.create_database("queued_meanwhile")
    store, worker = Store(url), Store(url)
    queued = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def queue_first(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO runs") and not queued:
            queued.append(worker.enqueue([single]))   # committed on a connection of its own

    assert store.ingest(record) == "updated" and len(queued) == 1
    (row,) = store.records()
    assert (row.cell_key, row.status, row.score) == (single.key, Status.COMPLETED, record["score"])


# -- bad records ----------------------------------------------------------------------------------------------


def _with_config(record: dict, config: dict) -> dict:
    """The record with another configuration, under that configuration's key."""
    from harness.spec.cell import config_key

    return {**record, "config": config, "cell_key": config_key(config), "children": [
        {**c, "cell_key": config_key(config) + c["cell_key"][len(record["cell_key"]):]} for c in record["children"]]}


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


BAD = {   # name: (change to the record's JSON text or dict, the field named)
    "string seed": (lambda r: {**r, "seed": str(r["seed"])}, "seed"),
    "nan score": (lambda r: {**r, "score": float("nan")}, "score"),
    # a NaN in a result's JSON is stored as null (test_a_record_holding_nan_is_stored_as_the_live_finish_stores_it);
    # in the configuration or a column it fixes it is no cell's
    # a suite's texts hold no NUL: stored as the store keeps it (values.store_text), the config would no longer
    # hash to its key
    "nul in the config": (lambda r: _with_config(r, {**r["config"], "model": r["config"]["model"] + "\x00"}),
                          "config.model"),
    "infinite rate in the config": (lambda r: {**r, "config": {**r["config"], "hparams": {
        **r["config"]["hparams"], "learning_rate": float("inf")}}}, "config.hparams.learning_rate"),
    "nan in hparams": (lambda r: {**r, "hparams": {**r["hparams"], "weight_decay": float("nan")}},
                       "hparams.weight_decay"),
    "nan in a child's budget": (lambda r: {**r, "children": [{**r["children"][0], "budget": {
        **r["children"][0]["budget"], "epochs": float("nan")}}]}, "children.0.budget.epochs"),
    "key not the config's": (lambda r: {**r, "config": {**r["config"], "seed": 99}}, "cell_key"),
    "made-up key": (lambda r: {**r, "cell_key": "0123456789abcdef"}, "cell_key"),
    "suite escapes": (lambda r: {**r, "suite": "../../etc"}, "suite"),
    "completed without score": (lambda r: {**r, "score": None}, "score"),
    "running record": (lambda r: {**r, "status": "running"}, "status"),
    "json list": (lambda r: [r], None),
    "deeply nested": (lambda r: json.dumps(r)[:-1] + ', "extra": ' + _nested(100_000) + "}", None),
    "children not a list": (lambda r: {**r, "children": "stage0"}, "children"),
    "child without identity": (lambda r: {**r, "children": [{"score": 1.0}]}, "children.0.suite"),
    "child of another cell": (lambda r: {**r, "children": [{**r["children"][0], "cell_key": "ffff.rte"}]},
                              "children.0.cell_key"),
    "child with string score": (lambda r: {**r, "children": [{**r["children"][0], "score": "70"}]},
                                "children.0.score"),
    "unknown field": (lambda r: {**r, "scroe": 1.0}, "scroe"),
    # counts, sizes and times are never below zero: attempts -3 was stored (as 0), steps -5 as it was
    "negative attempts": (lambda r: {**r, "attempts": -3}, "attempts"),
    "negative steps": (lambda r: {**r, "steps": -5}, "steps"),
    "negative train time": (lambda r: {**r, "train_time_s": -0.5}, "train_time_s"),
    "a child's negative parameter count": (lambda r: {**r, "children": [{**r["children"][0], "trainable_params": -1},
                                                                        *r["children"][1:]]},
                                           "children.0.trainable_params"),
    # columns the key does not cover but the config fixes: they decide where the run counts in the tables
    "model not the config's": (lambda r: {**r, "model": "roberta-base"}, "model"),
    "task not the config's": (lambda r: {**r, "task": "mrpc"}, "task"),
    "task version not the config's": (lambda r: {**r, "task_version": 99}, "task_version"),
    "seed not the config's": (lambda r: {**r, "seed": 7}, "seed"),
    "learning rate not the config's": (lambda r: {**r, "learning_rate": 1.0}, "learning_rate"),
    "method label not the config's": (lambda r: {**r, "method_label": "lora(rank=8)"}, "method_label"),
    "hparams not the config's": (lambda r: {**r, "hparams": {**r["hparams"], "batch_size": 64}}, "hparams"),
    "regime not the config's": (lambda r: {**r, "regime": "sequential"}, "regime"),
    "setting key not the config's": (lambda r: {**r, "setting_key": "0123456789abcdef"}, "setting_key"),
    "child regime not the config's": (lambda r: {**r, "children": [{**r["children"][0],
                                                                      "regime": "sequential_stage"}]},
                                      "children.0.regime"),
    "child task not its key's": (lambda r: {**r, "children": [{**r["children"][0], "task": "mrpc"}]},
                                 "children.0.task"),
    "child task version": (lambda r: {**r, "children": [{**r["children"][0], "task_version": 99}]},
                           "children.0.task_version"),
    "child seed": (lambda r: {**r, "children": [{**r["children"][0], "seed": 7}]}, "children.0.seed"),
    "child of no member": (lambda r: {**r, "children": [{**r["children"][0],
                                                          "cell_key": r["cell_key"] + ".mrpc"}]},
                           "children.0.cell_key"),
    # the rows a completed cell has, each once (the runner's): a member twice failed the insert with a traceback
    # after nothing was checked; one left out, or a failed cell's, was stored and read by the tables as a result
    "a member twice": (lambda r: {**r, "children": [r["children"][0], r["children"][0]]}, "children.1.cell_key"),
    "a member left out": (lambda r: {**r, "children": r["children"][1:]}, "children"),
    "no member rows": (lambda r: {**r, "children": []}, "children"),
    "a failed member of a completed cell": (lambda r: {**r, "children": [
        {**r["children"][0], "status": "failed", "score": None}, *r["children"][1:]]}, "children.0.status"),
    "member rows of a failed cell": (lambda r: {**r, "status": "failed", "score": None}, "children.0"),
}


@pytest.mark.parametrize("store", ["older revision", "empty file", "another program's database"])
@pytest.mark.parametrize("record", ["valid", "refused"])
def test_ingest_writes_nothing_into_a_store_it_does_not_write_a_record_to(tmp_path, cells, store, record):
    """The store was opened for writing before any record was read: records that were all refused still migrated
    an older store (0004 -> 0005); into an empty file or another program's SQLite database (no runs table) ingest
    wrote the harness's tables and switched the file to WAL. Such a database is refused in one line, as compare
    refuses it; an older store is migrated only to take a record."""
    from tests.helpers import assert_refused, at_rest, fixture_store

    single, _ = cells
    node = Store(f"sqlite:///{tmp_path / 'node' / 'node.db'}")
    good = finish_with_record(node, single, tmp_path / "node" / "out")
    node.engine.dispose()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / RECORD).write_text(json.dumps(good if record == "valid" else {**good, "seed": "x"}))
    db = tmp_path / "db" / "h.db"
    db.parent.mkdir()
    if store == "older revision":
        fixture_store.build(db)
        fixture_store.downgrade_to_0004(db)
    else:
        fixture_store.not_a_store(db, store)
    before = at_rest(tmp_path / "db")
    proc = call_cli("ingest", tmp_path / "in", "--db", f"sqlite:///{db}")
    if store != "older revision":
        assert_refused(proc, f"--db: sqlite:///{db} is not a harness store (it has no runs table)")
    elif record == "refused":
        assert proc.returncode == 2 and "1 refused" in proc.stdout, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 0 and "1 added" in proc.stdout, proc.stdout + proc.stderr
        return   # migrated to take it
    assert at_rest(tmp_path / "db") == before, "nothing written"


@pytest.mark.parametrize("query, expect", [("?mode=ro", "mode"), ("?uri=true&mode=ro", "uri=true")])
def test_a_read_only_sqlite_url_is_refused_not_written(tmp_path, monkeypatch, cells, query, expect):
    """SQLAlchemy hands `?mode=ro` to SQLite only with `uri=true` (else it warns and drops it): ingest of a valid
    record into `sqlite:///h.db?mode=ro` added it (exit 0). With uri=true the harness read the path as a plain
    file's and made a store in a folder named `file:...`. Both are refused in one line, nothing written."""
    from tests.helpers import assert_refused, listing

    monkeypatch.chdir(tmp_path)   # where a path read as relative would be made
    single, _ = cells
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / RECORD).write_text(json.dumps(finish_with_record(node, single, tmp_path / "out")))
    db = tmp_path / "db" / "h.db"
    Store(f"sqlite:///{db}").engine.dispose()
    before = listing(tmp_path)
    path = f"file:{db}" if "uri" in query else str(db)
    assert_refused(call_cli("ingest", tmp_path / "in", "--db", f"sqlite:///{path}{query}"), expect, "--db")
    assert listing(tmp_path) == before, "nothing written"


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_record_is_refused_with_one_line_naming_file_and_field(tmp_path, cells, name):
    _, multi = cells
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    good = finish_with_record(node, multi, tmp_path / "out" / multi.key)
    change, field = BAD[name]
    bad = change(good)
    path = tmp_path / "bad" / RECORD
    path.parent.mkdir()
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    Store(url)

    proc = call_cli("ingest", path, "--db", url)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: refused: "), proc.stderr[-2000:]
    if field:
        assert f"field {field}:" in lines[0], lines[0]
    assert Store(url).records() == []                       # nothing written

    ok = call_cli("ingest", tmp_path / "out", "--db", url)    # the runner's own record goes in
    assert ok.returncode == 0 and "1 added" in ok.stdout, ok.stdout + ok.stderr
    assert len(Store(url).records()) == 1 + len(multi.tasks)


def test_a_record_holding_nan_is_stored_as_the_live_finish_stores_it(tmp_path, cells, db_url):
    """A run with a NaN metric (Pearson of constant predictions) or an infinite rate: a live finish stores null
    (values.store_json), while the record.json written beside it keeps Python's bare NaN / Infinity. Ingest
    refused such a record ("not a finite number"), so a node cut off from the store lost a result that a live
    worker keeps. It is stored as the live finish stored it, row for row, and ingesting it again is "same"."""
    nan, inf = float("nan"), float("inf")
    _, multi = cells
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    finish_with_record(node, multi, tmp_path / "out" / multi.key, more={
        "metrics": {"pearson": nan, "spearmanr": 0.0}, "history": [{"step": 1, "train_loss": inf}],
        "extra": {"resume_s": inf, "rates": [1.0, -inf]}})
    text = (tmp_path / "out" / multi.key / RECORD).read_text()
    assert '"pearson": NaN' in text and '"resume_s": Infinity' in text, text

    def rows(store):   # every column but the ids, which are each store's own
        return {r.cell_key: {k: v for k, v in r.as_dict().items() if k not in ("id", "parent_id")}
                for r in store.records()}

    live = rows(node)
    assert live[multi.key]["metrics"] == {"pearson": None, "spearmanr": 0.0}
    assert len(live) == 1 + len(multi.tasks)
    proc = call_cli("ingest", tmp_path / "out", "--db", db_url)
    assert proc.returncode == 0 and "1 added" in proc.stdout, proc.stdout + proc.stderr
    assert rows(Store(db_url)) == live
    again = call_cli("ingest", tmp_path / "out", "--db", db_url)
    assert again.returncode == 0 and "1 same" in again.stdout, again.stdout + again.stderr


def test_a_negative_score_is_taken(tmp_path, cells):
    """Scores are the numbers that may be below zero (MCC, correlations x100): only counts, sizes and times are
    refused when negative."""
    single, _ = cells
    _, url = ingest_edited(tmp_path, single, lambda r: {**r, "score": -12.5, "best_score": -3.0})
    (row,) = Store(url).records()
    assert (row.score, row.best_score) == (-12.5, -3.0)


@pytest.mark.parametrize("status", [Status.FAILED, Status.COMPLETED])
def test_a_record_whose_text_holds_a_nul_is_stored_alike_on_either_backend(tmp_path, cells, db_url, status):
    """PostgreSQL's text cannot hold a NUL: such a record (a failure message, a text field of an edited file, as
    an older worker wrote it) crashed `harness ingest` there with a DataError traceback, while SQLite stored it.
    Both keep the text with the NUL replaced (values.store_text), as a live finish does, inside JSON too (a metric's
    name, extra: PostgreSQL kept \\u0000 there, and then every table of the store failed reading it); the record
    ingested again is "same"."""
    from harness.store.values import NUL_STORED_AS

    single, _ = cells
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    record = finish_with_record(node, single, tmp_path / "node", status=status)
    if status == Status.FAILED:
        record["error"] = "ValueError: bad row 'a\x00b'"
    else:
        record.update(stopped_by="max_steps\x00", metrics={"accuracy\x00": 70.0}, extra={"note": ["a\x00"]})
    path = tmp_path / "in" / RECORD
    path.parent.mkdir()
    path.write_text(json.dumps(record))
    proc = call_cli("ingest", path, "--db", db_url)
    assert proc.returncode == 0 and "1 added" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    (row,) = Store(db_url).records()
    if status == Status.FAILED:
        assert row.error == f"ValueError: bad row 'a{NUL_STORED_AS}b'"
    else:
        assert (row.stopped_by, row.metrics, row.extra) == (f"max_steps{NUL_STORED_AS}",
                                                             {f"accuracy{NUL_STORED_AS}": 70.0},
                                                             {"note": [f"a{NUL_STORED_AS}"]})
        again = call_cli("ingest", path, "--db", db_url)
        assert again.returncode == 0 and "1 same" in again.stdout, again.stdout + again.stderr
        board = call_cli("export", "--db", db_url, "--table", "runs", "--format", "csv")
        assert board.returncode == 0, board.stderr[-2000:]


DIFFERENT = {   # name: a change to a completed record that makes it another result than the one stored, and
                # the fields the conflict names
    "steps": (lambda r: {**r, "steps": 7}, "steps"),
    "train_flops": (lambda r: {**r, "train_flops": 2.5e12}, "train_flops"),
    "trainable_params": (lambda r: {**r, "trainable_params": 5}, "trainable_params"),
    "train_time_s": (lambda r: {**r, "train_time_s": 99.0}, "train_time_s"),
    "extra": (lambda r: {**r, "extra": {"resume_s": 3.0}}, "extra"),
    "a member's score": (lambda r: {**r, "children": [{**r["children"][0], "score": 1.0}, *r["children"][1:]]},
                         "children.0.score"),
    "six fields": (lambda r: {**r, "steps": 7, "train_flops": 2.5e12, "trainable_params": 5, "train_time_s": 99.0,
                              "extra": {}, "children": [{**r["children"][0], "score": 1.0}, *r["children"][1:]]},
                   "trainable_params, train_time_s, steps, train_flops and 2 more"),
}


@pytest.mark.parametrize("change", list(DIFFERENT))
def test_a_completed_record_that_differs_in_any_result_column_is_a_conflict(tmp_path, cells, db_url, change):
    """Ingest called a stored result "same" when only its score, metrics, finished_at and config matched: a record
    differing in steps, FLOPs, parameters, times, extra or a member's row was reported "same" and not written. Every
    column but the store's own attempt counter (ingest.NOT_COMPARED) is compared: such a record is a conflict (exit
    1, nothing overwritten) until --replace, and its line names the fields that differ (it named none, so what
    set the two results apart had to be found by hand). The record itself, with a password in its argv that the
    store hides and under a store that counts more attempts since, is still "same"."""
    _, multi = cells
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    record = finish_with_record(node, multi, tmp_path / "node", more={
        "steps": 6, "train_flops": 1.5e12, "trainable_params": 1000, "train_time_s": 12.5, "extra": {"a": [1, 2.5]}})
    record["env"] = {"argv": ["harness", "run", "--db", "postgresql://u:pw@host/db"]}   # as before redaction

    def ingest(rec, *more):
        folder = tmp_path / f"in{len(list(tmp_path.glob('in*')))}"
        folder.mkdir()
        (folder / RECORD).write_text(json.dumps(rec))
        return call_cli("ingest", folder, "--db", db_url, *more)

    def rows():
        return {r.cell_key: {k: v for k, v in r.as_dict().items() if k not in ("id", "parent_id")}
                for r in Store(db_url).records()}

    assert "1 added" in ingest(record).stdout
    with Store(db_url).engine.begin() as conn:
        conn.execute(update(RunRecord).where(RunRecord.cell_key == multi.key).values(attempts=5))
    again = ingest(record)
    assert again.returncode == 0 and "1 same" in again.stdout, again.stdout + again.stderr
    stored = rows()
    edit, fields = DIFFERENT[change]
    different = edit({**record, "attempts": 5})   # of the attempt the store is at (not "older")
    other = ingest(different)
    assert other.returncode == 1 and "1 conflict" in other.stdout, other.stdout + other.stderr
    assert f"already has a different completed result (differing: {fields}; kept, --replace takes this one)" \
        in other.stderr, other.stderr
    assert rows() == stored                                                # nothing overwritten
    replaced = ingest(different, "--replace")
    assert replaced.returncode == 0 and "1 updated" in replaced.stdout, replaced.stdout + replaced.stderr
    assert rows() != stored


def test_identity_columns_a_record_leaves_out_come_from_its_config(tmp_path, cells):
    """A record that leaves a column its config fixes empty (null) gets the config's value, as a queued row
    would: the tables find the run where its config puts it."""
    _, multi = cells
    node, url = ingest_edited(tmp_path, multi, lambda good: {
        **good, "learning_rate": None, "regime": None, "setting_key": None,
        "children": [{**k, "regime": None, "learning_rate": None} for k in good["children"]]})
    rows = {r.cell_key: r for r in Store(url).records()}
    want = {r.cell_key: r for r in node.records()}
    assert sorted(rows) == sorted(want)
    for key, row in rows.items():
        assert (row.learning_rate, row.regime, row.setting_key, row.task, row.task_version) == \
            (want[key].learning_rate, want[key].regime, want[key].setting_key, want[key].task,
             want[key].task_version), key


def test_a_record_whose_members_carry_the_joint_row_s_version_is_ingested_under_their_own(tmp_path, cells):
    """Records written before 2026-12-06 gave a multi-task cell's member rows the joint row's version (1), not
    their task's (STS-B: 2). Ingest refused them as differing from the config; they are read as the store now
    writes them."""
    from harness.spec.tasks import get_task

    _, multi = cells
    _, url = ingest_edited(tmp_path, multi, lambda good: {
        **good, "children": [{**k, "task_version": good["task_version"]} for k in good["children"]]})
    versions = {r.task: r.task_version for r in Store(url).records() if r.parent_id}
    assert versions["stsb"] == get_task("stsb").version == 2


def test_a_record_from_before_records_carried_member_rows_is_taken_as_its_row_alone(tmp_path, cells):
    """record.json carries a cell's stage / member rows (`children`) since 2026-11-23; a completed multi-task
    record without the field (a harness from before, 4672eed) is its joint row, as ingest took it before it
    refused a completed record that leaves a member's row out."""
    _, multi = cells
    _, url = ingest_edited(tmp_path, multi, lambda good: {k: v for k, v in good.items() if k != "children"})
    assert [(r.cell_key, r.parent_id) for r in Store(url).records()] == [(multi.key, None)]


def test_replacing_a_result_drops_the_analyses_measured_on_it(tmp_path, cells):
    """`ingest --replace` swaps a stored completed result for the record's: the old result's adapter ablation
    goes with it (else the tables showed it beside the new score and run_ablations skipped the run); another
    run's stays."""
    single, multi = cells
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = Store(url)
    ids = []
    for cell in (single, multi):
        claim = shared.start(cell, cell.config(), "cmd", None)
        shared.finish(claim, Status.COMPLETED, {"score": 70.0, "metrics": {"accuracy": 70.0}})
        shared.add_analysis(claim.id, "adapter_ablation", {"num_layers": 1, "baseline": 70.0,
                                                           "recorded_score": 70.0, "spans": [[0, 0, 60.0]]})
        ids.append(claim.id)
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    finish_with_record(node, single, tmp_path / "out" / single.key, score=80.0)

    kept = call_cli("ingest", tmp_path / "out", "--db", url)
    assert kept.returncode == 1 and "1 conflict" in kept.stdout, kept.stdout + kept.stderr
    assert sorted(a.run_id for a in Store(url).analyses()) == ids
    proc = call_cli("ingest", tmp_path / "out", "--db", url, "--replace")
    assert proc.returncode == 0 and "1 updated" in proc.stdout, proc.stdout + proc.stderr
    assert Store(url).get(ids[0]).score == 80.0
    assert [a.run_id for a in Store(url).analyses()] == ids[1:]
    table = call_cli("export", "--table", "ablation", "--format", "csv", "--db", url)
    assert table.returncode == 0 and {line.split(",")[1] for line in table.stdout.splitlines()[1:]} == {str(ids[1])}


@pytest.mark.parametrize("replace", [[], ["--replace"]])
def test_a_failed_record_never_replaces_a_completed_result_and_says_so(tmp_path, cells, replace):
    """A node's failure of a cell the store has completed: the result is kept, with or without --replace, and
    the message says that (not "--replace takes this one"); nothing is left to resolve: exit 0."""
    single, _ = cells
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = Store(url)
    claim = shared.start(single, single.config(), "cmd", None)
    shared.finish(claim, Status.COMPLETED, {"score": 70.0, "metrics": {"accuracy": 70.0}})
    before = shared.get(claim.id).as_dict()
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    finish_with_record(node, single, tmp_path / "out" / single.key, status=Status.FAILED)

    proc = call_cli("ingest", tmp_path / "out", "--db", url, *replace)
    assert proc.returncode == 0 and "1 kept" in proc.stdout, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "kept" in line and "completed result" in line and "takes this one" not in line, line
    assert Store(url).get(claim.id).as_dict() == before


def test_a_time_with_an_offset_is_stored_as_the_same_instant_in_utc(tmp_path, cells, db_url):
    """Every time column is UTC without an offset: a record's 02:00+02:00 is 00:00 (SQLite kept 02:00)."""
    _, multi = cells
    node = Store(f"sqlite:///{tmp_path / 'node.db'}")
    rec = finish_with_record(node, multi, tmp_path / "out" / multi.key)
    rec.update(finished_at="2030-01-01T02:00:00+02:00", started_at="2029-12-31T19:30:00-05:00")
    rec["children"][0]["finished_at"] = "2030-01-01T01:00:00+01:00"
    (tmp_path / "out" / multi.key / RECORD).write_text(json.dumps(rec))

    proc = call_cli("ingest", tmp_path / "out", "--db", db_url)
    assert proc.returncode == 0 and "1 added" in proc.stdout, proc.stdout + proc.stderr
    rows = Store(db_url).by_key("ing")
    midnight = dt.datetime(2030, 1, 1)
    assert (rows[multi.key].finished_at, rows[multi.key].started_at) == (midnight, dt.datetime(2030, 1, 1, 0, 30))
    assert rows[rec["children"][0]["cell_key"]].finished_at == midnight
    again = call_cli("ingest", tmp_path / "out", "--db", db_url)   # the same result: idempotent
    assert again.returncode == 0 and "1 same" in again.stdout, again.stdout + again.stderr


def test_a_record_in_an_attempt_folder_counts_only_when_kept_for_ingest(tmp_path, cells):
    """An attempt's own folder holds files no store accepted: its record.json is skipped by a folder walk and
    refused when named, unless it is the ingest_only record the runner parks there (the cell folder already had
    an accepted completed record): that one is found by the walk and taken."""
    from harness.launch import attempt
    from harness.spec import layout

    single, _ = cells
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = Store(url)
    cell_dir = tmp_path / "out" / single.key
    finish_with_record(shared, single, cell_dir, worker=live_worker("w1"))
    unaccepted = cell_dir / f"{layout.ATTEMPT_PREFIX}9-w9" / RECORD   # e.g. a finish killed before its commit
    unaccepted.parent.mkdir()
    unaccepted.write_text(json.dumps({**json.loads((cell_dir / RECORD).read_text()), "attempts": 9}))
    before = shared.by_key("ing")[single.key].as_dict()

    proc = call_cli("ingest", unaccepted, "--db", url)
    assert proc.returncode == 2 and "1 refused" in proc.stdout, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"{unaccepted}: refused: ") and "attempt's own folder" in line, line
    assert shared.by_key("ing")[single.key].as_dict() == before

    claim = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w2"))
    parked = keep_for_ingest(shared, claim, cell_dir, 75.0)   # the store unreachable: kept beside the result
    assert attempt.folder(str(cell_dir), claim) in parked
    make_stale(url, claim.id)
    proc = call_cli("ingest", tmp_path / "out", "--db", url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ingested 2 record(s): 1 updated" in proc.stdout and "1 older" in proc.stdout, proc.stdout
    row = shared.get(claim.id)
    assert (row.status, row.score, row.attempts) == (Status.COMPLETED, 75.0, 2)


def test_a_record_without_a_prediction_keeps_the_stored_one(tmp_path, cells):
    """The runner reads the row it claimed, then writes its prediction (Store.predict); a result kept for ingest
    is built from the row as read, without it. Ingesting that record keeps the store's prediction (`harness
    status` compares it with the actual time) instead of emptying it."""
    from harness.launch import attempt

    single, _ = cells
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = Store(url)
    claim = shared.start(single, single.config(), "cmd", "out", worker=live_worker("w1"))
    leased = shared.get(claim.id).as_dict()
    assert shared.predict(claim, 123.0)
    cell_dir = tmp_path / "out" / single.key
    cell_dir.mkdir(parents=True)
    attempt.keep_for_ingest(leased, claim, Status.COMPLETED, {"score": 70.0, "train_time_s": 100.0}, [],
                            attempt.folder(str(cell_dir), claim), str(cell_dir))
    assert json.loads((cell_dir / RECORD).read_text())["predicted_time_s"] is None
    make_stale(url, claim.id)

    proc = call_cli("ingest", tmp_path / "out", "--db", url)
    assert proc.returncode == 0 and "1 updated" in proc.stdout, proc.stdout + proc.stderr
    row = shared.get(claim.id)
    assert (row.status, row.train_time_s, row.predicted_time_s) == (Status.COMPLETED, 100.0, 123.0)
