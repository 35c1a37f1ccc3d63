"""`harness compare A B`: paired bootstrap of two runs, or of two method variants over seeds; `harness compare
--task T`: the whole column of T, every variant against the best, as the tables mark ties."""

from __future__ import annotations

from harness.cli.common import bounded_int, add_db, existing_store, find_run, task_option
from harness.stats import MAX_RESAMPLES, RESAMPLES

HELP = ("paired bootstrap of two runs (or two method variants over seeds) on the same dev examples, or every "
        "variant of a task against its best")
EXAMPLES = """
  harness compare 12 17                     (two runs, by id or cell key)
  harness compare full layernorm --suite demo --task stsb --resamples 5000
  harness compare --suite demo --task sst2  (every variant against the best: p, Holm, tied, seeds needed)
"""


def add_arguments(p) -> None:
    p.add_argument("a", nargs="?", help="run id or cell key; with --task: a method label (none: the whole column)")
    p.add_argument("b", nargs="?")
    add_db(p)
    p.add_argument("--suite", default=None, help="with --task: the suite of the method variants")
    p.add_argument("--model", default=None, help="with --task: the model (when the store has several)")
    p.add_argument("--task", default=None, help="compare method variants on this task (A and B, runs paired by "
                                                "seed; or, without A and B, every variant against the best)")
    p.add_argument("--resamples", type=resamples, default=RESAMPLES,
                   help="bootstrap resamples (default: %(default)s; at most a million)")


def resamples(text: str) -> int:
    """--resamples: a whole number from 1 to MAX_RESAMPLES."""
    return bounded_int(text, 1, MAX_RESAMPLES)


def run(args) -> int:
    from harness.analysis.compare import compare_runs, compare_variants
    from harness.report.text import format_comparison
    from harness.spec.errors import InputError

    if args.b is None and not (args.a is None and args.task):
        raise InputError("compare: give two runs (A B), two method labels with --task, or --task alone for the "
                         "whole column")
    for option, value in (("--suite", args.suite), ("--model", args.model)):
        if value and not args.task:   # two runs are named by id or key: nothing to restrict
            raise InputError(f"{option}: only with --task (two runs A B are compared as they are)")
    if args.task:
        args.task = task_option(args.task)
    store = existing_store(args.db)
    if args.task:   # a --suite or --model of no run is named as such, not as a method label with no runs
        from harness.report.export import check_names

        check_names(store, args.suite, args.model)
    if args.a is None:
        print(format_column(args.task, args.resamples, store, args.suite, args.model))
        return 0
    if args.task:
        result, pairs = compare_variants(store, args.suite, args.task, args.a, args.b, args.resamples, args.model)
        what = f"{args.a} vs {args.b} on {args.task}, {pairs} seed pair(s) (scores: mean over the seeds)"
    else:
        a, b = find_run(store, args.a), find_run(store, args.b)
        if a.id == b.id:   # (an id and its cell key, or the same one twice): no comparison, p = 1 says nothing
            raise InputError(f"B: run {b.id} is run A ({args.a}); give two different runs")
        result = compare_runs(a, b, args.resamples)
        apart = differences(a, b)
        what = f"run {a.id} ({', '.join([a.task, a.method_label] + apart[0])}) vs run {b.id} " \
               f"({', '.join([b.method_label] + apart[1])})"
    print(format_comparison(what, result, args.task or a.task))
    return 0


def differences(a, b) -> tuple[list[str], list[str]]:
    """What sets two runs apart beyond their method: their suite, model and budget where they differ (two runs of
    one label on two models, or two budgets, read as one variant against itself)."""
    from harness.spec.cell import budget_text

    sides: tuple[list[str], list[str]] = ([], [])
    for name, value in (("suite", lambda r: r.suite), ("model", lambda r: r.model),
                        ("budget", lambda r: budget_text(r.budget) or "the default")):
        if value(a) != value(b):
            sides[0].append(f"{name} {value(a)}")
            sides[1].append(f"{name} {value(b)}")
    return sides


def format_column(task: str, resamples: int, store, suite, model) -> str:
    """One line per variant, best first: score, p (raw and Holm), tied or below, seeds needed, flags; then the
    footnote of the tables."""
    from harness.analysis.compare import column
    from harness.report.export import (NOT_TESTED, SETTINGS_FAILED_NOTE, SETTINGS_NOTE, UNFINISHED, UNFINISHED_NOTE,
                                       flag_value, fmt_mean_std, footnote, seeds_of, seeds_text)

    best = column(store, suite, task, model, resamples)
    rows = [("method", "score", "seeds", "p", "p (Holm)", "vs best", "seeds needed", "flags")]
    for _, r in best.iterrows():
        if flag_value(r["is_best"]):
            verdict, p, p_holm = "best", "", ""
        elif not flag_value(r["tested"]):
            verdict, p, p_holm = NOT_TESTED, "", ""
        else:
            verdict = "tied" if flag_value(r["tied_with_best"]) else "below"
            p, p_holm = f"{r['p_raw']:.4f}", f"{r['p_vs_best']:.4f}"
        rows.append((r["method_label"], fmt_mean_std(r["mean"], r["std"], r["n_seeds"]),
                     seeds_of(r["n_seeds"], r.get("seeds_planned")), p,
                     p_holm, verdict, "" if flag_value(r["is_best"]) else seeds_text(r["seeds_needed"]), r["flags"]))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    first = best.iloc[0]
    lines = [f"{first['suite']} · {first['model']} · {task}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    # the best table's notes, less those on its settings / EVP columns, which this listing does not print
    notes = [n.replace("Bold: the best mean in its column and every variant", "tied: a variant", 1)
             .replace(UNFINISHED_NOTE, f"settings_{UNFINISHED} (n more) (flags):", 1)
             for n in footnote("best", best) if not n.startswith((SETTINGS_NOTE, SETTINGS_FAILED_NOTE))]
    return "\n".join(lines + [""] + notes)
