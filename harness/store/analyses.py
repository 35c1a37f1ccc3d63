"""Analyses of stored runs (e.g. "adapter_ablation"), and the end-of-suite ones as work items.

Every worker that finishes a suite looks for the analyses the suite asks for; each (run, kind) is claimed once:
the claim inserts the item's row (status running, the worker's lease) and the unique constraint on (run_id,
kind, work_item) lets one insert win; the others skip it. A claimed item's lease is kept fresh like a cell's and
goes stale by the same rule (queue.stale_lease), so a worker that dies leaves it to the next; an item that
failed before a worker started is tried again by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import inspect, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from harness.spec.errors import EXIT_FAILED, InputError
from harness.spec.status import DEFAULT_LEASE_TIMEOUT_S, Status
from harness.store.lease import Worker, utcnow
from harness.store.queue import db_now, stale_lease, started_on_db_clock
from harness.store.schema import RUN_COLUMNS, AnalysisRecord as A, RunRecord

SUITE_WORK = "suite"   # work_item of the analyses a suite asks for (end of suite); NULL: asked for by hand


class RunChanged(InputError):
    """The stored run an analysis was measured on changed meanwhile: told in one line; EXIT_FAILED (the analysis
    run again measures the run as it is now)."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class AnalysisClaim:
    id: int
    run_id: int
    kind: str
    worker_id: str


def _completed():
    return or_(A.status.is_(None), A.status == Status.COMPLETED.value)


class Analyses:
    """The analyses side of a Store (harness.store.db): needs its engine, backend, `_write()`, `_rows()`,
    `_fetch()`, `_absent`, `session()` and `get()`."""

    def add_analysis(self, run_id: int, kind: str, payload: dict, measured_on: RunRecord | None = None) -> int:
        """A completed analysis asked for by hand (`harness ablate`): a row of its own each time (kept), which
        from then on is the run's analysis of that kind (`analyses` reads the newest). `measured_on`: the run as
        the analysis read it; RunChanged (nothing stored) where the stored run is no longer that, read under the
        lock that `harness ingest --replace` takes on it: a result replaced while it was analysed (minutes)
        drops the analyses of the old result, and this one, stored after, was shown beside the new."""
        with self._write() as conn:
            with Session(bind=conn) as s:
                rec = s.get(RunRecord, run_id, with_for_update=self.backend == "postgresql")
                if rec is None:   # deleted by hand meanwhile: read as None, it was an AttributeError's traceback
                    raise RunChanged(f"run {run_id}: it was removed from the store while it was ablated: the "
                                     f"ablation is not stored")
                if measured_on is not None and any(getattr(rec, c) != getattr(measured_on, c) for c in RUN_COLUMNS):
                    raise RunChanged(f"run {run_id}: its result was replaced while it was ablated (harness ingest "
                                     f"--replace): the ablation is not stored; run harness ablate again")
                suite = rec.suite
            return conn.execute(A.__table__.insert().values(
                run_id=run_id, suite=suite, kind=kind, payload=payload, created_at=utcnow(),
                status=Status.COMPLETED.value)).inserted_primary_key[0]

    def analyses(self, suite: str | None = None, kind: str | None = None) -> list[A]:
        """Completed analyses (claimed work items still running or failed are not results): the newest of each
        run and kind, so an analysis run again (by hand, or by hand after the suite's) is one matrix in the tables,
        not two of the same run side by side."""
        if not inspect(self.engine).has_table(A.__tablename__):
            return []  # a store written before analyses existed
        where = [] if "status" in self._absent.get(A.__tablename__, ()) else [_completed()]   # before 0003: all are
        if suite:
            where.append(A.suite == suite)
        if kind:
            where.append(A.kind == kind)
        newest = {(a.run_id, a.kind): a for a in self._fetch(A, *where)}   # in id order: the last one stays
        return sorted(newest.values(), key=lambda a: a.id)

    def claim_analysis(self, run_id: int, kind: str, worker: Worker,
                       lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S) -> AnalysisClaim | None:
        """Claim the end-of-suite analysis `kind` of a run, or None when another worker holds it (a live lease)
        or it is done, or failed since this worker started; RunChanged (nothing claimed) when the run is no longer
        in the store. One transaction under the write lock (PostgreSQL: the row locked, or the unique constraint
        deciding between two inserts)."""
        now = utcnow()
        lease = {"status": Status.RUNNING.value, "worker_id": worker.worker_id, "heartbeat_at": db_now(),
                 "error": None}
        try:
            with self._write() as conn:
                suite = conn.execute(select(RunRecord.suite).where(RunRecord.id == run_id)).scalar()
                if suite is None:   # deleted by hand since the worker read the suite's runs: NoResultFound's traceback
                    raise RunChanged(f"run {run_id}: it was removed from the store before its ablation was claimed: "
                                     f"no ablation of it")
                stmt = select(A.id).where(A.run_id == run_id, A.kind == kind, A.work_item == SUITE_WORK)
                if self.backend == "postgresql":
                    stmt = stmt.with_for_update()
                row_id = conn.execute(stmt).scalar()
                if row_id is None:
                    row_id = conn.execute(A.__table__.insert().values(
                        run_id=run_id, suite=suite, kind=kind, work_item=SUITE_WORK, payload={}, created_at=now,
                        **lease)).inserted_primary_key[0]
                else:
                    # a failure is tried again by a worker started after it (on the database's clock, as a
                    # cell's --retry-failed): never by the worker that failed it
                    retry = ((A.status == Status.FAILED.value) & (A.heartbeat_at < started_on_db_clock(conn, worker))
                             & or_(A.worker_id.is_(None), A.worker_id != worker.worker_id))
                    taken = conn.execute(update(A).where(A.id == row_id, or_(stale_lease(lease_timeout_s, A), retry))
                                         .values(**lease)).rowcount
                    if not taken:
                        return None
        except IntegrityError:   # another worker's insert won (PostgreSQL: it committed while we waited)
            return None
        return AnalysisClaim(row_id, run_id, kind, worker.worker_id)

    def _update_analysis(self, claim: AnalysisClaim, **values) -> bool:
        """Change a claimed item this worker still holds; False when its lease is no longer this worker's."""
        with self._write() as conn:
            n = conn.execute(update(A).where(A.id == claim.id, A.worker_id == claim.worker_id,
                                             A.status == Status.RUNNING.value).values(**values)).rowcount
        return n == 1

    def heartbeat_analysis(self, claim: AnalysisClaim) -> bool:
        return self._update_analysis(claim, heartbeat_at=db_now())

    def finish_analysis(self, claim: AnalysisClaim, payload: dict) -> bool:
        """Store the result; False (nothing stored) when another worker took the item over. Called again after a
        try that committed but lost its answer (the runner retries store calls through an outage), it finds the
        item completed under its own claim: True, as the first try's answer would have said."""
        if self._update_analysis(claim, status=Status.COMPLETED.value, payload=payload, created_at=utcnow(),
                                 heartbeat_at=db_now()):
            return True
        with self.engine.connect() as conn:
            row = conn.execute(select(A.status, A.worker_id).where(A.id == claim.id)).first()
        return row is not None and tuple(row) == (Status.COMPLETED.value, claim.worker_id)

    def fail_analysis(self, claim: AnalysisClaim, error: str) -> bool:
        """Record a failure: the item is tried again by a worker started after it."""
        return self._update_analysis(claim, status=Status.FAILED.value, error=error, heartbeat_at=db_now())
