"""Paired comparison of two runs, or of two method variants over seeds, on the same dev examples: score
difference with a paired bootstrap confidence interval and p-value. The resampling is the tables' column test's
(harness.stats.significance): each replicate draws every dev split's examples once and scores every seed of both
sides on them, so seeds are never counted as more examples."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from harness.stats.significance import RESAMPLES, SAME_SCORE, SEED, Split, load_column, replicates, scored_examples
from harness.spec.tasks import Task

A, B = "A", "B"   # the two sides' keys in a Split's preds: two runs may have the same method label


@dataclass
class Comparison:
    n_examples: int       # distinct dev examples, summed over the task's dev splits
    score_a: float        # mean over A's seeds of its score (mean over dev splits), as the tables
    score_b: float
    diff: float           # a - b, GLUE points
    ci_low: float
    ci_high: float
    p_value: float        # two-sided: twice (1 + resamples where the difference has the other sign) / (1 + B)
    resamples: int
    budgets: tuple[str, str] | None = None   # two variants' chosen settings of two budgets: (A's, B's)
    data: tuple = ()   # each compared run's data for the task (report.provenance run_data): its note's evidence
    scored: tuple[int, int] = ()   # dev examples (A's, B's) their runs were scored on, the most of a side's seeds


def paired_bootstrap(task: Task, splits: list[Split], resamples: int = RESAMPLES, confidence: float = 0.95,
                     seed: int = SEED) -> Comparison:
    """A against B on splits whose preds are {A: (seeds, n), B: (seeds, n)}, as load_column aligns them."""
    observed, reps = replicates(task, splits, resamples, seed)
    a, b = observed[A], observed[B]
    diffs = reps[A] - reps[B]
    alpha = (1 - confidence) / 2
    # (1 + count) / (1 + B) per side, as the tables' test: B resamples cannot show a p below 1 / (1 + B); a tie
    # (to within SAME_SCORE: the sides' sums keep their operands' rounding) counts on both sides
    other = min(np.sum(diffs <= SAME_SCORE), np.sum(diffs >= -SAME_SCORE))
    p = 2 * (1 + other) / (1 + resamples) if abs(a - b) > SAME_SCORE else 1.0
    return Comparison(sum(len(s.labels) for s in splits), a, b, a - b, float(np.quantile(diffs, alpha)),
                      float(np.quantile(diffs, 1 - alpha)), float(min(1.0, p)), resamples)


def _compare(task: Task, dirs_a: list, dirs_b: list, names: dict, resamples: int) -> Comparison:
    """The runs in dirs_a (one per seed) against those in dirs_b, on every dev split of the task."""
    from harness.spec.errors import InputError

    splits, untested = load_column(task, {A: dirs_a, B: dirs_b})
    if untested:
        raise InputError(f"{' and '.join(names[k] for k in (A, B) if k in untested)}: saved predictions of some "
                         f"{task.name} dev split not on this machine, or their gold labels (SQuAD: question "
                         "ids) differ from the other side's (not the same data)")
    # a side scored on more examples than the two share (a max_eval_samples cap on one side): its score here is
    # not its stored one, which format_comparison says
    scored = tuple(max(scored_examples(task, d) for d in dirs) for dirs in (dirs_a, dirs_b))
    return replace(paired_bootstrap(task, splits, resamples), scored=scored)


def compare_runs(a, b, resamples: int = RESAMPLES) -> Comparison:
    """Two stored runs of one task, on the dev examples both were scored on."""
    from harness.report.provenance import run_data
    from harness.spec.errors import InputError
    from harness.spec.tasks import get_task

    if a.task != b.task:
        raise InputError(f"runs {a.id} and {b.id} are on different tasks ({a.task}, {b.task})")
    # a run the store keeps no folder for (a store written without one) was named "run 1 (None)", its predictions
    # said to be "not on this machine": they are nowhere the store says
    folderless = [f"run {r.id}" for r in (a, b) if not r.output_dir]
    if folderless:
        raise InputError(f"{' and '.join(folderless)}: the store keeps no output folder for "
                         f"{'it' if len(folderless) == 1 else 'them'}: no saved predictions to compare")
    result = _compare(get_task(a.task), [a.output_dir], [b.output_dir],
                      {A: f"run {a.id} ({a.output_dir})", B: f"run {b.id} ({b.output_dir})"}, resamples)
    return replace(result, data=tuple(run_data((getattr(r, "extra", None) or {}).get("data_sources"), r.task)
                                      for r in (a, b)))


def compare_variants(store, suite: str | None, task_name: str, label_a: str, label_b: str,
                     resamples: int = RESAMPLES, model: str | None = None) -> tuple[Comparison, int]:
    """Two method variants of one suite and model across seeds: the runs of the seeds both have (same
    hyperparameters otherwise: the variant's best setting on dev, as the leaderboard picks it, from the same
    runs), each variant's score the mean over its seeds, as the tables'."""
    from harness.spec.errors import InputError, did_you_mean
    from harness.report.tables import best_setting_runs, runs_frame
    from harness.stats.selection import selectable_runs
    from harness.spec.tasks import get_task

    task = get_task(task_name)
    runs, _ = selectable_runs(runs_frame(store, suite))   # what the leaderboard selects from
    runs = runs[runs["task"] == task.name]
    if model:
        runs = runs[runs["model"] == model]
    labels = sorted(set(runs["method_label"]))
    for label in (label_a, label_b):
        if label not in labels:   # a bare method name: the variants of it there are (labels carry their params)
            variants = [known for known in labels if known.split("(")[0] == label]
            hint = (f" (its variants here: {', '.join(variants)})" if variants else did_you_mean(label, labels))
            raise InputError(f'no completed {task.name} runs of "{label}"{hint}')
    pair = runs[runs["method_label"].isin([label_a, label_b])]
    for what, option in (("suite", "--suite"), ("model", "--model")):   # a pair of one column, as the tables
        values = sorted(set(pair[what]))
        if len(values) > 1:
            raise InputError(f"{option}: runs of {task.name} come from several {what}s ({', '.join(values)}); "
                             "choose one")
    chosen = []
    for label in (label_a, label_b):
        chosen.append(best_setting_runs(runs[runs["method_label"] == label]).set_index("seed"))
    seeds = sorted(set(chosen[0].index) & set(chosen[1].index))
    if not seeds:
        raise InputError(f'"{label_a}" and "{label_b}" share no seed on {task.name}')
    dirs = [[c.loc[seed, "output_dir"] for seed in seeds] for c in chosen]
    result = _compare(task, *dirs, {A: f'"{label_a}"', B: f'"{label_b}"'}, resamples)
    budgets = tuple(str(c["budget"].iloc[0] or "") for c in chosen)   # one per setting (it is part of the setting)
    result = replace(result, data=tuple(c.loc[seed, "data"] for c in chosen for seed in seeds))
    return (replace(result, budgets=budgets) if budgets[0] != budgets[1] else result), len(seeds)


def column(store, suite: str | None, task_name: str, model: str | None = None, resamples: int = RESAMPLES):
    """Every method variant of one task column (one suite, one model) against the column's best, as the tables
    show it: the best-table rows of that task (mean, std, p_vs_best, tied_with_best, seeds_needed, flags)."""
    from harness.report.tables import best_table, runs_frame
    from harness.spec.errors import InputError
    from harness.spec.tasks import get_task
    from harness.stats.selection import column_rows

    task = get_task(task_name)
    runs = column_rows(runs_frame(store, suite), task.name)   # one column's rows: the tests of one task only
    best = best_table(runs, resamples=resamples, model=model)
    if best.empty:
        where = f" in suite {suite}" if suite else ""
        raise InputError(f"--task {task.name}: no completed runs{where}" + (f" of model {model}" if model else ""))
    for what, option in (("suite", "--suite"), ("model", "--model")):
        values = sorted(set(best[what]))
        if len(values) > 1:
            raise InputError(f"{option}: runs of {task.name} come from several {what}s ({', '.join(values)}); "
                             "choose one")
    return best.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)
