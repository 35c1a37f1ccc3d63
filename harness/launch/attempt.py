"""One attempt at a cell, on disk and in the store: every file an attempt writes goes into its own folder
(harness.spec.layout.attempt_dir) and is moved into the cell folder only once the store accepted the attempt's
finish. The order is: record.json written into the attempt folder inside the finish transaction, the commit,
then the attempt's files renamed into the cell folder with record.json last. So

- a kill or commit error before the commit leaves record.json only inside an attempt folder (never a result);
- a kill between the commit and the moves leaves the accepted files in their attempt folder: the next worker
  that starts on the suite finishes the moves (`settle`), since the row names the attempt and worker;
- the moves into a cell folder happen under its lock (`locked`): workers settling one cell at once, or a settle
  and the finishing worker's own moves, take turns, and whoever comes second finds nothing left to move;
- a worker that lost its lease writes nothing into the cell folder; its folder is deleted (by itself, or by the
  next accepted finish);
- a store that stays unreachable through the retries of `finish` leaves the result as the cell folder's
  record.json marked `"ingest_only": true` (with the claim it was trained under) for `harness ingest`; the
  cell's next claim records it instead of training again (`record_kept`), and no failure replaces it (`_rank`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import secrets
import shutil
import sys
import time

from harness import atomic
from harness.spec import layout
from harness.spec.status import DEFAULT_HEARTBEAT_S, Status, env_seconds
from harness.spec.variables import env_whole_number
from harness.store.lease import Claim

ERROR_LOG = "error.log"
FINISH_TRIES_ENV, FINISH_BACKOFF_ENV = "HARNESS_FINISH_TRIES", "HARNESS_FINISH_BACKOFF_S"
DEFAULT_FINISH_TRIES, DEFAULT_FINISH_BACKOFF_S = 5, 4.0   # waits 4 + 8 + 16 + 32 s: about a minute
# The longest wait between two tries (a larger $HARNESS_FINISH_BACKOFF_S: that): the doubling grew without end,
# HARNESS_FINISH_TRIES=30 waiting 34 years before its last try, and a 0 backoff overflowed past 1,024 tries. A
# store restart or failover takes minutes: more tries are more of these waits.
MAX_RETRY_WAIT_S = 300.0


class StoreUnreachable(RuntimeError):
    """`finish` (or a claim: `with_store_retry`) failed on every retry with a store error (not a lost lease)."""


def retry_timing() -> tuple[int, float]:
    """How many tries, and the first wait between two (doubled each time): $HARNESS_FINISH_TRIES and
    $HARNESS_FINISH_BACKOFF_S, for a finish and a claim alike. Bad input (an InputError): `harness run` calls
    this at its start: the workers read them at their first claim, after the store was created ('abc': a
    traceback), and the backoff only once the store failed (nan, inf: a hang)."""
    return (env_whole_number(FINISH_TRIES_ENV, 1, DEFAULT_FINISH_TRIES),
            env_seconds(FINISH_BACKOFF_ENV, DEFAULT_FINISH_BACKOFF_S))


# SQLite error codes of the file, not the query (https://sqlite.org/rescode.html): a lock held by another
# process, a file briefly out of reach
SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PROTOCOL")
# ... as SQLite words them (sqlite3_errstr), for Python 3.10, whose sqlite3 errors carry no code (sqlite_errorname
# is 3.11's): every error read as the query's there, and a claim that waited out the busy timeout ended the worker
SQLITE_TRANSIENT_TEXT = ("database is locked", "database table is locked", "database schema is locked",
                         "disk I/O error", "unable to open database file", "locking protocol")


def _retried(call, what: str, say, retryable, wait, where: str = ""):
    """call(i) for try i, retried on store errors that `retryable` accepts, waiting `wait(delay)` between tries
    (doubling from $HARNESS_FINISH_BACKOFF_S up to MAX_RETRY_WAIT_S) and saying each retry ("warning: {where}{what} failed ...");
    StoreUnreachable when every try failed. The one retry loop of a finish and a claim."""
    from sqlalchemy.exc import SQLAlchemyError

    tries, backoff = retry_timing()
    for i in range(tries):
        try:
            return call(i)
        except (SQLAlchemyError, OSError) as exc:
            if not retryable(exc):
                raise
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if i == tries - 1:
                raise StoreUnreachable(f"{what} failed {tries} times (last: {reason})") from exc
            delay = min(backoff * 2.0 ** min(i, 64), max(backoff, MAX_RETRY_WAIT_S))
            say(f"warning: {where}{what} failed ({reason}); try {i + 2}/{tries} in {delay:g}s")
            wait(delay)


def with_store_retry(call, what: str, say):
    """call(), retried with a finish's backoff on store errors: a worker claiming its next cell, or polling while
    the last cells run elsewhere, died with a traceback when the database was briefly down or had restarted (its
    pooled connection then fails once, even with the server back up). Raises StoreUnreachable when every try
    failed. No lease is held here; a claim whose commit went through but whose answer was lost is taken over
    after the lease timeout. Only errors of the connection are retried: one of the query itself (a column or a
    permission missing: ProgrammingError, IntegrityError, DataError) fails again however long the worker waits,
    and "unreachable" would requeue its Slurm task to fail the same way, so it is raised as it comes. SQLite
    calls both kinds OperationalError: there its error code tells them apart (SQLITE_ERROR "no such column",
    SQLITE_READONLY: the query's; SQLITE_BUSY / LOCKED / IOERR / CANTOPEN / PROTOCOL: the file's, for a while;
    on Python 3.10, which gives no code, SQLite's message for them)."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    def mendable(exc: Exception) -> bool:
        if isinstance(exc, DBAPIError) and isinstance(exc.orig, sqlite3.Error):
            name = getattr(exc.orig, "sqlite_errorname", None)
            if name is None:   # Python 3.10: SQLite's message alone
                return str(exc.orig).startswith(SQLITE_TRANSIENT_TEXT)
            return name.startswith(SQLITE_TRANSIENT)
        return isinstance(exc, (OSError, OperationalError, InterfaceError, DisconnectionError, PoolTimeout)) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated)

    return _retried(lambda _: call(), what, say, mendable, time.sleep)


def folder(cell_dir: str, claim: Claim) -> str:
    return layout.attempt_dir(cell_dir, claim.attempt, claim.worker_id)


def discard(attempt_dir: str) -> None:
    shutil.rmtree(attempt_dir, ignore_errors=True)


def relocate(result, attempt_dir: str, cell_dir: str) -> None:
    """The paths a result names (adapter, stage / member folders) as they will be once moved into place."""
    def moved(path):
        if isinstance(path, str) and (path == attempt_dir or path.startswith(attempt_dir + os.sep)):
            return cell_dir + path[len(attempt_dir):]
        return path

    for r in [result, *result.stages, *result.members]:
        r.adapter_path, r.output_dir = moved(r.adapter_path), moved(r.output_dir)


@contextlib.contextmanager
def locked(cell_dir: str):
    """The cell folder's lock (an exclusive flock on its lock file) while the block runs. Every move of an
    attempt's files into the cell folder happens under it: two workers that settle one cell at once (a Slurm array
    starting after a kill between a commit and its moves), or a settle and the finishing worker's own promote,
    would otherwise move the same files past each other, and the later one's _replace would set the accepted
    folder aside for a source the other had already moved. flock is released when the process dies. A
    filesystem without flock (Lustre mounted without it: ENOSYS, EOPNOTSUPP, ENOLCK) moves without the lock, as
    before it, rather than leave every accepted result in its attempt folder."""
    import errno

    os.makedirs(cell_dir, exist_ok=True)
    with open(os.path.join(cell_dir, layout.CELL_LOCK), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
                raise
            print(f"warning: no file lock in {cell_dir} ({e.strerror}): moving its files without one",
                  file=sys.stderr, flush=True)
        yield   # closing the file releases the lock


def _replace(src: str, dst: str) -> None:
    if os.path.isdir(dst) and not os.path.islink(dst):
        # set aside under a name that says what it was: if a kill comes before its replacement is in, the next
        # move into this cell folder puts it back (_clear_replaced)
        trash = os.path.join(os.path.dirname(dst),
                             f"{layout.REPLACED_PREFIX}{secrets.token_hex(4)}-{os.path.basename(dst)}")
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        if os.path.isdir(src) and os.path.lexists(dst):
            os.remove(dst)
        os.replace(src, dst)


def _clear_replaced(cell_dir: str) -> None:
    """What a kill inside _replace left: a folder set aside whose replacement never came in is put back (its
    record.json, moved last, still names it); one that was replaced is removed. Names of older harness versions
    (no original name in them) are left alone: what they held cannot be told."""
    for name in os.listdir(cell_dir):
        if not name.startswith(layout.REPLACED_PREFIX):
            continue
        original = name[len(layout.REPLACED_PREFIX):].partition("-")[2]
        if not original:
            continue
        trash, dst = os.path.join(cell_dir, name), os.path.join(cell_dir, original)
        if os.path.lexists(dst):
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(trash, dst)


# what a record.json in a cell folder is worth keeping (_rank)
NO_RECORD, FAILURE, KEPT, ACCEPTED = range(4)
WORTH = {KEPT: "a completed result kept for `harness ingest` (the store never saw it)",
         ACCEPTED: "a completed result the store accepted"}


def _rank(record: dict | None) -> int:
    """ACCEPTED: a completed result the store accepted; KEPT: a completed result kept for ingest while the store
    was unreachable (the store never saw it); FAILURE: any other record (a failure, accepted or kept); NO_RECORD:
    none, or none readable."""
    if record is None:
        return NO_RECORD
    if record.get("status") != Status.COMPLETED:
        return FAILURE
    return KEPT if record.get(layout.INGEST_ONLY) else ACCEPTED


def promote(attempt_dir: str, cell_dir: str, sweep: bool = True) -> bool:
    """Move the attempt's files into the cell folder (replacing what is there), record.json last; then the
    attempt folder goes and, with `sweep`, the folders of the cell's earlier attempts (lost or killed ones).
    Under the cell folder's lock; False when nothing moved: the attempt folder holds no record.json any more
    (another worker moved it meanwhile: settle), or the cell folder's record outranks it (_move_in)."""
    with locked(cell_dir):
        return _move_in(attempt_dir, cell_dir, sweep)


def _move_in(attempt_dir: str, cell_dir: str, sweep: bool) -> bool:
    """promote's moves, for a caller that holds the cell folder's lock. A record.json in the cell folder is only
    replaced by one of at least its rank (_rank): a completed result kept for ingest is never replaced by a failure
    (an attempt that claimed the cell before the result was kept), nor an accepted completed result by a kept one
    (a worker that lost its lease during the outage); the attempt's files then stay where they are."""
    _clear_replaced(cell_dir)
    if not os.path.isfile(os.path.join(attempt_dir, layout.RECORD)):
        return False
    here = _rank(atomic.read_json_object(os.path.join(cell_dir, layout.RECORD)))
    ours = _rank(atomic.read_json_object(os.path.join(attempt_dir, layout.RECORD)))
    if ours < here:
        print(f"warning: {cell_dir} holds {WORTH[here]}; this attempt's files stay in {attempt_dir}",
              file=sys.stderr, flush=True)
        return False
    names = sorted(os.listdir(attempt_dir))
    for name in names:
        if name != layout.RECORD:
            _replace(os.path.join(attempt_dir, name), os.path.join(cell_dir, name))
    if ERROR_LOG not in names and os.path.isfile(os.path.join(cell_dir, ERROR_LOG)):
        os.remove(os.path.join(cell_dir, ERROR_LOG))   # an earlier failure's log next to a newer outcome
    os.replace(os.path.join(attempt_dir, layout.RECORD), os.path.join(cell_dir, layout.RECORD))
    atomic._fsync_dir(cell_dir)
    discard(attempt_dir)
    if sweep:
        _sweep_earlier(cell_dir, layout.attempt_number(attempt_dir), completed=ours >= KEPT)
    return True


def _sweep_earlier(cell_dir: str, attempt: int | None, completed: bool) -> None:
    """Remove the folders of the cell's attempts before `attempt` (lost or killed ones). A later attempt's folder
    stays where the cell failed: a claim made after this attempt's commit (--retry-failed took its failure while
    this worker stalled before its moves) may be training into it now. A completed cell is never claimed again:
    every attempt folder goes (a later-numbered one is an older row's, deleted by hand and queued again, whose
    claims counted from 1 anew)."""
    for other in layout.attempt_dirs(cell_dir):
        number = layout.attempt_number(other)
        if completed or attempt is None or number is None or number <= attempt:
            discard(other)


def settle(cell_dir: str, attempts: int | None, worker_id: str | None, completed: bool = True,
           keep_checkpoint: bool = False) -> bool:
    """A recorded cell (completed, or failed) whose accepted attempt's files are still in its attempt folder (a
    kill between the commit and the moves): finish the moves. True when it did; False when there was nothing to
    move, or another worker (settling too, or the finishing worker itself) moved them first. Either way what a kill
    in the accepted finish's own moves left goes: the earlier attempts' folders and its own, emptied (a kill
    between moving record.json in and the sweep); a later attempt's stays (a --retry-failed claim of a failure,
    training now). And the cell's checkpoint goes (a kill before the finishing worker's remove_checkpoints): no
    claim ever comes back to a completed cell, and a failure's retry starts over (only with the failure's own files
    still to move: a retry claimed since the row was read may have written one); with `keep_checkpoint` it
    stays: a failure because another rank's process ended keeps it for the retry (harness.launch.broken_group;
    left, any failure's retry resumed the failed training's checkpoint)."""
    moved = False
    # one listing of the cell folder where the moves were done (every worker start lists every recorded cell: a
    # network file system's metadata calls): the finishing worker removes the checkpoint before its moves, so a
    # cell whose attempt folders are all gone holds no checkpoint to remove
    if attempts and worker_id and layout.attempt_dirs(cell_dir):   # (no lock file made where nothing is left)
        with locked(cell_dir):
            src = layout.attempt_dir(cell_dir, attempts, worker_id)
            left = os.path.isfile(os.path.join(src, layout.RECORD))
            # a failure's only where its own record.json is still to move (killed before the removal): one moved
            # in long ago may have a --retry-failed claim since this worker read its row, whose stop wrote it
            if completed or (left and not keep_checkpoint):
                remove_checkpoints(cell_dir)
            if left:
                moved = _move_in(src, cell_dir, sweep=True)
            else:
                _sweep_earlier(cell_dir, attempts, completed)
    return moved


def remove_checkpoints(cell_dir: str) -> None:
    """Every checkpoint in a recorded cell's folder (layout.checkpoint_paths): a completed cell keeps none, nor
    does a failed one (a retry starts over). A file another worker removed first (its settle, or the finishing
    worker itself) is not an error."""
    for path in layout.checkpoint_paths(cell_dir):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:   # the result is recorded: a leftover file is said, not a traceback at every start
            print(f"warning: {path}: the checkpoint of a recorded cell could not be removed ({e.strerror}); "
                  f"remove it by hand", file=sys.stderr, flush=True)


def _committed(store, claim: Claim, status: str):
    """After an ambiguous failure (the commit may have gone through before the connection broke): the row as
    this attempt recorded it, or None."""
    rec = store.get(claim.id)
    if rec is not None and rec.worker_id == claim.worker_id and rec.status == str(status) \
            and rec.attempts == claim.attempt:
        return rec
    return None


def _wait_keeping_lease(store, claim: Claim, delay: float, heartbeat_s: float) -> None:
    """Sleep `delay` seconds between two tries of a finish, renewing the lease now and every `heartbeat_s`: the
    training's heartbeat thread has ended, and a lease left to age through the backoff (a minute by default, more
    than a short --lease-timeout-s) handed a trained cell to another worker, which trained it again while this
    one's result was refused as a lost lease. A beat that fails (the store is out of reach) is left to the next
    try; one that finds the lease gone (taken over, or an earlier try did commit) ends the wait: the next try
    sorts out which."""
    from sqlalchemy.exc import SQLAlchemyError

    end = time.monotonic() + delay
    while True:
        try:
            if not store.heartbeat(claim):
                return
        except (SQLAlchemyError, OSError):
            pass
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, heartbeat_s))


def finish_with_retry(store, claim: Claim, status: str, fields: dict, children: list, before_commit, say,
                      heartbeat_s: float = DEFAULT_HEARTBEAT_S):
    """store.finish, retried with exponential backoff on store errors (a database blip must not throw away
    hours of training), the lease kept fresh every `heartbeat_s` meanwhile. LeaseLost is not retried. Raises
    StoreUnreachable when every try failed."""
    from sqlalchemy.exc import SQLAlchemyError

    from harness.store.queue import LeaseLost

    def finish(i: int):
        try:
            return store.finish(claim, status, fields, children, before_commit=before_commit)
        except LeaseLost:
            if i > 0:   # an earlier try may have committed before its answer was lost
                try:
                    rec = _committed(store, claim, status)
                except (SQLAlchemyError, OSError):
                    rec = None
                if rec is not None:
                    return rec
            raise

    keeping_lease = lambda delay: _wait_keeping_lease(store, claim, delay, heartbeat_s)   # noqa: E731
    # every store error is retried: a result is hours of training (kept on disk for ingest after the last try)
    return _retried(finish, "recording", say, lambda exc: True, keeping_lease, where=f"cell {claim.cell_key}: ")


def keep_for_ingest(leased: dict, claim: Claim, status: str, fields: dict, children: list, attempt_dir: str,
                    cell_dir: str) -> str:
    """The store stayed unreachable: the record the store would have written, built from the row as it was
    leased, marked ingest_only with its claim, as the cell folder's record.json with the attempt's files beside
    it, unless the cell folder's record outranks it (promote): a completed result the store accepted (this
    worker lost its lease meanwhile), or, for a failure, a completed result kept the same way; then everything
    stays in the attempt folder. An accepted failure is replaced: `harness ingest` must find this result.
    Returns the record's path."""
    from harness.store.queue import _child
    from harness.store.schema import CHECKPOINT, RUN_COLUMNS, RunRecord

    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    parent = RunRecord(**{k: v for k, v in leased.items() if k in RUN_COLUMNS and k != "id"})
    for k, v in fields.items():
        if k not in ("id", "suite", "cell_key", "attempts", "created_at"):
            setattr(parent, k, v)
    parent.status, parent.finished_at, parent.heartbeat_at = str(status), now, now
    for name in CHECKPOINT:   # as a live finish empties them (Store.finish): a recorded cell has no checkpoint
        setattr(parent, name, None)
    kids = [_child(parent, suffix, f, now).as_dict() for suffix, f in children]
    record = {**parent.as_dict(), "children": kids, layout.INGEST_ONLY: True,
              "claim": {"worker_id": claim.worker_id, "attempt": claim.attempt}}
    atomic.write_json(os.path.join(attempt_dir, layout.RECORD), record)
    if promote(attempt_dir, cell_dir, sweep=False):
        return os.path.join(cell_dir, layout.RECORD)
    return os.path.join(attempt_dir, layout.RECORD)


def record_kept(store, claim: Claim, attempt_dir: str, cell_dir: str, say, heartbeat_s: float = DEFAULT_HEARTBEAT_S):
    """The completed result an earlier attempt at this cell kept in the cell folder while the store was
    unreachable (keep_for_ingest: e.g. this Slurm task's own, before its requeue), recorded under this claim as
    `harness ingest` would record it, so that the cell is not trained again: the row's lease and attempt count are
    this claim's, every other column is the kept record's (its timings and environment, started_at included;
    finished_at is when the store took it), and extra["trained_by"] names the attempt that trained it. Its files
    stay; its record.json is replaced by the accepted one. Returns the stored row, or None when the cell folder
    holds no such result. Raises LeaseLost and StoreUnreachable as finish_with_retry does."""
    path = os.path.join(cell_dir, layout.RECORD)
    if not os.path.isfile(path):
        return None   # the common case, decided without a lock file
    with locked(cell_dir):   # no other attempt's files move in between the reading and the moves
        kept = _kept_result(path, claim)
        if kept is None:
            return None
        fields, children = _kept_columns(kept)
        os.makedirs(attempt_dir, exist_ok=True)
        rec = finish_with_retry(store, claim, Status.COMPLETED, fields, children, record_writer(attempt_dir), say,
                                heartbeat_s=heartbeat_s)
        remove_checkpoints(cell_dir)   # before the moves: see settle
        _move_in(attempt_dir, cell_dir, sweep=True)
    return rec


def record_writer(attempt_dir: str):
    """finish's before_commit: the accepted row and its stage / member rows as the attempt's record.json."""
    def write(record: dict, child_records: list[dict]) -> None:
        atomic.write_json(os.path.join(attempt_dir, layout.RECORD), {**record, "children": child_records})
    return write


def _kept_result(path: str, claim: Claim):
    """The record at `path` (typed and checked as ingest reads it) when it is a completed result of the claimed
    cell kept for ingest; else None (a failure is trained again)."""
    from harness.store.ingest import BadRecord, parse_record

    try:
        with open(path, "rb") as f:
            kept = parse_record(f.read())   # also: its cell key is its configuration's
    except (OSError, BadRecord):
        return None
    ours = (kept.suite, kept.cell_key) == (claim.suite, claim.cell_key)
    return kept if ours and kept.ingest_only and kept.status == Status.COMPLETED else None


def _kept_columns(kept) -> tuple[dict, list]:
    """finish's fields and (key suffix, fields) children for a kept record: its columns but its ids and those the
    recording claim owns (the lease and the attempt count), and in `extra` which claim trained it."""
    from harness.store.schema import LEASE, RUN_COLUMNS

    claims_own = {"id", "parent_id", "attempts", *LEASE}

    def own(row) -> dict:
        return {k: getattr(row, k) for k in row.model_fields_set if k in RUN_COLUMNS and k not in claims_own}

    by = kept.claim or {"worker_id": kept.worker_id, "attempt": kept.attempts}
    fields = own(kept)
    fields["extra"] = {**(kept.extra or {}), "trained_by": {
        "worker_id": by.get("worker_id"), "attempt": by.get("attempt"),
        "finished_at": kept.finished_at.isoformat() if kept.finished_at else None}}   # on that worker's clock
    children = [(c.cell_key[len(kept.cell_key) + 1:], own(c)) for c in kept.children]
    return fields, children
