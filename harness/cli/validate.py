"""`harness validate SUITE`: check a suite and print its grid size; trains nothing."""

from __future__ import annotations

from harness.cli.common import add_data_dir, add_max_cells, add_suite, process_count

HELP = "check a suite and print its grid size; trains nothing"
EXAMPLES = """
  harness validate suites/glue.yaml
  harness validate suites/demo.yaml --list --num-processes 2
"""


def add_arguments(p) -> None:
    add_suite(p)
    p.add_argument("--num-processes", type=process_count, default=1,
                   help="process count the suite will run with (part of the cell key; default: %(default)s)")
    p.add_argument("--list", action="store_true", help="also print every cell")
    add_data_dir(p, help="check the data there (default: the suite's data_dir, then $HARNESS_DATA_DIR, then the "
                         "hub)")
    add_max_cells(p)


def run(args) -> int:
    from harness.plan.preflight import data_rows, preflight
    from harness.plan.suite import load_suite

    suite = load_suite(args.suite, args.max_cells)
    notes = preflight(suite, args.data_dir) + data_rows(suite, args.data_dir)
    cells = suite.cells(num_processes=args.num_processes)
    m = suite.model
    print(f"{args.suite}: suite {suite.name} is valid: {len(cells)} cells = {suite.breakdown()}")
    if m.log_with:
        from harness.plan.checks import tracker_settings

        print(f"trackers: {', '.join(tracker_settings(m))} (one run per cell, log_every {m.log_every} steps; "
              f"docs/tracking.md)")
    for note in notes:
        print(note)
    print(_estimate_line(cells, suite.data_dir(args.data_dir)))
    if args.list:
        for c in cells:
            print(f"  {c.key}  {c.label}")
    return 0


def _estimate_line(cells, data_dir: str | None) -> str:
    """"estimated N device-hours from M stored runs" from the default store ($HARNESS_DB), read only (validate
    writes nothing); a store that is missing or cannot be read gives the "no stored throughput" line (the
    estimate is advice: it never fails a validation)."""
    from harness.report.progress import validate_line
    from harness.store.db import Store

    try:
        store = Store(None, read_only=True)
    except Exception:   # noqa: BLE001 (missing file, unreachable server: no stored throughput here)
        store = None
    try:
        return validate_line(cells, store, data_dir)
    except Exception:   # noqa: BLE001
        return validate_line(cells, None, data_dir)
