"""Paired comparison of two runs on the same dev examples: score difference with a paired bootstrap
confidence interval and p-value (resample examples, score both systems on each resample)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from harness.spec import layout
from harness.tasks.kinds import kind_of
from harness.spec.tasks import Task


@dataclass
class Comparison:
    n_examples: int
    score_a: float
    score_b: float
    diff: float           # a - b, GLUE points
    ci_low: float
    ci_high: float
    p_value: float        # two-sided: how often the resampled difference has the other sign
    resamples: int


def _score(task: Task, preds, labels) -> float:
    return kind_of(task).sample_score(task, preds, labels)


def paired_bootstrap(task: Task, preds_a, preds_b, labels, resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> Comparison:
    preds_a, preds_b, labels = map(np.asarray, (preds_a, preds_b, labels))
    if not (len(preds_a) == len(preds_b) == len(labels)):
        raise ValueError("the two runs must be scored on the same examples")
    rng = np.random.default_rng(seed)
    n = len(labels)
    a, b = _score(task, preds_a, labels), _score(task, preds_b, labels)
    diffs = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, n, n)
        diffs[i] = _score(task, preds_a[idx], labels[idx]) - _score(task, preds_b[idx], labels[idx])
    alpha = (1 - confidence) / 2
    p = 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)) if a != b else 1.0
    return Comparison(n, a, b, a - b, float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha)),
                      float(min(1.0, p)), resamples)


def load_predictions(output_dir: str, split: str):
    """(idx, pred, label) arrays a run saved for one dev split, or None."""
    path = os.path.join(output_dir or "", layout.PREDICTIONS)
    if not os.path.isfile(path):
        return None
    data = np.load(path)
    if f"{split}_idx" not in data:
        return None
    return data[f"{split}_idx"], data[f"{split}_pred"], data[f"{split}_label"]


def align(a, b):
    """Restrict two (idx, pred, label) triples to their common examples, in the same order."""
    common = np.intersect1d(a[0], b[0])
    ia = np.searchsorted(a[0], common, sorter=np.argsort(a[0]))
    ib = np.searchsorted(b[0], common, sorter=np.argsort(b[0]))
    oa, ob = np.argsort(a[0])[ia], np.argsort(b[0])[ib]
    return a[1][oa], b[1][ob], a[2][oa]


def _predictions_of(record):
    from harness.spec.errors import InputError
    from harness.spec.tasks import get_task

    task = get_task(record.task)
    split = task.eval_splits[0].hub_split
    preds = load_predictions(record.output_dir, split)
    if preds is None:
        raise InputError(f"run {record.id}: no saved predictions in {record.output_dir}")
    return task, preds


def compare_runs(a, b, resamples: int = 1000) -> Comparison:
    """Two stored runs of one task, on the dev examples both were scored on (the first dev split)."""
    from harness.spec.errors import InputError

    if a.task != b.task:
        raise InputError(f"runs {a.id} and {b.id} are on different tasks ({a.task}, {b.task})")
    task, pa = _predictions_of(a)
    _, pb = _predictions_of(b)
    return paired_bootstrap(task, *align(pa, pb), resamples=resamples)


def compare_variants(store, suite: str | None, task_name: str, label_a: str, label_b: str,
                     resamples: int = 1000, model: str | None = None) -> tuple[Comparison, int]:
    """Two method variants of one suite and model across seeds: runs paired by seed (same hyperparameters
    otherwise: the variant's best setting on dev, as the leaderboard picks it, from the same runs), their aligned
    predictions pooled into one paired sample."""
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
    parts = []
    split = task.eval_splits[0].hub_split
    for seed in seeds:
        pa = load_predictions(chosen[0].loc[seed, "output_dir"], split)
        pb = load_predictions(chosen[1].loc[seed, "output_dir"], split)
        if pa is None or pb is None:
            raise InputError(f"seed {seed}: saved predictions missing")
        parts.append(align(pa, pb))
    a, b, y = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return paired_bootstrap(task, a, b, y, resamples=resamples), len(seeds)


def column(store, suite: str | None, task_name: str, model: str | None = None, resamples: int = 1000):
    """Every method variant of one task column (one suite, one model) against the column's best, as the tables
    show it: the best-table rows of that task (mean, std, p_vs_best, tied_with_best, seeds_needed, flags)."""
    from harness.report.tables import best_table, runs_frame
    from harness.spec.errors import InputError
    from harness.spec.tasks import get_task

    task = get_task(task_name)
    runs = runs_frame(store, suite)
    runs = runs[runs["task"] == task.name]
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
