"""The results store: one RunRecord per (suite, cell key), in any SQLAlchemy database; also the work queue.

Every cell of a suite gets a row (status pending) when a worker first sees the suite. Workers claim the next
claimable row in one transaction (PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED; SQLite: BEGIN IMMEDIATE),
writing a lease (worker, host, pid, Slurm ids, claimed_at, heartbeat_at) that they keep fresh while training.
A cell is claimable when it is pending, when its lease went stale (no heartbeat for the lease timeout, or its
worker's process is gone on this host), or, with retry_failed, when it failed before this worker started.
Finishing is one transaction that checks the lease is still ours, writes the run row and its stage/member rows,
and marks it completed; files are written (atomically) before that commit. So any number of workers on one
suite train every cell once, and a kill at any point leaves a cell either completed with everything or
claimable again.

SQLite (the default, results/harness.db) runs in WAL mode with a busy timeout: right for the processes of one
machine. Its locking is not reliable on network filesystems and WAL needs every process on one host, so workers
on several machines share a PostgreSQL server (postgresql+psycopg://...). The schema is migrated by Alembic
(harness/store/migrations) when a store is opened.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Callable, Iterable

from sqlalchemy import (JSON, DateTime, Index, BigInteger, Float, Integer, String, Text, UniqueConstraint, create_engine, delete, event,
                        or_, and_, select, update)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from harness.spec.status import Status
from harness.spec.errors import InputError
from harness.store.lease import Claim, Worker, current_worker, namespace_of, process_gone, utcnow

DEFAULT_DB = "sqlite:///results/harness.db"

PENDING, RUNNING, COMPLETED, FAILED = Status.PENDING, Status.RUNNING, Status.COMPLETED, Status.FAILED

# filesystems on which SQLite's locking cannot be trusted (several machines, or no POSIX locks)
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "cephfs", "ceph",
                       "glusterfs", "fuse.sshfs", "9p", "panfs", "wekafs")


def default_db_url() -> str:
    return os.environ.get("HARNESS_DB") or DEFAULT_DB


class Base(DeclarativeBase):
    pass


class RunRecord(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("suite", "cell_key", name="uq_suite_cell"),
                      Index("ix_runs_suite_status", "suite", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite: Mapped[str] = mapped_column(Text, index=True)
    cell_key: Mapped[str] = mapped_column(String(64), index=True)
    setting_key: Mapped[str | None] = mapped_column(Text)   # the cell key without the seed
    status: Mapped[str] = mapped_column(String(20), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    # what ran
    config: Mapped[dict] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(Text, index=True)
    task: Mapped[str] = mapped_column(Text, index=True)   # a task, or members joined by + (multi-task)
    task_version: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(50), index=True)
    method_params: Mapped[dict] = mapped_column(JSON)
    method_label: Mapped[str] = mapped_column(Text)
    budget: Mapped[dict] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(BigInteger)
    hparams: Mapped[dict] = mapped_column(JSON)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    num_processes: Mapped[int] = mapped_column(Integer, default=1)

    # sequential / multi-task cells: the cell's row has regime "sequential" (its last stage) or "multitask" (the
    # joint run); its stages / member tasks are rows of their own ("sequential_stage", "multitask_member") that
    # point at it with parent_id. Single-task runs leave these empty.
    regime: Mapped[str | None] = mapped_column(String(20))
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    stage: Mapped[int | None] = mapped_column(Integer)

    # cost
    trainable_params: Mapped[int | None] = mapped_column(BigInteger)
    added_params: Mapped[int | None] = mapped_column(BigInteger)
    total_params: Mapped[int | None] = mapped_column(BigInteger)
    head_params: Mapped[int | None] = mapped_column(BigInteger)
    embedding_params: Mapped[int | None] = mapped_column(BigInteger)   # of the pretrained model (ALBERT: V*E + E*H)
    encoder_params: Mapped[int | None] = mapped_column(BigInteger)     # its layer stack, a shared block once
    trainable_pct: Mapped[float | None] = mapped_column(Float)
    train_time_s: Mapped[float | None] = mapped_column(Float)
    eval_time_s: Mapped[float | None] = mapped_column(Float)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    peak_memory_kind: Mapped[str | None] = mapped_column(String(40))
    train_examples_per_s: Mapped[float | None] = mapped_column(Float)
    train_tokens_per_s: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[int | None] = mapped_column(Integer)
    epochs_done: Mapped[float | None] = mapped_column(Float)
    train_examples: Mapped[int | None] = mapped_column(Integer)
    eval_examples: Mapped[int | None] = mapped_column(Integer)
    stopped_by: Mapped[str | None] = mapped_column(String(40))

    # quality (GLUE points, x100)
    score: Mapped[float | None] = mapped_column(Float)           # main score of the final evaluation
    best_score: Mapped[float | None] = mapped_column(Float)      # best main score over evaluations
    metrics: Mapped[dict | None] = mapped_column(JSON)           # final dev metrics
    best_metrics: Mapped[dict | None] = mapped_column(JSON)
    history: Mapped[list | None] = mapped_column(JSON)           # [{step, epoch, metrics, score, train_loss}]

    # provenance
    env: Mapped[dict | None] = mapped_column(JSON)
    command: Mapped[str | None] = mapped_column(Text)
    output_dir: Mapped[str | None] = mapped_column(Text)
    adapter_path: Mapped[str | None] = mapped_column(Text)      # the saved adapter + head (adapter methods)
    adapter_bytes: Mapped[int | None] = mapped_column(BigInteger)  # its size on disk
    extra: Mapped[dict | None] = mapped_column(JSON)            # e.g. sequential stages' encoder checksums

    # the lease of the worker that claimed the cell (kept after it finishes: who ran it, where)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    slurm_job_id: Mapped[str | None] = mapped_column(String(64))
    slurm_array_task_id: Mapped[int | None] = mapped_column(Integer)
    slurm_restart_count: Mapped[int | None] = mapped_column(Integer)
    claimed_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]

    COLUMNS = None  # filled below: column names in declaration order

    def as_dict(self) -> dict:
        out = {}
        for c in self.__table__.columns:
            v = getattr(self, c.name)
            out[c.name] = v.isoformat() if isinstance(v, dt.datetime) else v
        return out


RunRecord.COLUMNS = [c.name for c in RunRecord.__table__.columns]


class AnalysisRecord(Base):
    """An analysis of a stored run, e.g. kind "adapter_ablation" with payload
    {"num_layers": L, "baseline": score, "spans": [[first_layer, last_layer, score], ...]}: the dev score with
    the adapters of layers first..last removed (Houlsby et al. 2019, Fig. 6)."""

    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    suite: Mapped[str] = mapped_column(Text, index=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict] = mapped_column(JSON)


def _sqlite_pragmas(engine: Engine, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # the driver's own BEGIN is deferred and comes only before the first write: too late for a claim, which
        # must hold the write lock from its first read. So BEGIN is ours (below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        if not read_only:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # IMMEDIATE takes the write lock at once: a claim's read and write are one step for every process
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


READ_ONLY_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")   # where read-only is enforced by the server


def _sqlite_read_only_engine(path: str) -> Engine:
    """A SQLite engine that cannot write: mode=ro on a file: URI built from the path itself (percent-encoded, so
    '#', '?' and '%' in a file name stay part of it and never open a different file), plus query_only."""
    import sqlite3
    from urllib.parse import quote

    uri = f"file:{quote(os.path.abspath(path), safe='/')}?mode=ro"

    def connect():
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        return conn

    engine = create_engine("sqlite://", creator=connect)
    _sqlite_pragmas(engine, read_only=True)
    return engine


def make_engine(url: str, read_only: bool = False) -> Engine:
    try:
        parsed = make_url(url)
    except Exception:
        raise InputError(f'--db: not a database URL: "{url}" (e.g. sqlite:///results/harness.db)') from None
    backend = parsed.get_backend_name()
    if read_only and backend not in READ_ONLY_BACKENDS:
        raise InputError(f"--db: {backend} cannot be opened read-only here (read-only is enforced only for "
                         f"{', '.join(READ_ONLY_BACKENDS)}); refusing rather than risk writing to it")
    if backend == "sqlite":
        path = parsed.database
        if path and path != ":memory:":
            if read_only:
                if not os.path.exists(path):
                    raise FileNotFoundError(path)
                return _sqlite_read_only_engine(path)   # the leaderboard can never write to a shared store
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(parsed)
        _sqlite_pragmas(engine, read_only)
        return engine
    try:
        engine = create_engine(parsed)
    except Exception as e:  # missing driver etc.
        raise InputError(f"--db: cannot use {parsed.render_as_string(hide_password=True)}: {e}") from None
    if read_only:
        @event.listens_for(engine, "begin")
        def _read_only(conn):   # every transaction, before its first statement
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    return engine


MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_LEASE_TIMEOUT_S = 300.0

# what identifies a cell's row and what it was configured with: kept when a cell is claimed again; every other
# column is a result of one attempt (or its lease) and starts empty on each claim
IDENTITY = ("id", "suite", "cell_key", "setting_key", "created_at", "config", "model", "task", "task_version",
            "method", "method_params", "method_label", "budget", "seed", "hparams", "learning_rate",
            "num_processes", "regime", "parent_id", "stage", "command", "output_dir", "attempts", "status")
LEASE = ("worker_id", "host", "pid", "slurm_job_id", "slurm_array_task_id", "slurm_restart_count", "claimed_at",
         "heartbeat_at")
RESULTS = tuple(c for c in RunRecord.COLUMNS if c not in IDENTITY and c not in LEASE)


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def sqlite_location_warning(url: str) -> str | None:
    """Why this SQLite store should not be shared by several machines, if its file lies on a network filesystem."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = os.path.realpath(os.path.abspath(parsed.database))
    best, fstype = "", None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mount = parts[1].replace("\\040", " ")
                    if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                        best, fstype = mount, parts[2]
    except OSError:
        return None
    if fstype and (fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs")):
        return (f"the SQLite store {path} is on a {fstype} filesystem: SQLite locking is not reliable there and "
                f"WAL needs every process on one host; workers on several machines need PostgreSQL "
                f"(--db postgresql+psycopg://USER@HOST/DB)")
    return None


class LeaseLost(RuntimeError):
    """The cell was claimed by another worker after this one's lease went stale: its result is not recorded."""


class Store:
    def __init__(self, url: str | None = None, read_only: bool = False, create: bool = True):
        self.url = url or default_db_url()
        self.engine = make_engine(self.url, read_only=read_only)
        self.backend = self.engine.dialect.name
        if create and not read_only:
            self.upgrade()

    # -- schema ------------------------------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision. Workers starting together (a Slurm array) race here:
        the migration runs under the database's write lock (SQLite) or an advisory lock (PostgreSQL), and
        whoever comes second finds it done."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", MIGRATIONS)
        head = ScriptDirectory.from_config(cfg).get_current_head()
        with self.engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() == head:
                return
        with self._write() as conn:
            if self.backend == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")   # any fixed number: ours
            if MigrationContext.configure(conn).get_current_revision() != head:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")

    def columns(self) -> set[str]:
        """Columns the store has (an older read-only store may lack some)."""
        from sqlalchemy import inspect

        insp = inspect(self.engine)
        if not insp.has_table(RunRecord.__tablename__):
            return set()
        return {c["name"] for c in insp.get_columns(RunRecord.__tablename__)}

    # -- plumbing ----------------------------------------------------------------------------------------------

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _write(self):
        """A write transaction that holds the write lock from its first statement (SQLite: BEGIN IMMEDIATE)."""
        from contextlib import contextmanager

        @contextmanager
        def txn():
            with self.engine.connect() as conn:
                conn.execution_options(immediate=True)
                with conn.begin():
                    yield conn
        return txn()

    def _rows(self, table, **equal_to) -> list:
        """Rows of `table` in id order, filtered on the columns given a value (bound parameters only)."""
        stmt = select(table).order_by(table.id)
        for column, value in equal_to.items():
            if value:
                stmt = stmt.where(getattr(table, column) == value)
        with self.session() as s:
            return list(s.scalars(stmt))

    # -- reading -----------------------------------------------------------------------------------------------

    def records(self, suite: str | None = None, status: str | None = None) -> list[RunRecord]:
        return self._rows(RunRecord, suite=suite, status=status)

    def by_key(self, suite: str) -> dict[str, RunRecord]:
        return {r.cell_key: r for r in self.records(suite)}

    def get(self, run_id: int) -> RunRecord | None:
        with self.session() as s:
            return s.get(RunRecord, run_id)

    def children(self, parent_id: int) -> list[RunRecord]:
        return self._rows(RunRecord, parent_id=parent_id)

    def running_count(self, suite: str, keys: list[str]) -> int:
        """Cells among `keys` that other workers hold (live or stale leases)."""
        from sqlalchemy import func

        n = 0
        with self.engine.connect() as conn:
            for chunk in _chunks(list(keys), 2000):
                n += conn.execute(select(func.count()).select_from(RunRecord).where(
                    RunRecord.suite == suite, RunRecord.status == RUNNING.value,
                    RunRecord.cell_key.in_(chunk))).scalar_one()
        return n

    def hosts_holding_leases(self, suite: str) -> set[str]:
        with self.engine.connect() as conn:
            return {h for (h,) in conn.execute(select(RunRecord.host).distinct().where(
                RunRecord.suite == suite, RunRecord.status == RUNNING.value, RunRecord.host.is_not(None)))}

    # -- the queue ---------------------------------------------------------------------------------------------

    def enqueue(self, cells: Iterable, command: str | None = None, output_root: str | None = None) -> int:
        """A pending row for every cell that has none yet (concurrent callers insert each row once).
        Returns how many rows were added."""
        cells = list(cells)
        if not cells:
            return 0
        suite = cells[0].suite
        with self.engine.connect() as conn:
            have = set(conn.execute(select(RunRecord.cell_key).where(RunRecord.suite == suite)).scalars())
        now, rows = utcnow(), []
        for cell in cells:
            if cell.key in have:
                continue
            rows.append({
                "suite": cell.suite, "cell_key": cell.key, "setting_key": cell.setting_key,
                "status": PENDING.value, "attempts": 0, "created_at": now, "config": cell.config(),
                "model": cell.model, "task": cell.task, "task_version": cell.task_version, "method": cell.method,
                "method_params": cell.method_params, "method_label": cell.row_label, "regime": cell.regime,
                "budget": cell.budget, "seed": cell.seed, "hparams": cell.hparams,
                "learning_rate": cell.hparams.get("learning_rate"), "num_processes": cell.num_processes,
                "command": command,
                "output_dir": os.path.join(output_root, cell.suite, cell.key) if output_root else None})
        added = 0
        for chunk in _chunks(rows, 500):
            added += self._insert_new(chunk)
        return added

    def _insert_new(self, rows: list[dict]) -> int:
        if self.backend in ("sqlite", "postgresql"):
            if self.backend == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            stmt = insert(RunRecord).on_conflict_do_nothing(index_elements=["suite", "cell_key"])
            with self.engine.begin() as conn:
                return conn.execute(stmt, rows).rowcount or 0
        from sqlalchemy.exc import IntegrityError   # other backends: row by row, a duplicate is someone else's

        added = 0
        for row in rows:
            try:
                with self.engine.begin() as conn:
                    conn.execute(RunRecord.__table__.insert(), row)
                added += 1
            except IntegrityError:
                pass
        return added

    def _gone_leases(self, suite: str, worker: Worker) -> list[int]:
        """Running cells whose worker ran on this host, in this process namespace, and no longer exists."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(RunRecord.id, RunRecord.pid, RunRecord.worker_id).where(
                RunRecord.suite == suite, RunRecord.status == RUNNING.value, RunRecord.host == worker.host)).all()
        return [rid for rid, pid, wid in rows
                if pid and pid != worker.pid and namespace_of(wid) == worker.pid_namespace and process_gone(pid)]

    def claim_next(self, suite: str, keys: list[str], worker: Worker, *, retry_failed: bool = False,
                   lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S, command: str | None = None,
                   output_root: str | None = None) -> Claim | None:
        """Claim the first claimable cell among `keys` (in the order the rows were queued), or None when none is
        left. One transaction: the row is read and leased under a lock no other worker can hold meanwhile."""
        now = utcnow()
        stale_before = now - dt.timedelta(seconds=lease_timeout_s)
        R = RunRecord
        running_stale = and_(R.status == RUNNING.value, or_(R.heartbeat_at.is_(None), R.heartbeat_at < stale_before))
        claimable = [R.status == PENDING.value, running_stale]
        gone = self._gone_leases(suite, worker)
        if gone:
            claimable.append(and_(R.status == RUNNING.value, R.id.in_(gone)))
        if worker.slurm_job_id:   # our own earlier incarnation: Slurm runs one instance of a (job, array task)
            claimable.append(and_(R.status == RUNNING.value, R.slurm_job_id == worker.slurm_job_id,
                                  R.slurm_array_task_id.is_(None) if worker.slurm_array_task_id is None
                                  else R.slurm_array_task_id == worker.slurm_array_task_id,
                                  or_(R.slurm_restart_count.is_(None),
                                      R.slurm_restart_count < (worker.slurm_restart_count or 0))))
        if retry_failed:   # only failures from before this worker started: not the ones it just made
            claimable.append(and_(R.status == FAILED.value, or_(R.finished_at.is_(None),
                                                                R.finished_at < (worker.started_at or now))))
        with self._write() as conn:
            row = None
            for chunk in _chunks(list(keys), 2000):
                stmt = (select(R.id, R.cell_key, R.status, R.attempts)
                        .where(R.suite == suite, R.parent_id.is_(None), R.cell_key.in_(chunk), or_(*claimable))
                        .order_by(R.id).limit(1))
                if self.backend == "postgresql":
                    stmt = stmt.with_for_update(skip_locked=True)
                row = conn.execute(stmt).first()
                if row is not None:
                    break
            if row is None:
                return None
            conn.execute(delete(R).where(R.parent_id == row.id))   # stage / member rows of an earlier attempt
            values = {name: None for name in RESULTS}
            values.update(worker.lease(now), status=RUNNING.value, attempts=R.attempts + 1, started_at=now)
            if command is not None:
                values["command"] = command
            if output_root is not None:
                values["output_dir"] = os.path.join(output_root, suite, row.cell_key)
            conn.execute(update(R).where(R.id == row.id).values(**values))
        return Claim(row.id, suite, row.cell_key, worker.worker_id, (row.attempts or 0) + 1, row.status)

    def start(self, cell, config: dict, command: str, output_dir: str, worker: Worker | None = None) -> Claim:
        """Queue one cell and claim it now, whatever its state (a single-process convenience: tests, tools)."""
        self.enqueue([cell], command)
        worker = worker or current_worker()
        now = utcnow()
        with self._write() as conn:
            row = conn.execute(select(RunRecord.id, RunRecord.status, RunRecord.attempts).where(
                RunRecord.suite == cell.suite, RunRecord.cell_key == cell.key)).one()
            conn.execute(delete(RunRecord).where(RunRecord.parent_id == row.id))
            values = {name: None for name in RESULTS}
            values.update(worker.lease(now), status=RUNNING.value, attempts=RunRecord.attempts + 1, started_at=now,
                          config=config, command=command, output_dir=output_dir)
            conn.execute(update(RunRecord).where(RunRecord.id == row.id).values(**values))
        return Claim(row.id, cell.suite, cell.key, worker.worker_id, (row.attempts or 0) + 1, row.status)

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the lease; False when it is no longer this worker's."""
        with self.engine.begin() as conn:
            n = conn.execute(update(RunRecord).where(
                RunRecord.id == claim.id, RunRecord.worker_id == claim.worker_id,
                RunRecord.status == RUNNING.value).values(heartbeat_at=utcnow())).rowcount
        return n == 1

    def release(self, claim: Claim) -> bool:
        """Give the cell back (preempted, interrupted): pending again, its attempt counted; the next worker to
        claim it resumes from the checkpoint in its output directory, if one was written."""
        with self.engine.begin() as conn:
            n = conn.execute(update(RunRecord).where(
                RunRecord.id == claim.id, RunRecord.worker_id == claim.worker_id,
                RunRecord.status == RUNNING.value).values(status=PENDING.value, heartbeat_at=None)).rowcount
        return n == 1

    def finish(self, claim: Claim, status: str, fields: dict, children: list[tuple[str, dict]] = (),
               before_commit: Callable[[dict, list[dict]], None] | None = None) -> RunRecord:
        """Record the outcome of a claimed cell in one transaction: its row, its stage / member rows
        (`children`: (key suffix, fields)), and status. `before_commit(record, child_records)` runs inside the
        transaction, once everything is decided and before anything is visible: the runner writes record.json
        there, so a completed row always has its files. Raises LeaseLost when another worker took the cell over
        (its lease went stale); nothing is written then."""
        for f in [fields, *(c for _, c in children)]:
            unknown = set(f) - set(RunRecord.COLUMNS)
            if unknown:
                raise ValueError(f"not columns of the store: {', '.join(sorted(unknown))}")
        now = utcnow()
        with self._write() as conn:
            with Session(bind=conn) as s:
                rec = s.get(RunRecord, claim.id, with_for_update=self.backend == "postgresql")
                if rec is None or rec.status != RUNNING.value or rec.worker_id != claim.worker_id:
                    owner = None if rec is None else f"{rec.status} by {rec.worker_id}"
                    raise LeaseLost(f"cell {claim.cell_key}: the lease was lost ({owner}); result not recorded")
                for k, v in fields.items():
                    if k not in ("id", "suite", "cell_key", "attempts", "created_at"):
                        setattr(rec, k, v)
                rec.status, rec.finished_at, rec.heartbeat_at = str(status), now, now
                kids = [self._child(rec, suffix, f, now) for suffix, f in children]
                s.add_all(kids)
                s.flush()
                if before_commit is not None:
                    before_commit(rec.as_dict(), [k.as_dict() for k in kids])
                s.commit()   # joined to the outer transaction: that one commits on leaving
        return self.get(claim.id)

    @staticmethod
    def _child(parent: RunRecord, suffix: str, fields: dict, now) -> RunRecord:
        """A stage or member-task row: the parent's identity and configuration, its own task, scores and cost,
        cell key PARENT_KEY.SUFFIX."""
        rec = RunRecord(suite=parent.suite, cell_key=f"{parent.cell_key}.{suffix}", parent_id=parent.id)
        for name in RunRecord.COLUMNS:
            if name not in ("id", "suite", "cell_key", "parent_id", "created_at"):
                setattr(rec, name, fields[name] if name in fields else getattr(parent, name))
        rec.setting_key = f"{parent.setting_key}.{suffix}"
        rec.finished_at, rec.created_at = now, now
        return rec

    # -- ingest ------------------------------------------------------------------------------------------------

    def ingest(self, record: dict, children: list[dict] = (), replace: bool = False) -> str:
        """Load a record.json (a node that could not reach the store wrote it). Idempotent by (suite, cell key):
        returns "added", "updated" (the row was pending / running / failed), "same" (already there), or
        "conflict" (a different completed result is stored; replaced only with replace=True)."""
        def values(d: dict) -> dict:
            out = {}
            for name in RunRecord.COLUMNS:
                if name in ("id", "parent_id") or name not in d:
                    continue
                v = d[name]
                if isinstance(RunRecord.__table__.columns[name].type, DateTime) and isinstance(v, str):
                    v = dt.datetime.fromisoformat(v)
                out[name] = v
            return out

        if record.get("status") not in (COMPLETED.value, FAILED.value):
            raise InputError(f"record of cell {record.get('cell_key')} is {record.get('status')}: only completed "
                             f"or failed records can be ingested")
        with self._write() as conn:
            with Session(bind=conn) as s:
                rec = s.scalars(select(RunRecord).where(RunRecord.suite == record["suite"],
                                                        RunRecord.cell_key == record["cell_key"])).first()
                outcome = "added"
                if rec is not None:
                    if rec.status == COMPLETED.value:
                        same = all(getattr(rec, k) == v for k, v in values(record).items()
                                   if k in ("score", "metrics", "finished_at", "config"))
                        if same:
                            return "same"
                        if not replace or record["status"] != COMPLETED.value:
                            return "conflict"
                    outcome = "updated"
                    s.execute(delete(RunRecord).where(RunRecord.parent_id == rec.id))
                else:
                    rec = RunRecord(suite=record["suite"], cell_key=record["cell_key"])
                    s.add(rec)
                for k, v in values(record).items():
                    setattr(rec, k, v)
                s.flush()
                for child in children:
                    kid = RunRecord(**values(child))
                    kid.parent_id = rec.id
                    s.add(kid)
                s.commit()
        return outcome

    # -- analyses ----------------------------------------------------------------------------------------------

    def add_analysis(self, run_id: int, kind: str, payload: dict) -> int:
        with self.session() as s:
            rec = s.get(RunRecord, run_id)
            row = AnalysisRecord(run_id=run_id, suite=rec.suite, kind=kind, payload=payload)
            s.add(row)
            s.commit()
            return row.id

    def analyses(self, suite: str | None = None, kind: str | None = None) -> list[AnalysisRecord]:
        from sqlalchemy import inspect

        if not inspect(self.engine).has_table(AnalysisRecord.__tablename__):
            return []  # a store written before analyses existed
        return self._rows(AnalysisRecord, suite=suite, kind=kind)
