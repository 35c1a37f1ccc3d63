"""Paired comparison of two runs on the same dev examples: score difference with a paired bootstrap
confidence interval and p-value (resample examples, score both systems on each resample)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from harness.metrics import compute_metrics, main_score
from harness.tasks import Task


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
    if task.metrics == ("accuracy",):  # fast path: the common case, and the bootstrap calls this often
        return 100.0 * float(np.mean(preds == labels))
    return main_score(task, compute_metrics(task, preds, labels))


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
    path = os.path.join(output_dir or "", "predictions.npz")
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
