"""Which method variants are tied with the best of a table column: paired bootstrap over dev examples, seeds
pooled, Holm-corrected across the column; the same for the average over tasks; seeds needed to resolve a gap.

A column is one (suite, model, task). Each variant brings the runs (one per seed) of its best setting on dev.
Their saved predictions are aligned on the dev examples every variant was scored on. On each of B
resamples of those examples (the same resample for every variant: the test is paired), a variant's score is the
mean over its seeds of the task's main score on the resample: for accuracy and QA F1 that is the mean of the
seed-averaged per-example scores; F1, MCC and correlations are recomputed on each seed's predictions. The
one-sided p-value that a variant is below the best is the share of resamples where it is not
((1 + count) / (1 + B), never 0). The resamples are drawn from a fixed seed, so tables are reproducible.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from harness.stats import RESAMPLES

ALPHA = 0.05
POWER = 0.8
SEED = 0
CHUNK = 2_000_000   # entries of the (rows, n) resample matrix at once: bounds memory on QQP-sized dev sets
# Scores (GLUE points) this close are one score: a sum of seeds' scores, or of per-example scores averaged over
# seeds, keeps its operands' rounding, so two means with as many dev examples right (790 + 802 and 796 + 796 of
# 1,000) read 79.6 and 79.60000000000001, and two sides of a resample that tie differ by ±1.4e-14. Far below what
# one dev example changes (100 / (n * seeds): 2.5e-4 on QQP with 10 seeds).
SAME_SCORE = 1e-7


def at_best(means) -> np.ndarray:
    """Which of the means (no NaN) are the best, a tie to within SAME_SCORE included: the tables' bests."""
    means = np.asarray(means, dtype=float)
    return means >= means.max() - SAME_SCORE


def holm(p_values) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order: sort ascending, multiply the i-th smallest
    by (m - i), keep them non-decreasing, cap at 1."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def seeds_needed(mean_best, std_best, mean, std, alpha: float = ALPHA, power: float = POWER):
    """Seeds per variant a two-sample z-test needs to resolve the gap at `alpha` (two-sided) with `power`:
    n = 2 (z_{1-a/2} + z_{power})^2 sigma^2 / delta^2, sigma^2 the mean of the two seed variances. None when the
    variance is unknown (one seed each) or zero, or the means are equal: no gap to resolve, as the tables have it
    (they never ask then: a mean at_best is a best itself, its seeds_needed None)."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (mean_best, std_best, mean, std)):
        return None
    var = (std_best ** 2 + std ** 2) / 2
    delta = abs(mean_best - mean)
    if var == 0 or delta == 0:
        return None
    from statistics import NormalDist   # not scipy.stats: importing it costs seconds on every table

    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(2, math.ceil(2 * z * z * var / delta ** 2))


@lru_cache(maxsize=4096)
def _load(path: str, mtime: float) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _predictions(output_dir, split: str):
    """(idx, pred, label) of one run on one split, or None when not on this machine."""
    from harness.spec import layout

    # a run without a folder: None, or NaN where pandas read the column as strings (NaN is truthy)
    if not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir):
        return None
    path = os.path.join(output_dir, layout.PREDICTIONS)
    if not os.path.isfile(path):
        return None
    # one that does not load (another file written over it, a truncated copy) or lacks the split's arrays: as a
    # missing one, not the traceback that ended export and compare (np.load's ValueError, zipfile.BadZipFile)
    try:
        data = _load(path, os.path.getmtime(path))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    names = [f"{split}_{part}" for part in ("idx", "pred", "label")]
    if any(name not in data for name in names):
        return None
    return tuple(data[name] for name in names)


def saved(task, dirs) -> bool:
    """Every run in `dirs` (a variant's seeds) has its predictions of every dev split on this machine: the
    variant can be the one a column is tested against."""
    return bool(dirs) and all(_predictions(d, split.hub_split) is not None for d in dirs for split in task.eval_splits)


def scored_examples(task, output_dir) -> int:
    """The distinct dev examples a run's saved predictions cover, summed over the task's dev splits (those saved)."""
    found = (_predictions(output_dir, split.hub_split) for split in task.eval_splits)
    return sum(len(np.unique(p[0])) for p in found if p is not None)


@dataclass
class Split:
    """One dev split of a column: gold labels on the common examples and each tested variant's (seeds, n)
    predictions on them."""
    name: str
    labels: np.ndarray
    preds: dict = field(default_factory=dict)


def load_column(task, variants: dict) -> tuple[list[Split], list]:
    """variants: {label: [output_dir per seed]}. Returns the splits aligned on the examples all tested variants
    share, and the labels not tested (a run's predictions missing, or gold labels or example ids that disagree with
    the others')."""
    from harness.tasks.kinds import kind_of

    splits, untested = [], []
    raw: dict = {}
    for label, dirs in variants.items():
        per_split = []
        for split in task.eval_splits:
            runs = [_predictions(d, split.hub_split) for d in dirs]
            if not runs or any(r is None for r in runs):
                break
            per_split.append([(*r, kind_of(task).example_ids(task, d, split.hub_split)) for r, d in zip(runs, dirs)])
        if len(per_split) == len(task.eval_splits):
            raw[label] = per_split
        else:
            untested.append(label)
    aligned: dict = {label: [] for label in raw}
    for k, split in enumerate(task.eval_splits):
        common = None
        for runs in raw.values():
            for idx, _, _, _ in runs[k]:
                common = idx if common is None else np.intersect1d(common, idx)
        if common is None or len(common) == 0:
            return [], list(variants)
        common = np.unique(common)
        gold_of = ids_of = None
        for label, runs in raw.items():
            rows = []
            for idx, pred, gold, ids in runs[k]:
                order = np.argsort(idx, kind="stable")
                pos = order[np.searchsorted(idx, common, sorter=order)]
                rows.append(pred[pos])
                gold_of = gold[pos] if gold_of is None else gold_of
                # the same example must have the same gold label in every run (span extraction stores each
                # question's EM there instead), and the same id where the kind keeps ids (SQuAD: an offline
                # split's question 0 and the hub's are other questions): else the runs saw different data, and
                # are not compared; nor is a run without its ids where only they tell (SQuAD: no predictions.json)
                here = [ids[i] for i in common] if ids is not None and len(ids) == len(idx) else None
                ids_of = here if ids_of is None else ids_of
                if (task.kind != "span_extraction" and not np.array_equal(gold[pos], gold_of)) or (
                        here is not None and here != ids_of) or (here is None and kind_of(task).paired_by_ids):
                    rows = None
                    break
            aligned[label].append(None if rows is None else np.stack(rows))
        splits.append(Split(split.hub_split, labels=gold_of))
    for label, per_split in aligned.items():
        if any(p is None for p in per_split):
            untested.append(label)
            continue
        for split, preds in zip(splits, per_split):
            split.preds[label] = preds
    return splits, untested


def _linear(task, preds: np.ndarray, labels: np.ndarray):
    """Per-example scores (seeds, n) when the main score is their mean, else None."""
    if task.kind == "span_extraction":
        return preds.astype(float)   # predictions.npz holds each question's F1 (0-1) as its prediction
    if tuple(task.main) == ("accuracy",):
        return (preds == labels).astype(float)
    return None


def counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each example is drawn in each resample: (rows, n) float, from the (rows, n) index matrix. Every
    sum over a resample is then a matrix product (BLAS), for all seeds and variants at once."""
    rows = len(idx)
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(float)


def _ranks(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each example's average rank (scipy's rankdata) within each resample of multiplicities w (rows, n):
    the weight below its value plus the middle of its own value's weight."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    group = np.empty(len(x), dtype=int)
    group[order] = np.cumsum(new) - 1
    weight = np.add.reduceat(w[:, order], np.flatnonzero(new), axis=1)
    middle = np.cumsum(weight, axis=1) - weight + (weight + 1) / 2
    return middle[:, group]


def _corr(w, x, y, n) -> np.ndarray:
    """Weighted Pearson correlation per row; 0 for a constant resample (as harness.tasks.metrics)."""
    mx, my = (w * x).sum(1, keepdims=True) / n, (w * y).sum(1, keepdims=True) / n
    dx, dy = x - mx, y - my
    sxy, sxx, syy = (w * dx * dy).sum(1), (w * dx * dx).sum(1), (w * dy * dy).sum(1)
    den = np.sqrt(sxx * syy)
    return np.divide(sxy, den, out=np.zeros(len(w)), where=den > 1e-12)


def _metric_plan(name: str, preds: np.ndarray, labels: np.ndarray):
    """(features, finish) of one metric: per-example columns whose sums over a resample (w @ features) give the
    metric, and finish(sums, w) -> the metric (0-1) on each resample, averaged over the seeds."""
    n = len(labels)
    if name == "accuracy":
        return [(preds == labels).mean(0)], lambda c, w: c[:, 0] / n
    if name in ("f1", "mcc"):
        pp, py = preds == 1, labels == 1
        feats = [m.astype(float) for p in pp for m in (p & py, p & ~py, ~p & py)]

        def finish(c, w):
            tp, fp, fn = (c[:, k::3] for k in range(3))   # (rows, seeds)
            if name == "f1":   # sklearn: 0 when there is no positive prediction nor label
                den = 2 * tp + fp + fn
                return np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0).mean(1)
            tn = n - tp - fp - fn
            den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            return np.divide(tp * tn - fp * fn, den, out=np.zeros_like(tp), where=den > 0).mean(1)
        return feats, finish
    if name == "pearson":
        y = labels.astype(float) - labels.mean()   # centred once: fewer digits lost in the sums
        xs = [p.astype(float) - p.mean() for p in preds]
        feats = [y, y * y] + [f for x in xs for f in (x, x * x, x * y)]

        def finish(c, w):
            sy, syy = c[:, 0:1] / n, c[:, 1:2] / n
            sx, sxx, sxy = (c[:, 2 + k::3] / n for k in range(3))
            cov, vx, vy = sxy - sx * sy, sxx - sx * sx, syy - sy * sy
            den = np.sqrt(np.clip(vx * vy, 0, None))
            return np.divide(cov, den, out=np.zeros_like(cov), where=den > 1e-12).mean(1)
        return feats, finish
    if name == "spearman":   # ranks depend on the resample: no sums to share
        def finish(c, w):
            ry = _ranks(w, labels.astype(float))
            return np.mean([_corr(w, _ranks(w, p.astype(float)), ry, n) for p in preds], axis=0)
        return [], finish
    raise KeyError(name)


def _plan(task, preds: np.ndarray, labels: np.ndarray):
    """(features (n, k), finish(sums (rows, k), w) -> main score in GLUE points, seed-averaged, per resample)."""
    n = len(labels)
    linear = _linear(task, preds, labels)
    if linear is not None:
        return linear.mean(0)[:, None], lambda c, w: 100.0 * c[:, 0] / n
    try:
        plans = [_metric_plan(name, preds, labels) for name in task.main]
    except KeyError:   # a metric without a vectorised form: the task's own scorer, one resample at a time
        from harness.tasks.kinds import kind_of

        kind = kind_of(task)

        def slow(c, w):
            rows = [np.repeat(np.arange(n), row.astype(int)) for row in w]
            return np.array([np.mean([kind.sample_score(task, p[r], labels[r]) for p in preds]) for r in rows])
        return np.zeros((n, 0)), slow
    spans, start = [], 0
    for feats, _ in plans:
        spans.append(slice(start, start + len(feats)))
        start += len(feats)
    features = np.column_stack([f for feats, _ in plans for f in feats]) if start else np.zeros((n, 0))
    return features, lambda c, w: 100.0 * sum(fin(c[:, sp], w) for (_, fin), sp in zip(plans, spans)) / len(plans)


def _score_rows(task, preds: np.ndarray, labels: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The main score (GLUE points), averaged over seeds, on each resample (rows of multiplicities w)."""
    features, finish = _plan(task, preds, labels)
    return finish(w @ features, w)


def replicates(task, splits: list[Split], resamples: int = RESAMPLES, seed: int = SEED) -> tuple[dict, dict]:
    """({label: observed score}, {label: (resamples,) scores}) of every tested variant: each split resampled
    once per replicate (the same draws for every variant), the task's score the mean over its splits. Every
    variant's per-example columns go into one matrix, so a chunk of resamples costs one matrix product."""
    observed: dict = {}
    reps: dict = {}
    for split in splits:
        n = len(split.labels)
        # one stream per (task, split): tasks' resamples are independent, yet reproducible
        rng = np.random.default_rng([seed, zlib.crc32(f"{task.name}/{split.name}".encode())])
        plans, spans, start = {}, {}, 0
        for label, p in split.preds.items():
            plans[label] = _plan(task, p, split.labels)
            spans[label] = slice(start, start + plans[label][0].shape[1])
            start += plans[label][0].shape[1]
        features = np.column_stack([f for f, _ in plans.values()]) if start else np.zeros((n, 0))
        rows = max(1, CHUNK // max(n, 1))
        parts: dict = {label: [] for label in plans}
        for begin in range(0, resamples, rows):
            w = counts(rng.integers(0, n, (min(rows, resamples - begin), n)), n)
            sums = w @ features
            for label, (_, finish) in plans.items():
                parts[label].append(finish(sums[:, spans[label]], w))
        every = np.ones((1, n))
        sums = every @ features
        for label, (_, finish) in plans.items():
            observed[label] = observed.get(label, 0.0) + float(finish(sums[:, spans[label]], every)[0]) / len(splits)
            reps[label] = reps.get(label, 0.0) + np.concatenate(parts[label]) / len(splits)
    return observed, reps


def p_below(best: np.ndarray, other: np.ndarray) -> float:
    """One-sided bootstrap p-value that `other` is below `best`: the share of resamples where it is not (a tie
    to within SAME_SCORE included)."""
    return float((1 + np.sum(best - other <= SAME_SCORE)) / (1 + len(best)))


@dataclass
class ColumnTest:
    best: str
    observed: dict             # label -> score on the common examples (mean over seeds)
    p_raw: dict                # label -> one-sided p (the best itself absent)
    p_holm: dict
    tied: dict                 # label -> bool; the best is tied with itself
    untested: list
    n_examples: int
    resamples: int
    reps: dict = field(default_factory=dict, repr=False)


def against_best(best: str, reps: dict, observed: dict, untested: list, n_examples: int, resamples: int,
                      alpha: float = ALPHA, level=()) -> ColumnTest:
    """Holm-corrected one-sided tests of every variant in `reps` against `best`, but those `level` with it (a
    tie for the best mean, at_best: a best too, neither tested nor in the Holm family; their replicates are kept,
    for the average over tasks)."""
    if best not in reps:
        return ColumnTest(best, observed, {}, {}, {}, sorted((set(reps) | set(untested)) - {best}), n_examples,
                          resamples, reps)
    others = [label for label in reps if label != best and label not in level]
    raw = {label: p_below(reps[best], reps[label]) for label in others}
    adjusted = dict(zip(others, holm([raw[o] for o in others]))) if others else {}
    tied = {label: bool(adjusted[label] > alpha) for label in others}
    tied.update({label: True for label in [best, *level] if label in reps})
    return ColumnTest(best, observed, raw, {k: float(v) for k, v in adjusted.items()}, tied, list(untested),
                      n_examples, resamples, reps)


def column_test(task, variants: dict, best: str, resamples: int = RESAMPLES, seed: int = SEED,
                alpha: float = ALPHA, level=()) -> ColumnTest:
    """variants: {label: [output_dir per seed of its best setting]}; best: the label best on dev; level: the
    labels whose mean equals the best's (at_best). Those are resampled with the others but not tested against it:
    the average over tasks needs every variant's replicates of every column, and a variant left out of one
    column's replicates (for a tie there) would leave the average untested for all."""
    # the best first: load_column checks every variant's gold labels (and ids) against the first it loads, so a
    # variant scored on other data is the one left untested, not the best and with it the whole column
    variants = {best: variants[best], **variants} if best in variants else variants
    splits, untested = load_column(task, variants)
    if best in untested or not splits:
        return ColumnTest(best, {}, {}, {}, {}, sorted(set(variants) - {best}), 0, resamples)
    observed, reps = replicates(task, splits, resamples, seed)
    return against_best(best, reps, observed, untested, sum(len(s.labels) for s in splits), resamples, alpha,
                        level)


def average_test(columns: dict, best: str, labels: list, alpha: float = ALPHA):
    """The average over tasks. columns: {task: ColumnTest}, their replicates drawn per task independently, so
    one replicate resamples every task's examples once and averages the task scores; best: the variant with the
    highest average; labels: the variants that have an average. None when the best was not tested on every
    task; variants not tested on every task are listed as untested."""
    if not columns or any(best not in c.reps for c in columns.values()):
        return None
    tested = [label for label in labels if all(label in c.reps for c in columns.values())]
    reps = {label: np.mean([c.reps[label] for c in columns.values()], axis=0) for label in tested}
    observed = {label: float(np.mean([c.observed[label] for c in columns.values()])) for label in tested}
    resamples = next(iter(columns.values())).resamples
    untested = [label for label in labels if label not in tested]
    return against_best(best, reps, observed, untested, sum(c.n_examples for c in columns.values()), resamples,
                        alpha)
