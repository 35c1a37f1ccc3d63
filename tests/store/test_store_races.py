"""Check-then-act across two transactions of the store, each forced at the step where it matters: SQLite and a
real PostgreSQL server."""

from __future__ import annotations

from tests.helpers.cli import call_cli
from harness.plan.suite import parse_suite
from harness.spec.status import Status
from harness.store.db import Store

PAYLOAD = {"num_layers": 1, "baseline": 70.0, "recorded_score": 70.0, "spans": [[0, 0, 60.0]]}


def _recorded_houlsby_run(tmp_path, db_url):
    """The claim of one completed Houlsby cell (score 70) in a store of its own, its engine closed."""
    cell = parse_suite("name: ab\nmodels: [minilm]\ntasks: [rte]\nmethods: [houlsby]\n",
                       str(tmp_path / "ab.yaml")).cells()[0]
    store = Store(db_url)
    claim = store.start(cell, cell.config(), "cmd", None)
    store.finish(claim, Status.COMPLETED, {"score": 70.0, "metrics": {"accuracy": 70.0}})
    store.engine.dispose()
    return claim


def _ablate_refused(monkeypatch, db_url, run_id: int, meanwhile) -> str:
    """`harness ablate RUN` whose ablation runs `meanwhile(rec)` (another process's change to the store) before it
    returns its matrix: refused, exit 1, nothing stored. Its one line."""
    import harness.analysis.ablate as ablation

    def ablate(rec, ctx, trust_remote_code=False):
        meanwhile(rec)
        return PAYLOAD

    monkeypatch.setattr(ablation, "ablate", ablate)
    proc = call_cli("ablate", run_id, "--db", db_url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert Store(db_url).analyses() == []
    return proc.stderr.strip()


def test_an_ablation_of_a_result_replaced_meanwhile_is_not_stored_beside_the_new_one(tmp_path, db_url, monkeypatch):
    """`harness ablate` reads a run, ablates its adapter (minutes), then stores the matrix. `harness ingest
    --replace` swapped the run's result in between (it drops the analyses of the result it replaces: none yet):
    the matrix, measured on the old result (70), was stored under the run's id and shown beside the new score
    (80). It is refused now (one line, exit 1, nothing stored), and stored where the run is still the one
    measured."""
    import harness.analysis.ablate as ablation

    claim = _recorded_houlsby_run(tmp_path, db_url)
    store = Store(db_url)
    replacing = {**store.get(claim.id).as_dict(), "score": 80.0, "metrics": {"accuracy": 80.0}}   # a node's
    store.engine.dispose()

    def replaced(rec):
        assert rec.score == 70.0
        other = Store(db_url)
        assert other.ingest(replacing, replace=True) == "updated"   # `harness ingest --replace`, meanwhile
        other.engine.dispose()

    assert _ablate_refused(monkeypatch, db_url, claim.id, replaced) == (
        f"error: run {claim.id}: its result was replaced while it was ablated (harness ingest --replace): the "
        f"ablation is not stored; run harness ablate again")

    monkeypatch.setattr(ablation, "ablate", lambda rec, ctx, trust_remote_code=False: {**PAYLOAD,
                                                                                         "recorded_score": rec.score})
    proc = call_cli("ablate", claim.id, "--db", db_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(a.run_id, a.payload["recorded_score"]) for a in Store(db_url).analyses()] == [(claim.id, 80.0)]


def test_a_lease_that_goes_stale_during_the_finish_is_not_taken_over(tmp_path, db_url):
    """The finish has read the row and found its lease its own, and is about to write it, when the lease goes stale
    and another worker claims: the claim must not take the cell (SQLite: it waits for the finish's write lock,
    then finds the cell completed; PostgreSQL: the finish read the row FOR UPDATE, and SKIP LOCKED passes it by),
    and the result stays the finishing worker's. Checked, found safe: the claim and the finish decide under one
    lock (without the finish's FOR UPDATE, PostgreSQL's claim took the cell here and the finish then overwrote
    the new lease with its result)."""
    import threading
    import time

    from sqlalchemy import event

    from harness.store.lease import Worker

    cell = parse_suite("name: st\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n",
                       str(tmp_path / "st.yaml")).cells()[0]
    store, other = Store(db_url), Store(db_url)
    store.enqueue([cell])
    claim = store.claim_next("st", [cell.key], Worker("a/1/-/aa", "here", 1))
    inside, go, got = threading.Event(), threading.Event(), {}

    def held_before_the_write(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE RUNS") and not inside.is_set():
            inside.set()
            assert go.wait(30)

    event.listen(store.engine, "before_cursor_execute", held_before_the_write)
    finishing = threading.Thread(target=lambda: got.update(rec=store.finish(claim, Status.COMPLETED, {"score": 70.0})))
    finishing.start()
    assert inside.wait(30)
    time.sleep(0.2)   # the lease is older than the claimer's timeout now
    claiming = threading.Thread(target=lambda: got.update(taken=other.claim_next(
        "st", [cell.key], Worker("b/2/-/bb", "there", 2), lease_timeout_s=0.05)))
    claiming.start()
    time.sleep(0.5)   # the claim is in the store's hands (SQLite: waiting for the lock)
    go.set()
    finishing.join(30)
    claiming.join(60)
    assert got["taken"] is None and got["rec"].status == Status.COMPLETED
    row = Store(db_url).get(claim.id)
    assert (row.status, row.worker_id, row.attempts, row.score) == (Status.COMPLETED, "a/1/-/aa", 1, 70.0)
    store.engine.dispose()
    other.engine.dispose()


def test_an_ablation_of_a_run_deleted_meanwhile_says_so_in_one_line(tmp_path, db_url, monkeypatch):
    """The run `harness ablate` read is gone by the time it stores the matrix (deleted from the store by hand, minutes
    into the ablation): the store raised AttributeError ('NoneType' object has no attribute ...), a traceback. It
    is refused like a result replaced meanwhile: one line, exit 1, nothing stored."""
    from sqlalchemy import text

    claim = _recorded_houlsby_run(tmp_path, db_url)

    def deleted(rec):
        other = Store(db_url)
        with other.engine.begin() as conn:   # by hand, meanwhile
            assert conn.execute(text("DELETE FROM runs WHERE id = :id"), {"id": rec.id}).rowcount == 1
        other.engine.dispose()

    assert _ablate_refused(monkeypatch, db_url, claim.id, deleted) == (
        f"error: run {claim.id}: it was removed from the store while it was ablated: the ablation is not stored")
