"""Loading record.json files into a store: what a node that could not reach the store wrote beside a cell's
files (harness.spec.layout.RECORD), taken in later by `harness ingest`. Idempotent by (suite, cell key)."""

from __future__ import annotations

import datetime as dt
import os

from sqlalchemy import DateTime, delete, select
from sqlalchemy.orm import Session

from harness.spec.errors import InputError
from harness.spec.layout import RECORD
from harness.spec.status import Status
from harness.store.schema import RUN_COLUMNS, RunRecord

OUTCOMES = ADDED, UPDATED, SAME, CONFLICT = "added", "updated", "same", "conflict"   # what ingesting a record did
COMPARED = ("score", "metrics", "finished_at", "config")   # a stored completed result is the same when these are


def record_paths(places: list[str]) -> list[str]:
    """The record files given (files) or found below the given folders, each folder's in sorted order."""
    paths = []
    for d in places:
        if os.path.isfile(d):
            paths.append(d)
        elif os.path.isdir(d):
            paths += sorted(os.path.join(root, RECORD) for root, _, files in os.walk(d) if RECORD in files)
        else:
            raise InputError(f"ingest: {d}: no such file or folder")
    if not paths:
        raise InputError(f"ingest: no {RECORD} under {', '.join(places)}")
    return paths


def _values(d: dict) -> dict:
    """A record's store columns (not its ids), timestamps parsed back from their ISO text."""
    out = {}
    for name in RUN_COLUMNS:
        if name in ("id", "parent_id") or name not in d:
            continue
        v = d[name]
        if isinstance(RunRecord.__table__.columns[name].type, DateTime) and isinstance(v, str):
            v = dt.datetime.fromisoformat(v)
        out[name] = v
    return out


class Ingest:
    """The ingest side of a Store (harness.store.db): needs its `_write()`."""

    def ingest(self, record: dict, children: list[dict] = (), replace: bool = False) -> str:
        """Load a record.json (a node that could not reach the store wrote it). Idempotent by (suite, cell key):
        returns "added", "updated" (the row was pending / running / failed), "same" (already there), or
        "conflict" (a different completed result is stored; replaced only with replace=True)."""
        if record.get("status") not in (Status.COMPLETED.value, Status.FAILED.value):
            raise InputError(f"record of cell {record.get('cell_key')} is {record.get('status')}: only completed "
                             f"or failed records can be ingested")
        values = _values(record)
        with self._write() as conn:
            with Session(bind=conn) as s:
                rec = s.scalars(select(RunRecord).where(RunRecord.suite == record["suite"],
                                                        RunRecord.cell_key == record["cell_key"])).first()
                outcome = ADDED
                if rec is not None:
                    if rec.status == Status.COMPLETED.value:
                        if all(getattr(rec, k) == v for k, v in values.items() if k in COMPARED):
                            return SAME
                        if not replace or record["status"] != Status.COMPLETED.value:
                            return CONFLICT
                    outcome = UPDATED
                    s.execute(delete(RunRecord).where(RunRecord.parent_id == rec.id))
                else:
                    rec = RunRecord(suite=record["suite"], cell_key=record["cell_key"])
                    s.add(rec)
                for k, v in values.items():
                    setattr(rec, k, v)
                s.flush()
                for child in children:
                    kid = RunRecord(**_values(child))
                    kid.parent_id = rec.id
                    s.add(kid)
                s.commit()
        return outcome
