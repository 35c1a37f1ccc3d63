"""The results store: one RunRecord per (suite, cell key), in any SQLAlchemy database; also the work queue.

`Store` composes the parts: the schema and its Alembic migrations (harness.store.schema), the engine
(harness.store.engine), the queue of claims and leases (harness.store.queue) and the loading of record.json
files (harness.store.ingest) and the analyses of stored runs (harness.store.analyses); here are opening a
store and reading it. The store knows no folder layout: cell folders come from harness.spec.layout.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from sqlalchemy import case, inspect, make_url, select
from sqlalchemy.orm import Session

from harness.spec.errors import InputError
from harness.spec.status import Status
from harness.store import schema
from harness.store.analyses import Analyses
from harness.store.engine import default_db_url, make_engine, read_snapshot, write_transaction
from harness.store.ingest import Ingest
from harness.store.queue import WorkQueue
from harness.store.schema import RunRecord


class Store(WorkQueue, Ingest, Analyses):
    def __init__(self, url: str | None = None, read_only: bool = False, create: bool = True):
        self.url = url or default_db_url()
        self.engine = make_engine(self.url, read_only=read_only)
        self._held = threading.local()   # this thread's open snapshot (snapshot()): the board's sessions share a Store
        self.backend = self.engine.dialect.name
        try:   # a newer harness's store: refused before any read or migration
            stored = schema.check_revision(self.engine, make_url(self.url).render_as_string(hide_password=True))
        except InputError:
            self.engine.dispose()
            raise
        if create and not read_only:
            self.upgrade(stored)
        # a store of an older revision that is not migrated (opened read-only: readers never write) lacks the
        # columns later revisions added; reads leave them out and give None (_fetch), as for a run from before
        self._absent = self._absent_columns() if read_only or not create else {}

    # -- schema ------------------------------------------------------------------------------------------------

    def upgrade(self, stored: list[str] | None = None) -> None:
        """Bring the schema to the newest Alembic revision (once, under a lock: see schema.upgrade); `stored`: the
        revisions just read from the store (schema.check_revision), else read here."""
        schema.upgrade(self.engine, self._write, stored)

    def identity(self) -> str | None:
        """The store's random id (None: a store from before it had one, opened read-only, or no store)."""
        from harness.store.schema import StoreInfo

        if not inspect(self.engine).has_table(StoreInfo.__tablename__):
            return None
        with self.session() as s:
            return s.scalar(select(StoreInfo.store_id).order_by(StoreInfo.id).limit(1))

    def _absent_columns(self) -> dict[str, set[str]]:
        """{table: its declared columns the database's table lacks}, for the tables there."""
        found = inspect(self.engine)
        absent = {}
        for table in (RunRecord.__table__, schema.AnalysisRecord.__table__):
            if found.has_table(table.name):
                there = {c["name"] for c in found.get_columns(table.name)}
                absent[table.name] = {c.name for c in table.columns} - there
        return absent

    def columns(self) -> set[str]:
        """Columns the store has (an older read-only store may lack some)."""
        insp = inspect(self.engine)
        if not insp.has_table(RunRecord.__tablename__):
            return set()
        return {c["name"] for c in insp.get_columns(RunRecord.__tablename__)}

    # -- plumbing ----------------------------------------------------------------------------------------------

    @contextmanager
    def snapshot(self):
        """Every read of the store on this thread inside it (reading(), session()) from one consistent snapshot
        (engine.read_snapshot): one answer (a table, a status, an export) computed from several queries. Nested:
        the outer one's."""
        held = getattr(self._held, "conn", None)
        if held is not None:
            yield held
            return
        with read_snapshot(self.engine) as conn:
            self._held.conn = conn
            try:
                yield conn
            finally:
                self._held.conn = None

    @contextmanager
    def reading(self):
        """A connection to read on: the open snapshot's (snapshot()) on this thread, else one of its own."""
        held = getattr(self._held, "conn", None)
        if held is not None:
            yield held
            return
        with self.engine.connect() as conn:
            yield conn

    def session(self) -> Session:
        """A session to read objects with (in the open snapshot, if any: snapshot())."""
        return Session(getattr(self._held, "conn", None) or self.engine, expire_on_commit=False)

    def _write(self):
        """A write transaction that holds the write lock from its first statement (SQLite: BEGIN IMMEDIATE)."""
        return write_transaction(self.engine)

    def _fetch(self, table, *where) -> list:
        """The rows of `table` that match `where`, in id order, as its objects; on a store that lacks columns of
        later revisions (_absent), objects built from the columns it has, the others None."""
        absent = self._absent.get(table.__tablename__)
        if not absent:
            with self.session() as s:
                return list(s.scalars(select(table).where(*where).order_by(table.id)))
        there = [c for c in table.__table__.columns if c.name not in absent]
        with self.reading() as conn:
            return [table(**row._mapping) for row in conn.execute(select(*there).where(*where).order_by(table.id))]

    def _rows(self, table, **equal_to) -> list:
        """Rows of `table` in id order, filtered on the columns given a value (bound parameters only)."""
        return self._fetch(table, *[getattr(table, column) == value for column, value in equal_to.items() if value])

    # -- reading -----------------------------------------------------------------------------------------------

    def records(self, suite: str | None = None, status: str | None = None) -> list[RunRecord]:
        return self._rows(RunRecord, suite=suite, status=status)

    def process_counts(self, suite: str) -> set[int]:
        """The process counts the suite's rows were queued or run with, read as one column, not whole rows
        (`harness status` infers a suite's count from it: the count is part of every cell's key)."""
        stmt = select(RunRecord.num_processes).where(RunRecord.suite == suite).distinct()
        with self.session() as s:
            return set(s.scalars(stmt))

    def cell_statuses(self, suite: str) -> list:
        """(cell_key, status, attempts, worker_id, error) of the suite's cells' own rows, read as five columns, not
        whole rows: every worker start reads them (harness.launch.summary), and whole rows, every JSON column of
        every cell, took 1.19 s of its 1.34 s on a 10,000-cell SQLite store (0.036 s for these; bench/bench_settle.py),
        sent by a PostgreSQL server to every task of a Slurm array. `error` only for a failed row (settle keeps a
        broken group's checkpoint by it: harness.launch.broken_group.recorded); None for every other."""
        error = case((RunRecord.status == str(Status.FAILED), RunRecord.error), else_=None).label("error")
        stmt = select(RunRecord.cell_key, RunRecord.status, RunRecord.attempts, RunRecord.worker_id, error).where(
            RunRecord.suite == suite, RunRecord.parent_id.is_(None))
        with self.session() as s:
            return list(s.execute(stmt))

    def by_key(self, suite: str) -> dict[str, RunRecord]:
        return {r.cell_key: r for r in self.records(suite)}

    def get(self, run_id: int) -> RunRecord | None:
        if self._absent.get(RunRecord.__tablename__):
            return next(iter(self._fetch(RunRecord, RunRecord.id == run_id)), None)
        with self.session() as s:
            return s.get(RunRecord, run_id)

    def children(self, parent_id: int) -> list[RunRecord]:
        return self._rows(RunRecord, parent_id=parent_id)
