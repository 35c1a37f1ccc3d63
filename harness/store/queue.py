"""The work queue: every cell of a suite is a row; workers claim, lease, heartbeat, release and finish them.

Every cell of a suite gets a row (status pending) when a worker first sees the suite. Workers claim the next
claimable row in one transaction (PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED; SQLite: BEGIN IMMEDIATE),
writing a lease (worker, host, pid, Slurm ids, claimed_at, heartbeat_at) that they keep fresh while training.
A cell is claimable when it is pending, when its lease went stale (no heartbeat for the lease timeout, or its
worker's process is gone on this host), or, with retry_failed, when it failed before this worker started.
Every lease time is written and compared on the database's clock (db_now), never a worker's: clock skew
between nodes cannot expire a live lease or keep a dead one alive. "Its process is gone" is judged only for
leases of the same host id (harness.store.lease.host_identity), and a claim takes such a lease only if it
still holds exactly the worker, pid and attempt that were judged gone.
Finishing is one transaction that checks the lease is still ours, writes the run row and its stage/member rows,
and marks it completed; files are written (atomically) before that commit. So any number of workers on one
suite train every cell once, and a kill at any point leaves a cell either completed with everything or
claimable again.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, Iterable

from sqlalchemy import Float, and_, cast, delete, func, literal, or_, select, update
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import DateTime

from harness.spec.layout import RunLayout
from harness.spec.status import DEFAULT_LEASE_TIMEOUT_S, Status
from harness.store.values import store_text
from harness.store.lease import Claim, Worker, current_worker, host_id_of, process_gone, utcnow
from harness.store.schema import CHECKPOINT, RESULTS, RUN_COLUMNS, RunRecord as R

CHILD_KEPT = ("id", "suite", "cell_key", "parent_id", "created_at")   # a child row's own, never its parent's


class LeaseLost(RuntimeError):
    """The cell was claimed by another worker after this one's lease went stale: its result is not recorded."""


def chunks(items: list, n: int = 2000):
    """Slices of at most n: IN (...) lists and multi-row inserts stay under every backend's parameter limit."""
    for i in range(0, len(items), n):
        yield items[i:i + n]


class db_now(FunctionElement):
    """SQL: the database's clock, UTC and naive like every time column, `shift_s` seconds later (earlier when
    negative). SQLite: text in the very format SQLAlchemy stores datetimes in ('YYYY-MM-DD HH:MM:SS.ffffff', not
    CURRENT_TIMESTAMP's 'YYYY-MM-DD HH:MM:SS'), so it compares right with every row, old or new; PostgreSQL: a
    timestamp without time zone (no session time zone involved)."""

    type = DateTime()
    name = "db_now"
    inherit_cache = True

    def __init__(self, shift_s: float = 0.0):
        super().__init__(literal(float(shift_s), Float()))


@compiles(db_now, "sqlite")
def _db_now_sqlite(element, compiler, **kw):
    shift = compiler.process(list(element.clauses)[0], **kw)
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.6f seconds', {shift})) || '000')"


@compiles(db_now, "postgresql")
def _db_now_postgresql(element, compiler, **kw):
    shift = compiler.process(cast(list(element.clauses)[0], Float()), **kw)
    return f"((statement_timestamp() AT TIME ZONE 'UTC') + make_interval(secs => {shift}))"


@compiles(db_now, "mysql")
@compiles(db_now, "mariadb")
def _db_now_mysql(element, compiler, **kw):
    shift = compiler.process(list(element.clauses)[0], **kw)
    return f"TIMESTAMPADD(MICROSECOND, ROUND({shift} * 1000000), UTC_TIMESTAMP(6))"


@compiles(db_now)
def _db_now_other(element, compiler, **kw):
    raise CompileError(f"no lease clock for {compiler.dialect.name}: the work queue needs SQLite, PostgreSQL or "
                       f"MySQL")


def stale_lease(lease_timeout_s: float, table=R):
    """SQL, the staleness rule of every leased row (cells in `runs`, end-of-suite analyses in `analyses`; claims,
    ingest and `harness status` alike): running with a lease whose heartbeat is missing or older than the lease
    timeout, on the database's clock."""
    return and_(table.status == Status.RUNNING.value,
                or_(table.heartbeat_at.is_(None), table.heartbeat_at < db_now(-lease_timeout_s)))


def started_on_db_clock(conn, worker: Worker) -> dt.datetime:
    """When `worker` started, on the database's clock: its age on its own clock taken from the database's time.
    Read inside the claim's transaction, once any wait for the write lock is over, and the database first: the
    later local reading can only make the age longer and the start earlier, so a failure the worker made itself
    never reads as older than the worker (--retry-failed retries only failures from before it started). (Taking
    the age before the transaction and the database's time when the claim's statement ran retried a worker's
    own failure whenever the claim waited for the lock, or the process paused, longer than it had taken to fail.)"""
    db_time = conn.execute(select(db_now())).scalar_one()
    age_s = (utcnow() - worker.started_at).total_seconds() if worker.started_at else 0.0
    return db_time - dt.timedelta(seconds=max(age_s, 0.0))


def _output_dir(output_root: str | None, suite: str, key: str) -> str | None:
    return RunLayout(output_root).cell_dir(suite, key) if output_root else None


def _new_lease(worker: Worker, **values) -> dict:
    """A claim's values: a fresh lease (on the database's clock), one more attempt, every result column emptied;
    `values` on top."""
    return {**{name: None for name in RESULTS}, **worker.lease(db_now()), "status": Status.RUNNING.value,
            "attempts": R.attempts + 1, "started_at": db_now(), **values}


def _claim(row, suite: str, cell_key: str, worker: Worker) -> Claim:
    """The Claim of a row just leased (`row`: its id, status, attempts and error as read before the lease): a
    retried failure's error travels with it, first line only (the lease empties the row's)."""
    failed = row.status == Status.FAILED.value and row.error
    return Claim(row.id, suite, cell_key, worker.worker_id, (row.attempts or 0) + 1, row.status,
                 row.error.splitlines()[0] if failed else None)


class WorkQueue:
    """The queue's side of a Store (harness.store.db): needs its engine, backend, `_write()`, `reading()`, `get()`
    and `_absent`."""

    def enqueue(self, cells: Iterable, command: str | None = None, output_root: str | None = None) -> int:
        """A pending row for every cell that has none yet (concurrent callers insert each row once).
        Returns how many rows were added."""
        cells = list(cells)
        if not cells:
            return 0
        suite = cells[0].suite
        with self.engine.connect() as conn:
            have = set(conn.execute(select(R.cell_key).where(R.suite == suite)).scalars())
        now, rows = utcnow(), []
        for cell in cells:
            if cell.key in have:
                continue
            rows.append({
                "suite": cell.suite, "cell_key": cell.key, "setting_key": cell.setting_key,
                "status": Status.PENDING.value, "attempts": 0, "created_at": now, "config": cell.config(),
                **cell.columns(),   # what the configuration fixes, as ingest checks a record against it
                "command": command, "output_dir": _output_dir(output_root, cell.suite, cell.key)})
        return sum(self._insert_new(chunk) for chunk in chunks(rows, 500))

    def _insert_new(self, rows: list[dict]) -> int:
        if self.backend in ("sqlite", "postgresql"):
            if self.backend == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            stmt = insert(R).on_conflict_do_nothing(index_elements=["suite", "cell_key"])
            with self.engine.begin() as conn:
                if self.backend == "sqlite":
                    return conn.execute(stmt, rows).rowcount
                # psycopg's many-row insert has no row count (-1): the rows it added are the ids it returns
                return len(conn.execute(stmt.returning(R.id), rows).all())
        from sqlalchemy.exc import IntegrityError   # other backends: row by row, a duplicate is someone else's

        added = 0
        for row in rows:
            try:
                with self.engine.begin() as conn:
                    conn.execute(R.__table__.insert(), row)
                added += 1
            except IntegrityError:
                pass
        return added

    def _gone_leases(self, suite: str, worker: Worker):
        """SQL: the running cells whose worker ran in this worker's host id (same boot, same PID namespace) and
        whose process no longer exists, each exactly as it was judged: id, worker, pid and attempt. Judged outside
        the claim's transaction (no lock held while looking at processes), so the claim re-checks them: a lease
        that another worker took over meanwhile no longer matches (None: nothing judged gone)."""
        if worker.host_id is None:
            return None
        with self.engine.connect() as conn:
            rows = conn.execute(select(R.id, R.pid, R.worker_id, R.attempts).where(
                R.suite == suite, R.status == Status.RUNNING.value, R.host == worker.host)).all()
        gone = [and_(R.id == rid, R.worker_id == wid, R.pid == pid, R.attempts == attempts)
                for rid, pid, wid, attempts in rows
                if pid and wid != worker.worker_id and pid != worker.pid and host_id_of(wid) == worker.host_id
                and process_gone(pid)]
        return and_(R.status == Status.RUNNING.value, or_(*gone)) if gone else None

    def claim_next(self, suite: str, keys: list[str], worker: Worker, *, retry_failed: bool = False,
                   lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S, command: str | None = None,
                   output_root: str | None = None) -> Claim | None:
        """Claim the first claimable cell among `keys` (in the order the rows were queued), or None when none is
        left. One transaction: the row is read and leased under a lock no other worker can hold meanwhile, and
        the lease is written only where the row still matches what made it claimable. Every claimable row is
        pending, running or failed: harness.launch.summary.nothing_to_do relies on it (a worker without such a
        row exits before importing torch)."""
        claimable = [R.status == Status.PENDING.value, stale_lease(lease_timeout_s)]
        gone = self._gone_leases(suite, worker)
        if gone is not None:
            claimable.append(gone)
        if worker.slurm_job_id:   # our own earlier incarnation: Slurm runs one instance of a (job, array task)
            claimable.append(and_(R.status == Status.RUNNING.value, R.slurm_job_id == worker.slurm_job_id,
                                  R.slurm_array_task_id.is_(None) if worker.slurm_array_task_id is None
                                  else R.slurm_array_task_id == worker.slurm_array_task_id,
                                  or_(R.slurm_restart_count.is_(None),
                                      R.slurm_restart_count < (worker.slurm_restart_count or 0))))
        with self._write() as conn:
            if retry_failed:
                claimable.append(and_(R.status == Status.FAILED.value,
                                      or_(R.finished_at.is_(None), R.finished_at < started_on_db_clock(conn, worker))))
            claimable = or_(*claimable)
            row = None
            for chunk in chunks(list(keys)):
                stmt = (select(R.id, R.cell_key, R.status, R.attempts, R.error)
                        .where(R.suite == suite, R.parent_id.is_(None), R.cell_key.in_(chunk), claimable)
                        .order_by(R.id).limit(1))
                if self.backend == "postgresql":
                    stmt = stmt.with_for_update(skip_locked=True)
                row = conn.execute(stmt).first()
                if row is not None:
                    break
            if row is None:
                return None
            values = {"command": command} if command is not None else {}
            if output_root is not None:
                values["output_dir"] = _output_dir(output_root, suite, row.cell_key)
            if not self._lease(conn, row.id, worker, claimable, **values):
                return None   # cannot happen under the lock; never two holders if it did
        return _claim(row, suite, row.cell_key, worker)

    def start(self, cell, config: dict, command: str, output_dir: str, worker: Worker | None = None) -> Claim:
        """Queue one cell and claim it now, whatever its state (a single-process convenience: tests, tools)."""
        self.enqueue([cell], command)
        worker = worker or current_worker()
        with self._write() as conn:
            row = conn.execute(select(R.id, R.status, R.attempts, R.error).where(
                R.suite == cell.suite, R.cell_key == cell.key)).one()
            self._lease(conn, row.id, worker, config=config, command=command, output_dir=output_dir)
        return _claim(row, cell.suite, cell.key, worker)

    @staticmethod
    def _lease(conn, run_id: int, worker: Worker, only_if=None, **values) -> bool:
        """Lease a row to `worker` (inside the claiming transaction) if it still matches `only_if`: the row's
        results are emptied, the attempt counted, stage / member rows of an earlier attempt go. False (nothing
        changed) when it no longer matches."""
        where = [R.id == run_id] + ([only_if] if only_if is not None else [])
        if conn.execute(update(R).where(*where).values(**_new_lease(worker, **values))).rowcount != 1:
            return False
        conn.execute(delete(R).where(R.parent_id == run_id))
        return True

    def _update_lease(self, claim: Claim, **values) -> bool:
        """Change the row of a cell this worker still holds; False when the lease is no longer its own."""
        with self.engine.begin() as conn:
            n = conn.execute(update(R).where(R.id == claim.id, R.worker_id == claim.worker_id,
                                             R.status == Status.RUNNING.value).values(**values)).rowcount
        return n == 1

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the lease; False when it is no longer this worker's."""
        return self._update_lease(claim, heartbeat_at=db_now())

    def predict(self, claim: Claim, seconds: float) -> bool:
        """Write the cell's predicted train + eval time (harness.report.progress) into the row this worker holds:
        after the claim, which empties every result column, and kept by finish, which sets only what it has."""
        return self._update_lease(claim, predicted_time_s=float(seconds))

    def release(self, claim: Claim, progress: tuple[int, int] | None = None) -> bool:
        """Give the cell back (preempted, interrupted): pending again, its attempt counted; the next worker to
        claim it resumes from the checkpoint in its output directory, if one was written. `progress`: (step,
        total steps) of the checkpoint just written, kept until the cell is finished (None: no new checkpoint,
        an earlier one's stays)."""
        values = {}
        if progress is not None:
            values = {"checkpoint_step": int(progress[0]), "checkpoint_total_steps": int(progress[1])}
        return self._update_lease(claim, status=Status.PENDING.value, heartbeat_at=None, **values)

    def forget_checkpoint(self, claim: Claim) -> bool:
        """Empty the checkpoint step of a cell this worker holds: its claim kept the step of the checkpoint it was to
        resume (release), but the loop started over from step 0 (the checkpoint refused: another device, precision
        or code; or gone), so `harness status` prices the cell whole again, not by the steps the checkpoint held."""
        return self._update_lease(claim, **{name: None for name in CHECKPOINT})

    def finish(self, claim: Claim, status: str, fields: dict, children: list[tuple[str, dict]] = (),
               before_commit: Callable[[dict, list[dict]], None] | None = None) -> R:
        """Record the outcome of a claimed cell in one transaction: its row, its stage / member rows
        (`children`: (key suffix, fields)), and status. `before_commit(record, child_records)` runs inside the
        transaction, once everything is decided and before anything is visible: the runner writes record.json
        there, so a completed row always has its files. Raises LeaseLost when another worker took the cell over
        (its lease went stale); nothing is written then."""
        for f in [fields, *(c for _, c in children)]:
            unknown = set(f) - set(RUN_COLUMNS)
            if unknown:
                raise ValueError(f"not columns of the store: {', '.join(sorted(unknown))}")
        # text as the store keeps it (a NUL replaced), so the row and the record.json written from it agree
        fields = {k: store_text(v) for k, v in fields.items()}
        children = [(suffix, {k: store_text(v) for k, v in f.items()}) for suffix, f in children]
        with self._write() as conn:
            now = conn.execute(select(db_now())).scalar_one()   # the database's clock, read inside the transaction
            with Session(bind=conn) as s:
                rec = s.get(R, claim.id, with_for_update=self.backend == "postgresql")
                if rec is None or rec.status != Status.RUNNING.value or rec.worker_id != claim.worker_id:
                    owner = None if rec is None else f"{rec.status} by {rec.worker_id}"
                    raise LeaseLost(f"cell {claim.cell_key}: the lease was lost ({owner}); result not recorded")
                for k, v in fields.items():
                    if k not in ("id", "suite", "cell_key", "attempts", "created_at"):
                        setattr(rec, k, v)
                rec.status, rec.finished_at, rec.heartbeat_at = str(status), now, now
                for name in CHECKPOINT:   # a recorded cell's checkpoint is deleted (or resumed by a retry anew)
                    setattr(rec, name, None)
                kids = [_child(rec, suffix, f, now) for suffix, f in children]
                s.add_all(kids)
                s.flush()
                if before_commit is not None:
                    before_commit(rec.as_dict(), [k.as_dict() for k in kids])
                s.commit()   # joined to the outer transaction: that one commits on leaving
        return self.get(claim.id)

    # -- who holds what ----------------------------------------------------------------------------------------

    def unfinished_count(self, suite: str, keys: list[str]) -> int:
        """Cells among `keys` that other workers hold (live or stale leases) or that are pending: what a worker whose
        claim found nothing waits for. Pending counts: this is read in a transaction after the claim's, and a cell
        given back in between (its worker stopped: release) was pending here, running in neither read, and the
        worker ended with it left in the queue."""
        n = 0
        with self.reading() as conn:
            for chunk in chunks(list(keys)):
                n += conn.execute(select(func.count()).select_from(R).where(
                    R.suite == suite, R.status.in_([Status.RUNNING.value, Status.PENDING.value]),
                    R.cell_key.in_(chunk))).scalar_one()
        return n

    def clock(self):
        """The database's clock now (naive UTC, db_now): every lease time was stamped on it, so a reader measures a
        lease's age against it, never against this machine's clock, which may be off by any amount."""
        with self.reading() as conn:
            return conn.execute(select(db_now())).scalar_one()

    def stale_rule(self, lease_timeout_s: float):
        """stale_lease for this store's rows: in a store from before leases (read, never migrated) a running row
        has no heartbeat, which the rule reads as missing: stale."""
        if "heartbeat_at" in self._absent.get(R.__tablename__, ()):
            return R.status == Status.RUNNING.value
        return stale_lease(lease_timeout_s)

    def stale_keys(self, suite: str, lease_timeout_s: float) -> set[str]:
        """Cell keys of the suite's running cells whose lease is stale (the next claim takes them over)."""
        with self.reading() as conn:
            return set(conn.execute(select(R.cell_key).where(R.suite == suite, self.stale_rule(lease_timeout_s)))
                       .scalars())

    def hosts_holding_leases(self, suite: str) -> set[str]:
        with self.reading() as conn:
            return {h for (h,) in conn.execute(select(R.host).distinct().where(
                R.suite == suite, R.status == Status.RUNNING.value, R.host.is_not(None)))}


def _child(parent: R, suffix: str, fields: dict, now) -> R:
    """A stage or member-task row: the parent's identity and configuration, its own task, scores and cost,
    cell key PARENT_KEY.SUFFIX."""
    rec = R(suite=parent.suite, cell_key=f"{parent.cell_key}.{suffix}", parent_id=parent.id)
    for name in RUN_COLUMNS:
        if name not in CHILD_KEPT:
            setattr(rec, name, fields[name] if name in fields else getattr(parent, name))
    rec.setting_key = f"{parent.setting_key}.{suffix}"
    rec.task_version = _own_version(parent, rec.task, rec.task_version)
    rec.finished_at, rec.created_at = now, now
    return rec


def _own_version(parent: R, task: str, default: int) -> int:
    """A member's or stage's task version, from its cell's schedule (the joint row of a multi-task cell is stored
    under version 1 of its "a+b" task, which is not its members' versions)."""
    schedule = (parent.config or {}).get("schedule") or {}
    tasks, versions = schedule.get("multitask") or schedule.get("sequence") or [], schedule.get("versions") or []
    return versions[tasks.index(task)] if task in tasks and len(versions) == len(tasks) else default
