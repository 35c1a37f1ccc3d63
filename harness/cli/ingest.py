"""`harness ingest DIR...`: load record.json files into the store (idempotent)."""

from __future__ import annotations

import json
import os
import sys

from harness.cli.common import add_db
from harness.spec.errors import InputError
from harness.spec.layout import RECORD

HELP = ("load record.json files (written by workers that could not reach the store) into the store; "
        "idempotent")
EXAMPLES = """
  harness ingest results/                   (every record.json under results/)
  harness ingest /scratch/out --db postgresql://user@host/harness --replace
"""


def add_arguments(p) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders searched for record.json files (or the files)")
    add_db(p)
    p.add_argument("--replace", action="store_true",
                   help="let a completed record replace a different completed result of the same cell")


def run(args) -> int:
    """Every record.json under the given folders, by (suite, cell key): added, updated (the store had the cell
    pending, running or failed), already there, or a conflict (a different completed result is stored: never
    replaced silently)."""
    from harness.store.db import Store
    from harness.store.engine import default_db_url
    from harness.store.ingest import CONFLICT, OUTCOMES, record_paths

    paths = record_paths(args.dirs)
    store = Store(args.db or default_db_url())
    counts = {outcome: 0 for outcome in (*OUTCOMES, "unreadable")}
    for path in paths:
        try:
            with open(path) as f:
                record = json.load(f)
            outcome = store.ingest(record, record.get("children") or [], replace=args.replace)
        except (OSError, ValueError, KeyError, InputError) as exc:
            counts["unreadable"] += 1
            print(f"{path}: not ingested: {exc}", file=sys.stderr)
            continue
        counts[outcome] += 1
        if outcome == CONFLICT:
            print(f"{path}: conflict: suite {record['suite']} cell {record['cell_key']} already has a different "
                  f"completed result (kept; --replace takes this one)", file=sys.stderr)
    print(f"ingested {len(paths)} record(s): " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return 1 if counts[CONFLICT] or counts["unreadable"] else 0
