"""The store's schema: the `runs` and `analyses` tables (SQLAlchemy), the one list of run columns every other
module derives from, and the Alembic migrations that bring a store to it (harness/store/migrations)."""

from __future__ import annotations

import datetime as dt
import functools
import os
import typing

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, Text, UniqueConstraint, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from harness.spec.errors import InputError
from harness.spec.status import INTEGER_MAX
from harness.store.values import store_text
from harness.store.lease import utcnow
from harness.store.redact import redact_env, redact_text

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


class Base(DeclarativeBase):
    pass


# Each run column is one of four kinds. Identity: what identifies a cell's row and what it was configured with,
# kept when a cell is claimed again. Lease: the worker that claimed it (kept after it finishes: who ran it,
# where). Checkpoint: how far the cell's checkpoint got, kept by the claim that resumes it and emptied by a
# finish (a recorded cell keeps no checkpoint). Every other column is a result of one attempt and starts empty on
# each claim.
def _identity(*args, **kw):
    return mapped_column(*args, info={"group": "identity"}, **kw)


def _lease(*args, **kw):
    return mapped_column(*args, info={"group": "lease"}, **kw)


def _checkpoint(*args, **kw):
    return mapped_column(*args, info={"group": "checkpoint"}, **kw)


class _Redacted(TypeDecorator):
    """A column whose value can hold a store URL (an error message, a command line, an environment's argv): its
    passwords are hidden (harness.store.redact) on every way in (Core inserts and updates, ORM flushes) and every
    way out (rows written before this, or by other tools), so no reader (exports, `harness status`, the board)
    can show one. ORM objects are redacted when the attribute is set (below): record.json files are written
    from them. Free text also has its NUL characters replaced there (values.store_text)."""

    def process_bind_param(self, value, dialect):
        return self.redact(value)

    def process_result_value(self, value, dialect):
        return self.redact(value)


def _kept_text(text: str | None) -> str | None:
    return redact_text(store_text(text))


class RedactedText(_Redacted):
    impl = Text
    cache_ok = True   # no state: one cache key for every use (SQLAlchemy asks each class itself)
    redact = staticmethod(_kept_text)


class RedactedEnv(_Redacted):
    impl = JSON
    cache_ok = True
    redact = staticmethod(redact_env)


class RunRecord(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("suite", "cell_key", name="uq_suite_cell"),
                      Index("ix_runs_suite_status", "suite", "status"))

    id: Mapped[int] = _identity(Integer, primary_key=True)
    suite: Mapped[str] = _identity(Text, index=True)
    cell_key: Mapped[str] = _identity(String(64), index=True)
    setting_key: Mapped[str | None] = _identity(Text)       # the cell key without the seed
    status: Mapped[str] = _identity(String(20), index=True)
    error: Mapped[str | None] = mapped_column(RedactedText)
    attempts: Mapped[int] = _identity(Integer, default=1)
    created_at: Mapped[dt.datetime] = _identity(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    # what ran
    config: Mapped[dict] = _identity(JSON)
    model: Mapped[str] = _identity(Text, index=True)
    task: Mapped[str] = _identity(Text, index=True)   # a task, or members joined by + (multi-task)
    task_version: Mapped[int] = _identity(Integer)
    method: Mapped[str] = _identity(String(50), index=True)
    method_params: Mapped[dict] = _identity(JSON)
    method_label: Mapped[str] = _identity(Text)
    budget: Mapped[dict] = _identity(JSON)
    seed: Mapped[int] = _identity(BigInteger)
    hparams: Mapped[dict] = _identity(JSON)
    learning_rate: Mapped[float | None] = _identity(Float)
    num_processes: Mapped[int] = _identity(Integer, default=1)

    # sequential / multi-task cells: the cell's row has regime "sequential" (its last stage) or "multitask" (the
    # joint run); its stages / member tasks are rows of their own ("sequential_stage", "multitask_member") that
    # point at it with parent_id. Single-task runs leave these empty.
    regime: Mapped[str | None] = _identity(String(20))
    parent_id: Mapped[int | None] = _identity(Integer, index=True)
    stage: Mapped[int | None] = _identity(Integer)

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
    # compute (harness/train/flops.py): FLOPs counted with torch's FlopCounterMode on the steps that ran, the
    # achieved rate and its share of the device's peak (MFU); the threads each process trained with
    train_flops: Mapped[float | None] = mapped_column(Float)
    eval_flops: Mapped[float | None] = mapped_column(Float)
    flops_per_s: Mapped[float | None] = mapped_column(Float)
    mfu: Mapped[float | None] = mapped_column(Float)
    num_threads: Mapped[int | None] = mapped_column(Integer)
    predicted_time_s: Mapped[float | None] = mapped_column(Float)   # train + eval, as `harness estimate` puts it

    # quality (GLUE points, x100)
    score: Mapped[float | None] = mapped_column(Float)           # main score of the final evaluation
    best_score: Mapped[float | None] = mapped_column(Float)      # best main score over evaluations
    metrics: Mapped[dict | None] = mapped_column(JSON)           # final dev metrics
    best_metrics: Mapped[dict | None] = mapped_column(JSON)
    history: Mapped[list | None] = mapped_column(JSON)           # [{step, epoch, metrics, score, train_loss}]
    trivial_scores: Mapped[dict | None] = mapped_column(JSON)    # {baseline name: main score} on the same dev set

    # provenance
    env: Mapped[dict | None] = mapped_column(RedactedEnv)
    command: Mapped[str | None] = _identity(RedactedText)
    output_dir: Mapped[str | None] = _identity(Text)
    adapter_path: Mapped[str | None] = mapped_column(Text)      # the saved adapter + head (adapter methods)
    adapter_bytes: Mapped[int | None] = mapped_column(BigInteger)  # its size on disk
    extra: Mapped[dict | None] = mapped_column(JSON)            # e.g. sequential stages' encoder checksums

    # the lease of the worker that claimed the cell (kept after it finishes: who ran it, where)
    worker_id: Mapped[str | None] = _lease(String(200))
    host: Mapped[str | None] = _lease(String(255))
    pid: Mapped[int | None] = _lease(Integer)
    slurm_job_id: Mapped[str | None] = _lease(String(64))
    slurm_array_task_id: Mapped[int | None] = _lease(Integer)
    slurm_restart_count: Mapped[int | None] = _lease(Integer)
    claimed_at: Mapped[dt.datetime | None] = _lease()
    heartbeat_at: Mapped[dt.datetime | None] = _lease()

    # a cell given back by a stop signal: the optimizer step its checkpoint holds, of the steps its loop plans
    # (Store.release); what `harness status` prices as done (harness.report.progress.time_left)
    checkpoint_step: Mapped[int | None] = _checkpoint(Integer)
    checkpoint_total_steps: Mapped[int | None] = _checkpoint(Integer)

    def as_dict(self) -> dict:
        out = {}
        for c in self.__table__.columns:
            v = getattr(self, c.name)
            out[c.name] = v.isoformat() if isinstance(v, dt.datetime) else v
        return out



class StoreInfo(Base):
    """One row: the store's random id, made by its migration (0005). An output folder records the id of the store
    whose runs it holds (harness/launch/output_binding.py)."""

    __tablename__ = "store_info"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(36))


class AnalysisRecord(Base):
    """An analysis of a stored run, e.g. kind "adapter_ablation" with payload
    {"num_layers": L, "baseline": score, "spans": [[first_layer, last_layer, score], ...]}: the dev score with
    the adapters of layers first..last removed (Houlsby et al. 2019, Fig. 6)."""

    __tablename__ = "analyses"
    # an end-of-suite analysis is a work item (work_item "suite"): one row per (run, kind), claimed by the one
    # worker whose insert wins, leased like a cell (worker_id, heartbeat_at), then completed or failed. Rows
    # asked for by hand (`harness ablate`) have no work_item and may repeat.
    __table_args__ = (UniqueConstraint("run_id", "kind", "work_item", name="uq_analyses_work_item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    suite: Mapped[str] = mapped_column(Text, index=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict] = mapped_column(JSON)
    work_item: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str | None] = mapped_column(String(20))   # a Status; NULL: completed (rows from before 0003)
    error: Mapped[str | None] = mapped_column(RedactedText)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column()


def _redact_when_set(attribute, redact) -> None:
    event.listen(attribute, "set", lambda target, value, old, initiator: redact(value), retval=True)


for _table in (RunRecord, AnalysisRecord):   # the ORM side of _Redacted: what a finish or an ingest sets
    for _column in _table.__table__.columns:
        if isinstance(_column.type, _Redacted):
            _redact_when_set(getattr(_table, _column.name), _column.type.redact)


RUN_COLUMNS: tuple[str, ...] = tuple(c.name for c in RunRecord.__table__.columns)   # in declaration order
IDENTITY = tuple(c.name for c in RunRecord.__table__.columns if c.info.get("group") == "identity")
LEASE = tuple(c.name for c in RunRecord.__table__.columns if c.info.get("group") == "lease")
CHECKPOINT = tuple(c.name for c in RunRecord.__table__.columns if c.info.get("group") == "checkpoint")
RESULTS = tuple(c for c in RUN_COLUMNS if c not in IDENTITY and c not in LEASE and c not in CHECKPOINT)

INT_BOUNDS = {Integer: INTEGER_MAX, BigInteger: 2 ** 63 - 1}   # what PostgreSQL's INTEGER / BIGINT hold
# Every number column but these is a count, a size, a time, a rate or an id, none of them below zero: a record
# holding a negative one (attempts -3) was stored as it was and read by the tables and estimates as a run's.
# A score may be negative (GLUE points: MCC and correlations go below zero).
SIGNED = ("score", "best_score")


def _field(column, annotation):
    """A pydantic field for a run column: its Python type (Mapped[...]), bounds the database enforces (String(n),
    INTEGER / BIGINT), none below zero but SIGNED, required when the column is NOT NULL without a default."""
    from pydantic import Field

    (kind,) = typing.get_args(annotation)
    limits = {}
    if isinstance(column.type, String) and not isinstance(column.type, Text) and column.type.length:
        limits["max_length"] = column.type.length
    bound = INT_BOUNDS.get(type(column.type))
    if bound:
        limits.update(ge=-bound, le=bound)
    if isinstance(column.type, (Integer, Float)) and column.name not in SIGNED:
        limits["ge"] = 0
    required = not column.nullable and column.default is None and not column.primary_key
    return (kind, Field(... if required else None, **limits))


@functools.cache
def record_models():
    """The typed form of a record.json (what the runner writes beside a cell's files: every run column, as
    RunRecord.as_dict() gives it, plus `children`, the stage / member rows in the same form): one pydantic
    model per level, derived from the columns above, strict (no string for a number, no NaN, no unknown
    field). Returns (record model, child row model)."""
    from pydantic import BaseModel, ConfigDict, create_model

    class _Strict(BaseModel):
        model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")

    hints = typing.get_type_hints(RunRecord)
    fields = {c.name: _field(c, hints[c.name]) for c in RunRecord.__table__.columns}
    fields["id"] = (int | None, None)   # a record kept while the store was unreachable has no row id yet
    row = create_model("RunRow", __base__=_Strict, **fields)
    # a record kept while the store was unreachable (launch/attempt.py) also says so, and under which claim
    record = create_model("RunRecordFile", __base__=row, children=(list[row], []),
                          ingest_only=(bool, False), claim=(dict | None, None))
    return record, row


@functools.cache
def known_revisions() -> tuple[frozenset[str], str]:
    """The revisions of the migration files (harness/store/migrations/versions) and the newest, as their source
    declares them (`revision = "0006"`, `down_revision = "0005"`, as Alembic's template writes them, or as one
    tuple assignment). Read as text: check_revision runs on every command, and Alembic's own reading (its imports,
    then each file's) added ~0.25 s to each read-only one. tests/store/test_store.py checks both readings agree."""
    import ast

    folder = os.path.join(MIGRATIONS, "versions")
    revisions, parents = set(), set()
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py") or name == "__init__.py":
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            module = ast.parse(f.read())
        declared = {}
        for node in module.body:
            for target in node.targets if isinstance(node, ast.Assign) else ():
                pairs = (zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple)
                         and isinstance(node.value, ast.Tuple) else [(target, node.value)])
                declared |= {t.id: ast.literal_eval(v) for t, v in pairs if isinstance(t, ast.Name)
                             and t.id in ("revision", "down_revision")}
        revisions.add(declared["revision"])
        down = declared.get("down_revision")
        parents.update(down if isinstance(down, (tuple, list)) else [down] if down else [])
    return frozenset(revisions), ", ".join(sorted(revisions - parents))


def _migrations():
    """The Alembic configuration of the store's migrations and their script directory."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    return cfg, ScriptDirectory.from_config(cfg)


class StoreTooNew(InputError):
    """The store's schema is at a revision this harness does not have. Reached, and read: not a store this machine
    cannot reach, so `harness slurm` (which leaves unreachable stores to its workers) refuses it too."""


def stored_revisions(engine: Engine) -> list[str] | None:
    """The revisions the store's alembic_version table holds (Alembic's own record of its schema), read without
    Alembic; None where there is no such table (a new store, or one from before migrations)."""
    from sqlalchemy import inspect, text

    if not inspect(engine).has_table("alembic_version"):
        return None
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()


def check_revision(engine: Engine, shown: str) -> list[str] | None:
    """InputError where the store's schema is at a revision this harness does not have: a newer harness migrated
    it, and this one can neither migrate it (Alembic cannot find the revision: a traceback) nor know what its
    columns mean now. A store from before migrations (no alembic_version) is an older one. Returns the revisions
    it read (stored_revisions), for upgrade."""
    found = stored_revisions(engine)
    if found is None:
        return None
    known, head = known_revisions()
    unknown = [v for v in found if v not in known]
    if unknown:
        raise StoreTooNew(f"--db: the store {shown} is at schema revision {unknown[0]}, which this harness does not "
                         f"have (its newest: {head}): a newer harness wrote it; read and write it with that release "
                         f"or a later one")
    return found


def upgrade(engine: Engine, write_transaction, stored: list[str] | None = None) -> None:
    """Bring the schema to the newest Alembic revision. Workers starting together (a Slurm array) race here:
    the migration runs under the database's write lock (SQLite) or an advisory lock (PostgreSQL), and
    whoever comes second finds it done. `write_transaction()` opens a connection holding the write lock.
    A store already at the newest revision (what nearly every writer opens) is told by its version table and the
    files' revisions read as text: importing Alembic and loading its script directory to learn it cost each
    writing process ~0.1 s of CPU. `stored`: the version table as the caller just read it (check_revision), not
    read again; None reads it."""
    if (stored if stored is not None else stored_revisions(engine)) == [known_revisions()[1]]:
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg, scripts = _migrations()
    head = scripts.get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    with write_transaction() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")   # any fixed number: ours
        if MigrationContext.configure(conn).get_current_revision() != head:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
