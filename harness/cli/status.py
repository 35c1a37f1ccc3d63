"""`harness status SUITE`: a grid at a glance: the summary, the time left, who runs what, what failed."""

from __future__ import annotations

import json
import sys
import time

from harness.cli.common import add_db, add_lease_timeout, add_max_cells, add_suite, existing_store, process_count

HELP = "a suite's progress: counts, time left, running / stale cells, failures (--all: every cell)"
EXAMPLES = """
  harness status suites/demo.yaml
  harness status suites/demo.yaml --watch 30
  harness status suites/glue.yaml --db postgresql://user@host/harness --json
  harness status suites/demo.yaml --all
"""


def positive_seconds(text: str) -> float:
    """--watch's type: a number of seconds, by the rule of every seconds option (spec.status.parse_seconds)."""
    import argparse

    from harness.spec.status import parse_seconds

    try:
        return parse_seconds(text)   # 1e300 was: the status once, then time.sleep's OverflowError as a traceback
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(p) -> None:
    add_suite(p)
    add_db(p)
    add_max_cells(p)
    p.add_argument("--num-processes", type=process_count, default=None,
                   help="process count the suite runs with (part of the cell key; default: any count seen "
                        "in the store, else 1)")
    add_lease_timeout(p, "a running cell whose last heartbeat is older than this is shown stale")
    p.add_argument("--all", action="store_true", help="also list every cell with its state")
    p.add_argument("--json", action="store_true",
                   help="print JSON for scripts: counts, estimate, running, stale, failures (with --watch: one "
                        "line per refresh)")
    p.add_argument("--watch", type=positive_seconds, default=None, metavar="N",
                   help="refresh every N seconds until every cell is done (completed or failed) or Ctrl-C")


def run(args) -> int:
    from harness.plan.suite import load_suite
    from harness.store.db import Store
    from harness.store.engine import StoreChanged

    suite = load_suite(args.suite, args.max_cells)
    from harness.spec.status import lease_timeout

    args.lease_timeout_s = lease_timeout(args.lease_timeout_s)   # the flag's or $HARNESS_LEASE_TIMEOUT_S, checked
    store, looked = None, False
    try:
        while True:
            try:
                if store is None:   # status only reads: it never creates or changes a store
                    try:
                        # None: no worker has started yet (--watch: look again next time). The first look refuses
                        # a database that is not a store; one that appears while --watch waits may be a worker's
                        # store whose tables are being created
                        store = Store(args.db, read_only=True) if looked else existing_store(args.db, new_ok=True)
                    except FileNotFoundError:
                        store = None
                    looked = True
                payload, text = snapshot(suite, store, args)
            except StoreChanged:
                # a worker that started during this look wrote the store: what --watch waits for, not the end of
                # the watch (exit 1); its next look reads the store anew
                if not args.watch:
                    raise
                time.sleep(args.watch)
                continue
            if args.json:
                print(json.dumps(payload, indent=None if args.watch else 1), flush=True)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\033[H\033[2J", end="")   # a refreshed screen, as watch(1)
                elif args.watch:
                    print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
                print(text, flush=True)
            if not args.watch or payload["done"]:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def store_notes(suite, store, keys, nprocs: int, db: str | None) -> list[str]:
    """What the counts do not show (harness.report.progress.rows_beside): a store without any row of the suite,
    where every cell counts as pending (right before a worker starts, and what --watch waits through; a wrong
    --db otherwise), and the suite's rows that are no cell of this YAML, which are not counted."""
    from harness.report.progress import rows_beside
    from harness.store.engine import default_db_url
    from harness.store.redact import redact_url

    if store is None:
        return [f"no store at {redact_url(db or default_db_url())} yet: every cell counts as pending until a "
                f"worker creates it and queues them"]
    beside, queued, suites = rows_beside(store, suite.name, keys)
    if suite.name not in suites:
        held = f"it has: {', '.join(suites)}" if suites else "it holds no rows"
        return [f"the store holds no row of suite {suite.name} ({held}): every cell counts as pending until a "
                f"worker queues them; if one has, --db names another store"]
    if beside:
        return [f"{beside} row(s) of suite {suite.name} in the store are no cell of this YAML at {nprocs} "
                f"process(es) (cells removed or changed since they were queued, or queued with another "
                f"--num-processes): not counted here"
                + (f"; the tables (harness export, the board) read the store, not the YAML: they count the "
                   f"{queued} queued or running as seeds and settings to come" if queued else "")]
    return []


def snapshot(suite, store, args) -> tuple[dict, str]:
    """The status of one state of the store: its counts, time left and notes read in one snapshot (a cell a worker
    claims or finishes meanwhile is in all of them or none)."""
    from contextlib import nullcontext

    with store.snapshot() if store is not None else nullcontext():
        return _snapshot(suite, store, args)


def _snapshot(suite, store, args) -> tuple[dict, str]:
    from harness.report.progress import cell_states, time_left
    from harness.report.text import checkpoint_step, status_line, status_payload, status_report

    nprocs = args.num_processes
    if nprocs is None:  # the process count is part of the key: use the one the store has results for
        seen = store.process_counts(suite.name) if store is not None and store.columns() else set()
        nprocs = seen.pop() if len(seen) == 1 else 1
    states = cell_states(suite, store, nprocs, args.lease_timeout_s)
    # lease times are the database's: aged on its clock, not this machine's (a login node's may be off)
    now = store.clock() if store is not None else None
    left = time_left(store, states, data_dir=suite.data_dir(), now=now)
    payload = status_payload(suite, states, left, nprocs, now)
    payload["notes"] = store_notes(suite, store, [cell.key for cell, _, _ in states], nprocs, args.db)
    text = status_report(payload)
    if args.all:
        text += "\nevery cell:\n" + "\n".join(status_line(state, cell, rec, now) for cell, state, rec in states)
        if args.json:
            payload["cells"] = [{"key": c.key, "label": c.label, "state": str(s),
                                 **dict(zip(("checkpoint_step", "checkpoint_total_steps"), checkpoint_step(rec)))}
                                for c, s, rec in states]
    return payload, text
