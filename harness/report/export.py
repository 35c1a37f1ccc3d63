"""`harness export`: runs, leaderboard and best tables as CSV, LaTeX (booktabs) or Markdown."""

from __future__ import annotations

import io
import math
import os
import re

import numpy as np
import pandas as pd

from harness.report.provenance import (data_by_task, mixed_data_text, mixed_model_text, note_applies, recorded_splits,
                                       skipped_by_task, skipped_text)
from harness.report.tables import (ALL_FAILED, NOT_FINISHED, STD_NOTE, best_table, fmt_mean_std,
                                   leaderboard_table, runs_frame, score_metric, span_tasks, with_failed_rows)
from harness.report.text import pct_text
from harness.spec.status import Regime
from harness.stats.significance import RESAMPLES, at_best   # a tie as the tables decide it, not by the last bits
from harness.store.db import Store
from harness.store.engine import default_db_url, sqlite_file

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(value):
    """Spreadsheets execute cells starting with = + - @: prefix such text with a quote. Numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        try:
            float(value)
            return value  # "-3.5" is a number, not a formula
        except ValueError:
            return "'" + value
    return value


def to_csv(frame: pd.DataFrame) -> str:
    safe = frame.copy()
    for col in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[col]):  # object or (pandas 3) str columns
            safe[col] = safe[col].map(neutralise_formula)
    safe.columns = [neutralise_formula(str(c)) for c in safe.columns]
    buf = io.StringIO()
    safe.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 # not specials, but LaTeX's default font encoding (OT1) prints them as an em dash, ¡ and ¿
                 "|": r"\textbar{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text) -> str:
    """`text` as LaTeX prints it: its specials escaped, a hyphen before another kept apart ("--" and "---" are
    LaTeX's en and em dash: `--all` printed as "–all") and a backtick as itself (LaTeX's opening quote)."""
    text = str(text)
    return "".join("-{}" if ch == "-" and text[i + 1:i + 2] == "-" else "\\textasciigrave{}" if ch == "`"
                   else LATEX_SPECIAL.get(ch, ch) for i, ch in enumerate(text))


def latex_note(line: str) -> str:
    """A footnote line as LaTeX: escaped, its `code` spans (the commands it names) in typewriter type."""
    parts = line.split("`")
    if len(parts) % 2 == 0:   # an odd number of backticks: no spans to pair, every one printed as itself
        return latex_escape(line)
    return "".join(f"\\texttt{{{latex_escape(p)}}}" if i % 2 else latex_escape(p) for i, p in enumerate(parts))


def _num(v, digits=1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _params(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v / 1e6:.1f}M"


def lr_text(v) -> str:
    """A run's learning rate as the tables print it; "–" where its row has none (a record ingested from a
    configuration without one: the column is NULL there)."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}"


def _count_text(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else str(int(v))


def run_method_text(r) -> str:
    """A run's method as the runs table shows it: an earlier stage of a sequence carries the sequence's label
    ("full [after mrpc]" on its mrpc stage read as mrpc trained after mrpc), and a joint multi-task row is not
    a score of any one task."""
    label, regime = r["method_label"], r.get("regime")
    if regime == Regime.SEQUENTIAL_STAGE.value:
        stage = r.get("stage")
        which = f"stage {int(stage) + 1}" if stage is not None and not pd.isna(stage) else "an earlier stage"
        return f"{label}: {which} of the sequence"
    if regime == Regime.MULTITASK.value:
        return f"{label}: the joint run (mean over its tasks)"
    return label


def display_table(kind: str, frame: pd.DataFrame) -> tuple[list[str], list[list], list[str], set]:
    """(header, rows of cell texts, alignments 'l'/'r', {(row, col) to emphasise as best})."""
    bold: set = set()
    if kind == "runs":
        header = ["suite", "model", "task", "method", "seed", "lr", "budget", "status", "score", "% trained",
                  "time (s)", "memory (MB)"]
        rows = []
        for _, r in frame.iterrows():
            rows.append([r["suite"], r["model"], r["task"], run_method_text(r), r["seed"], lr_text(r["learning_rate"]),
                         r["budget"], r["status"], _num(r["score"], 2), pct_text(r["trainable_pct"]),
                         _num(r["train_time_s"], 0), _num(r["peak_memory_mb"], 0)])
        return header, rows, ["l"] * 8 + ["r"] * 4, bold
    if kind == "ablation":
        header = ["run", "model", "task", "method", "adapters removed", "score", "change"]
        rows = [[r["run_id"], r["model"], r["task"], r["method_label"],
                 f"layers {r['first_layer']}-{r['last_layer']}" if r["first_layer"] != r["last_layer"]
                 else f"layer {r['first_layer']}", _num(r["score"], 2), f"{r['change']:+.2f}"]
                for _, r in frame.iterrows()]
        return header, rows, ["r", "l", "l", "l", "l", "r", "r"], bold
    if kind == "best":
        # expected validation performance (stats/evp.py): the mean over the settings tried and the expected best
        # of k of them, k the fewest settings any compared variant tried: equal tuning budgets side by side
        k = frame["evp_k_n"].dropna() if "evp_k_n" in frame else pd.Series(dtype=float)
        evp_k_name = f"EVP({int(k.iloc[0])})" if len(k) and k.nunique() == 1 else "EVP(k)"
        with_k = evp_k_name != "EVP(1)"   # every variant tried one setting: EVP(k) is EVP(1), shown once
        # SQuAD's EM beside its F1 (the score), as the leaderboard shows it: a column only where such a task is
        with_em = bool(span_tasks(frame["task"]))
        header = (["model", "task", "method", "score"] + ["EM"] * with_em + ["seeds", "lr", "budget", "% trained",
                  "p vs best", "seeds needed", "settings", "EVP(1)"] + ([evp_k_name] if with_k else []))
        frame = frame.reset_index(drop=True)
        # a variant whose every run of the task failed, or with none finished yet (tables.with_failed_rows): the
        # leaderboard's cell, no setting
        rows = [[r["model"], r["task"], r["method_label"], ALL_FAILED if _count(r.get("failed_settings"))
                 else NOT_FINISHED] + ["–"] * (6 + with_em)
                + [settings_text(r.get("settings_tried"), r.get("settings_failed"), r.get("settings_unfinished"))]
                + ["–"] * (1 + with_k)
                if _count(r.get("failed_settings")) or pd.isna(r["mean"]) else
                [r["model"], r["task"], r["method_label"],
                 score_text(r["mean"], r["std"], r["n_seeds"], r.get("trivial"), r.get("improving_seeds"),
                            untested=flag_value(r.get("tested")) is False and not flag_value(r.get("is_best")))]
                + ([fmt_mean_std(r.get("em_mean"), r.get("em_std"), r["n_seeds"]) if r["task"] in span_tasks(
                    [r["task"]]) else "–"] if with_em else [])
                + [seeds_of(r["n_seeds"], r.get("seeds_planned")), lr_text(r["learning_rate"]), r["budget"],
                 pct_text(r["trainable_pct"]),
                 "best" if r.get("is_best") else _p(r.get("p_vs_best")), seeds_text(r.get("seeds_needed")),
                 settings_text(r.get("settings_tried"), r.get("settings_failed"), r.get("settings_unfinished")),
                 _num(r.get("evp_1"))]
                + ([_num(r.get("evp_k")) + ("" if evp_k_name != "EVP(k)" or pd.isna(r.get("evp_k_n"))
                                            else f" (k={int(r['evp_k_n'])})")] if with_k else [])
                for _, r in frame.iterrows()]
        for i, r in frame.iterrows():
            if _tied(frame, i, "tied_with_best", "mean", (frame["model"] == r["model"]) & (frame["task"] == r["task"])):
                bold.add((int(i), 3))
        return header, rows, ["l", "l", "l", "r"] + ["r"] * with_em + ["r", "r", "l", "r", "r", "r", "r", "r"] \
            + ["r"] * with_k, bold
    # leaderboard
    tasks = frame.attrs.get("tasks", [])
    em_tasks = frame.attrs.get("em_tasks", [])
    avg_name = frame.attrs.get("avg_name", "GLUE avg")
    multi_model = frame["model"].nunique() > 1 if not frame.empty else False
    # (header, mean column, std column, n column, task) per score column: SQuAD tasks show EM and F1
    score_cols = []
    for t in tasks:
        if t in em_tasks:
            score_cols.append((f"{t} EM", f"{t}_em_mean", f"{t}_em_std", f"{t}_n", t))
            score_cols.append((f"{t} F1", f"{t}_mean", f"{t}_std", f"{t}_n", t))
        else:
            score_cols.append((t, f"{t}_mean", f"{t}_std", f"{t}_n", t))
    # EM is shown beside F1, SQuAD's main score: the selection, the test and the marks are F1's, so EM gets none
    is_em = [m.endswith("_em_mean") for _, m, *_ in score_cols]
    header = ((["model"] if multi_model else []) + ["method"] + [c[0] for c in score_cols]
              + [avg_name, "% trained", "params (all tasks)"])
    rows = []
    frame = frame.reset_index(drop=True)
    for i, r in frame.iterrows():
        cells = ([r["model"]] if multi_model else []) + [r["method"]]
        cells += [ALL_FAILED if _count(r.get(f"{t}_failed_settings")) else
                  NOT_FINISHED if pd.isna(r[m]) and _count(r.get(f"{t}_settings_unfinished")) else
                  score_text(r[m], r[s], r[n]) if em else
                  score_text(r[m], r[s], r[n], r.get(f"{t}_trivial"), r.get(f"{t}_improving_seeds"),
                             untested=_untested(r, t), planned=r.get(f"{t}_seeds_planned"))
                  for (_, m, s, n, t), em in zip(score_cols, is_em)]
        cells += [average_text(r), pct_text(r["trainable_pct"]),
                  f"{_params(r['params_all_tasks'])} ({r['params_all_tasks_x']:.2f}x)"
                  if pd.notna(r["params_all_tasks"]) else "–"]
        rows.append(cells)
    offset = 2 if multi_model else 1
    for j, (_, m, _, _, t) in enumerate(score_cols + [(None, "avg", None, None, "avg")]):
        if j < len(is_em) and is_em[j]:
            continue
        for i, r in frame.iterrows():
            if pd.notna(r[m]) and _tied(frame, i, f"{t}_tied_with_best", m, frame["model"] == r["model"]):
                bold.add((int(i), offset + j))
    trivial = frame.attrs.get("trivial") or {}
    if trivial and rows:
        glue = frame.attrs.get("avg_tasks") or []
        avg = sum(trivial[t] for t in glue) / len(glue) if glue and all(t in trivial for t in glue) else None
        rows.append(([""] if multi_model else []) + [TRIVIAL_ROW]
                    + [_num(trivial.get(t)) if not c[0].endswith(" EM") else "–" for c in score_cols for t in [c[4]]]
                    + [_num(avg), "–", "–"])
    return header, rows, ["l"] * offset + ["r"] * (len(score_cols) + 3), bold


TRIVIAL_ROW = "trivial baseline"
TRIVIAL_MARK, IMPROVING_MARK = "†", "‡"
NOT_TESTED = "(not tested)"
SHORT_SEEDS = re.compile(r"\(\d+/\d+ seeds\)")
SELECTED_ON_DEV = ("Scores on the dev set; each variant's hyperparameter setting (all but the seed) is the one with "
                   "the best mean dev score (the Houlsby et al. protocol), so the more settings a variant tried, the "
                   "more optimistic its score; no test set is used.")


def settings_text(tried, failed, unfinished=None) -> str:
    """Settings tried, with those whose every seed failed, and those with no completed seed yet (not among the
    tried): `4 (2 failed)`, `2 (+2 unfinished)`, `4 (2 failed, +1 unfinished)`."""
    more = [f"{_count(failed)} failed"] if _count(failed) else []
    more += [f"+{_count(unfinished)} {UNFINISHED}"] if _count(unfinished) else []
    return _count_text(tried) + (f" ({', '.join(more)})" if more else "")


UNFINISHED = "unfinished"
# how the notes on settings with no completed seed yet begin (the best table's, and the leaderboard's per task)
UNFINISHED_NOTE = f"+n {UNFINISHED} (settings), settings_{UNFINISHED} (n more) (flags):"
UNFINISHED_TASK_NOTE = "Settings not finished on"


def unfinished_note() -> str:
    return (f"{UNFINISHED_NOTE} n more settings of the variant have no completed seed yet (queued, running, or stale "
            f"until a worker takes them over): they are not among its settings tried, nor in its score, the "
            f"selection or EVP, which are over its finished settings, so its score and rank may still change; "
            f"EVP(k) compares the finished settings only.")


def budget_notes(frame: pd.DataFrame) -> list[str]:
    """A line per task whose variants tried different numbers of settings (unequal tuning budgets)."""
    lines = []
    models = frame.groupby("model", sort=False) if not frame.empty else []
    for model, rows in models:
        where = f" ({model})" if frame["model"].nunique() > 1 else ""
        for t in frame.attrs.get("tasks", []):
            tried = {r["method"]: _count(r.get(f"{t}_settings")) for _, r in rows.iterrows()
                     if _count(r.get(f"{t}_settings"))}
            failed = {r["method"]: r.get(f"{t}_settings_failed") for _, r in rows.iterrows()}
            unfinished = {r["method"]: _count(r.get(f"{t}_settings_unfinished")) for _, r in rows.iterrows()}
            # tried so far: a cell whose finished settings all failed has no `{t}_settings`, its failed ones
            of = {r["method"]: _count(r.get(f"{t}_settings")) or _count(r.get(f"{t}_failed_settings"))
                  for _, r in rows.iterrows()}
            if len(set(tried.values())) > 1:
                # the scores' budgets differ; a variant whose every setting failed has no score to be biased, but
                # spent its budget too: listed as the best table's settings column counts it ("3 (3 failed)")
                each = ", ".join(f"{m} {settings_text(k, failed.get(m) if m in tried else k, unfinished.get(m))}"
                                 for m, k in of.items() if k)
                lines.append(f"Tuning budgets differ on {t}{where} (settings tried: {each}): the best of more "
                             f"settings is biased upward; `harness export --table best` compares them at an equal "
                             f"budget (EVP).")
            open_ = {m: n for m, n in unfinished.items() if n}
            if open_:
                each = ", ".join(f"{m} {n} of {of[m] + n}" for m, n in open_.items())
                lines.append(f"{UNFINISHED_TASK_NOTE} {t}{where} ({each} settings have no completed seed yet: "
                             f"queued or running): a score there is the best of the finished settings only, and "
                             f"may still change; they are not counted as tried.")
    return lines


def score_text(mean, std, n, trivial=None, improving_seeds=None, untested=False, planned=None) -> str:
    """mean ± std, then † (trivial), ‡ (still improving on some seed), (k/n seeds) (some of the setting's seeds
    did not complete) and (not tested) where they apply."""
    text = fmt_mean_std(mean, std, n)
    if text == "–":
        return text
    marks = (TRIVIAL_MARK if flag_value(trivial) else "") + (IMPROVING_MARK if _count(improving_seeds) else "")
    short = _count(planned) > _count(n)
    return (text + (f" {marks}" if marks else "") + (f" ({_count(n)}/{_count(planned)} seeds)" if short else "")
            + (f" {NOT_TESTED}" if untested else ""))


def average_text(r) -> str:
    """A leaderboard row's average cell: the mean, then "(k/n seeds)" where some of its tasks' chosen settings lack
    seeds (k and n summed over the averaged tasks, as the footnote says) and "(not tested)", as score_text marks a
    task's cell."""
    text = _num(r["avg"])
    if text == "–":
        return text
    n, planned = r.get("avg_n"), r.get("avg_seeds_planned")
    short = _count(planned) > _count(n)
    return (text + (f" ({_count(n)}/{_count(planned)} seeds)" if short else "")
            + (f" {NOT_TESTED}" if _untested(r, "avg", "avg") else ""))


def seeds_of(n, planned) -> str:
    """A setting's completed seeds, as k/n where the store holds more of its seeds (failed or not finished)."""
    return f"{_count(n)}/{_count(planned)}" if _count(planned) > _count(n) else str(_count(n))


def _count(v) -> int:
    try:
        return 0 if v is None or math.isnan(float(v)) else int(v)
    except (TypeError, ValueError):
        return 0


def _untested(r, t, value=None) -> bool:
    """A cell with a score whose variant could not be tested against its column's best (the best itself is
    never marked)."""
    return (flag_value(r.get(f"{t}_tested")) is False and flag_value(r.get(f"{t}_tied_with_best")) is not True
            and pd.notna(r.get(value or f"{t}_mean")))


def flag_value(v):
    """True / False / None (unknown) from a table cell: numpy bools, NaN and None included."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return bool(v)


def _tied(frame: pd.DataFrame, i, tie_col: str, value_col: str, peers) -> bool:
    """Bold a cell tied with its column's best. A frame without the tests (no such column): the highest mean
    among its peers (a boolean mask of the rows in the same column)."""
    if tie_col in frame:
        return flag_value(frame.at[i, tie_col]) is True
    values = frame.loc[peers, value_col].dropna()   # (row i among them: its own column)
    return bool(pd.notna(frame.at[i, value_col]) and i in values.index[at_best(values)])


def rounded_alike(kind: str, header: list[str], rows: list[list], bold: set) -> list[str]:
    """A line naming the cells that show the same mean as a bold cell of their column without being bold: bold is
    decided on the unrounded means (and the test against the best), so 85.04 is bold and 85.01 beside it is not,
    while both show 85.0; the reader is told, not left to find a mark the digits contradict. [] without any."""
    label_at = header.index("method")

    def peers(r):   # the rows one bold decision compares: a (model, task) of the best table, a model's rows
        return (r[0], r[1]) if kind == "best" else r[0] if label_at else None

    def shown(text):   # the mean a cell shows ("72.0 ± 2.0 ‡" shows 72.0); None: no score
        mean = text.split(" ")[0] if isinstance(text, str) else ""
        return mean if mean not in ("", "–") else None

    cells = {}   # {(row, column): "bitfit on rte (70.0, as full)"}
    for i, j in sorted(bold):
        for k, r in enumerate(rows):
            if (k, j) in bold or (k, j) in cells or r[label_at] == TRIVIAL_ROW or peers(r) != peers(rows[i]):
                continue
            if shown(r[j]) is not None and shown(r[j]) == shown(rows[i][j]):
                column = f"{r[1]} ({r[0]})" if kind == "best" else header[j] + (f" ({r[0]})" if label_at else "")
                cells[(k, j)] = f"{r[label_at]} on {column} ({shown(r[j])}, as {rows[i][label_at]})"
    if not cells:
        return []
    return [f"Not bold though it shows the bold mean: {'; '.join(cells[c] for c in sorted(cells))}: bold is decided "
            f"on the unrounded means (and, where tested, the test against the best), which the digits shown do not "
            f"separate."]


def _p(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NOT_TESTED
    return f"{v:.3f}"


def seeds_text(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{int(v)}"


def nothing_completed(frame: pd.DataFrame) -> str:
    """What an empty table says: no completed runs, or none of the newest task versions (and what was left out:
    a model whose cells of a task's new version failed shows nothing, not its old version's score)."""
    older = frame.attrs.get("older_versions") or {}
    if not older:
        return "no completed runs"
    left = "; ".join(f"{task}: " + ", ".join(f"{n} of version {v}" for v, n in sorted(versions.items()))
                     for task, versions in older.items())
    return f"no completed runs of the tasks' newest versions; runs of an earlier version left out ({left})"


# how the best table's notes on its settings / EVP columns begin (`harness compare --task` prints no such column)
SETTINGS_NOTE = "Settings: the hyperparameter settings tried"
SETTINGS_FAILED_NOTE = "(n failed):"


def footnote(kind: str, frame: pd.DataFrame) -> list[str]:
    """What bold, the marks and the extra row mean: one sentence per line, the numbers of this table. A table of
    runs (or ablations) selects and marks nothing: its footnote is the notes of the tasks it shows."""
    if kind not in ("leaderboard", "best"):
        return task_notes(kind, frame)
    lines = [SELECTED_ON_DEV]
    sig = frame.attrs.get("significance") or {}
    resamples = sig.get("resamples", frame.attrs.get("resamples", RESAMPLES))
    if "n_seeds" in frame:
        seeds = (int(frame["n_seeds"].min()), int(frame["n_seeds"].max())) if len(frame) else (0, 0)
    else:
        seeds = sig.get("seeds", (0, 0))
    seeds_text = f"{seeds[0]}" if seeds[0] == seeds[1] else f"{seeds[0]}-{seeds[1]}"
    if frame.attrs.get("untested"):
        lines.append(f"Bold: the best mean in its column (no variant is tested against it, see {NOT_TESTED}). "
                     f"Seeds per cell: {seeds_text}.")
    else:
        lines.append(
            f"Bold: the best mean in its column and every variant not significantly below it: one-sided paired "
            f"bootstrap over the dev examples (the predictions of each run's final evaluation), B = {resamples} "
            f"resamples (fixed seed), seeds pooled (per-example "
            f"scores averaged over a variant's seeds; F1, MCC and correlations recomputed per seed), p-values "
            f"Holm-corrected across the column, α = 0.05"
            + ("; the average column resamples every task's examples jointly" if kind == "leaderboard" else "")
            + f". Seeds per cell: {seeds_text}.")
    if seeds[0] == 1 and not frame.attrs.get("untested"):
        lines.append("With one seed the test resamples examples only: the variance between seeds is not in it.")
    lines += best_not_shown(frame)
    header, rows, _, bold = display_table(kind, frame)
    texts = [c for row in rows for c in row if isinstance(c, str)]
    lines += rounded_alike(kind, header, rows, bold)
    if any("±" in c for c in texts):
        lines.append(STD_NOTE)
    if frame.attrs.get("untested"):
        lines.append(f"{NOT_TESTED}: no test against the best: {frame.attrs['untested']}.")
    elif any(NOT_TESTED in c for c in texts):
        lines.append(f"{NOT_TESTED}: a run's saved predictions (predictions.npz; SQuAD: also predictions.json) are "
                     f"missing, or are of other dev examples than the others' (other data), so no test against the "
                     f"best.")
    if any(c == ALL_FAILED for c in texts):
        lines.append(f"{ALL_FAILED}: every run of the variant on the task failed, so it has no score (`harness "
                     f"status --all` lists the errors); \"–\" alone: no run of it.")
    if any(c == NOT_FINISHED for c in texts):
        lines.append(f"{NOT_FINISHED}: the variant's runs of the task are queued or running, none completed yet.")
    if kind == "leaderboard":
        lines += average_missing(frame)
    if kind == "leaderboard" and "params_all_tasks" in frame and frame["params_all_tasks"].isna().any():
        lines.append("params (all tasks): – where a variant has no score on some task, so what it needs for them "
                     "all is not known.")
    if any(TRIVIAL_MARK in c for c in texts):
        lines.append(f"{TRIVIAL_MARK} trivial: not above the trivial baseline by more than max(std over seeds, "
                     f"1 point).")
    if any(IMPROVING_MARK in c for c in texts):
        lines.append(f"{IMPROVING_MARK} still improving: on at least one seed the last dev evaluation was the best "
                     f"and more than 0.5 points above the previous one.")
    short = kind == "best" and "seeds_planned" in frame and bool((frame["seeds_planned"] > frame["n_seeds"]).any())
    if short or any(SHORT_SEEDS.search(c) for c in texts):
        lines.append("k/n seeds: only k of the n seeds of the chosen setting completed (the others failed or have not "
                     "finished); its mean, std and test are over those k, and it was chosen on their mean"
                     + (f"; under {frame.attrs.get('avg_name', 'GLUE avg')}, k and n are summed over the averaged "
                        f"tasks' chosen settings" if kind == "leaderboard" and _short_average(frame) else "") + ".")
    if kind == "leaderboard":
        lines += budget_notes(frame)
    lines += ((frame.attrs.get("dev_sets") or []) + (frame.attrs.get("budgets") or [])
              + (frame.attrs.get("setups") or []))
    lines += metric_line(kind, frame)
    if span_tasks(shown_tasks(kind, frame)):
        lines.append("EM (exact match) is shown beside F1, the main score: the setting chosen, bold, the marks and "
                     "the tests are F1's.")
    for task, versions in (frame.attrs.get("older_versions") or {}).items():
        old = ", ".join(f"{n} of version {v}" for v, n in sorted(versions.items()))
        lines.append(f"{task}: runs of an earlier task version left out ({old}): a version's data, metric or head "
                     f"differ, so only the newest is compared.")
    if kind == "leaderboard" and frame.attrs.get("trivial"):
        lines.append(f"{TRIVIAL_ROW}: the strongest trivial baseline per task (majority class, constant "
                     f"prediction, empty answer) on the same dev examples.")
    lines += task_notes(kind, frame)
    if kind == "best":
        lines.append(f"{SETTINGS_NOTE} (seed means); EVP(n): expected validation "
                     "performance, the expected best dev score of n settings drawn without replacement (Dodge et "
                     "al. 2019; Tang et al. 2020's unbiased estimator), EVP(1) their mean; k the fewest settings "
                     "with a score of any variant compared on the task (an equal tuning budget where none failed).")
        if "settings_failed" in frame and (pd.to_numeric(frame["settings_failed"], errors="coerce") > 0).any():
            lines.append(f"{SETTINGS_FAILED_NOTE} every seed of n of the settings tried failed; they count as "
                         "tried (tuning budget spent), but the score and EVP are over the settings that scored, "
                         "so EVP(k) leaves them out.")
        if "settings_unfinished" in frame and (pd.to_numeric(frame["settings_unfinished"], errors="coerce") > 0).any():
            lines.append(unfinished_note())
        lines.append("p vs best: Holm-adjusted. Seeds needed: per variant, for a two-sided two-sample z-test "
                     "(normal approximation) at α = 0.05 with 80% power to resolve its gap δ to the best: "
                     "n = 2 (z_0.975 + z_0.8)² σ² / δ², σ² the mean of the two variants' seed variances; "
                     "–: one seed or no variance.")
    return lines


def _short_average(board: pd.DataFrame) -> bool:
    """Some variant's average is over chosen settings with fewer completed seeds than planned."""
    if "avg_n" not in board:
        return False
    return bool((pd.to_numeric(board["avg_seeds_planned"], errors="coerce")
                 > pd.to_numeric(board["avg_n"], errors="coerce")).any())


def shown_tasks(kind: str, frame: pd.DataFrame) -> list[str]:
    """The tasks a leaderboard's columns or a best table's rows show, in their order."""
    if kind == "leaderboard":
        return list(frame.attrs.get("tasks", []))
    return list(dict.fromkeys(frame["task"].dropna())) if "task" in frame else []


def metric_line(kind: str, frame: pd.DataFrame) -> list[str]:
    """Which metric each task's score is, in points (the best table's `metric` column in CSV and JSON)."""
    tasks = shown_tasks(kind, frame)
    return [f"Scores, in points (× 100): {'; '.join(f'{t} {score_metric(t)}' for t in tasks)}."] if tasks else []


def with_methods_shown(board: pd.DataFrame, keep) -> pd.DataFrame:
    """The leaderboard's rows of the methods `keep` (the board's Methods filter), its attrs kept, and where a hidden
    variant is the best of a column, attrs["best_not_shown"] {column: [labels]}: bold is tied with the best of
    every variant, so a bold cell there is not the best of the rows shown (the footnote says so)."""
    view = board[board["method"].isin(keep)]
    view.attrs.update(board.attrs)
    hidden = board[~board["method"].isin(keep)]
    best: dict = {}
    for t in board.attrs.get("tasks", []):
        if f"{t}_is_best" in hidden:
            labels = [r["method"] for _, r in hidden.iterrows() if flag_value(r.get(f"{t}_is_best"))]
            if labels:
                best[t] = labels
    if "avg" in board and board["avg"].notna().any():
        avg = board["avg"].dropna()
        tops = set(avg.index[at_best(avg)])
        labels = [r["method"] for i, r in hidden.iterrows() if i in tops]
        if labels:
            best[board.attrs.get("avg_name", "GLUE avg")] = labels
    view.attrs["best_not_shown"] = best
    return view


def best_not_shown(frame: pd.DataFrame) -> list[str]:
    """The footnote line of with_methods_shown's view, [] where every column's best is shown."""
    best = frame.attrs.get("best_not_shown") or {}
    if not best:
        return []
    each = "; ".join(f"{column}: {', '.join(labels)}" for column, labels in best.items())
    return [f"Best not shown ({each}): a method left out by the filter is the best of these columns; bold there "
            f"marks the variants not significantly below it, not the best of the rows shown."]


def average_missing(board: pd.DataFrame) -> list[str]:
    """A line naming the variants whose average is "–" and the GLUE tasks they have no score on: the average is
    refused there (one over fewer tasks does not compare), which a bare "–" did not say. [] where none is."""
    glue = board.attrs.get("avg_tasks") or []
    if not glue or "avg" not in board:
        return []
    several = board["model"].nunique() > 1
    each = [r["method"] + (f" ({r['model']})" if several else "") + ": "
            + ", ".join(t for t in glue if pd.isna(r.get(f"{t}_mean")))
            for _, r in board.iterrows() if r["method"] != TRIVIAL_ROW and pd.isna(r["avg"])]
    if not each:
        return []
    return [f"{board.attrs.get('avg_name', 'GLUE avg')}: – where a variant has no score on every GLUE task of the "
            f"table ({'; '.join(each)}): an average over fewer tasks does not compare with the others'."]


def task_notes(kind: str, frame: pd.DataFrame) -> list[str]:
    """The task entries' notes (what a reader must know before trusting a score, e.g. a synthetic or non-official
    split), for the tasks this table shows, judged by the data its runs read (harness/report/provenance.py)."""
    if kind == "leaderboard":
        tasks = list(frame.attrs.get("tasks", []))
    else:   # one row per run, per (task, variant) or per ablated span
        tasks = list(dict.fromkeys(frame["task"].dropna())) if "task" in frame else []
    return note_lines(tasks, data_of(kind, frame), skipped_of(kind, frame))


def data_of(kind: str, frame: pd.DataFrame) -> dict | None:
    """{task: each shown run's data} behind a table: a selection's from its attrs, a runs table's from its rows;
    None where the table does not say (an ablation): every note then applies."""
    if kind in ("leaderboard", "best"):
        return frame.attrs.get("data")
    return data_by_task(frame) if "data" in frame else None


def skipped_of(kind: str, frame: pd.DataFrame) -> dict | None:
    """{task: each shown run's rows skipped as malformed} behind a table, found as data_of finds its data."""
    if kind in ("leaderboard", "best"):
        return frame.attrs.get("skipped")
    return skipped_by_task(frame)


def note_lines(tasks, data: dict | None = None, skipped: dict | None = None) -> list[str]:
    """`task: its note.` for each of `tasks` that has one (a board page showing these tasks' scores); `data`
    ({task: the shown runs' data}) drops a note the runs' data does not call for and adds a line where they
    read different bytes; `skipped` ({task: the shown runs' rows skipped}) adds one where some skipped rows."""
    return [f"{name}: {note}." for name, note in notes_of(tasks, data, skipped).items()]


def notes_of(tasks, data: dict | None = None, skipped: dict | None = None) -> dict[str, str]:
    """{task: what a reader must know} for those of `tasks` with something to know: its entry's note (unless
    every run shown read the official data), where its runs read different data or one model name's different
    files, that, and where some skipped malformed rows of their files, how many."""
    from harness.spec.errors import InputError
    from harness.spec.tasks import get_task

    notes = {}
    for name in tasks:
        runs_data = None if data is None else data.get(name, [])
        parts = []
        try:
            task = get_task(name)
        except InputError:   # a task this install does not declare (a store from elsewhere): no entry note
            task = None
        applies = note_applies(task, runs_data) if task is not None and task.note else None
        if applies == "yes":
            parts.append(task.note)
        elif applies == "unknown":
            unknown = sum(recorded_splits(d) is None for d in runs_data)   # (a value may hold only its model files)
            parts.append(f"{unknown} of the runs shown recorded no data sources (older records), so whether they "
                         f"read the official files is not known; where they did not: {task.note}")
        mixed = mixed_data_text(runs_data or [], task)
        if mixed:
            parts.append(mixed)
        models = mixed_model_text(runs_data or [])
        if models:
            parts.append(models)
        lost = skipped_text((skipped or {}).get(name, []))
        if lost:
            parts.append(lost)
        if parts:
            notes[name] = "; ".join(parts)
    return notes


def with_task_notes(kind: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV has no footnote: a task's note travels in a column beside its scores (`task_note` on a row of that
    task; the leaderboard's `<task>_note` beside that task's columns)."""
    if frame.empty:
        return frame
    data, skipped = data_of(kind, frame), skipped_of(kind, frame)
    if kind == "leaderboard":
        out = frame.copy()
        for task, note in notes_of(frame.attrs.get("tasks", []), data, skipped).items():
            out[f"{task}_note"] = note
        return out
    if "task" not in frame:
        return frame
    notes = notes_of(list(dict.fromkeys(frame["task"].dropna())), data, skipped)
    return frame.assign(task_note=[notes.get(t, "") for t in frame["task"]]) if notes else frame


def _display_frame(kind: str, frame: pd.DataFrame):
    """The table as text cells (a DataFrame), its alignments and a mask of the cells to emphasise as best."""
    header, rows, align, bold = display_table(kind, frame)
    cells = pd.DataFrame(rows, columns=range(len(header)), dtype=object)
    mask = pd.DataFrame([[(i, j) in bold for j in range(len(header))] for i in range(len(rows))],
                        columns=cells.columns, dtype=bool)
    return header, cells, align, mask


def to_latex(kind: str, frame: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs table through pandas' Styler: every text escaped, mean ± std as $\\pm$, the best in bold."""
    header, cells, align, mask = _display_frame(kind, frame)
    cells.columns = [latex_escape(h) for h in header]
    mask.columns = cells.columns
    styler = (cells.style.hide(axis="index")
              .format(lambda v: latex_symbols(latex_escape(v)))
              .apply(lambda _: mask.replace({True: "textbf: --rwrap;", False: ""}), axis=None))
    tex = styler.to_latex(column_format="".join(align), hrules=True, environment="table", position="t",
                          position_float="centering", caption=latex_escape(caption) if caption else None)
    note = " ".join(latex_symbols(latex_note(line)) for line in footnote(kind, frame))
    if note:
        tex = tex.replace("\\end{table}", "\\par\\smallskip\\footnotesize " + note + "\n\\end{table}")
    return r"% requires \usepackage{booktabs}" + "\n" + tex


LATEX_SYMBOLS = {"±": r"$\pm$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "α": r"$\alpha$", "σ": r"$\sigma$",
                 "δ": r"$\delta$", "²": r"$^2$", "∞": r"$\infty$"}


def latex_symbols(text: str) -> str:
    """The few non-ASCII symbols of the tables, as LaTeX math (pdflatex's utf8 input knows none of them)."""
    return "".join(LATEX_SYMBOLS.get(ch, ch) for ch in text)


# as entities: `<`, `>` and `&` (a name's `<b>` or `<script>` was raw HTML to GitHub, Pandoc and Python-Markdown
# alike), `~` (GitHub's strikethrough, Pandoc's subscript) and `$` (GitHub's math): entities are the one escape all
# three read (Python-Markdown prints `\~` with its backslash), and no reader takes one for markup
MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "~": "&#126;", "$": "&#36;"}
# backslash-escaped: a backslash itself (first, so a name's `\|` cannot unescape the pipe that would then end the
# cell: GitHub's tables split cells at a pipe not escaped), the pipe, `*`, a `_` that could open or close emphasis
# (one between two letters or digits cannot, in any of the three: snake_case stays as typed), and a `]` that would
# close a link's text before its `(url)` (a label's own brackets, "full [after mrpc]", stay as they are); a cell's
# text also its backticks (a footnote's `code` spans, the commands it names, are its own, and kept as typed: no
# escape is read inside one)
MD_PUNCTUATION = re.compile(r"[\\|*`]|\](?=\()|(?<![^\W_])_|_(?![^\W_])")
# what no escape stops, as Streamlit's Markdown (and GitHub's) finds it in the text itself: a colon that opens a
# directive with its text or attributes (`:red[x]` coloured, `:small[x]`, `:x{y=1}`) or a shortcode (`:smile:` an
# emoji, `:material/home:` an icon, `:streamlit:` a logo), and GFM's autolinks: `http://`, `https://` (cmark-gfm:
# `ftp://` too), an e-mail address `a@b.org`, a `www.` that starts a word (after a space, `*_~([]` or nothing), and
# on GitHub an `@mention` (an `@` after no word character). A colon before other text (`sha256:ab12`), another
# scheme (`s3://`, `postgresql://`), `lora@r8` or `awww.x` is text to both, and stays byte for byte as typed. A
# backslash or an entity is decoded before their search (remark-emoji and the autolink transform search text
# nodes): a WORD JOINER (U+2060, invisible, zero width) after the colon, the `@` or the `www` keeps them from
# matching, and the name reads as typed
MD_SHORTCODE = re.compile(r"(?<=:)(?=[\w+\-]+:|[^\W\d_][\w\-]*[\[{]|material/)"
                          r"|(?i:(?<=http:)|(?<=https:)|(?<=ftp:))(?=//)"
                          r"|(?<=[\w.+\-]@)(?=[\w\-]+\.[\w\-])|(?<=(?<!\w)@)(?=[\w\-])"
                          r"|(?i:(?<=(?<![^\s*_~(\[\]])www))(?=\.)")
WORD_JOINER = "\u2060"


def md_escape(text, cell: bool = True) -> str:
    """A cell's (or a footnote line's) text as Markdown prints it, not as markup: MD_ENTITIES as entities, the rest
    of MD_PUNCTUATION backslash-escaped, MD_SHORTCODE's places broken by a WORD_JOINER, a line break as a space. A
    footnote line's paired backticks are its code spans, kept as they are. The one rule for text in Markdown: the
    exports' and the board's (its captions, headers and messages: Streamlit reads them as Markdown too)."""
    text = str(text).replace("\n", " ")
    parts = text.split("`")
    if not cell and len(parts) % 2:
        return "`".join(p if i % 2 else md_escape(p) for i, p in enumerate(parts))
    text = MD_PUNCTUATION.sub(lambda m: "\\" + m.group(0), text)
    text = MD_SHORTCODE.sub(WORD_JOINER, text)
    return "".join(MD_ENTITIES.get(ch, ch) for ch in text)


def to_markdown(kind: str, frame: pd.DataFrame, caption: str | None = None) -> str:
    """A pipe table through pandas' to_markdown (tabulate), numbers right-aligned, the best in bold; `caption`
    (table_caption's) above it as Pandoc reads a table's caption ("Table: ...")."""
    header, cells, align, mask = _display_frame(kind, frame)
    texts = cells.apply(lambda col: [f"**{md_escape(v)}**" if mask.at[i, col.name] else md_escape(v)
                                     for i, v in col.items()])
    texts.columns = [md_escape(h) for h in header]
    table = texts.to_markdown(index=False, tablefmt="pipe", disable_numparse=True,
                              colalign=["right" if a == "r" else "left" for a in align]) + "\n"
    if caption:
        table = f"Table: {md_escape(caption)}\n\n" + table
    notes = footnote(kind, frame)
    if notes:
        table += "\n" + "\n".join(md_escape(line, cell=False) for line in notes) + "\n"
    return table


def with_trivial_row(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with a last row "trivial baseline": the strongest trivial baseline per task (CSV)."""
    trivial = board.attrs.get("trivial") or {}
    if board.empty or not trivial:
        return board
    row = {"method": TRIVIAL_ROW}
    for t, v in trivial.items():
        row[f"{t}_mean"] = v
    glue = board.attrs.get("avg_tasks") or []
    if glue and all(t in trivial for t in glue):
        row["avg"] = sum(trivial[t] for t in glue) / len(glue)
    out = pd.concat([board, pd.DataFrame([row])], ignore_index=True)
    out.attrs.update(board.attrs)
    return out


def _whole_numbers(kind: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The runs table with the store's integer columns (parameter and example counts, steps, seeds, threads) as
    whole numbers: a column with an empty cell came out as floats ("22713216.0" trainable parameters)."""
    if kind != "runs" or frame.empty:
        return frame
    from sqlalchemy import Integer

    from harness.store.schema import RunRecord

    whole = [c.name for c in RunRecord.__table__.columns if isinstance(c.type, Integer) and c.name in frame]
    return frame.astype({c: "Int64" for c in whole})


def table_csv(kind: str, frame: pd.DataFrame) -> str:
    """A table's CSV, as `harness export` writes it and the board's "Download CSV" hands it out (one function:
    the two files must not differ): file_rows', every table with its tasks' notes in a column."""
    return to_csv(with_task_notes(kind, file_rows(kind, frame)))


def file_rows(kind: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a table's CSV and JSON (one function: the two files carry the same columns, the same numbers):
    the leaderboard with its trivial baseline row, and counts as whole numbers beside a row's empty cells (CSV
    "2", JSON 2, not "2.0" and 2.0: pandas makes a column with an empty cell floats). Only in the files: the
    footnote reads these columns as numbers, which pandas' NA is not."""
    if kind == "runs":
        return _whole_numbers(kind, frame)
    out = with_trivial_row(frame) if kind == "leaderboard" else frame.copy()
    for c in frame.columns:
        if pd.api.types.is_integer_dtype(frame[c]) and out[c].dtype != frame[c].dtype:
            out[c] = out[c].astype("Int64")   # (the trivial row's empty cells made an integer column floats)
        elif (str(c).endswith(COUNT_SUFFIXES) or c in COUNT_NAMES) and pd.api.types.is_float_dtype(out[c]) \
                and (out[c].dropna() % 1 == 0).all():
            out[c] = out[c].astype("Int64")
    return out


# the tables' count columns: seeds, settings, parameters (the leaderboard's per task, and the average's seeds)
COUNT_SUFFIXES = ("_n", "_seeds_planned", "_settings", "_settings_failed", "_settings_unfinished",
                  "_failed_settings", "_improving_seeds")
COUNT_NAMES = {"n_seeds", "seeds_planned", "settings_tried", "settings_failed", "settings_unfinished",
               "settings_scored", "failed_settings", "improving_seeds", "time_limited_seeds", "trainable_params",
               "total_params", "added_params", "eval_examples", "params_all_tasks"}


def to_json(kind: str, frame: pd.DataFrame) -> str:
    """{"table", "rows" (one object per row, the CSV's columns; NaN and inf as null), "footnote"}."""
    import json

    rows_frame = file_rows(kind, frame)
    # date_unit "us": the stores keep microseconds (to_json's default "ms" cut 10:00:00.123456 to 10:00:00.123)
    rows = (json.loads(rows_frame.to_json(orient="records", date_format="iso", date_unit="us"))
            if not rows_frame.empty else [])
    _exact_floats(rows_frame, rows)
    notes = footnote(kind, frame) if not frame.empty else []
    return json.dumps({"table": kind, "rows": rows, "footnote": notes}, indent=1, ensure_ascii=False) + "\n"


def _exact_floats(frame: pd.DataFrame, rows: list[dict]) -> None:
    """Every number in `rows` (to_json's) as the frame holds it: to_json rounds floats to 10 significant digits
    (at most 15: 1.2345678901234567e18 FLOPs came out as 1.23456789e+18), where JSON and the CSV keep the
    shortest form that reads back exactly. NaN and infinities stay null."""
    for j, name in enumerate(frame.columns):
        column = frame.iloc[:, j]
        if not (pd.api.types.is_float_dtype(column) or column.dtype == object):
            continue
        for row, value in zip(rows, column):
            if isinstance(value, (float, np.floating)):
                row[str(name)] = float(value) if math.isfinite(value) else None


def ablation_frame(store: Store, suite: str | None, model: str | None) -> pd.DataFrame:
    """One row per (ablated run, span of layers): the dev score without that span's adapters and its change."""
    rows = []
    for a in store.analyses(suite, "adapter_ablation"):
        rec = store.get(a.run_id)
        if rec is None or (model and rec.model != model):
            continue
        for first, last, score in a.payload["spans"]:
            rows.append({"suite": a.suite, "run_id": a.run_id, "model": rec.model, "task": rec.task,
                         "method_label": rec.method_label, "first_layer": first, "last_layer": last,
                         "score": score, "change": score - a.payload["baseline"],
                         "baseline": a.payload["baseline"]})
    return pd.DataFrame(rows, columns=["suite", "run_id", "model", "task", "method_label", "first_layer",
                                       "last_layer", "score", "change", "baseline"])


def check_names(store: Store, suite: str | None, model: str | None) -> None:
    """A --suite or --model the store has no runs of is refused (with the names it has), not answered with an
    empty table that reads as "nothing completed"; with --suite, a --model among that suite's models (another
    suite's model would read as a table of this suite with nothing completed)."""
    from harness.report.grid import suites_models
    from harness.spec.errors import InputError, did_you_mean

    if not suite and not model:
        return
    known = suites_models(store)
    for option, name, column in (("--suite", suite, "suite"), ("--model", model, "model")):
        of_suite = column == "model" and suite is not None
        names = sorted(set(known.loc[known["suite"] == suite, column] if of_suite else known[column]))
        if name and name not in names:
            where = f"suite {suite!r}" if of_suite else "the store"
            raise InputError(f"{option}: {where} has no runs of {column} {name!r}"
                             + (did_you_mean(name, names) or (f" (it has: {', '.join(names)})" if names else "")))


def build_table(store: Store, table: str, suite: str | None, model: str | None) -> pd.DataFrame:
    check_names(store, suite, model)
    if table == "ablation":
        return ablation_frame(store, suite, model)
    runs = runs_frame(store, suite, with_env=table == "runs")
    if table == "runs":
        return runs[runs["model"] == model] if model and not runs.empty else runs
    shown = runs[runs["model"] == model] if model and not runs.empty else runs
    suites = sorted(set(shown["suite"])) if not shown.empty else []
    if len(suites) > 1:   # one table compares the variants of one suite: rows of two would collide or mix
        from harness.spec.errors import InputError

        raise InputError(f"--suite: the store holds runs of several suites ({', '.join(suites)}); choose one")
    best = best_table(runs, model=model)   # selected among every model's runs, as the table of all models
    if table == "best":
        from harness.stats.evp import add_evp   # settings_tried, evp_1, evp_k, evp_k_n (equal tuning budgets)

        return with_failed_rows(add_evp(best, runs), runs)   # a variant that failed on a task: as the leaderboard
    return leaderboard_table(best)


def check_output(path: str, db: str | None, fmt: str = "csv") -> None:
    """Refuse an -o that cannot take the export, before anything is read or written: a folder, a file in a
    folder that does not exist, or the store's own database file (or its -wal/-shm/-journal file); a CSV's notes
    file (csv_notes_file) the same."""
    _check_file(path, db, "-o")
    notes = csv_notes_file(path) if fmt == "csv" else None
    if notes:
        _check_file(notes, db, "-o (its notes file)")
        if os.path.exists(notes) and not own_notes(notes):   # replaced or removed below: only a file of ours
            from harness.spec.errors import InputError

            # (said for the notes an export before 80c78d5 wrote too: theirs have no such line either)
            raise InputError(f"-o: {notes} exists and is not an export's notes file (its first line does not start "
                             f"{NOTES_MARK.strip()!r}): the CSV's notes would replace it; move it, or give -o "
                             f"another name (notes an earlier release's export wrote lack that line: delete them)")


def _check_file(path: str, db: str | None, what: str) -> None:
    from harness.spec.errors import InputError

    real = output_file(path)
    if os.path.isdir(real):
        raise InputError(f"{what}: {path} is a folder; give the name of a file to write")
    if str(path).endswith(("/", os.sep)):   # a folder to be: realpath drops the slash, and a file took its name
        raise InputError(f"{what}: {path} names a folder (it ends in /); give the name of a file to write")
    parent = os.path.dirname(real)
    if not os.path.isdir(parent):
        state = "is not a folder" if os.path.exists(parent) else "does not exist"
        raise InputError(f"{what}: {path}: the folder {parent} {state}")
    store = sqlite_file(db or default_db_url())
    if store:
        store = os.path.realpath(os.path.abspath(store))
        for own in (store, store + "-wal", store + "-shm", store + "-journal"):
            if real == own or (os.path.exists(real) and os.path.exists(own) and os.path.samefile(real, own)):
                raise InputError(f"{what}: {path} is the store's own database file (--db {db}); writing the export "
                                 f"there would destroy the store")


def check_not_an_input(path: str, store) -> None:
    """Refuse an -o that is a file of a stored run's output folder, at any depth: its saved predictions
    (predictions.npz, a SQuAD run's predictions*.json), which the best and leaderboard tables read (`-o
    RUN/predictions.npz` wrote the CSV over the predictions the table had just read, exit 0, and every later test
    of that run failed), and its record.json, error.log, adapter, checkpoint (`-o RUN/record.json` was written
    over, exit 0). A new file there too: written once, the same export was then refused as a file of the run (and
    a retry of the cell replaces its folders: `-o RUN/adapter/runs.csv` went with the adapter). The store's own file
    is refused before it is read (check_output); these once it is read (it names the folders), before anything is
    written; the same file by a link or another spelling too."""
    from sqlalchemy import select

    from harness.spec import layout
    from harness.spec.errors import InputError
    from harness.store.schema import RunRecord

    real = output_file(path)
    with store.reading() as conn:
        folders = conn.execute(select(RunRecord.output_dir).where(RunRecord.output_dir.is_not(None))
                               .distinct()).scalars().all()
    # a link or another spelling of a folder is the same folder; one that is not there (None) is no folder's
    runs = {key: own for own in folders if (key := _identity(own)) is not None}
    folder, name = os.path.split(real)
    exists = os.path.isfile(real)
    while True:   # the file's folder, then each one above it
        own = runs.get(_identity(folder))
        if own is not None and exists and folder == os.path.dirname(real) and (
                name == layout.PREDICTIONS or (name.startswith("predictions") and name.endswith(".json"))):
            raise InputError(f"-o: {path} is the saved predictions of a stored run ({own}), which the tables read; "
                             f"writing the export there would destroy them")
        if own is not None and exists:
            raise InputError(f"-o: {path} is a file of a stored run ({own}); writing the export there would "
                             f"destroy it")
        if own is not None:
            raise InputError(f"-o: {path} is in the folder of a stored run ({own}), which holds the run's own files "
                             f"(a retry of the cell replaces its subfolders); write the export outside it")
        if os.path.dirname(folder) == folder:
            return
        folder = os.path.dirname(folder)


def _identity(folder: str) -> tuple[int, int] | None:
    """(device, inode): one folder whatever the path that names it."""
    try:
        found = os.stat(folder)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def output_file(path: str) -> str:
    """The file -o names: a link's target (what is checked is what is written; the link stays a link)."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def write_output(path: str, text: str) -> None:
    """The export, written whole or not at all (harness.atomic): a failure leaves the old file as it was. A FIFO or
    a device (-o /dev/stdout) is written as it is: the atomic rename would replace it by a plain file."""
    import stat

    from harness import atomic
    from harness.spec.errors import InputError

    def write(name: str) -> None:
        with open(name, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    fd = _open_descriptor(path)
    try:
        if fd is not None:   # -o /dev/stdout: the descriptor as the shell opened it (`>> log` appends, not replaces)
            with os.fdopen(os.dup(fd), "w", encoding="utf-8", newline="") as f:
                f.write(text)
            return
        try:   # stat, not the resolved name: /dev/stdout's link into /proc resolves to no path for a pipe
            regular = stat.S_ISREG(os.stat(os.path.expanduser(path)).st_mode)
        except FileNotFoundError:
            regular = True   # a new file (or a link's new target)
        if regular:
            atomic.write_file(output_file(path), write)
        else:
            write(os.path.expanduser(path))
    except BrokenPipeError:
        raise   # -o /dev/stdout's reader went away (`| head -1`): not bad input; the CLI stops quietly (141)
    except OSError as e:
        raise InputError(f"-o: cannot write {path}: {e.strerror or e}") from None


_DESCRIPTOR = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")
_STANDARD = {"/dev/stdout": 1, "/dev/stderr": 2}


def _open_descriptor(path: str) -> int | None:
    """The file descriptor -o names (/dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N), or None. Reopened by
    name, a descriptor redirected to a file (`>> log`) would be truncated, or replaced by the atomic rename."""
    name = os.path.abspath(os.path.expanduser(path))
    match = _DESCRIPTOR.fullmatch(name)
    return _STANDARD.get(name) if match is None else int(match.group(1))


def table_caption(table: str, frame: pd.DataFrame, suite: str | None = None) -> str | None:
    """A table's caption, as `harness export` writes it (LaTeX's \\caption, Markdown's "Table:" line) and the board's
    downloads: the suite(s) and the model(s) whose scores it shows, read from the table (`suite`: where it names
    none), so that a leaderboard of one model, which has no model column, still says whose scores they are."""
    def names(column: str) -> list[str]:
        values = frame[column] if column in frame else pd.Series(frame.attrs.get(column + "s") or [], dtype=object)
        return sorted({str(v) for v in values.dropna()})

    suites = names("suite") or ([suite] if suite else [])
    parts = [f"suite{'s' * (len(suites) > 1)} {', '.join(suites)}"] if suites else []
    models = names("model")
    parts += [f"model{'s' * (len(models) > 1)} {', '.join(models)}"] if models else []
    return f"{table} of {', '.join(parts)}" if parts else None


def export(store: Store, fmt: str, table: str = "runs", suite: str | None = None, model: str | None = None) -> str:
    return export_with_notes(store, fmt, table, suite, model)[0]


def export_with_notes(store: Store, fmt: str, table: str = "runs", suite: str | None = None,
                      model: str | None = None) -> tuple[str, list[str]]:
    """(the table in `fmt`, the notes its text does not carry): a CSV's footnote, which Markdown and LaTeX print
    under the table and JSON carries in "footnote", where a CSV has no place that `pandas.read_csv` reads past
    (`harness export` writes them beside the file, csv_notes_file); [] for the other formats."""
    with store.snapshot():   # the names checked, the runs, the queued cells and analyses: one state of the store
        frame = build_table(store, table, suite, model)
    if fmt == "json":
        return to_json(table, frame), []
    if fmt == "csv":
        return table_csv(table, frame), footnote(table, frame) if not frame.empty else []
    if frame.empty:
        return ("(no adapter ablations stored)\n" if table == "ablation" else f"({nothing_completed(frame)})\n"), []
    if fmt == "latex":
        return to_latex(table, frame, table_caption(table, frame, suite)), []
    return to_markdown(table, frame, table_caption(table, frame, suite)), []


def csv_notes_file(path: str) -> str | None:
    """Where `harness export --format csv -o PATH` writes the table's notes: PATH's name with `.notes.txt` for its
    extension, beside it (best.csv: best.notes.txt); None where -o is a descriptor, a FIFO or a device (-o
    /dev/stdout), which has no "beside": the notes go to standard error, as without -o."""
    import stat

    if _open_descriptor(path) is not None:
        return None
    try:
        if not stat.S_ISREG(os.stat(os.path.expanduser(path)).st_mode):
            return None
    except FileNotFoundError:
        pass
    return os.path.splitext(os.path.expanduser(path))[0] + ".notes.txt"


# the first line of every notes file an export writes: how the next export knows the file is its own to replace or
# remove (check_output refuses one without it: a file of the user's own, never overwritten or deleted)
NOTES_MARK = "# harness export: the notes of "


def notes_text(path: str, notes: list[str]) -> str:
    """A CSV's notes file: NOTES_MARK's line naming the CSV, then one note a line."""
    name = os.path.basename(os.path.expanduser(path))
    return "".join(line + "\n" for line in [f"{NOTES_MARK}{name} (the next export to {name} replaces or removes "
                                             f"this file)"] + notes)


def own_notes(path: str) -> bool:
    """The file at `path` is a notes file an export wrote (its first line NOTES_MARK's)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline(len(NOTES_MARK)) == NOTES_MARK
    except OSError:
        return False


def write_csv_notes(path: str, notes: list[str]) -> str | None:
    """The notes of the CSV to be written to `path` (csv_notes_file's), whole or not at all; with none, an earlier
    export's notes file there is removed (it would be read as this CSV's). Only an export's own notes file is
    replaced or removed: check_output has refused any other. The file written, or None."""
    from harness.spec.errors import InputError

    target = csv_notes_file(path)
    if target is None:
        return None
    if notes:
        write_output(target, notes_text(path, notes))
        return target
    try:
        os.remove(target)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise InputError(f"-o: cannot remove the earlier notes {target}: {e.strerror or e}") from None
    return None
