"""The per-task drill-down: every run of one task and method variant of a suite and model, with their dev curves
(the stored evaluation history) overlaid, one line per run (its seed and hyperparameter setting)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st
from sqlalchemy import select

from harness.board import urlstate
from harness.report.export import md_escape, note_lines
from harness.report.provenance import data_by_task, skipped_by_task
from harness.spec.cell import budget_text
from harness.store.schema import RunRecord as R

COLUMNS = ["id", "cell_key", "seed", "learning_rate", "hparams", "budget", "status", "score", "best_score",
           "train_time_s", "history"]
X_AXES = {"step": "optimizer step", "epoch": "epoch"}
Y_AXES = {"score": "dev score (points, x100)", "train_loss": "train loss"}


def task_runs(store, suite: str, model: str, task: str, method_label: str) -> pd.DataFrame:
    """The runs (not queued cells) of one task and method variant, with their history."""
    with store.reading() as conn:
        result = conn.execute(select(*[getattr(R, c) for c in COLUMNS]).where(
            R.suite == suite, R.model == model, R.task == task, R.method_label == method_label,
            R.status != "pending").order_by(R.id))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def setting_text(row, varied: list[str], budget: str | None = None) -> str:
    """What tells this run apart from its neighbours: the seed, the hyperparameters that vary among them, and
    its budget where theirs vary (a budget is not a hyperparameter: runs of two budgets read alike without it)."""
    hp = row.hparams or {}
    parts = [f"{k}={hp.get(k):g}" if isinstance(hp.get(k), float) else f"{k}={hp.get(k)}" for k in varied]
    return " ".join([*parts, *([f"[{budget or 'default budget'}]"] if budget is not None else []), f"seed={row.seed}"])


def curves(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, evaluation): the long format plotly draws one line per run from."""
    keys = sorted({k for hp in runs["hparams"] for k in (hp or {})})
    varied = [k for k in keys if len({str((hp or {}).get(k)) for hp in runs["hparams"]}) > 1]
    budgets = [budget_text(b) for b in runs["budget"]]
    several = len(set(budgets)) > 1
    rows = []
    for r, budget in zip(runs.itertuples(), budgets):
        label = f"#{r.id} " + setting_text(r, varied, budget if several else None)
        for h in r.history or []:
            rows.append({"run": label, "step": h.get("step"), "epoch": h.get("epoch"), "score": h.get("score"),
                         "train_loss": h.get("train_loss")})
    return pd.DataFrame(rows, columns=["run", "step", "epoch", "score", "train_loss"])


def page_task(store, all_runs: pd.DataFrame, suite: str, model: str) -> None:
    runs = all_runs[(all_runs["suite"] == suite) & (all_runs["model"] == model)]
    if runs.empty:
        st.info("No runs of this suite and model yet.")
        return
    c1, c2, c3, c4 = st.columns(4)
    task = urlstate.choose(c1.selectbox, "Task", list(dict.fromkeys(runs["task"])), "task")
    variants = list(dict.fromkeys(runs[runs["task"] == task]["method_label"]))
    method = urlstate.choose(c2.selectbox, "Method", variants, "method")
    x = urlstate.choose(c3.selectbox, "x axis", list(X_AXES), "x", format_func=X_AXES.get)
    y = urlstate.choose(c4.selectbox, "y axis", list(Y_AXES), "y", format_func=Y_AXES.get)
    found = task_runs(store, suite, model, task, method)
    st.subheader(md_escape(f"{task} · {method}: {len(found)} run(s)"))
    points = curves(found)
    if points.dropna(subset=[y]).empty:
        st.info("No evaluation history stored for these runs yet.")
    else:
        fig = px.line(points.dropna(subset=[y]), x=x, y=y, color="run", markers=True, height=460,
                      hover_data=["step", "epoch"], labels={x: X_AXES[x], y: Y_AXES[y]})
        st.plotly_chart(fig, width="stretch")
        st.caption("One line per run: every dev evaluation of its training (the runs' evaluation history). Lines "
                   "of one setting differ by seed only.")
    shown = runs[(runs["task"] == task) & (runs["method_label"] == method)]
    # e.g. SQuAD's split, rows skipped: wherever its scores show
    for line in note_lines([task], data_by_task(shown), skipped_by_task(shown)):
        st.caption(md_escape(line, cell=False))
    table = found.drop(columns=["history", "hparams"]).assign(
        budget=[budget_text(b) for b in found["budget"]],
        run_page=[urlstate.link(page="Runs", suite=suite, model=model, run=int(i)) for i in found["id"]])
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"run_page": st.column_config.LinkColumn("run page", display_text="open run"),
                                "score": st.column_config.NumberColumn(format="%.2f"),
                                "best_score": st.column_config.NumberColumn(format="%.2f"),
                                "train_time_s": st.column_config.NumberColumn("train time (s)", format="%.0f")})
