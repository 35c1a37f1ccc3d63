"""The trade-off page: one point per method variant (best setting on dev), coloured by method, on any two of
score, trainable parameters, train time, peak memory and train FLOPs, with the Pareto frontier."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from harness.board import urlstate
from harness.report.export import SELECTED_ON_DEV, average_missing, budget_notes, md_escape, note_lines
from harness.report.pareto import AXES, LOG_AXES, pareto_front_axes, tradeoff_points

AVERAGE = "average over tasks"


def axes_offered(points: pd.DataFrame) -> list[str]:
    """The axes with a value for at least one point: FLOPs only once some run counted them."""
    return [a for a in AXES if a in points and pd.to_numeric(points[a], errors="coerce").notna().any()]


def tuning_lines(board: pd.DataFrame, tasks: list[str]) -> list[str]:
    """The leaderboard's footnote lines on how its scores were tuned (unequal numbers of settings tried, chosen
    settings at different budgets or stopped at a time limit), for `tasks` only: a point here is the same
    best-on-dev score, so it carries the same caveats."""
    view = board.copy()
    view.attrs = {**board.attrs, "tasks": [t for t in board.attrs.get("tasks", []) if t in tasks]}
    return budget_notes(view) + [line for line in board.attrs.get("budgets") or []
                                 if any(line.startswith((f"{t}:", f"{t} (")) for t in tasks)]


def flag_lines(best: pd.DataFrame, labels, tasks: list[str]) -> list[str]:
    """The flags of the cells behind the points of `labels` on `tasks` (the best table's `flags`: the leaderboard's
    marks, e.g. seeds_missing (2/3 completed)), one line: a point is that cell's score, so it carries its marks."""
    cells = best[best["method_label"].isin(set(labels)) & best["task"].isin(tasks)]
    flagged = [f"{label} on {task}: {flags}" for label, task, flags in
               zip(cells["method_label"], cells["task"], cells.get("flags", pd.Series(dtype=object))) if flags]
    return [f"Flags of the scores drawn, as the leaderboard and the best table carry them (docs/reading-tables.md): "
            f"{'; '.join(flagged)}."] if flagged else []


def page_tradeoff(best: pd.DataFrame, board: pd.DataFrame) -> None:
    if best.empty:
        st.info("No completed runs for this suite and model yet.")
        return
    tasks = list(board.attrs["tasks"])
    averaged = board.attrs.get("avg_tasks") or tasks   # the GLUE average: GLUE tasks only, as the leaderboard
    c1, c2, c3 = st.columns(3)
    which = urlstate.choose(c1.selectbox, "Task", [AVERAGE] + tasks, "task",
                            format_func=lambda t: board.attrs.get("avg_name", t) if t == AVERAGE else t)
    points = tradeoff_points(best, None if which == AVERAGE else which, averaged)
    if points.empty:
        st.info("No method has results on every task yet." if which == AVERAGE else
                f"No method has a score on {md_escape(which)} (runs not finished, or all failed).")
        return
    offered = axes_offered(points)
    if len(offered) < 2:   # runs that recorded no cost (an older store, records without them): no second axis
        st.info(f"Only the {AXES[offered[0]] if offered else 'score'} is recorded for these runs: no cost (trainable "
                f"parameters, train time, peak memory, FLOPs) to draw it against.")
        return
    x = urlstate.choose(c2.selectbox, "x axis", [a for a in offered if a != "score"] + ["score"], "x",
                        format_func=AXES.get)
    y = urlstate.choose(c3.selectbox, "y axis", [a for a in offered if a != x], "y", format_func=AXES.get)
    if "train_flops" not in offered:
        st.caption("No FLOPs recorded for these runs: the FLOPs axis appears once runs count them.")
    points = points.dropna(subset=[x, y])
    fig = px.scatter(points, x=x, y=y, color="curve", hover_name="method_label", log_x=x in LOG_AXES,
                     log_y=y in LOG_AXES, labels={x: AXES[x], y: AXES[y], "curve": "method"}, height=480)
    colors = {t.name: t.marker.color for t in fig.data}
    for curve, group in points.groupby("curve"):
        if len(group) > 1:
            group = group.sort_values(x)
            fig.add_trace(go.Scatter(x=group[x], y=group[y], mode="lines", showlegend=False,
                                     line={"color": colors.get(curve)}, hoverinfo="skip"))
    front = pareto_front_axes(points, x, y)
    fig.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines", name="Pareto frontier",
                             line={"dash": "dash", "color": "grey"}))
    fig.update_traces(marker={"size": 12})
    st.plotly_chart(fig, width="stretch")
    st.caption("Each point is a method variant (best setting on dev), one colour per method; a method's variants "
               "(adapter sizes, top-k's k) are joined into a curve. Pareto frontier: no other variant is at least "
               "as good on both axes (higher score, lower cost).")
    if which == AVERAGE:
        st.caption("Costs in the average: per task (the mean over the tasks); a multi-task variant's joint run is "
                   "counted once, its train time, FLOPs and trainable parameters split evenly over its tasks.")
    shown = averaged if which == AVERAGE else [which]
    missing = average_missing(board) if which == AVERAGE else []   # the variants without an average: no point
    for line in [SELECTED_ON_DEV] + tuning_lines(board, shown) + flag_lines(best, points["method_label"], shown) \
            + missing:
        # what the leaderboard says of the same scores
        st.caption(md_escape(line, cell=False))
    for line in note_lines(averaged if which == AVERAGE else [which], best.attrs.get("data"),
                           best.attrs.get("skipped")):   # e.g. SQuAD's split
        st.caption(md_escape(line, cell=False))
