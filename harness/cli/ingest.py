"""`harness ingest DIR...`: load record.json files into the store (idempotent)."""

from __future__ import annotations

import sys

from harness.cli.common import add_db, add_lease_timeout, existing_store
from harness.spec.errors import EXIT_FAILED, EXIT_INPUT, EXIT_OK, InputError

HELP = ("load record.json files (written by workers that could not reach the store) into the store; "
        "idempotent")
EXAMPLES = """
  harness ingest results/                   (every record.json under results/)
  harness ingest /scratch/out --db postgresql://user@host/harness --replace
"""
REFUSED = "refused"
CONFLICT_FIELDS_SHOWN = 4   # of the fields a conflicting record differs in, named in its line


def add_arguments(p) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders searched for record.json files (or the files)")
    add_db(p)
    p.add_argument("--replace", action="store_true",
                   help="let a completed record replace a different completed result of the same cell (the "
                        "analyses of the result replaced go with it)")
    add_lease_timeout(p, "a running cell whose last heartbeat is younger than this is held by a live worker: "
                         "its record is not ingested")


def run(args) -> int:
    """Every record.json under the given folders, by (suite, cell key): added, updated (the store had the cell
    pending, failed, or running under a stale lease of the attempt that kept this record), already there, left
    alone (a running attempt holds the cell), older (the store has the cell at a later attempt: the record
    would take it back), kept (a failed record for a cell the store has completed: a failure never replaces a
    result, with --replace neither), a conflict (a different completed result is stored: never replaced
    silently), or refused (not a valid record: one line naming the file and the field; nothing of it is
    written). Exit 2 when a record was refused, else 1 when one was left alone or conflicted, else 0 (an older
    or a kept record is reported, not an error: the store is ahead of it)."""
    from harness.spec.status import lease_timeout
    from harness.store.db import Store
    from harness.store.engine import default_db_url
    from harness.store.ingest import CONFLICT, KEPT, LEASED, OLDER, OUTCOMES, read_record, record_attempt, record_paths

    lease_timeout_s = lease_timeout(args.lease_timeout_s)
    paths = record_paths(args.dirs)
    url = args.db or default_db_url()
    # a store that is there is checked now, read-only, so a bad --db or a database that is not a store is refused
    # first; a store is opened for writing (which migrates it, or creates a new one) only for a valid record
    # (make_engine refuses a folder that could never hold a new SQLite file either way)
    there = existing_store(url, new_ok=True)
    if there is not None:
        there.engine.dispose()
    counts = {outcome: 0 for outcome in (*OUTCOMES, REFUSED)}
    valid = []
    for path in paths:   # every record read first: where none is valid, no store is created or written
        try:
            valid.append((path, read_record(path)))
        except (OSError, InputError) as exc:
            counts[REFUSED] += 1
            print(f"{path}: refused: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
    store = Store(url) if valid else None
    for path, record in valid:
        outcome = store.ingest(record, replace=args.replace, lease_timeout_s=lease_timeout_s)
        counts[outcome] += 1
        if outcome == CONFLICT:   # what differs, so the user can tell which result to keep
            fields = store.differences(record)   # (none: another ingest changed the row since)
            shown = ", ".join(fields[:CONFLICT_FIELDS_SHOWN]) + (
                f" and {len(fields) - CONFLICT_FIELDS_SHOWN} more" if len(fields) > CONFLICT_FIELDS_SHOWN else "")
            print(f"{path}: conflict: suite {record.suite} cell {record.cell_key} already has a different "
                  f"completed result ({f'differing: {shown}; ' if fields else ''}kept, --replace takes this one)",
                  file=sys.stderr)
        elif outcome == LEASED:
            print(f"{path}: skipped: suite {record.suite} cell {record.cell_key} is running (a worker holds it: "
                  f"its lease is live, or stale while the worker may still be training, and this record is not "
                  f"that attempt's own): ingest again once the cell finished or went back to the queue",
                  file=sys.stderr)
        elif outcome == KEPT:
            print(f"{path}: kept: suite {record.suite} cell {record.cell_key} has a completed result; this "
                  f"record is a failure, which never replaces one (--replace neither)", file=sys.stderr)
        elif outcome == OLDER:
            print(f"{path}: older: suite {record.suite} cell {record.cell_key} is at a later attempt than this "
                  f"record's ({record_attempt(record)}): kept as it is (a record never takes a cell back)",
                  file=sys.stderr)
    print(f"ingested {len(paths)} record(s): " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    # some records refused (not records, another suite's...): EXIT_INPUT, though the valid ones were ingested
    return EXIT_INPUT if counts[REFUSED] else EXIT_FAILED if counts[CONFLICT] or counts[LEASED] else EXIT_OK
