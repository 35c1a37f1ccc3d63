"""Expected validation performance (Dodge et al. 2019, "Show Your Work"): what a method variant is expected to
score on dev when only n of its hyperparameter settings are tried, so variants tuned with unequal effort are also
compared at an equal tuning budget.

Per (suite, model, task, method variant), the N settings tried (everything but the seed: `setting_key`) are each
scored by the mean dev score of their completed seeds, v(1) <= ... <= v(N). The expected maximum of n settings
drawn without replacement is, with the unbiased estimator of Tang et al. 2020,

    EVP(n) = sum_i v(i) * C(i-1, n-1) / C(N, n),   n = 1..N

(C(i-1, n-1) of the C(N, n) subsets of size n have v(i) as their maximum; ties need no care, equal values are
interchangeable). EVP(1) is the mean over settings, EVP(N) the maximum, which is what the Houlsby protocol
reports. The weights are computed in log space (log-factorials), so N in the thousands neither overflows nor
loses the small weights' precision where it matters.

Cost axes: the expected cost of n settings drawn without replacement is exactly n x the mean cost of one setting
(linearity of expectation, whatever the order); a setting's cost is the sum over its completed seeds of
train_time_s (and of train_flops where recorded), i.e. what it cost to obtain that setting's seed-mean.

Settings whose every seed failed have no score and are left out of N, as in the best table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.stats.selection import seed_mean, selectable_runs

GROUP = ["suite", "model", "task", "method_label"]


def evp_curve(scores) -> list[float]:
    """[EVP(1), ..., EVP(N)] of N setting scores (any order); [] for none. NaN scores are an error (a setting
    without a score is left out by the caller, not scored as NaN)."""
    v = np.sort(np.asarray(list(scores), dtype=np.float64))
    n_settings = len(v)
    if n_settings == 0:
        return []
    if np.isnan(v).any():
        raise ValueError("evp_curve: NaN among the scores")
    # log k! for k = 0..N
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n_settings + 1, dtype=np.float64)))])
    i = np.arange(1, n_settings + 1)   # ranks, 1-based
    out = []
    for n in range(1, n_settings + 1):
        ok = i >= n                     # C(i-1, n-1) = 0 below rank n
        a, b = i[ok] - 1, n - 1
        log_num = log_fact[a] - log_fact[b] - log_fact[a - b]
        log_den = log_fact[n_settings] - log_fact[n] - log_fact[n_settings - n]
        weights = np.exp(log_num - log_den)
        # the weights sum to 1 exactly (hockey-stick identity); dividing by their sum removes the rounding
        out.append(float(np.dot(weights, v[ok]) / weights.sum()))
    return out


def _summed(values: pd.Series):
    values = pd.to_numeric(values, errors="coerce")
    return float(values.sum()) if values.notna().all() and len(values) else None


def setting_scores(runs: pd.DataFrame, metric: str = "score", model: str | None = None) -> pd.DataFrame:
    """One row per (suite, model, task, method variant, setting): the seed-mean `metric`, the seeds, and the
    setting's cost (train_time_s and train_flops summed over its seeds; None where a seed lacks the value).
    `model`: that model's rows, selected among every model's runs (harness/stats/selection.py)."""
    columns = GROUP + ["setting_key", "value", "n_seeds", "cost_time_s", "cost_flops"]
    done, _ = selectable_runs(runs, model)
    if done.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in done.groupby(GROUP + ["setting_key"], sort=False):
        values = pd.to_numeric(group[metric], errors="coerce").dropna()
        if values.empty:
            continue
        rows.append(dict(zip(GROUP + ["setting_key"], key), value=seed_mean(values), n_seeds=len(values),
                         cost_time_s=_summed(group["train_time_s"]) if "train_time_s" in group else None,
                         cost_flops=_summed(group["train_flops"]) if "train_flops" in group else None))
    return pd.DataFrame(rows, columns=columns)


def evp_table(runs: pd.DataFrame, metric: str = "score", model: str | None = None) -> pd.DataFrame:
    """The curves, long: one row per (suite, model, task, method variant, n) with `evp` and the expected
    cumulative cost of n settings, `expected_time_s` and `expected_flops` (None where not recorded)."""
    columns = GROUP + ["n", "settings_tried", "evp", "expected_time_s", "expected_flops"]
    settings = setting_scores(runs, metric, model)
    rows = []
    for key, group in settings.groupby(GROUP, sort=False):
        curve = evp_curve(group["value"])
        time_s, flops = _mean_cost(group["cost_time_s"]), _mean_cost(group["cost_flops"])
        for n, value in enumerate(curve, start=1):
            rows.append(dict(zip(GROUP, key), n=n, settings_tried=len(curve), evp=value,
                             expected_time_s=None if time_s is None else n * time_s,
                             expected_flops=None if flops is None else n * flops))
    return pd.DataFrame(rows, columns=columns)


def _mean_cost(costs: pd.Series):
    costs = pd.to_numeric(costs, errors="coerce")
    return float(costs.mean()) if len(costs) and costs.notna().all() else None


def add_evp(best: pd.DataFrame, runs: pd.DataFrame, metric: str = "score") -> pd.DataFrame:
    """The best table (harness/report/tables.best_table) with EVP columns: `settings_scored` (N, the settings
    with a score; the best table's `settings_tried` also counts those whose every seed failed), `evp_1` (the mean
    over settings), `evp_k` (the expected best of k settings, k = the smallest N among the variants compared on
    the same suite, model and task: an equal tuning budget) and `evp_k_n` (that k)."""
    out = best.copy()
    for col in ("settings_scored", "evp_1", "evp_k", "evp_k_n"):
        out[col] = pd.Series([None] * len(out), index=out.index, dtype=object)
    if out.empty:
        return out
    curves = {key: evp_curve(group["value"])
              for key, group in setting_scores(runs, metric).groupby(GROUP, sort=False)}
    smallest: dict = {}
    for key, curve in curves.items():
        smallest[key[:3]] = min(smallest.get(key[:3], math.inf), len(curve))
    for idx, row in out.iterrows():
        key = tuple(row[c] for c in GROUP)
        curve = curves.get(key)
        if not curve:
            continue
        k = smallest[key[:3]]
        out.at[idx, "settings_scored"] = len(curve)
        out.at[idx, "evp_1"] = curve[0]
        out.at[idx, "evp_k"] = curve[k - 1]
        out.at[idx, "evp_k_n"] = k
    for col in ("evp_1", "evp_k"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    for col in ("settings_scored", "evp_k_n"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("Int64")
    return out
