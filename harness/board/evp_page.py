"""The board's "Tuning budget" page: expected validation performance (harness/stats/evp.py) per method variant
on one task, against the number of hyperparameter settings tried and against their expected cumulative cost
(train time; train FLOPs where recorded). Draws only; the numbers come from harness.stats.evp."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from harness.board import urlstate
from harness.report.export import md_escape, note_lines, settings_text
from harness.report.pareto import AXES as TRADEOFF_AXES
from harness.report.provenance import data_by_task, skipped_by_task
from harness.stats.evp import evp_table
from harness.stats.selection import failed_settings, unfinished_settings

AXES = {"settings tried (n)": "n", "expected train time (s)": "expected_time_s",
        "expected train FLOPs": "expected_flops"}
AXIS_NAMES = {col: name for name, col in AXES.items()}


def page_evp(runs: pd.DataFrame, model: str, metric: str = "score") -> None:
    """`runs`: the runs frame (harness/report/tables.runs_frame) of one suite, every model's (the task versions
    are chosen among them all, as in `harness export`); the curves of `model`."""
    curves = evp_table(runs, metric, model)
    if curves.empty:
        st.info("No completed runs for this suite and model yet.")
        return
    tasks = list(dict.fromkeys(curves["task"]))
    c1, c2 = st.columns(2)
    task = urlstate.choose(c1.selectbox, "Task", tasks, "task")
    view = curves[curves["task"] == task]
    # a cost axis is offered only where every variant of the task recorded it
    axes = [col for col in AXES.values() if view[col].notna().all()]
    x = urlstate.choose(c2.selectbox, "x axis", axes, "x", format_func=AXIS_NAMES.get)   # ?x=expected_time_s
    axis = AXIS_NAMES[x]
    k = int(view.groupby("method_label")["settings_tried"].first().min())
    fig = px.line(view, x=x, y="evp", color="method_label", markers=True, log_x=x == "expected_flops",
                  hover_data=["n", "settings_tried"], height=460,
                  labels={"evp": f"expected best {TRADEOFF_AXES['score']}", "method_label": "method",
                          x: axis})   # the score's unit as the Trade-off page says it
    if x == "n":
        fig.add_vline(x=k, line_dash="dot", line_color="grey")
        fig.update_xaxes(dtick=1)   # n counts settings: whole numbers only
    st.plotly_chart(fig, width="stretch")
    table = (view[view["n"].isin([1, k])].pivot_table(index="method_label", columns="n", values="evp")
             .rename(columns={k: f"EVP({k}): equal budget", 1: "EVP(1): mean setting"}))   # k = 1: the mean
    scored = view.groupby("method_label", sort=False)["settings_tried"].first()   # a setting with a score
    # the settings whose every seed failed are tuning budget spent too (as export's best table counts them): a
    # variant that failed on every setting has no curve, but its row
    suite = view["suite"].iloc[0]
    failed = {label: n for (of_suite, of_model, of_task, label), n in failed_settings(runs).items()
              if (of_suite, of_model, of_task) == (suite, model, task)}
    # settings with no completed seed yet (queued or running): no point on a curve, not tried yet; a variant with
    # none finished on the task has its row too (export's best table: "0 (+2 unfinished)"), not left out as unrun
    unfinished = {label: n for (of_suite, of_model, of_task, label), n in unfinished_settings(runs).items()
                  if (of_suite, of_model, of_task) == (suite, model, task) and n}
    labels = list(scored.index) + [label for label in failed if label not in scored.index]
    labels += [label for label in unfinished if label not in labels]
    table = table.reindex(labels)
    tried = {label: int(scored.get(label, 0)) + failed.get(label, 0) for label in labels}
    table.insert(0, "not finished yet", [unfinished.get(label, 0) for label in labels])
    table.insert(0, "of them failed", [failed.get(label, 0) for label in labels])
    table.insert(0, "settings tried", [tried[label] for label in labels])
    table.insert(0, "settings with a score", [int(scored.get(label, 0)) for label in labels])
    table = table.reset_index(names="method")
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in table.columns[5:]})
    each = ", ".join(f"{label} {settings_text(tried[label], failed.get(label), unfinished.get(label))}"
                     for label in labels)
    if any(failed.values()):
        budget = (f"there every variant had the same number of settings that scored, not the same tuning budget "
                  f"(settings tried: {each}): a setting whose every seed failed has no score, so EVP leaves it out")
    elif any(unfinished.values()):
        budget = (f"there every variant had the same number of finished settings, and some have more to come "
                  f"(settings tried: {each})")
    else:
        budget = "there every variant had the same tuning budget"
    st.caption(f"Expected validation performance (Dodge et al. 2019), with the unbiased estimator of Tang et al. "
               f"2020: the expected best seed-mean dev score (each run's {'final' if metric == 'score' else 'best'} "
               f"dev evaluation, as the leaderboard) when n of a variant's hyperparameter settings are "
               f"drawn at random without replacement. n = 1 is the mean over settings, the last point the best "
               f"setting (the leaderboard's number). The dotted line is k = {k}, the fewest settings any variant "
               f"on {task} scored: {budget}. Expected cost of n settings: n × the mean cost of one setting (its "
               f"seeds' train time or FLOPs summed).")
    if any(unfinished.values()):   # as the leaderboard says under its table (export.budget_notes)
        st.caption("Not finished yet: settings with no completed seed yet (queued, running, or stale until a "
                   "worker takes them over): not on the curves, nor among the settings tried; the curves and "
                   "k may still change as they complete.")
    of_task = runs[(runs["model"] == model) & (runs["task"] == task)]
    # e.g. SQuAD's split, rows skipped: wherever its scores show
    for line in note_lines([task], data_by_task(of_task), skipped_by_task(of_task)):
        st.caption(md_escape(line, cell=False))
