"""The leaderboard: `harness board --db URL` (or `streamlit run harness/board/app.py -- --db URL`).

Draws only: the tables, the trade-off points and the Pareto frontier come from harness.report. Reads the store
read-only (SQLite mode=ro; a read-only transaction elsewhere); every query is built by SQLAlchemy with bound
parameters, never from user text. Queries are cached, so a large store is loaded once.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import shlex
import sys

import pandas as pd
import plotly.express as px
import streamlit as st

from harness.analysis.compare import compare_variants
from harness.board import reread, urlstate
from harness.board.evp_page import page_evp
from harness.board.grid_page import page_grid
from harness.board.task_page import page_task
from harness.board.tradeoff_page import page_tradeoff
from harness.report.export import (display_table, footnote, lr_text, md_escape, note_lines, notes_text,
                                   nothing_completed, run_method_text,
                                   table_caption, table_csv, task_notes, to_latex, to_markdown, with_methods_shown)
from harness.report.grid import suites_models, with_flops
from harness.report.text import comparison_footer, failure_reason, pct_text
from harness.report.tables import (ablation_matrix, best_table, composite_vs_single, leaderboard_table, runs_frame,
                                   settings_behind, with_failed_rows)
from harness.spec.errors import InputError
from harness.spec.status import Status
from harness.stats.selection import selectable_runs
from harness.store.db import Store
from harness.store.engine import StoreChanged, default_db_url
from harness.store.redact import redact_url

HOW_TO_RUN = """No results yet. Run a suite first, for example the embedded default (offline, ~15 min on a laptop CPU):

```
HARNESS_DATA_DIR=/path/to/glue harness run suites/demo.yaml
harness board --db sqlite:///results/harness.db
```"""


def db_url() -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.db or default_db_url()


def reproduce_text(rec, url: str) -> str:
    """The command that re-runs this cell, passwords hidden: the stored command (the suite's absolute path and
    content hash, the store, the output folder), completed with the store and output folder for rows written
    before commands carried them."""
    import os

    # the stored command, like every text column, comes out of the store redacted (harness.store.schema)
    command = rec.command or "accelerate launch -m harness.run SUITE.yaml --retry-failed"
    body, sep, comment = command.partition("   # ")
    if "--db" not in body.split():
        body += f" --db {shlex.quote(redact_url(url))}"
    if "--output-dir" not in body.split() and rec.output_dir:
        root = os.path.dirname(os.path.dirname(os.path.abspath(rec.output_dir)))   # ROOT/suite/cell key
        body += f" --output-dir {shlex.quote(root)}"
    lines = [body + sep + comment, f"# cell {rec.cell_key} of suite {rec.suite}; its files: {rec.output_dir}"]
    if rec.status == Status.COMPLETED:
        lines.append("# a completed cell is skipped: to train it again, give a fresh --db and --output-dir")
    if "***" in body:
        lines.append("# the store's password is hidden (***): give it with PGPASSFILE or PGPASSWORD (docs/cluster.md)")
    return "\n".join(lines)


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> Store:
    return Store(url, read_only=True)


READ_S = 120   # how long every page but the Grid (which reads the store itself, live) shows one read of the store


@st.cache_data(ttl=READ_S, show_spinner="Loading runs…")
def load_store(url: str) -> dict:
    """One read of the store, in one snapshot (Store.snapshot), that every page but the Grid draws from: the suites
    and models, and each suite's runs as `harness export --table runs --suite SUITE` has them (its provenance
    columns too: the Runs page's download is this frame's rows). Loaders cached apart, for 120 s and 5 s, showed a
    Runs table up to two minutes older than its own CSV download while a worker ran."""
    store = open_store(url)
    with store.snapshot():
        suites = suites_models(store)
        runs = {suite: with_flops(store, runs_frame(store, suite, with_env=True)) for suite in suites["suite"].unique()}
    return {"suites": suites, "runs": runs, "read_at": pd.Timestamp.now(tz="UTC")}


def load_suites(url: str) -> pd.DataFrame:
    return load_store(url)["suites"]


def load_runs(url: str, suite: str) -> pd.DataFrame:
    """The suite's runs (every model's) from the board's read of the store (load_store)."""
    return load_store(url)["runs"].get(suite, pd.DataFrame(columns=["suite", "model", "task", "status"]))


def load_tables(url: str, suite: str, model: str, metric: str):
    return _tables(url, suite, model, metric, load_store(url)["read_at"])


@st.cache_data(ttl=READ_S, show_spinner=False)
def _tables(url: str, suite: str, model: str, metric: str, read_at):
    """The best and leaderboard tables of the read at `read_at` (part of the cache key: a new read, new tables)."""
    best = best_table(load_runs(url, suite), metric=metric, model=model)   # selected among every model's runs
    return best, leaderboard_table(best)


def styled(kind: str, frame: pd.DataFrame):
    header, rows, _, bold = display_table(kind, frame)
    table = pd.DataFrame(rows, columns=header)

    def emphasise(data):
        return pd.DataFrame([["font-weight: 700; background-color: rgba(46, 160, 67, 0.18)" if (i, j) in bold else ""
                              for j in range(data.shape[1])] for i in range(data.shape[0])],
                            index=data.index, columns=data.columns)

    return table, table.style.apply(emphasise, axis=None)


def seeds_needed_table(board: pd.DataFrame) -> pd.DataFrame:
    """Variants x tasks: the seeds each needs to resolve its difference to the column's best (text cells)."""
    from harness.report.export import flag_value, seeds_text

    tasks = [t for t in board.attrs.get("tasks", []) if f"{t}_seeds_needed" in board]
    rows = []
    for _, r in board.iterrows():
        row = {"method": r["method"]}
        for t in tasks:
            if flag_value(r.get(f"{t}_is_best")):
                row[t] = "best"
            else:
                row[t] = "–" if pd.isna(r.get(f"{t}_mean")) else seeds_text(r[f"{t}_seeds_needed"])
        rows.append(row)
    return pd.DataFrame(rows) if tasks else pd.DataFrame()


@st.cache_data(ttl=READ_S, show_spinner=False, max_entries=4)
def download_files(kind: str, suite: str, rows: str, _frame: pd.DataFrame) -> tuple[str, str, str, str | None]:
    """The table's CSV, LaTeX and Markdown, and the CSV's notes file (None where the table has no notes), as
    `harness export --table KIND --suite SUITE --model MODEL -o KIND-SUITE.csv` writes them (the caption names the
    suite and the model(s) of the rows shown), built once per `rows` (the frame's digest): built at every draw (each
    click: a filter, a run chosen), the Runs page's files of 2,230 runs took 3.1 s of its 3.8 s. A few views only:
    the three files of 2,230 runs are 2.6 MB."""
    caption = table_caption(kind, _frame, suite)
    notes = footnote(kind, _frame) if not _frame.empty else []   # what the page shows under the table
    return (table_csv(kind, _frame), to_latex(kind, _frame, caption), to_markdown(kind, _frame, caption),
            notes_text(f"{kind}-{suite}.csv", notes) if notes else None)


def downloads(kind: str, frame: pd.DataFrame, suite: str) -> None:
    stem = f"{kind}-{suite}"
    # the key is every byte of the frame, its attrs (the notes' facts) too: Streamlit's own hash of a frame leaves
    # the attrs out and samples a large one's rows
    rows = hashlib.sha256(pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
    csv_text, latex, markdown, notes = download_files(kind, suite, rows, frame)
    columns = st.columns(4 if notes else 3)
    columns[0].download_button("Download CSV", csv_text, f"{stem}.csv", "text/csv", width="stretch")
    if notes:   # the footnote LaTeX and Markdown carry, which a CSV has no place for: the file export writes beside it
        columns[1].download_button("Download CSV notes", notes, f"{stem}.notes.txt", "text/plain", width="stretch")
    columns[-2].download_button("Download LaTeX", latex, f"{stem}.tex", "text/x-tex", width="stretch")
    columns[-1].download_button("Download Markdown", markdown, f"{stem}.md", "text/markdown", width="stretch")


def page_leaderboard(url, suite, model, metric):
    best, board = load_tables(url, suite, model, metric)
    if board.empty:
        said = nothing_completed(best)   # or none of the newest task versions: what was left out
        st.info(md_escape(f"{said[:1].upper()}{said[1:]} for this suite and model.", cell=False))
        return
    st.subheader(md_escape(f"{suite} · {model}"))
    st.caption("Each cell: mean ± std over seeds of the hyperparameter setting that is best on dev (the Houlsby "
               "et al. protocol), on the " + ("final" if metric == "score" else "best") + " dev evaluation, in "
               "GLUE points. Params (all tasks): one shared frozen base plus what every task trains, and that as a "
               "multiple of one model.")
    if board.attrs.get("em_tasks"):
        st.caption(f"SQuAD tasks ({md_escape(', '.join(board.attrs['em_tasks']))}): exact match and F1 (the main "
                   f"score), in points; {md_escape(board.attrs['avg_name'])} averages GLUE tasks only (what the "
                   f"offline SQuAD files are: the task's note, under the table).")
    methods = list(board["method"])
    keep = urlstate.choose_many(st.multiselect, "Methods", methods, "show", default=methods)
    sort_options = ["as exported"] + [c for c in ["avg"] + board.attrs["tasks"] + ["trainable_pct"]]
    sort_by = urlstate.choose(st.selectbox, "Sort by", sort_options, "sort",
                              format_func=lambda c: {"avg": board.attrs.get("avg_name", "average"),
                                                     "trainable_pct": "% trained"}.get(c, c))
    view = with_methods_shown(board, keep)   # (its attrs: the columns whose best it hides, for the footnote)
    if view.empty:   # (every method taken out: no table, nor its files, to draw)
        st.info("No method chosen: choose one or more under Methods.")
        return
    if sort_by != "as exported":   # (the export's order: tables.variant_rank)
        col = "avg" if sort_by == "avg" else sort_by if sort_by == "trainable_pct" else f"{sort_by}_mean"
        shown = dict(view.attrs)
        view = view.sort_values(col, ascending=sort_by == "trainable_pct", na_position="last")
        view.attrs.update(shown)
    _, style = styled("leaderboard", view)
    st.dataframe(style, hide_index=True, width="stretch")
    for line in footnote("leaderboard", view):
        st.caption(md_escape(line, cell=False).replace("Bold:", "**Bold** (green):", 1))
    needed = seeds_needed_table(view)
    if not needed.empty:
        st.markdown("**Seeds needed** to resolve each variant's gap to its column's best (α = 0.05, power 0.8, "
                    "normal approximation n = 2 (z₀.₉₇₅ + z₀.₈)² σ² / δ², σ² the mean of the two seed variances; "
                    "–: one seed or no variance; best: the column's best)")
        st.dataframe(needed, hide_index=True, width="stretch")
    seeds = best["n_seeds"].astype(int)   # per (task, method) cell, as the footnote counts them
    # the cells and settings of export's best table: a variant whose every run of a task failed included
    cells = with_failed_rows(best)
    # each setting once: a multi-task one trains once for the cells of all its tasks
    every = load_runs(url, suite)
    unfinished = settings_behind(cells, every, "settings_unfinished")
    st.caption(f"{len(cells)} (task, method) cells from {settings_behind(cells, every)} hyperparameter settings "
               f"tried" + (f" ({unfinished} more not finished yet)" if unfinished else "")
               + f"; seeds per cell: {seeds.min()}" + (f"–{seeds.max()}." if seeds.max() > seeds.min() else "."))
    downloads("leaderboard", view, suite)


def page_runs(url, suite, model):
    runs = load_runs(url, suite)
    runs = runs[runs["model"] == model]
    c1, c2, c3 = st.columns(3)
    tasks = urlstate.choose_many(c1.multiselect, "Task", sorted(runs["task"].unique()), "tasks")
    methods = urlstate.choose_many(c2.multiselect, "Method", sorted(runs["method_label"].unique()), "methods")
    statuses = urlstate.choose_many(c3.multiselect, "Status", sorted(runs["status"].unique()), "statuses")
    view = runs
    if tasks:
        view = view[view["task"].isin(tasks)]
    if methods:
        view = view[view["method_label"].isin(methods)]
    if statuses:
        view = view[view["status"].isin(statuses)]
    cols = ["id", "task", "method", "budget", "learning_rate", "seed", "status", "score", "trainable_pct",
            "trainable_params", "train_time_s", "peak_memory_mb", "train_examples_per_s", "hparams"]
    # the method as the exported runs table says it: a sequence's earlier stage and a joint multi-task row are
    # told from a task's own score (their label alone, "full [after mrpc]" on mrpc, reads as one)
    method = [run_method_text(r) for _, r in view.iterrows()]
    # the share and the learning rate as every export prints them (pct_text: a probe's 0.000306% read "0.000" under
    # a %.3f format; lr_text) as the Styler's display texts over the numbers: a column of texts sorted "10.000"
    # before "9.000". Streamlit shows a Styler's text on every cell but a number column with a format of its own:
    # the other number columns have one, and a missing value reads "–", as in the exports
    table = view.assign(method=method)[cols].rename(columns={"trainable_pct": "% trained"})
    if table.size <= pd.get_option("styler.render.max_elements"):
        shown = table.style.format({"% trained": pct_text, "learning_rate": lr_text}, na_rep="–")
    else:   # Streamlit refuses a Styler past pandas' limit (262,144 cells: some 18,700 runs here), which broke the
        # page: a table that large shows pct_text's texts themselves (sorted as text)
        shown = table.assign(**{"% trained": [pct_text(v) for v in table["% trained"]]})
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"id": st.column_config.NumberColumn(format="%d"),
                                "seed": st.column_config.NumberColumn(format="%d"),
                                "score": st.column_config.NumberColumn(format="%.2f"),
                                "trainable_params": st.column_config.NumberColumn(format="%d"),
                                "train_time_s": st.column_config.NumberColumn("train time (s)", format="%.0f"),
                                "peak_memory_mb": st.column_config.NumberColumn("memory (MB)", format="%.0f"),
                                "train_examples_per_s": st.column_config.NumberColumn("examples/s", format="%.1f")})
    for line in task_notes("runs", view):   # e.g. SQuAD's split: wherever its scores show
        st.caption(md_escape(line, cell=False))
    if view.empty:   # (filters that leave no run: nothing to download either)
        return
    # the file is `harness export --table runs --suite SUITE --model MODEL`'s, of the read the table shows (its
    # provenance columns too), rows as filtered here
    downloads("runs", runs[runs["id"].isin(view["id"])], suite)
    labels = {int(r.id): f"#{r.id} {r.task} {text} lr={lr_text(r.learning_rate)} seed={r.seed} ({r.status})"
              for text, r in zip(method, view.itertuples())}
    run_id = urlstate.choose(st.selectbox, "Run details", list(labels), "run", format_func=labels.get)
    rec = open_store(url).get(run_id)
    if rec is None:
        return
    st.subheader(md_escape(labels[run_id]))
    if rec.status != view.loc[view["id"] == run_id, "status"].iloc[0]:   # read now, after the table's read
        st.warning(f"This run is {rec.status} now: the table shows the store as read at "
                   f"{load_store(url)['read_at']:%H:%M:%S} UTC (read again every {READ_S} s); the details below "
                   f"are as it is now.")
    if rec.error:   # the reason's line, then the whole text as typed: Markdown made a traceback's `__init__` bold
        st.error(md_escape(failure_reason(rec), cell=False))
        st.code(rec.error, language=None)
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Dev metrics** (final / best)")
        metrics = pd.DataFrame({"final": rec.metrics or {}, "best": rec.best_metrics or {}})
        st.dataframe(metrics, width="stretch")
        st.markdown("**Reproduce**")
        st.code(reproduce_text(rec, url), language="bash")
    with c2:
        if rec.history:
            curve = pd.DataFrame([{"epoch": h["epoch"], "step": h["step"], "score": h["score"]} for h in rec.history])
            fig = px.line(curve, x="epoch", y="score", markers=True, hover_data=["step"], height=300,
                          labels={"score": "dev score"})
            st.plotly_chart(fig, width="stretch")
    with st.expander("Resolved configuration"):
        st.json(rec.config)
    with st.expander("Environment"):
        st.json(rec.env or {})


def page_analyses(url, suite, model, metric):
    suite_runs = load_runs(url, suite)
    page_schedules(suite_runs, model, metric)
    runs, _ = selectable_runs(suite_runs, model)   # the runs the tables choose from
    st.subheader("Paired comparison on the same dev examples")
    if runs.empty:
        st.info("No completed runs.")
        return
    c1, c2, c3 = st.columns(3)
    task = urlstate.choose(c1.selectbox, "Task", sorted(runs["task"].unique()), "task")
    variants = sorted(runs[runs["task"] == task]["method_label"].unique())
    if len(variants) < 2:
        st.info("Needs two method variants on this task.")
        return
    a = urlstate.choose(c2.selectbox, "Method A", variants, "a", default=variants[0])
    b = urlstate.choose(c3.selectbox, "Method B", variants, "b", default=variants[1])
    try:   # as `harness compare A B --task T`: each variant's best setting, its runs paired by seed
        res, n_seeds = compare_variants(open_store(url), suite, task, a, b, model=model)
    except StoreChanged:   # read again (main), not a reason the comparison cannot be made
        raise
    except InputError as e:   # no shared seed, or predictions not on this machine (each run's output folder)
        st.info(md_escape(f"Cannot compare: {e}.", cell=False))
    else:
        m1, m2, m3 = st.columns(3)
        m1.metric(f"A − B ({md_escape(task)})", f"{res.diff:+.2f}")
        m2.metric("95% CI", f"[{res.ci_low:+.2f}, {res.ci_high:+.2f}]")
        m3.metric("p-value", f"{res.p_value:.3f}")
        # a run saves its final evaluation's predictions only: the comparison is of final evaluations, the
        # settings chosen on them, whichever dev score the sidebar shows the leaderboard on
        chosen = ("the leaderboard's" if metric == "score" else
                  "chosen on the final dev evaluation, not the best one the leaderboard shows now: a run saves the "
                  "predictions of its final evaluation only")
        st.caption(md_escape(f"Each variant's best setting on dev ({chosen}), its runs paired by seed ({n_seeds} "
                             f"seed(s)), its score the mean over them; {res.resamples} paired bootstrap resamples of "
                             f"the {res.n_examples} dev examples, two-sided p. The same as "
                             f"`harness compare \"{a}\" \"{b}\" --task {task}`.", cell=False))
        for line in comparison_footer(task, res):   # as `harness compare` says them
            st.caption(md_escape(line, cell=False))
    page_ablations(url, suite, runs)


def page_schedules(runs, model, metric):
    """Sequential and multi-task rows against the direct single-task runs of the same method and task, on the
    dev evaluation the leaderboard shows."""
    rows = composite_vs_single(runs, model, metric)
    if rows.empty:
        return
    st.subheader("Multi-task and sequential vs single-task")
    st.dataframe(rows, hide_index=True, width="stretch")
    which = "final" if metric == "score" else "best"
    st.caption(f"Sequential: the last stage's dev score (the encoder handed on from the earlier tasks). "
               f"Multi-task: each member task's score from the one jointly trained model. Single-task: the same "
               f"method variant trained on the task alone (best setting on dev). Every score on each run's {which} "
               f"dev evaluation, as the leaderboard.")
    for line in note_lines(list(dict.fromkeys(rows["task"])), rows.attrs.get("data")):   # e.g. SQuAD's split
        st.caption(md_escape(line, cell=False))


@st.cache_data(ttl=READ_S, show_spinner=False)
def load_analyses(url: str, suite: str, kind: str) -> list[dict]:
    return [{"run_id": a.run_id, "payload": a.payload} for a in open_store(url).analyses(suite, kind)]


def page_ablations(url, suite, runs):
    st.subheader("Adapter ablation")
    found = [a for a in load_analyses(url, suite, "adapter_ablation") if a["run_id"] in set(runs["id"])]
    if not found:
        st.info("No adapter ablations stored for this suite and model.")
        return
    labels = {a["run_id"]: runs[runs["id"] == a["run_id"]].iloc[0] for a in found}
    run_id = urlstate.choose(st.selectbox, "Run", list(labels), "ablation",
                             format_func=lambda i: f"#{i} {labels[i]['task']} "
                                                   f"{labels[i]['method_label']} seed {labels[i]['seed']}")
    payload = next(a["payload"] for a in found if a["run_id"] == run_id)
    matrix = ablation_matrix(payload)
    fig = px.imshow(matrix, color_continuous_scale="RdBu", color_continuous_midpoint=0, origin="upper",
                    labels={"x": "last layer removed", "y": "first layer removed", "color": "score change"},
                    text_auto=".1f", height=460)
    st.plotly_chart(fig, width="stretch")
    st.caption(f"Dev score change when the adapters of layers first..last are removed, without retraining "
               f"(score with every adapter: {payload['baseline']:.2f}).")
    run = labels[run_id]
    for line in note_lines([run["task"]], {run["task"]: [run["data"]]}):   # as `harness ablate` says it
        st.caption(md_escape(line, cell=False))


PAGES = ["Leaderboard", "Grid", "Trade-off", "Tuning budget", "Runs", "Task", "Analyses"]


def main() -> None:
    """The page, read again where a worker wrote the store during a read without locks (harness/board/reread.py)."""
    st.set_page_config(page_title="PEFT leaderboard", page_icon="📊", layout="wide")
    page = st.empty()   # what a torn read drew is taken away with it
    try:
        with page.container():
            draw_page()
    except StoreChanged:
        reread.read_again()
        page.empty()
        st.warning(reread.given_up(db_url()))
        return
    reread.read_fine()


def draw_page() -> None:
    url = db_url()
    st.sidebar.title("PEFT leaderboard")
    try:
        store = open_store(url)
        suites = load_suites(url)
    except FileNotFoundError:
        st.title("PEFT leaderboard")
        st.info(f"No results store at `{redact_url(url)}`.\n\n" + HOW_TO_RUN)
        return
    if suites.empty:
        st.title("PEFT leaderboard")
        st.info(f"The store `{redact_url(url)}` holds no runs.\n\n" + HOW_TO_RUN)
        return
    urlstate.begin()   # suite, model, score and page (and each page's filters) live in the URL: a link to this view
    suite = urlstate.choose(st.sidebar.selectbox, "Suite", list(dict.fromkeys(suites["suite"])), "suite")
    mine = suites[suites["suite"] == suite]
    model = urlstate.choose(st.sidebar.selectbox, "Model", list(mine["model"]), "model")
    metric = urlstate.choose(st.sidebar.radio, "Dev score", ["score", "best_score"], "metric",
                             format_func={"score": "final evaluation", "best_score": "best evaluation"}.get)
    started = bool(mine["completed"].sum())   # a suite without results yet opens on its Grid
    page = urlstate.choose(st.sidebar.radio, "Page", PAGES, "page", default="Leaderboard" if started else "Grid")
    every = load_store(url)["runs"].values()
    n_runs, n_done = sum(len(r) for r in every), sum(int((r["status"] == Status.COMPLETED).sum()) for r in every)
    st.sidebar.caption(f"{n_runs:,} runs in the store ({n_done:,} completed) · read-only · read at "
                       f"{load_store(url)['read_at']:%H:%M:%S} UTC, again every {READ_S} s (the Grid: live)")
    runs = load_runs(url, suite)
    st.title(page)
    draw = {"Leaderboard": lambda: page_leaderboard(url, suite, model, metric),
            "Grid": lambda: page_grid(store, suite),
            "Trade-off": lambda: page_tradeoff(*load_tables(url, suite, model, metric)),
            "Tuning budget": lambda: page_evp(runs, model, metric),
            "Runs": lambda: page_runs(url, suite, model),
            "Task": lambda: page_task(store, runs, suite, model),
            "Analyses": lambda: page_analyses(url, suite, model, metric)}
    draw[page]()
    urlstate.prune()


main()
