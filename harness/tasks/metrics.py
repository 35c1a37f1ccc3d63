"""Official GLUE metrics with scikit-learn / scipy (evaluate's metrics need the hub).

Every metric is reported in GLUE points (x100), the scale papers and the GLUE leaderboard use.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from harness.spec.tasks import Task


def _metric(name: str, preds: np.ndarray, labels: np.ndarray) -> float:
    if name == "accuracy":
        return float(accuracy_score(labels, preds))
    if name == "f1":
        return float(f1_score(labels, preds))
    if name == "mcc":
        return float(matthews_corrcoef(labels, preds))
    # Correlations are undefined for constant predictions (a collapsed regressor): report 0, not NaN. np.ptp,
    # not np.std: the std of a constant float array can round to 1e-16 and let scipy warn and return NaN.
    if np.ptp(preds) == 0 or np.ptp(labels) == 0:
        return 0.0
    if name == "pearson":
        return float(pearsonr(preds, labels)[0])
    if name == "spearman":
        return float(spearmanr(preds, labels)[0])
    raise KeyError(name)


def predictions_from_logits(task: Task, logits: np.ndarray) -> np.ndarray:
    if task.is_regression:
        return logits.reshape(-1).astype(np.float64)
    return logits.argmax(axis=-1)


def compute_metrics(task: Task, preds: np.ndarray, labels: np.ndarray, suffix: str = "") -> dict[str, float]:
    out = {}
    for name in task.metrics:
        value = _metric(name, np.asarray(preds), np.asarray(labels))
        out[name + suffix] = 100.0 * (0.0 if math.isnan(value) else value)
    return out
