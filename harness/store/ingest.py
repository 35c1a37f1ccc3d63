"""Loading record.json files into a store: what a node that could not reach the store wrote beside a cell's
files (harness.spec.layout.RECORD), taken in later by `harness ingest`. Idempotent by (suite, cell key).

A record is read against one typed model (harness.store.schema.record_models: the store's own columns), its
cell key recomputed from its configuration and every column that configuration fixes (Cell.columns: model,
task, task version, seed, method label, ...; a stage's or member's task and regime) checked against it; a bad
record is refused, with the file and the field, before anything is written. Its results' JSON (metrics, history,
extra, ...) is read as the store holds it: a NaN or infinity as null (values.store_json).

A row that a live worker holds (a running cell whose lease is not stale, by the queue's one staleness rule) is
never touched: ingest reads the row under a lock (PostgreSQL: SELECT ... FOR UPDATE; SQLite: the write lock)
and skips it. A record never takes a row back to an earlier attempt: one of an attempt before the row's is
skipped ("older"). A running row, even under a stale lease (its worker may be alive but cut off from the store,
still training), is taken over only by its own attempt's record: the ingest_only record that attempt kept when
it could not reach the store (its `claim` names the row's worker and attempt)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re

from pydantic import ValidationError
from sqlalchemy import delete, func, not_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from harness.atomic import read_json_object
from harness.spec.cell import Cell, config_key
from harness.spec.errors import InputError
from harness.spec.layout import INGEST_ONLY, RECORD, SUITE_NAME_MAX, SUITE_NAME_PATTERN, is_attempt_dir
from harness.spec.schedule import Sequence
from harness.spec.status import DEFAULT_LEASE_TIMEOUT_S, Regime, Status
from harness.store.values import as_stored, store_text
from harness.store.queue import _own_version, stale_lease
from harness.store.schema import RESULTS, AnalysisRecord, RunRecord, record_models

# what ingesting a record did; LEASED: left alone, a running attempt holds the cell (its lease is live, or stale
# and the record is not that attempt's own); OLDER: left alone, the row is at a later attempt than the record;
# KEPT: a failed record for a cell with a completed result, which it never replaces (replace=True neither)
OUTCOMES = ADDED, UPDATED, SAME, CONFLICT, LEASED, OLDER, KEPT = ("added", "updated", "same", "conflict", "leased",
                                                                 "older", "kept")
NOT_COPIED = ("id", "parent_id", "children", "ingest_only", "claim")   # ids are its own store's; the rest is
                                                                       # about the file, not a column
# A stored completed result is the record's ("same") when every column the record carries, of its row and of
# each stage / member row, is the store's, but these: the attempt counter is the store's count of claims, which
# ingest raises and never lowers (the record of attempt 1 of a cell the store counts at 2 is still the same
# result). Any other difference (steps, FLOPs, parameters, times, extra) is a different result: a conflict.
NOT_COMPARED = ("attempts",)


class BadRecord(InputError):
    """A record.json that cannot be ingested: `field` names what is wrong (dotted, e.g. children.0.score)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"field {field}: {message}" if field else message)


# An attempt's own folder (launch/attempt.py) holds files no store accepted: its record.json is not a result,
# except one marked ingest_only, which the runner leaves there when the cell folder already has an accepted
# record (and names it for `harness ingest`). Folder walks skip the others; naming one is refused (read_record).
NOT_A_RESULT = ("in an attempt's own folder and not marked ingest_only: no store accepted it, so it is not a "
                "result (the cell folder's record.json is)")


def _in_attempt_dir(path: str) -> bool:
    return is_attempt_dir(os.path.dirname(os.path.abspath(path)))


def _kept_for_ingest(path: str) -> bool:
    """A record.json that says it is ingest_only (read only for that; a file that cannot be read is not)."""
    return (read_json_object(path) or {}).get(INGEST_ONLY) is True


def record_paths(places: list[str]) -> list[str]:
    """The record files given (files) or found below the given folders, each folder's in sorted order."""
    paths = []
    for d in places:
        if os.path.isfile(d):
            paths.append(d)
        elif os.path.isdir(d):
            found = (os.path.join(root, RECORD) for root, _, files in os.walk(d) if RECORD in files)
            paths += sorted(p for p in found if not _in_attempt_dir(p) or _kept_for_ingest(p))
        else:
            raise InputError(f"ingest: {d}: no such file or folder")
    if not paths:
        raise InputError(f"ingest: no {RECORD} under {', '.join(places)}")
    return paths


def read_record(path: str):
    """The record file at `path`, parsed (parse_record); one inside an attempt's own folder only when it is
    ingest_only. Raises BadRecord, or OSError when the file cannot be read."""
    with open(path, "rb") as f:
        record = parse_record(f.read())
    if _in_attempt_dir(path) and not record.ingest_only:
        raise BadRecord("", NOT_A_RESULT)
    return record


def _unstorable(value, where: str) -> tuple[str, str] | None:
    """(the dotted path, why) of the first value inside a JSON value that the store would not keep as it is: a
    NaN / infinity (stored as null) or a text holding a NUL (store_text)."""
    todo = [(value, where)]
    while todo:
        v, at = todo.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return at, "not a finite number (NaN or infinity)"
        if isinstance(v, str) and "\x00" in v:
            return at, "holds a NUL character"
        if isinstance(v, dict):
            if any("\x00" in k for k in v):
                return at, "a key holds a NUL character"
            todo += [(x, f"{at}.{k}") for k, x in v.items()]
        elif isinstance(v, list):
            todo += [(x, f"{at}.{i}") for i, x in enumerate(v)]
    return None


def _check(row, at: str = "") -> None:
    for name, value in row:
        if isinstance(value, str):
            setattr(row, name, store_text(value))   # as the store keeps it (NUL replaced), compared as kept
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            # every time column is UTC without an offset (lease.utcnow, queue.db_now); a database would drop
            # the offset and keep the local time (02:00+02:00 stored as 02:00): the same instant, in UTC
            setattr(row, name, value.astimezone(dt.timezone.utc).replace(tzinfo=None))
        if isinstance(value, (dict, list)) and name in RESULTS:
            # a result as a live finish stores it: the record.json beside it keeps the NaN / infinity the loop
            # computed (json's bare NaN), the row holds null; so ingest writes the live row, and the same record
            # ingested again is "same" (a NUL likewise: values.as_stored)
            setattr(row, name, as_stored(value))
        elif isinstance(value, (dict, list)) and name != "children":
            # the configuration, the columns it fixes, the claim: a suite's numbers are finite (spec.hparams) and
            # its texts hold no NUL, so such a value is no cell's; stored as the store keeps it, the config would
            # no longer hash to the row's cell key
            bad = _unstorable(value, at + name)
            if bad:
                raise BadRecord(*bad)
    if not re.fullmatch(SUITE_NAME_PATTERN, row.suite) or len(row.suite) > SUITE_NAME_MAX:
        raise BadRecord(at + "suite", f"{row.suite!r} is not a suite name (letters, digits, _ and -)")
    if row.status not in (Status.COMPLETED.value, Status.FAILED.value):
        raise BadRecord(at + "status", f"{row.status!r}: only completed or failed records can be ingested")
    if row.status == Status.COMPLETED.value and row.score is None:
        raise BadRecord(at + "score", "a completed record needs its score")


def parse_record(text: str | bytes):
    """A record.json's content as the typed record (record_models()), checked: its cell key is its
    configuration's, its stage / member rows are the cell's, each once, all of them where it completed and none
    where it failed (as the runner writes them). Raises BadRecord naming the field."""
    model, _ = record_models()
    try:
        rec = model.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(map(str, err["loc"]))
        if err["type"] == "json_invalid":
            raise BadRecord("", f"not valid JSON: {err['msg'].removeprefix('Invalid JSON: ')}") from None
        if not field:
            raise BadRecord("", f"not a record ({err['msg']})") from None
        raise BadRecord(field, err["msg"]) from None
    _check(rec)
    key = config_key(rec.config)
    if rec.cell_key != key:
        raise BadRecord("cell_key", f"{rec.cell_key} is not the key of the record's config ({key})")
    # the key covers the config only: every column that follows from it must be the config's, or the tables
    # would count the run where it does not belong (another task version, seed, method row)
    try:
        cell = Cell.from_config(rec.suite, rec.config)
        own = {**cell.columns(), "setting_key": config_key(rec.config, without=("seed",))}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadRecord("config", f"not a cell's configuration ({type(exc).__name__}: {exc})") from None
    _agree(rec, own)
    children = _child_columns(cell, rec.config, own)
    completed = rec.status == Status.COMPLETED.value
    seen = set()
    for i, child in enumerate(rec.children):
        if not completed:   # the runner writes stage / member rows only for a completed cell (runner.result_fields)
            raise BadRecord(f"children.{i}", f"a {rec.status} cell has no stage / member rows")
        _check(child, f"children.{i}.")
        suffix = child.cell_key.removeprefix(rec.cell_key + ".")
        if child.suite != rec.suite or suffix == child.cell_key or suffix not in children:
            raise BadRecord(f"children.{i}.cell_key", f"{child.cell_key} is not a stage / member of cell "
                                                      f"{rec.cell_key} of suite {rec.suite}")
        if suffix in seen:   # one row per cell key: the second insert failed with a traceback
            raise BadRecord(f"children.{i}.cell_key", f"{child.cell_key} is there twice")
        seen.add(suffix)
        if child.status != rec.status:   # the runner gives them the cell's status
            raise BadRecord(f"children.{i}.status", f"{child.status!r} differs from its cell's {rec.status!r}")
        implied = {**children[suffix], "config": rec.config}
        if child.task_version == rec.task_version != implied["task_version"]:
            # a record from before 2026-12-06 gave its stage / member rows the cell row's version (a multi-task
            # cell's is 1, its "a+b" task's), not their task's (queue._child): theirs, as the store now writes it
            child.task_version = implied["task_version"]
        _agree(child, implied, f"children.{i}.")
    # a record written before 2026-11-23 has no `children` field (record.json did not carry them): its row alone
    missing = sorted(set(children) - seen) if completed and "children" in rec.model_fields_set else []
    if missing:   # a completed cell has them all (a member's score is its row's)
        raise BadRecord("children", f"no row for {', '.join(missing)}: a completed cell has one per "
                                    f"{'stage' if isinstance(cell.schedule, Sequence) else 'member task'}")
    return rec


def _agree(row, implied: dict, at: str = "") -> None:
    """Every column the configuration fixes is the configuration's: one the file leaves out (or null) is
    filled in from it; one that differs refuses the record."""
    for name, want in implied.items():
        have = getattr(row, name)
        if have is None:
            setattr(row, name, want)
        elif have != want:
            raise BadRecord(at + name, f"{have!r} differs from its config's {want!r}")


def _child_columns(cell: Cell, config: dict, own: dict) -> dict[str, dict]:
    """{cell key suffix: the columns a stage / member row's configuration fixes}: the cell's own, with the row's
    task, its version and its regime. The suffixes are the runner's (RunResult.child_rows)."""
    schedule = cell.schedule
    if schedule is None:
        return {}   # a single-task cell has no stage or member rows
    if isinstance(schedule, Sequence):   # every stage but the last (that one is the cell's own row)
        rows = {f"stage{i}": task for i, task in enumerate(schedule.tasks[:-1])}
        regime = Regime.SEQUENTIAL_STAGE
    else:
        rows = {task: task for task in schedule.tasks}
        regime = Regime.MULTITASK_MEMBER
    parent = RunRecord(config=config)
    return {suffix: {**own, "setting_key": f"{own['setting_key']}.{suffix}", "task": task,
                     "task_version": _own_version(parent, task, cell.task_version), "regime": regime.value}
            for suffix, task in rows.items()}


def record_attempt(record) -> int:
    """The attempt that wrote a record (its `attempts`; absent: 1, what a row inserted without it holds)."""
    return 1 if record.attempts is None else record.attempts


def _own_claim(record, row) -> bool:
    """The record is the one the running row's own attempt kept when it could not reach the store (runner:
    attempt.keep_for_ingest): ingest_only, under the claim (worker and attempt) that the row's lease still
    names. Only that record may end the row's attempt: any other would throw away what its worker is training
    (a worker cut off from the store goes on while its lease looks stale)."""
    claim = record.claim or {}
    return bool(record.ingest_only) and claim.get("worker_id") == row.worker_id \
        and claim.get("attempt") == row.attempts


def _values(row) -> dict:
    """A typed record's store columns (not its ids), in the columns' order (what a conflict names comes in the
    same order every time); fields the file does not have are left out."""
    return {k: getattr(row, k) for k in type(row).model_fields if k in row.model_fields_set and k not in NOT_COPIED}


def _record_values(record) -> dict:
    """The columns a record's own row writes."""
    values = _values(record)
    if values.get("predicted_time_s") is None:
        # the prediction is the claim's, written into the row after the claim (queue.predict): a record without
        # one (an ingest_only record is built from the row as claimed) keeps the store's
        values.pop("predicted_time_s", None)
    return values


def _differ(row, values: dict) -> list[str]:
    """The columns in which a stored row differs from a record's values, compared as the store keeps them (a
    record's password shown as ***: set on a row, as ingest writes them)."""
    kept = RunRecord(**values)
    return [k for k in values if k not in NOT_COMPARED and getattr(row, k) != getattr(kept, k)]


def _differences(s: Session, rec, record, values: dict) -> list[str]:
    """The fields in which the stored completed result `rec` differs from the record's, named as in record.json
    (children.0.score); none: it is the record's. Its row and, where the record carries them (a record from before
    2026-11-23 does not), its stage / member rows (NOT_COMPARED aside)."""
    found = _differ(rec, values)
    if "children" not in record.model_fields_set:
        return found
    stored = {kid.cell_key: kid for kid in s.scalars(select(RunRecord).where(RunRecord.parent_id == rec.id))}
    if set(stored) != {child.cell_key for child in record.children}:
        return [*found, "children"]
    return found + [f"children.{i}.{k}" for i, child in enumerate(record.children)
                    for k in _differ(stored[child.cell_key], _values(child))]


class Ingest:
    """The ingest side of a Store (harness.store.db): needs its `_write()` and `backend`."""

    def ingest(self, record, replace: bool = False, lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S) -> str:
        """Load a record (parse_record's typed form, or a record.json's dict). Idempotent by (suite, cell key):
        returns "added", "updated" (the row was pending, failed, or running under a stale lease that this
        record's own attempt held), "same" (already there), "leased" (a running attempt holds the cell: a live
        lease, or a stale one the record is not that attempt's own; nothing changed), "older" (the row is at a
        later attempt than the record: nothing changed), "kept" (a failed record, a completed result stored:
        never replaced) or "conflict" (a different completed result is stored; replaced only with
        replace=True)."""
        if isinstance(record, dict):
            record = parse_record(json.dumps(record, default=str))
        try:
            return self._ingest(record, replace, lease_timeout_s)
        except IntegrityError:
            # PostgreSQL's FOR UPDATE locks only a row that is there: another ingest, or a worker queueing the suite,
            # inserted the cell's row between our read and our insert (the transaction was rolled back). Once more,
            # reading it: a second such insert is no race
            return self._ingest(record, replace, lease_timeout_s)

    def differences(self, record) -> list[str]:
        """The fields in which the completed result stored for the record's cell differs from the record (what a
        "conflict" is about), named as in record.json; [] where none is stored or it is the record's."""
        with self.session() as s:
            rec = s.scalars(select(RunRecord).where(RunRecord.suite == record.suite,
                                                    RunRecord.cell_key == record.cell_key)).first()
            if rec is None or rec.status != Status.COMPLETED.value:
                return []
            return _differences(s, rec, record, _record_values(record))

    def _ingest(self, record, replace: bool, lease_timeout_s: float) -> str:
        values = _record_values(record)
        with self._write() as conn:
            with Session(bind=conn) as s:
                stmt = select(RunRecord).where(RunRecord.suite == record.suite,
                                               RunRecord.cell_key == record.cell_key)
                if self.backend == "postgresql":
                    stmt = stmt.with_for_update()   # a worker's finish cannot commit between our read and write
                rec = s.scalars(stmt).first()
                outcome = ADDED
                counted = (rec.attempts or 0) if rec is not None else 0
                if rec is not None:
                    live = s.scalar(select(func.count()).select_from(RunRecord).where(
                        RunRecord.id == rec.id, RunRecord.status == Status.RUNNING.value,
                        not_(stale_lease(lease_timeout_s))))
                    if live:
                        return LEASED
                    if rec.status == Status.COMPLETED.value and not _differences(s, rec, record, values):
                        return SAME
                    older = record_attempt(record) < counted
                    # a result beats no result, whatever its attempt (as in the cell folder: attempt._rank): a
                    # kept result of attempt 1 over attempt 2's failure; never a failure or a pending row back
                    result_over_none = record.status == Status.COMPLETED.value and \
                        rec.status in (Status.FAILED.value, Status.PENDING.value)
                    if older and not result_over_none:
                        return OLDER   # e.g. attempt 1's failure over the pending row of a preempted attempt 2
                    if rec.status == Status.RUNNING.value and not _own_claim(record, rec):
                        return LEASED
                    if rec.status == Status.COMPLETED.value:
                        if record.status != Status.COMPLETED.value:
                            return KEPT   # a failure never replaces a result, whatever the attempt
                        if not replace:
                            return CONFLICT
                    outcome = UPDATED
                    # the analyses of the result replaced (an adapter ablation) were measured on it: they go
                    # with it, so the new result gets its own (run_ablations skips a run that has one)
                    runs = [rec.id, *s.scalars(select(RunRecord.id).where(RunRecord.parent_id == rec.id))]
                    s.execute(delete(AnalysisRecord).where(AnalysisRecord.run_id.in_(runs)))
                    s.execute(delete(RunRecord).where(RunRecord.parent_id == rec.id))
                else:
                    rec = RunRecord(suite=record.suite, cell_key=record.cell_key)
                    s.add(rec)
                for k, v in values.items():
                    setattr(rec, k, v)
                if (rec.attempts or 0) < counted:
                    rec.attempts = counted   # the attempt counter never goes back: no attempt number twice
                s.flush()
                for child in record.children:
                    kid = RunRecord(**_values(child))
                    kid.parent_id = rec.id
                    s.add(kid)
                s.commit()
        return outcome
