"""`harness status SUITE`: done / failed / running / pending per cell of a suite."""

from __future__ import annotations

from harness.cli.common import add_db, add_lease_timeout, add_max_cells, add_suite, positive_int
from harness.spec.status import CellState

HELP = "done / failed / running / pending per cell of a suite"
EXAMPLES = """
  harness status suites/demo.yaml
  harness status suites/glue.yaml --db postgresql://user@host/harness --num-processes 4
"""


def add_arguments(p) -> None:
    add_suite(p)
    add_db(p)
    add_max_cells(p)
    p.add_argument("--num-processes", type=positive_int, default=None,
                   help="process count the suite runs with (part of the cell key; default: any count seen "
                        "in the store, else 1)")
    add_lease_timeout(p, "a running cell whose last heartbeat is older than this is shown stale")


def run(args) -> int:
    from harness.launch.runner import status_rows
    from harness.plan.suite import load_suite
    from harness.report.text import status_line
    from harness.store.db import Store
    from harness.store.engine import default_db_url

    suite = load_suite(args.suite, args.max_cells)
    url = args.db or default_db_url()
    try:
        store = Store(url, read_only=True)  # status only reads: it never creates or changes a store
    except FileNotFoundError:
        store = None
    nprocs = args.num_processes
    if nprocs is None:  # the process count is part of the key: use the one the store has results for
        seen = {r.num_processes for r in store.records(suite.name)} if store else set()
        nprocs = seen.pop() if len(seen) == 1 else 1
    rows = status_rows(suite, store, nprocs, args.lease_timeout_s)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        print(status_line(row["status"], row["cell"], row["record"]))
    summary = ", ".join(f"{counts[s]} {s}" for s in CellState if counts.get(s))
    print(f"suite {suite.name} ({nprocs} process(es)): {len(rows)} cells: {summary}")
    return 0
