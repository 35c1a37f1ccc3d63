"""The cost / score trade-off the board draws: one point per method variant, sweeps joined into curves, and the
Pareto frontier."""

from __future__ import annotations

import pandas as pd

from harness.spec.cell import base_label
from harness.spec.status import Regime

COSTS = {"trainable parameters": "trainable_params", "train time (s)": "train_time_s",
         "peak memory (MB)": "peak_memory_mb"}
# the axes the trade-off page offers (column: label); higher is better only for the score, lower for every cost
AXES = {"score": "dev score (points, x100)", "trainable_params": "trainable parameters",
        "train_time_s": "train time (s)", "peak_memory_mb": "peak memory (MB)", "train_flops": "train FLOPs"}
MAXIMISED = {"score"}
LOG_AXES = {"trainable_params", "train_flops"}   # they span orders of magnitude (bitfit vs full)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points no other point beats with fewer (or equal) x and a higher y, in increasing x."""
    front, best = [], float("-inf")
    for _, p in points.sort_values([x, y], ascending=[True, False]).iterrows():
        if p[y] > best:
            front.append(p)
            best = p[y]
    return pd.DataFrame(front)


def pareto_front_axes(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The Pareto frontier on any two of AXES: points no other point matches or beats on both (higher score,
    lower costs), in increasing x."""
    sx, sy = [(-1.0 if a in MAXIMISED else 1.0) for a in (x, y)]
    ranked = points.assign(_x=sx * points[x].astype(float), _y=sy * points[y].astype(float)).dropna(subset=["_x", "_y"])
    front, best = [], float("inf")
    for _, p in ranked.sort_values(["_x", "_y"]).iterrows():
        if p["_y"] < best:
            front.append(p)
            best = p["_y"]
    out = pd.DataFrame(front, columns=ranked.columns)
    return out.drop(columns=["_x", "_y"]).sort_values(x)


SPLIT_COSTS = ["trainable_params", "train_time_s", "train_flops"]   # peak memory is not split: one run holds it


def per_task_costs(best: pd.DataFrame) -> pd.DataFrame:
    """`best` with each multi-task member row's costs as its share of the joint run: a member row carries the
    whole joint run's cost (one model trained on every task at once), so averaged over tasks beside single-task
    variants' per-task costs it would be counted once per task; the share is the joint cost over its tasks (the
    member rows of the same variant), so the joint run counts once over them."""
    members = best["regime"] == Regime.MULTITASK_MEMBER.value
    if not members.any():
        return best
    tasks = best[members].groupby("method_label")["task"].transform("nunique")
    out = best.copy()
    for col in SPLIT_COSTS:
        if col in out:
            values = pd.to_numeric(out[col], errors="coerce").astype(float)
            values.loc[members] = values[members] / tasks
            out[col] = values
    return out


def tradeoff_points(best: pd.DataFrame, task: str | None, averaged: list[str]) -> pd.DataFrame:
    """One row per method variant from `best_table`: its dev score as `score` on one task, or (task None) the
    mean over the `averaged` tasks for the variants that have all of them (costs: mean, a multi-task variant's
    its joint run's once, split over its tasks: per_task_costs; peak memory: max). A
    `curve` column names the sweep a variant belongs to (the method plus the schedule of composite variants), so
    adapter sizes or top-k's k are drawn as one curve. `best`: one suite's and one model's (best_table's `model`):
    points are keyed by method variant, so two models' would be averaged or joined into one curve (a ValueError)."""
    if len(best[["suite", "model"]].drop_duplicates()) > 1:
        raise ValueError("tradeoff_points: give one suite's and one model's best table (best_table(..., model=...))")
    flops = best["train_flops"] if "train_flops" in best else pd.Series(float("nan"), index=best.index)
    best = best.assign(train_flops=pd.to_numeric(flops, errors="coerce"))   # None where no FLOPs were counted
    if task is None:
        best = per_task_costs(best)
        complete = best[best["task"].isin(averaged)].groupby("method_label").filter(lambda g: len(g) == len(averaged))
        points = complete.groupby("method_label", as_index=False).agg(
            score=("mean", "mean"), trainable_params=("trainable_params", "mean"),
            train_time_s=("train_time_s", "mean"), peak_memory_mb=("peak_memory_mb", "max"),
            train_flops=("train_flops", "mean"), method=("method", "first"))
    else:
        points = best[best["task"] == task].rename(columns={"mean": "score"})
    if points.empty:
        return points
    return points.assign(curve=[m + lbl[len(base_label(lbl)):]
                                for m, lbl in zip(points["method"], points["method_label"])])
