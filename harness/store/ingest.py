"""Loading record.json files into a store: what a node that could not reach the store wrote beside a cell's
files (harness.spec.layout.RECORD), taken in later by `harness ingest`. Idempotent by (suite, cell key).

A record is read against one typed model (harness.store.schema.record_models: the store's own columns) and its
cell key recomputed from its configuration; a bad record is refused, with the file and the field, before
anything is written. A row that a live worker holds (a running cell whose lease is not stale, by the queue's
one staleness rule) is never touched: ingest reads the row under a lock (PostgreSQL: SELECT ... FOR UPDATE;
SQLite: the write lock) and skips it."""

from __future__ import annotations

import math
import os
import re

from pydantic import ValidationError
from sqlalchemy import delete, func, not_, select
from sqlalchemy.orm import Session

from harness.spec.cell import config_key
from harness.spec.errors import InputError
from harness.spec.layout import RECORD, SUITE_NAME_MAX, SUITE_NAME_PATTERN, is_attempt_dir
from harness.spec.status import DEFAULT_LEASE_TIMEOUT_S, Status
from harness.store.queue import stale_lease
from harness.store.schema import RunRecord, record_models

# what ingesting a record did; LEASED: left alone, a live worker holds the cell (its lease is not stale)
OUTCOMES = ADDED, UPDATED, SAME, CONFLICT, LEASED = "added", "updated", "same", "conflict", "leased"
COMPARED = ("score", "metrics", "finished_at", "config")   # a stored completed result is the same when these are
NOT_COPIED = ("id", "parent_id", "children", "ingest_only", "claim")   # ids are its own store's; the rest is
                                                                       # about the file, not a column


class BadRecord(InputError):
    """A record.json that cannot be ingested: `field` names what is wrong (dotted, e.g. children.0.score)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"field {field}: {message}" if field else message)


def record_paths(places: list[str]) -> list[str]:
    """The record files given (files) or found below the given folders, each folder's in sorted order."""
    paths = []
    for d in places:
        if os.path.isfile(d):
            paths.append(d)
        elif os.path.isdir(d):
            # an attempt's own folder holds files no store accepted (launch/attempt.py): never results
            paths += sorted(os.path.join(root, RECORD) for root, _, files in os.walk(d)
                            if RECORD in files and not is_attempt_dir(root))
        else:
            raise InputError(f"ingest: {d}: no such file or folder")
    if not paths:
        raise InputError(f"ingest: no {RECORD} under {', '.join(places)}")
    return paths


def _non_finite(value, where: str) -> str | None:
    """The dotted path of the first NaN / infinity inside a JSON value (a database's JSON cannot hold one)."""
    todo = [(value, where)]
    while todo:
        v, at = todo.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return at
        if isinstance(v, dict):
            todo += [(x, f"{at}.{k}") for k, x in v.items()]
        elif isinstance(v, list):
            todo += [(x, f"{at}.{i}") for i, x in enumerate(v)]
    return None


def _check(row, at: str = "") -> None:
    for name, value in row:
        if isinstance(value, (dict, list)) and name != "children":
            bad = _non_finite(value, at + name)
            if bad:
                raise BadRecord(bad, "not a finite number (NaN or infinity)")
    if not re.fullmatch(SUITE_NAME_PATTERN, row.suite) or len(row.suite) > SUITE_NAME_MAX:
        raise BadRecord(at + "suite", f"{row.suite!r} is not a suite name (letters, digits, _ and -)")
    if row.status not in (Status.COMPLETED.value, Status.FAILED.value):
        raise BadRecord(at + "status", f"{row.status!r}: only completed or failed records can be ingested")
    if row.status == Status.COMPLETED.value and row.score is None:
        raise BadRecord(at + "score", "a completed record needs its score")


def parse_record(text: str | bytes):
    """A record.json's content as the typed record (record_models()), checked: its cell key is its
    configuration's, its stage / member rows belong to it. Raises BadRecord naming the field."""
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
    if rec.setting_key is not None and rec.setting_key != config_key(rec.config, without=("seed",)):
        raise BadRecord("setting_key", "not the setting key of the record's config")
    for i, child in enumerate(rec.children):
        _check(child, f"children.{i}.")
        if child.suite != rec.suite or not child.cell_key.startswith(rec.cell_key + "."):
            raise BadRecord(f"children.{i}.cell_key", f"{child.cell_key} is not a stage / member of cell "
                                                      f"{rec.cell_key} of suite {rec.suite}")
    return rec


def _values(row) -> dict:
    """A typed record's store columns (not its ids); fields the file does not have are left out."""
    return {k: getattr(row, k) for k in row.model_fields_set if k not in NOT_COPIED}


class Ingest:
    """The ingest side of a Store (harness.store.db): needs its `_write()` and `backend`."""

    def ingest(self, record, replace: bool = False, lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S) -> str:
        """Load a record (parse_record's typed form, or a record.json's dict). Idempotent by (suite, cell key):
        returns "added", "updated" (the row was pending, failed, or running under a stale lease), "same"
        (already there), "leased" (a live worker holds the cell: nothing changed) or "conflict" (a different
        completed result is stored; replaced only with replace=True)."""
        if isinstance(record, dict):
            import json

            record = parse_record(json.dumps(record, default=str))
        values = _values(record)
        with self._write() as conn:
            with Session(bind=conn) as s:
                stmt = select(RunRecord).where(RunRecord.suite == record.suite,
                                               RunRecord.cell_key == record.cell_key)
                if self.backend == "postgresql":
                    stmt = stmt.with_for_update()   # a worker's finish cannot commit between our read and write
                rec = s.scalars(stmt).first()
                outcome = ADDED
                if rec is not None:
                    live = s.scalar(select(func.count()).select_from(RunRecord).where(
                        RunRecord.id == rec.id, RunRecord.status == Status.RUNNING.value,
                        not_(stale_lease(lease_timeout_s))))
                    if live:
                        return LEASED
                    if rec.status == Status.COMPLETED.value:
                        if all(getattr(rec, k) == v for k, v in values.items() if k in COMPARED):
                            return SAME
                        if not replace or record.status != Status.COMPLETED.value:
                            return CONFLICT
                    outcome = UPDATED
                    s.execute(delete(RunRecord).where(RunRecord.parent_id == rec.id))
                else:
                    rec = RunRecord(suite=record.suite, cell_key=record.cell_key)
                    s.add(rec)
                for k, v in values.items():
                    setattr(rec, k, v)
                s.flush()
                for child in record.children:
                    kid = RunRecord(**_values(child))
                    kid.parent_id = rec.id
                    s.add(kid)
                s.commit()
        return outcome
