"""`harness export`: results as CSV, LaTeX, Markdown or JSON."""

from __future__ import annotations

import sys

from harness.cli.common import add_db, existing_store

HELP = "write results as CSV, LaTeX, Markdown or JSON"
EXAMPLES = """
  harness export --table leaderboard --format markdown --suite demo
  harness export --table runs -o runs.csv   (the table's notes, if any, in runs.notes.txt)
  harness export --table best --format latex --model minilm -o best.tex
  harness export --table leaderboard --format json   (tied_with_best, p_vs_best, seeds_needed, flags per task)
"""


def add_arguments(p) -> None:
    add_db(p)
    p.add_argument("--format", choices=("csv", "latex", "markdown", "json"), default="csv",
                   help="output format (default: %(default)s)")
    p.add_argument("--table", choices=("runs", "leaderboard", "best", "ablation"), default="runs",
                   help="runs: one row per run; best: Houlsby protocol; leaderboard: variants x tasks; "
                        "ablation: every stored adapter-ablation span (default: %(default)s)")
    p.add_argument("--suite", default=None, help="one suite's runs (leaderboard/best: required where the store "
                                                "holds several suites)")
    p.add_argument("--model", default=None, help="leaderboard/best: one model (default: every model)")
    p.add_argument("-o", "--output", default=None,
                   help="file to write (default: standard output); a CSV's notes (the other formats' footnote) go "
                        "beside it, its name with .notes.txt (to standard error without -o); a .notes.txt there "
                        "that an export did not write is refused")


def run(args) -> int:
    from harness.report.export import (check_not_an_input, check_output, export_with_notes, write_csv_notes,
                                       write_output)

    if args.output:
        check_output(args.output, args.db, args.format)   # before the store is read: a bad -o writes nothing
    # read-only; a database that is not a store is refused, not exported as a store with nothing in it
    store = existing_store(args.db)
    text, notes = export_with_notes(store, args.format, args.table, args.suite, args.model)
    if args.output:
        check_not_an_input(args.output, store)   # a file of a stored run: the store names their folders
        # the notes first: where their file cannot be replaced or removed after all (an immutable file, another
        # user's in a sticky folder), the export stops with the CSV not written, not beside stale notes
        beside = write_csv_notes(args.output, notes) if args.format == "csv" else None
        write_output(args.output, text)
        print(f"wrote {args.output}" + (f" and its notes {beside}" if beside else ""), file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()   # (the table before its notes, where both go to one terminal)
        beside = None
    if notes and not beside:   # a CSV's footnote, where no file beside it can take it: not lost
        print("Notes (the table's footnote, not in the CSV):\n" + "\n".join(notes), file=sys.stderr)
    return 0
