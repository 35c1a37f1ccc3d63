"""The results store: one RunRecord per (suite, cell key), in any SQLAlchemy database.

SQLite (the default, results/harness.db) runs in WAL mode with a busy timeout so several processes
(Slurm array tasks, the leaderboard) can share it. Only rank 0 of a run writes.
"""

from __future__ import annotations

import datetime as dt
import os
import time

from sqlalchemy import (JSON, Float, Integer, String, Text, UniqueConstraint, create_engine, event, select)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from harness.enums import Status
from harness.errors import InputError

DEFAULT_DB = "sqlite:///results/harness.db"

RUNNING, COMPLETED, FAILED = Status.RUNNING, Status.COMPLETED, Status.FAILED


def default_db_url() -> str:
    return os.environ.get("HARNESS_DB") or DEFAULT_DB


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class RunRecord(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("suite", "cell_key", name="uq_suite_cell"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite: Mapped[str] = mapped_column(String(200), index=True)
    cell_key: Mapped[str] = mapped_column(String(64), index=True)
    setting_key: Mapped[str | None] = mapped_column(String(64))   # the cell key without the seed
    status: Mapped[str] = mapped_column(String(20), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    # what ran
    config: Mapped[dict] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(String(500), index=True)
    task: Mapped[str] = mapped_column(String(200), index=True)   # a task, or members joined by + (multi-task)
    task_version: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(50), index=True)
    method_params: Mapped[dict] = mapped_column(JSON)
    method_label: Mapped[str] = mapped_column(String(300))
    budget: Mapped[dict] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
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
    trainable_params: Mapped[int | None] = mapped_column(Integer)
    added_params: Mapped[int | None] = mapped_column(Integer)
    total_params: Mapped[int | None] = mapped_column(Integer)
    head_params: Mapped[int | None] = mapped_column(Integer)
    embedding_params: Mapped[int | None] = mapped_column(Integer)   # of the pretrained model (ALBERT: V*E + E*H)
    encoder_params: Mapped[int | None] = mapped_column(Integer)     # its layer stack, a shared block once
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
    adapter_bytes: Mapped[int | None] = mapped_column(Integer)  # its size on disk
    extra: Mapped[dict | None] = mapped_column(JSON)            # e.g. sequential stages' encoder checksums

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
    suite: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict] = mapped_column(JSON)


def _sqlite_pragmas(engine: Engine, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        if not read_only:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()


def make_engine(url: str, read_only: bool = False) -> Engine:
    try:
        parsed = make_url(url)
    except Exception:
        raise InputError(f'--db: not a database URL: "{url}" (e.g. sqlite:///results/harness.db)') from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:":
            if read_only:
                if not os.path.exists(path):
                    raise FileNotFoundError(path)
                # mode=ro: the leaderboard can never write to a shared store
                engine = create_engine(f"sqlite:///file:{os.path.abspath(path)}?mode=ro&uri=true")
                _sqlite_pragmas(engine, read_only=True)
                return engine
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
        def _read_only(conn):
            if conn.dialect.name in ("postgresql", "mysql", "mariadb"):
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    return engine


class Store:
    def __init__(self, url: str | None = None, read_only: bool = False, create: bool = True):
        self.url = url or default_db_url()
        self.engine = make_engine(self.url, read_only=read_only)
        if create and not read_only:
            self._create_tables()

    def _create_tables(self) -> None:
        from sqlalchemy.exc import OperationalError, ProgrammingError

        for attempt in range(3):  # processes starting together (Slurm arrays) race on CREATE TABLE
            try:
                Base.metadata.create_all(self.engine)
                self._add_missing_columns()
                return
            except (OperationalError, ProgrammingError):
                if attempt == 2:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def _add_missing_columns(self) -> None:
        """Stores written by an older harness lack columns added since: add them (all nullable), so old
        results stay readable and comparable."""
        from sqlalchemy import inspect

        have = {c["name"] for c in inspect(self.engine).get_columns(RunRecord.__tablename__)}
        missing = [c for c in RunRecord.__table__.columns if c.name not in have]
        if not missing:
            return
        with self.engine.begin() as conn:
            for col in missing:
                kind = col.type.compile(dialect=self.engine.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {RunRecord.__tablename__} ADD COLUMN "{col.name}" {kind}')

    def columns(self) -> set[str]:
        """Columns the store has (an older read-only store may lack some)."""
        from sqlalchemy import inspect

        insp = inspect(self.engine)
        if not insp.has_table(RunRecord.__tablename__):
            return set()
        return {c["name"] for c in insp.get_columns(RunRecord.__tablename__)}

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _rows(self, table, **equal_to) -> list:
        """Rows of `table` in id order, filtered on the columns given a value (bound parameters only)."""
        stmt = select(table).order_by(table.id)
        for column, value in equal_to.items():
            if value:
                stmt = stmt.where(getattr(table, column) == value)
        with self.session() as s:
            return list(s.scalars(stmt))

    def records(self, suite: str | None = None, status: str | None = None) -> list[RunRecord]:
        return self._rows(RunRecord, suite=suite, status=status)

    def by_key(self, suite: str) -> dict[str, RunRecord]:
        return {r.cell_key: r for r in self.records(suite)}

    def get(self, run_id: int) -> RunRecord | None:
        with self.session() as s:
            return s.get(RunRecord, run_id)

    def start(self, cell, config: dict, command: str, output_dir: str) -> int:
        """Mark a cell running (a new record, or the old failed/stale one reset). Returns the record id."""
        with self.session() as s:
            rec = s.scalars(select(RunRecord).where(RunRecord.suite == cell.suite,
                                                    RunRecord.cell_key == cell.key)).first()
            if rec is None:
                rec = RunRecord(suite=cell.suite, cell_key=cell.key, attempts=1)
                s.add(rec)
            else:
                for child in s.scalars(select(RunRecord).where(RunRecord.parent_id == rec.id)):
                    s.delete(child)  # stages / member rows of the earlier attempt
                for name in RunRecord.COLUMNS:
                    if name not in ("id", "suite", "cell_key", "attempts", "created_at"):
                        setattr(rec, name, None)
                rec.attempts = (rec.attempts or 0) + 1
            rec.status, rec.started_at = RUNNING, utcnow()
            rec.setting_key = cell.setting_key
            rec.config = config
            rec.model, rec.task, rec.task_version = cell.model, cell.task, cell.task_version
            rec.method, rec.method_params, rec.method_label = cell.method, cell.method_params, cell.row_label
            rec.regime = cell.regime
            rec.budget, rec.seed, rec.hparams = cell.budget, cell.seed, cell.hparams
            rec.learning_rate = cell.hparams.get("learning_rate")
            rec.num_processes = cell.num_processes
            rec.command, rec.output_dir = command, output_dir
            s.commit()
            return rec.id

    def add_child(self, parent_id: int, suffix: str, fields: dict) -> RunRecord:
        """A stage or member-task row of a sequential / multi-task run: the parent's identity and configuration,
        its own task, scores and cost (`fields`), cell key PARENT_KEY.SUFFIX."""
        with self.session() as s:
            parent = s.get(RunRecord, parent_id)
            rec = RunRecord(suite=parent.suite, cell_key=f"{parent.cell_key}.{suffix}", parent_id=parent_id)
            for name in RunRecord.COLUMNS:
                if name not in ("id", "suite", "cell_key", "parent_id", "created_at"):
                    setattr(rec, name, fields[name] if name in fields else getattr(parent, name))
            rec.setting_key = f"{parent.setting_key}.{suffix}"
            rec.finished_at = utcnow()
            s.add(rec)
            s.commit()
            return rec

    def children(self, parent_id: int) -> list[RunRecord]:
        return self._rows(RunRecord, parent_id=parent_id)

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

    def finish(self, run_id: int, status: str, fields: dict) -> RunRecord:
        with self.session() as s:
            rec = s.get(RunRecord, run_id)
            for k, v in fields.items():
                if k in RunRecord.COLUMNS and k not in ("id", "suite", "cell_key"):
                    setattr(rec, k, v)
            rec.status, rec.finished_at = status, utcnow()
            s.commit()
            return rec
