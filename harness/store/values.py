"""Values as the store keeps them, the same on every backend: a text without NUL characters (PostgreSQL's text
cannot hold one), JSON without NaN or infinity (PostgreSQL's json refuses them). The engine writes every JSON
column through store_json; finish, ingest and the schema's free-text columns go through store_text / as_stored."""

from __future__ import annotations

import json
import math


NUL_STORED_AS = "\ufffd"   # Unicode's replacement character: one that could not be kept


def store_text(value):
    """A text's value as the store keeps it: PostgreSQL's text cannot hold a NUL character (a failure whose
    message held one was never recorded: `PostgreSQL text fields cannot contain NUL (0x00) bytes`, retried as an
    outage), so every NUL is NUL_STORED_AS, on every backend: SQLite and PostgreSQL keep the same value. Applied
    to free text (error, command: schema.RedactedText) on every write and read, to every text field a finish
    writes (queue.finish, so the record.json written from the row says it too), to every one of a record ingest
    reads, and inside JSON (as_stored)."""
    return value.replace("\x00", NUL_STORED_AS) if isinstance(value, str) else value


def as_stored(value):
    """A JSON column's value as the store holds it (store_json): every NaN / infinity (a correlation of constant
    predictions, a rate over no time) as None; every text and key as store_text keeps it (PostgreSQL's json keeps
    the escape \\u0000, but reading any field of such a document (->>, as the tables do) failed: `unsupported
    Unicode escape sequence`, for every table of the store)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return store_text(value)
    if isinstance(value, dict):
        return {store_text(k): as_stored(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_stored(v) for v in value]
    return value


def store_json(value) -> str:
    """How a JSON column is written: strict JSON, a non-finite number as null, a NUL as store_text keeps it.
    PostgreSQL's json refuses NaN (the whole result was lost at finish, `invalid input syntax for type json`), and
    SQLite's JSON functions refuse a document holding one; the run's record.json keeps the value as the loop
    computed it (`harness ingest` reads it as stored: as_stored)."""
    return json.dumps(as_stored(value))
