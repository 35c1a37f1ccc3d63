"""`harness compare A B`: paired bootstrap of two runs, or of two method variants over seeds."""

from __future__ import annotations

from harness.cli.common import add_db, existing_store, find_run, positive_int

HELP = "paired bootstrap of two runs (or two method variants over seeds) on the same dev examples"
EXAMPLES = """
  harness compare 12 17                     (two runs, by id or cell key)
  harness compare full bitfit --suite demo --task rte --resamples 5000
"""


def add_arguments(p) -> None:
    p.add_argument("a", help="run id or cell key; with --task: a method label")
    p.add_argument("b")
    add_db(p)
    p.add_argument("--suite", default=None, help="with --task: the suite of the two method variants")
    p.add_argument("--task", default=None, help="compare method variants A and B on this task, runs paired by seed")
    p.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples (default: %(default)s)")


def run(args) -> int:
    from harness.analysis.compare import compare_runs, compare_variants
    from harness.report.text import format_comparison

    store = existing_store(args.db)
    if args.task:
        result, pairs = compare_variants(store, args.suite, args.task, args.a, args.b, args.resamples)
        what = f"{args.a} vs {args.b} on {args.task}, {pairs} seed pair(s)"
    else:
        a, b = find_run(store, args.a), find_run(store, args.b)
        result = compare_runs(a, b, args.resamples)
        what = f"run {a.id} ({a.task}, {a.method_label}) vs run {b.id} ({b.method_label})"
    print(format_comparison(what, result))
    return 0
