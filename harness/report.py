"""Tables from stored runs, shared by `harness export` and the leaderboard.

- runs: one flat row per run.
- best: the Houlsby et al. protocol -- for each (model, task, method variant) pick the hyperparameter setting
  (everything but the seed) with the best mean dev score, then report mean +- std over that setting's seeds.
- leaderboard: method variants x tasks of `best`, with the average, the trainable share and the parameters
  needed to solve all the tasks (one shared frozen base plus what each task trains).
"""

from __future__ import annotations

import json
import math

import pandas as pd

from harness.cells import canonical_json
from harness.tasks import TASKS

RUN_COLUMNS = ["id", "suite", "cell_key", "model", "task", "method", "method_label", "method_params", "budget",
               "seed", "learning_rate", "status", "score", "best_score"]
COST_COLUMNS = ["trainable_params", "added_params", "total_params", "head_params", "trainable_pct", "train_time_s",
                "eval_time_s", "peak_memory_mb", "train_examples_per_s", "train_tokens_per_s", "steps",
                "epochs_done", "num_processes", "stopped_by", "error", "started_at", "finished_at"]


def _budget_text(budget: dict) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted((budget or {}).items()))


def runs_frame(records) -> pd.DataFrame:
    """One row per run; metric_<name> for every dev metric; env columns for provenance."""
    rows = []
    for r in records:
        d = r.as_dict() if hasattr(r, "as_dict") else dict(r)
        row = {c: d.get(c) for c in RUN_COLUMNS + COST_COLUMNS}
        row["method_params"] = json.dumps(d.get("method_params") or {}, sort_keys=True)
        row["budget"] = _budget_text(d.get("budget"))
        for name, value in (d.get("metrics") or {}).items():
            row[f"metric_{name}"] = value
        env = d.get("env") or {}
        for k in ("torch", "transformers", "adapters", "git_commit", "git_dirty", "device", "host"):
            row[f"env_{k}"] = env.get(k)
        config = dict(d.get("config") or {})
        config.pop("seed", None)
        row["setting"] = canonical_json(config)  # everything but the seed: what seeds are averaged over
        row["task_version"] = d.get("task_version")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + COST_COLUMNS)
    metric_cols = sorted(c for c in frame.columns if c.startswith("metric_"))
    first = [c for c in RUN_COLUMNS if c in frame.columns]
    rest = [c for c in frame.columns if c not in first and c not in metric_cols]
    return frame[first + metric_cols + rest]


def best_table(runs: pd.DataFrame, metric: str = "score") -> pd.DataFrame:
    """Houlsby selection on completed runs. One row per (suite, model, task, method variant)."""
    done = runs[runs["status"] == "completed"] if not runs.empty else runs
    if done.empty:
        return pd.DataFrame(columns=["suite", "model", "task", "method_label", "mean", "std", "n_seeds"])
    out = []
    for (suite, model, task, label), group in done.groupby(["suite", "model", "task", "method_label"], sort=False):
        settings = group.groupby("setting")[metric].agg(["mean", "count"])
        chosen = settings["mean"].idxmax()
        runs_of = group[group["setting"] == chosen]
        values = runs_of[metric].astype(float)
        first = runs_of.iloc[0]
        out.append({
            "suite": suite, "model": model, "task": task, "method": first["method"], "method_label": label,
            "mean": values.mean(), "std": values.std(ddof=1) if len(values) > 1 else 0.0, "n_seeds": len(values),
            "learning_rate": first["learning_rate"], "budget": first["budget"],
            "trainable_params": first["trainable_params"], "total_params": first["total_params"],
            "trainable_pct": first["trainable_pct"], "train_time_s": runs_of["train_time_s"].mean(),
            "peak_memory_mb": runs_of["peak_memory_mb"].max(), "settings_tried": len(settings),
        })
    return pd.DataFrame(out)


def _task_order(tasks) -> list[str]:
    known = [t for t in TASKS if t in set(tasks)]
    return known + sorted(t for t in set(tasks) if t not in TASKS)


def leaderboard_table(best: pd.DataFrame) -> pd.DataFrame:
    """Rows: method variants. Per task: mean, std, n. Plus avg, trainable % and params for all tasks."""
    if best.empty:
        return pd.DataFrame()
    tasks = _task_order(best["task"].unique())
    rows = []
    for (model, label), group in best.groupby(["model", "method_label"], sort=False):
        by_task = group.set_index("task")
        row = {"model": model, "method": label}
        for t in tasks:
            if t in by_task.index:
                row[f"{t}_mean"] = by_task.loc[t, "mean"]
                row[f"{t}_std"] = by_task.loc[t, "std"]
                row[f"{t}_n"] = int(by_task.loc[t, "n_seeds"])
            else:
                row[f"{t}_mean"] = row[f"{t}_std"] = row[f"{t}_n"] = None
        complete = all(row[f"{t}_mean"] is not None for t in tasks)
        row["avg"] = sum(row[f"{t}_mean"] for t in tasks) / len(tasks) if complete else None
        row["trainable_pct"] = group["trainable_pct"].mean()
        # one frozen base shared by every task + what each task trains (full fine-tuning: a model per task)
        frozen = (group["total_params"] - group["trainable_params"]).max()
        row["params_all_tasks"] = float(frozen + group["trainable_params"].sum())
        row["params_all_tasks_x"] = row["params_all_tasks"] / group["total_params"].max()
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["tasks"] = tasks
    table.attrs["is_glue"] = all(t in TASKS for t in tasks)
    return table


def fmt_mean_std(mean, std, n=None, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.{digits}f}"
    if n and n > 1:
        text += f" ± {std:.{digits}f}"
    return text
