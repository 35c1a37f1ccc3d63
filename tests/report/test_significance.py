"""Ties with the best, Holm, the average column, flags, seeds needed: on a store built by hand.

Every run is written through the store API with a real predictions.npz whose number of correct dev examples is
chosen, so each variant's dev accuracy per seed is known exactly:
- full:    80.0 ± 1.0 on rte   (79, 80, 81 % right) -- the best
- lora:    the same predictions as full, seed by seed: its mean equals the best's, so a best too (not tested)
- houlsby: 79.9 ± 9.9          (70, 80, 89.7 % right): 0.1 below with large variance: tied
- bitfit:  75.0 ± 0.1          (74.9, 75, 75.1 % right): 5 below with tiny variance: not tied
sst2 the same, shifted; so the average keeps the order.
"""

import csv
import io
import math
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from tests.helpers import run_cli
from harness.stats import significance
from harness.stats.significance import holm, seeds_needed
from harness.plan.suite import parse_suite
from harness.report.export import footnote, to_csv, to_latex, to_markdown, with_trivial_row
from harness.report.tables import best_table, leaderboard_table, runs_frame
from harness.spec.status import Status
from harness.store.db import Store

N = 1000
HOULSBY, LORA = "houlsby(size=64,non_linearity=swish)", "lora(rank=8,alpha=8,dropout=0.0,matrices=qv)"
CORRECT = {  # method -> correct examples (of N) per seed
    "full": [790, 800, 810],
    "lora": None,                      # full's predictions
    "houlsby": [700, 800, 897],
    "bitfit": [749, 750, 751],
}
SHIFT = {"rte": 0, "sst2": 100}        # sst2: 10 points more right for every variant


def build(tmp_path, tasks=("rte", "sst2"), seeds=(1, 2, 3), predictions=True, extra=None, correct=CORRECT):
    """An SQLite store of the variants above. extra(cell) -> more result columns (history, trivial_scores)."""
    methods = "[full, bitfit, lora, houlsby]"
    suite = parse_suite(f"name: sig\nmodels: [minilm]\ntasks: [{', '.join(tasks)}]\nmethods: {methods}\n"
                        f"seeds: [{', '.join(map(str, seeds))}]\n", "sig.yaml")
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    rng = np.random.default_rng(7)
    labels = {t: rng.integers(0, 2, N) for t in tasks}
    made = {}
    for cell in sorted(suite.cells(), key=lambda c: c.method != "full"):   # full first: lora copies it
        k = cell.seed - 1
        if correct[cell.method] is None:
            pred = made[(cell.task, "full", k)]
        else:
            right = np.zeros(N, dtype=bool)
            right[rng.permutation(N)[:min(N, correct[cell.method][k] + SHIFT[cell.task])]] = True
            pred = np.where(right, labels[cell.task], 1 - labels[cell.task])
        made[(cell.task, cell.method, k)] = pred
        score = 100.0 * float(np.mean(pred == labels[cell.task]))
        out = tmp_path / "out" / cell.key
        out.mkdir(parents=True)
        if predictions is True or (callable(predictions) and predictions(cell)):
            np.savez(out / "predictions.npz", validation_idx=np.arange(N)[::-1], validation_pred=pred[::-1],
                     validation_label=labels[cell.task][::-1])   # saved in another order: aligned by index
        claim = store.start(cell, cell.config(), "cmd", str(out))
        fields = {"score": score, "best_score": score, "metrics": {"accuracy": score},
                  "best_metrics": {"accuracy": score}, "trainable_params": 10, "total_params": 100,
                  "added_params": 0, "trainable_pct": 10.0, "train_time_s": 1.0, "peak_memory_mb": 1.0}
        fields.update((extra or (lambda c: {}))(cell))
        store.finish(claim, Status.COMPLETED, fields)
    return url


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    return build(tmp_path_factory.mktemp("sig"))


@pytest.fixture(scope="module")
def best(url):
    return best_table(runs_frame(Store(url, read_only=True)))


def rows(best, task="rte"):
    return {r["method_label"]: r for _, r in best[best["task"] == task].iterrows()}


def test_holm_against_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02 0.03 0.06 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])   # capped at 1
    assert len(holm([])) == 0


def test_close_variant_with_large_variance_is_tied_far_one_with_tiny_variance_is_not(best):
    r = rows(best)
    assert r["full"]["mean"] == pytest.approx(80.0) and r["full"]["std"] == pytest.approx(1.0)
    assert r[HOULSBY]["mean"] == pytest.approx(79.9) and r[HOULSBY]["std"] > 9
    assert r["bitfit"]["mean"] == pytest.approx(75.0) and r["bitfit"]["std"] == pytest.approx(0.1)
    assert r["full"]["is_best"] and r["full"]["tied_with_best"] is True
    assert r[HOULSBY]["tied_with_best"] is True and r[HOULSBY]["p_vs_best"] > 0.2
    assert r[LORA]["tied_with_best"] is True
    assert r["bitfit"]["tied_with_best"] is False and r["bitfit"]["p_vs_best"] < 0.01
    # seed-averaged scores on the dev examples are the stored means (every run scored on all of them)
    assert r[HOULSBY]["score_on_common"] == pytest.approx(79.9) and r["full"]["score_on_common"] == pytest.approx(80)


def test_p_values_are_holm_adjusted_across_the_column(best):
    r = rows(best)
    B = significance.RESAMPLES
    # lora's predictions are full's, seed by seed: its mean ties the best exactly, so it is a best too, not a
    # comparison (a p of 1 in the family would only inflate the others' Holm factors)
    assert r[LORA]["is_best"] and pd.isna(r[LORA]["p_raw"]) and pd.isna(r[LORA]["p_vs_best"])
    raw = {m: r[m]["p_raw"] for m in ("bitfit", HOULSBY)}
    assert raw["bitfit"] == pytest.approx(1 / (1 + B), abs=3 / (1 + B))   # 5 points on 1000 examples: ~never
    # by hand, m = 2: the smaller x2, the larger x1 (at least the smaller's)
    p1, p2 = sorted(raw.values())
    a1 = min(1, 2 * p1)
    a2 = max(a1, min(1, p2))
    by_hand = dict(zip(sorted(raw, key=raw.get), (a1, a2)))
    for m in raw:
        assert r[m]["p_vs_best"] == pytest.approx(by_hand[m])


def test_tables_are_reproducible(url, best):
    again = best_table(runs_frame(Store(url, read_only=True)))
    assert list(again["p_vs_best"].fillna(-1)) == list(best["p_vs_best"].fillna(-1))


def test_seeds_needed_by_the_normal_approximation(best):
    r = rows(best)
    z = 1.959963984540054 + 0.8416212335729143
    var = (1.0 ** 2 + r[HOULSBY]["std"] ** 2) / 2
    assert r[HOULSBY]["seeds_needed"] == math.ceil(2 * z * z * var / 0.1 ** 2)   # thousands: 0.1 is invisible
    var = (1.0 ** 2 + 0.1 ** 2) / 2
    assert r["bitfit"]["seeds_needed"] == max(2, math.ceil(2 * z * z * var / 5.0 ** 2))
    assert r["full"]["seeds_needed"] is None
    # equal means reach no table: lora ties the best exactly, so it is a best (no count), not "∞"; the legend
    # promised an ∞ no table could show
    assert r[LORA]["is_best"] and r[LORA]["seeds_needed"] is None
    legend = next(line for line in footnote("best", best) if "Seeds needed" in line)
    assert "–: one seed or no variance" in legend and "∞" not in legend and "equal means" not in legend
    assert seeds_needed(80, 1, 80, 1) is None and seeds_needed(80, 0, 79, 0) is None   # a direct caller's: no gap


def test_every_tied_variant_is_bold_in_latex_and_markdown(best):
    board = leaderboard_table(best)
    md = to_markdown("leaderboard", board)
    line = {l.split("|")[1].strip(): l for l in md.splitlines() if l.startswith("| ")}
    rte = board.attrs["tasks"].index("rte") + 2
    assert line["full"].split("|")[rte].strip() == "**80.0 ± 1.0**"
    assert line[HOULSBY].split("|")[rte].strip() == "**79.9 ± 9.9**"
    assert line[LORA].split("|")[rte].strip() == "**80.0 ± 1.0**"
    assert line["bitfit"].split("|")[rte].strip() == "75.0 ± 0.1"
    assert "Holm" in md and "B = 1000 resamples" in md and "α = 0.05" in md and "Seeds per cell: 3." in md
    tex = to_latex("leaderboard", board)
    h = next(l for l in tex.splitlines() if l.startswith("houlsby"))
    b = next(l for l in tex.splitlines() if l.startswith("bitfit"))
    assert r"\textbf{79.9 $\pm$ 9.9}" in h and r"\textbf{75.0" not in b
    assert r"Holm-corrected" in tex and r"$\alpha$ = 0.05" in tex


def test_csv_has_tied_p_and_seeds_needed_per_task(best):
    board = leaderboard_table(best)
    got = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(board)))}
    for col in ("rte_tied_with_best", "rte_p_vs_best", "rte_seeds_needed", "rte_flags", "sst2_tied_with_best",
                "avg_tied_with_best", "avg_p_vs_best"):
        assert col in got["full"], col
    assert got["bitfit"]["rte_tied_with_best"] == "False" and float(got["bitfit"]["rte_p_vs_best"]) < 0.01
    assert got[HOULSBY]["rte_tied_with_best"] == "True" and float(got[HOULSBY]["rte_p_vs_best"]) > 0.2
    assert got["full"]["rte_tied_with_best"] == "True" and got["full"]["rte_p_vs_best"] == ""
    best_csv = list(csv.DictReader(io.StringIO(to_csv(best))))
    assert {"tied_with_best", "p_vs_best", "seeds_needed", "flags"} <= set(best_csv[0])


def test_average_column_resamples_tasks_jointly(best):
    board = leaderboard_table(best)
    r = {row["method"]: row for _, row in board.iterrows()}
    assert r["full"]["avg_tied_with_best"] is True
    assert r[HOULSBY]["avg_tied_with_best"] is True and r[LORA]["avg_tied_with_best"] is True
    assert r["bitfit"]["avg_tied_with_best"] is False and r["bitfit"]["avg_p_vs_best"] < 0.01
    # the average's replicates are the mean of the tasks' replicates, drawn per task: a variant 5 below on one
    # task and equal on the other is ~2.5 below on the average, with the noise of both tasks
    tests = best.attrs["tests"]
    columns = {t: tests[("sig", "minilm", t)] for t in ("rte", "sst2")}
    avg = significance.average_test(columns, "full", ["full", "bitfit", HOULSBY, LORA])
    expect = np.mean([columns[t].reps["bitfit"] for t in columns], axis=0)
    assert avg.reps["bitfit"] == pytest.approx(expect)
    assert not np.allclose(columns["rte"].reps["full"] - columns["rte"].reps["full"].mean(),
                           columns["sst2"].reps["full"] - columns["sst2"].reps["full"].mean())   # independent draws


def test_one_seed_falls_back_to_example_resampling_and_says_so(tmp_path):
    url = build(tmp_path, tasks=("rte",), seeds=(2,))
    best = best_table(runs_frame(Store(url)))
    r = rows(best)
    assert r["bitfit"]["tied_with_best"] is False and r[HOULSBY]["tied_with_best"] is True
    assert r["bitfit"]["seeds_needed"] is None      # no seed variance: no estimate
    md = to_markdown("leaderboard", leaderboard_table(best))
    assert "Seeds per cell: 1." in md and "With one seed the test resamples examples only" in md


def test_missing_predictions_say_not_tested(tmp_path):
    url = build(tmp_path, tasks=("rte",), predictions=lambda cell: cell.method != "houlsby")
    best = best_table(runs_frame(Store(url)))
    r = rows(best)
    assert r[HOULSBY]["tested"] is False and r[HOULSBY]["tied_with_best"] is None
    assert r["bitfit"]["tested"] is True and r["bitfit"]["tied_with_best"] is False
    md = to_markdown("leaderboard", leaderboard_table(best))
    line = next(l for l in md.splitlines() if l.startswith(f"| {HOULSBY}"))
    assert "79.9 ± 9.9 (not tested)" in line and "**79.9" not in line
    assert "(not tested): a run's saved predictions" in md



def test_an_exact_tie_for_a_task_s_best_leaves_the_average_tested(tmp_path):
    """full and bitfit both scored 70.0 on rte (full's row first, so the column's "top"); bitfit was best on mrpc
    and on the average. An exact tie was left out of its column's test, so bitfit had no rte replicates, the
    average test was skipped, and full's and layernorm's averages read "(not tested)" under a footnote blaming
    missing predictions, which every run had saved."""
    from tests.report.test_table_claims import export, row, store_of

    scores = {("rte", "full"): 70.0, ("rte", "bitfit"): 70.0, ("rte", "layernorm"): 60.0,
              ("mrpc", "full"): 60.0, ("mrpc", "bitfit"): 70.0, ("mrpc", "layernorm"): 65.0}
    url = store_of(tmp_path, ["name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nmethods: [full, bitfit, layernorm]\n"],
                   lambda c: scores[(c.task, c.method)], predictions=True)
    md = export(url)
    avg = row(md, "method").index("GLUE avg")
    assert [row(md, m)[avg] for m in ("full", "bitfit", "layernorm")] == ["65.0", "**70.0**", "62.5"], md
    assert "(not tested)" not in md, md
    board = {r["method"]: r for _, r in leaderboard_table(best_table(runs_frame(Store(url)))).iterrows()}
    assert board["full"]["avg_tied_with_best"] is False and board["full"]["avg_p_vs_best"] < 0.01
    # the exact tie on rte is still a best there, and still not in the rte column's Holm family
    rte = rows(best_table(runs_frame(Store(url))))
    assert rte["bitfit"]["is_best"] and rte["full"]["is_best"] and pd.isna(rte["bitfit"]["p_raw"])
    assert rte["layernorm"]["p_vs_best"] == rte["layernorm"]["p_raw"]   # a family of one: Holm changes nothing

def test_a_tie_for_the_best_mean_is_a_tie_whatever_the_last_bits_of_the_seeds_scores(tmp_path):
    """full's seeds got 790 and 802 of 1,000 right, houlsby's 796 and 796: both means are 79.6, yet the scores'
    last bits (100 * accuracy, rounded) made houlsby's 79.60000000000001, so houlsby was the column's only best,
    full and lora (full's predictions) were tested against it (p 0.5+), and bitfit's Holm p doubled (a family of
    three). A tie to within SAME_SCORE is a tie: three bests, bitfit tested alone."""
    r = rows(best_table(runs_frame(Store(build(tmp_path, tasks=("rte",), seeds=(1, 2), correct={
        "full": [790, 802], "lora": None, "houlsby": [796, 796], "bitfit": [749, 751]})))))
    assert [r[m]["is_best"] for m in ("full", LORA, HOULSBY, "bitfit")] == [True, True, True, False]
    assert all(pd.isna(r[m]["p_raw"]) and r[m]["seeds_needed"] is None for m in ("full", LORA, HOULSBY))
    assert r["bitfit"]["p_vs_best"] == r["bitfit"]["p_raw"]   # a family of one


def test_a_variant_scored_on_other_data_does_not_leave_the_best_untested(tmp_path):
    """Gold labels (SQuAD: question ids) are checked against the variant loaded first: bitfit (the first by
    label), was scored on other data (its gold labels differ), so the best and every other variant read "(not
    tested)" where bitfit alone is not comparable. The best is the reference now."""
    import os

    from tests.report.test_table_claims import store_of

    scores = {"bitfit": 60.0, "full": 72.0, "layernorm": 66.0}
    url = store_of(tmp_path, ["name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [layernorm, full, bitfit]\n"],
                   lambda c: scores[c.method], predictions=True)
    (other,) = [r for r in Store(url).records("s") if r.method == "bitfit"]
    path = os.path.join(other.output_dir, "predictions.npz")
    data = dict(np.load(path))
    data["validation_label"] = 1 - data["validation_label"]   # the same positions, other examples
    data["validation_pred"] = 1 - data["validation_pred"]     # its score unchanged
    np.savez(path, **data)
    best = rows(best_table(runs_frame(Store(url))))
    assert list(best) == ["full", "bitfit", "layernorm"]   # (full trains the most, then by label)
    assert best["full"]["is_best"] and pd.isna(best["bitfit"]["p_vs_best"])
    assert best["layernorm"]["p_vs_best"] < 0.05 and not best["layernorm"]["is_best"]


def flagged(cell):
    """bitfit: trivial (75.0 vs a majority baseline of 74.5); houlsby seed 1: still rising at the end; full: no
    trivial_scores at all (an older run: no flag, no crash)."""
    out = {}
    if cell.method != "full":
        out["trivial_scores"] = {"majority": 74.5 if cell.method == "bitfit" else 50.0, "constant": 40.0}
    rising = cell.method == "houlsby" and cell.seed == 1
    out["history"] = [{"step": 1, "epoch": 1.0, "score": 60.0, "metrics": {}},
                      {"step": 2, "epoch": 2.0, "score": 70.0 if rising else 80.0, "metrics": {}},
                      {"step": 3, "epoch": 3.0, "score": 72.0 if rising else 79.0, "metrics": {}}]
    return out


@pytest.fixture(scope="module")
def flag_store(tmp_path_factory):
    return build(tmp_path_factory.mktemp("flags"), tasks=("rte",), extra=flagged)


def test_flags_in_every_format(flag_store):
    best = best_table(runs_frame(Store(flag_store, read_only=True)))
    r = rows(best)
    assert r["bitfit"]["flags"] == "trivial" and r["bitfit"]["trivial_baseline"] == 74.5
    assert r[HOULSBY]["flags"] == "still_improving (1/3 seeds)"
    assert r["full"]["flags"] == "" and r[LORA]["flags"] == ""
    board = leaderboard_table(best)
    md = to_markdown("leaderboard", board)
    line = {l.split("|")[1].strip(): l for l in md.splitlines() if l.startswith("| ")}
    assert "75.0 ± 0.1 †" in line["bitfit"] and "**79.9 ± 9.9 ‡**" in line[HOULSBY]
    assert "† trivial" in md and "‡ still improving" in md
    # the trivial baseline row: the strongest baseline of the column's runs
    assert line["trivial baseline"].split("|")[2].strip() == "74.5"
    tex = to_latex("leaderboard", board)
    assert r"75.0 $\pm$ 0.1 $^\dagger$" in tex and r"$^\ddagger$ still improving" in tex
    got = {row["method"]: row for row in csv.DictReader(io.StringIO(to_csv(with_trivial_row(board))))}
    assert got["bitfit"]["rte_flags"] == "trivial" and got[HOULSBY]["rte_flags"] == "still_improving (1/3 seeds)"
    assert float(got["trivial baseline"]["rte_mean"]) == 74.5


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_with_ties_flags_and_footnote_compiles(flag_store, tmp_path):
    best = best_table(runs_frame(Store(flag_store, read_only=True)))
    for kind, frame in (("leaderboard", leaderboard_table(best)), ("best", best)):
        tex = to_latex(kind, frame)
        assert r"$^\dagger$" in tex and r"$^\ddagger$" in tex and r"\textbf{79.9" in tex and "Holm" in tex
        doc = ("\\documentclass{article}\\usepackage{booktabs}\\usepackage[utf8]{inputenc}\\begin{document}\n"
               + tex + "\\end{document}\n")
        (tmp_path / "t.tex").write_text(doc)
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                              capture_output=True)
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert b"Missing character" not in (tmp_path / "t.log").read_bytes()


def test_cli_export_and_compare_column(url, tmp_path):
    proc = run_cli("export", "--db", url, "--table", "leaderboard", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert "rte_tied_with_best" in proc.stdout.splitlines()[0]
    proc = run_cli("export", "--db", url, "--table", "leaderboard", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    got = {r["method"]: r for r in data["rows"]}
    assert got["bitfit"]["rte_tied_with_best"] is False and got[HOULSBY]["rte_tied_with_best"] is True
    assert got["bitfit"]["rte_p_vs_best"] < 0.01 and got["full"]["rte_p_vs_best"] is None
    assert any("Holm" in line for line in data["footnote"])
    proc = run_cli("export", "--db", url, "--table", "runs", "--format", "json")
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["rows"]) == 24
    proc = run_cli("compare", "--db", url, "--task", "rte", "--suite", "sig")
    assert proc.returncode == 0, proc.stderr
    verdicts = {l.split()[0]: l for l in proc.stdout.splitlines() if l.startswith(("full", "bitfit", "houlsby",
                                                                                    "lora"))}
    assert "best" in verdicts["full"].split() and "below" in verdicts["bitfit"].split()
    # lora's mean equals full's exactly: a best as much as full is; houlsby is tested and tied
    assert "tied" in verdicts[HOULSBY].split() and "best" in verdicts[LORA].split()
    assert "Holm" in proc.stdout
    # its notes explain the columns it prints, not the best table's settings and EVP columns it leaves out
    assert "EVP" not in proc.stdout and "Settings:" not in proc.stdout
    proc = run_cli("compare", "--db", url, "--task", "rte", "--suite", "nope")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "nope" in proc.stderr
    proc = run_cli("compare", "--db", url, "full")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def bold_cells(element) -> set:
    """(row, column) of the cells the board's Styler emphasises, read from the CSS Streamlit sends."""
    import re

    return {(int(r), int(c)) for r, c in re.findall(r"row(\d+)_col(\d+)", element.proto.arrow_data.styler.styles)}


def test_board_bolds_every_tie_and_shows_flags_seeds_and_the_trivial_row(flag_store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from harness.board import APP

    monkeypatch.setenv("HARNESS_DB", flag_store)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    row = {m: i for i, m in enumerate(table["method"])}
    col = list(table.columns).index("rte")
    bold = bold_cells(at.dataframe[0])
    assert {(row["full"], col), (row[HOULSBY], col), (row[LORA], col)} <= bold
    assert (row["bitfit"], col) not in bold and (row["trivial baseline"], col) not in bold
    assert table.loc[row["bitfit"], "rte"] == "75.0 ± 0.1 †" and table.loc[row[HOULSBY], "rte"] == "79.9 ± 9.9 ‡"
    assert table.loc[row["trivial baseline"], "rte"] == "74.5"
    captions = " ".join(c.value for c in at.main.caption)
    assert "Holm" in captions and "† trivial" in captions and "‡ still improving" in captions
    seeds = at.dataframe[1].value.set_index("method")["rte"]
    assert seeds["full"] == "best" and int(seeds["bitfit"]) == rows(
        best_table(runs_frame(Store(flag_store, read_only=True))))["bitfit"]["seeds_needed"]


@pytest.mark.parametrize("task_name", ["mrpc", "cola", "stsb", "qqp", "rte"])
def test_resampled_scores_recompute_the_task_metric_on_each_seed(task_name):
    """F1, MCC and correlations are not means of per-example scores: each resample recomputes them on every
    seed's predictions (vectorised), which must equal the task's own scorer seed by seed, averaged."""
    from harness.spec.tasks import get_task
    from harness.tasks.kinds import kind_of

    task, rng, n = get_task(task_name), np.random.default_rng(3), 60
    if task.is_regression:
        y = rng.random(n) * 5
        preds = np.stack([y + rng.normal(0, 1, n) for _ in range(3)])
        preds[0, :10] = preds[0, 10]              # ties in the ranks (spearman)
    else:
        y = rng.integers(0, 2, n)
        preds = np.stack([np.where(rng.random(n) < 0.7, y, 1 - y) for _ in range(3)])
    idx = rng.integers(0, n, (25, n))
    w = significance.counts(idx, n)   # multiplicities: each resample's sums as matrix products
    fast = significance._score_rows(task, preds, y, w)
    slow = [np.mean([kind_of(task).sample_score(task, p[row], y[row]) for p in preds]) for row in idx]
    assert fast == pytest.approx(slow, abs=1e-9)


def test_a_task_with_two_dev_splits_scores_their_mean(tmp_path):
    """MNLI: matched and mismatched, each resampled; the score the mean of the two accuracies."""
    from harness.spec.tasks import get_task

    task = get_task("mnli")
    y = np.zeros(100, dtype=int)
    for name, (m, mm) in {"a": (90, 70), "b": (80, 80)}.items():
        (tmp_path / name).mkdir()
        pm, pmm = y.copy(), y.copy()
        pm[m:], pmm[mm:] = 1, 1
        np.savez(tmp_path / name / "predictions.npz", validation_matched_idx=np.arange(100),
                 validation_matched_pred=pm, validation_matched_label=y, validation_mismatched_idx=np.arange(100),
                 validation_mismatched_pred=pmm, validation_mismatched_label=y)
    test = significance.column_test(task, {"a": [str(tmp_path / "a")], "b": [str(tmp_path / "b")]}, "a")
    assert test.observed == pytest.approx({"a": 80.0, "b": 80.0}) and test.n_examples == 200
    assert test.tied["b"] is True
