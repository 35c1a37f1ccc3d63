"""Expected validation performance: the estimator against brute-force enumeration of every subset, its ends
(mean and max), large N, the best table's evp_1 / evp_k on a hand-made and on a stored fixture, the cost axes,
and the board's "Tuning budget" page through AppTest."""

import io
import itertools
import json
import math
import random

import pandas as pd
import pytest

from harness.stats.evp import add_evp, evp_curve, evp_table
from tests.helpers import fixture_store


def brute_force(scores, n):
    """The mean over every subset of n settings of its best score."""
    subsets = list(itertools.combinations(scores, n))
    return sum(max(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n_settings", range(1, 9))
def test_evp_equals_the_mean_maximum_over_all_subsets(n_settings):
    rng = random.Random(n_settings)
    for trial in range(20):
        # ties on purpose: scores drawn from a few values on odd trials
        scores = ([rng.choice([70.0, 71.5, 71.5, 80.0]) for _ in range(n_settings)] if trial % 2
                  else [rng.uniform(40, 90) for _ in range(n_settings)])
        curve = evp_curve(scores)
        assert len(curve) == n_settings
        for n in range(1, n_settings + 1):
            assert curve[n - 1] == pytest.approx(brute_force(scores, n), rel=1e-12, abs=1e-9)


def test_evp_ends_are_the_mean_and_the_max_and_the_curve_rises():
    scores = [61.0, 72.0, 66.5, 72.0, 10.0]
    curve = evp_curve(scores)
    assert curve[0] == pytest.approx(sum(scores) / 5) and curve[-1] == 72.0
    assert all(b >= a - 1e-12 for a, b in zip(curve, curve[1:]))
    assert evp_curve([]) == [] and evp_curve([3.0]) == [3.0]
    with pytest.raises(ValueError):
        evp_curve([1.0, float("nan")])


def test_evp_for_thousands_of_settings_does_not_overflow():
    rng = random.Random(0)
    scores = [rng.gauss(70, 5) for _ in range(3000)]
    curve = evp_curve(scores)
    assert all(math.isfinite(v) for v in curve)
    assert curve[0] == pytest.approx(sum(scores) / len(scores)) and curve[-1] == pytest.approx(max(scores))
    # EVP(2) in closed form: sum_i v(i) (i-1) / C(N, 2)
    v, n = sorted(scores), len(scores)
    assert curve[1] == pytest.approx(sum(x * i for i, x in enumerate(v)) / (n * (n - 1) / 2), rel=1e-10)
    assert all(b >= a - 1e-9 for a, b in zip(curve, curve[1:]))


def _runs(rows):
    base = {"suite": "s", "model": "m", "task": "rte", "status": "completed", "regime": None, "cell_key": None,
            "train_time_s": 10.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_add_evp_compares_variants_at_the_smallest_number_of_settings():
    from harness.report.tables import best_table

    rows = []
    # "wide" tried 4 settings (seed-means 60, 70, 80, 90), 2 seeds each; "narrow" 2 settings (75, 85)
    for label, means in (("wide", [60, 70, 80, 90]), ("narrow", [75, 85])):
        for j, mean in enumerate(means):
            for seed, delta in ((1, -1.0), (2, 1.0)):
                rows.append({"method": label, "method_label": label, "setting_key": f"{label}{j}", "seed": seed,
                             "score": mean + delta, "learning_rate": 1e-4, "budget": "", "id": len(rows)})
    # a setting whose every seed failed is tuning budget spent but has no score; a multitask joint row no setting
    rows.append({"method": "wide", "method_label": "wide", "setting_key": "wide9", "seed": 1, "score": None,
                 "status": "failed", "learning_rate": 1e-4, "budget": "", "id": 98})
    rows.append({"method": "wide", "method_label": "wide", "setting_key": "wide8", "seed": 1, "score": 99.0,
                 "regime": "multitask", "learning_rate": 1e-4, "budget": "", "id": 99})
    runs = _runs(rows)
    for col in ("trainable_params", "total_params", "added_params", "trainable_pct", "peak_memory_mb"):
        runs[col] = 0
    best = add_evp(best_table(runs), runs).set_index("method_label")
    assert best.loc["wide", "settings_tried"] == 5 and best.loc["wide", "settings_failed"] == 1
    assert best.loc["wide", "settings_scored"] == 4 and best.loc["narrow", "settings_tried"] == 2
    assert (best["evp_k_n"] == 2).all()   # EVP is over the settings with a score
    # wide: EVP(1) = 75; EVP(2) = (70*1 + 80*2 + 90*3) / 6 = 83.33; narrow: 80 and 85
    assert best.loc["wide", "evp_1"] == pytest.approx(75.0) and best.loc["wide", "evp_k"] == pytest.approx(500 / 6)
    assert best.loc["narrow", "evp_1"] == pytest.approx(80.0) and best.loc["narrow", "evp_k"] == pytest.approx(85.0)
    # at its full budget "wide" wins (90 vs 85); at equal budgets "narrow" does (85 vs 83.3)
    assert best.loc["wide", "mean"] == pytest.approx(90.0)


def test_export_best_has_evp_columns_from_a_stored_suite(tmp_path):
    from harness.report.export import export
    from harness.store.db import Store

    url = fixture_store.build(tmp_path / "h.db")
    frame = pd.read_csv(io.StringIO(export(Store(url, read_only=True), "csv", "best")))
    got = {(r.task, r.method): (r.settings_tried, r.evp_1, r.evp_k, r.evp_k_n) for r in frame.itertuples()}
    # fixture (tests/helpers/fixture_store.py): two learning rates per variant, seed-means per setting
    assert got[("rte", "full")] == (2, pytest.approx((72 + 61) / 2), pytest.approx(72.0), 2)
    assert got[("rte", "houlsby")] == (2, pytest.approx((66 + 71.5) / 2), pytest.approx(71.5), 2)
    # mrpc houlsby lr 1e-4: seed 1 failed, the setting's mean is over seeds 2 and 3 (85)
    assert got[("mrpc", "houlsby")] == (2, pytest.approx((86 + 85) / 2), pytest.approx(86.0), 2)


def test_expected_cost_of_n_settings(tmp_path):
    from harness.report.tables import runs_frame
    from harness.store.db import Store

    url = fixture_store.build(tmp_path / "h.db")
    curves = evp_table(runs_frame(Store(url, read_only=True)))

    def row(task, method, n):
        return curves[(curves["task"] == task) & curves["method_label"].str.startswith(method)
                      & (curves["n"] == n)].iloc[0]

    # full: 3 seeds x 150 s per setting; n settings cost n x 450 s
    assert row("rte", "full", 1)["expected_time_s"] == pytest.approx(450.0)
    assert row("rte", "full", 2)["expected_time_s"] == pytest.approx(900.0)
    # houlsby on mrpc: one setting lost a seed (200 s), the other 300 s: mean 250 per setting
    assert row("mrpc", "houlsby", 1)["expected_time_s"] == pytest.approx(250.0)
    assert row("mrpc", "houlsby", 2)["evp"] == pytest.approx(86.0)
    assert curves["expected_flops"].isna().all()   # no FLOPs recorded in this store


def test_expected_flops_when_recorded():
    runs = _runs([{"method_label": "a", "setting_key": k, "seed": 1, "score": s, "train_flops": f}
                  for k, s, f in (("x", 1.0, 1e12), ("y", 3.0, 3e12))])
    curves = evp_table(runs)
    assert list(curves["expected_flops"]) == [pytest.approx(2e12), pytest.approx(4e12)]
    assert list(curves["evp"]) == [pytest.approx(2.0), pytest.approx(3.0)]


def _traces(chart) -> dict:
    """{trace name: (x, y)} of a plotly chart's JSON (plotly writes numeric arrays as base64 'bdata')."""
    import base64

    import numpy as np

    def values(v):
        if isinstance(v, dict) and "bdata" in v:
            return list(np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])))
        return list(v)

    return {t["name"]: (values(t["x"]), values(t["y"])) for t in json.loads(chart.proto.spec)["data"]}


def test_board_tuning_budget_page(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from harness.board import APP

    url = fixture_store.build(tmp_path / "h.db")
    monkeypatch.setenv("HARNESS_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.sidebar.radio[1].set_value("Tuning budget").run()
    assert not at.exception, at.exception
    next(s for s in at.selectbox if s.label == "Task").set_value("rte").run()
    table = at.dataframe[0].value.set_index("method")
    assert table.loc["full", "settings with a score"] == 2
    assert table.loc["full", "EVP(1): mean setting"] == pytest.approx(66.5)
    assert table.loc["full", "EVP(2): equal budget"] == pytest.approx(72.0)
    assert table.loc["houlsby(size=8,non_linearity=swish)", "EVP(1): mean setting"] == pytest.approx(68.75)
    curves = _traces(at.get("plotly_chart")[0])
    assert curves["full"] == ([1, 2], pytest.approx([66.5, 72.0]))
    # the cost axis: expected train time of n settings (3 seeds x 150 s per full setting)
    axis = next(s for s in at.selectbox if s.label == "x axis")
    assert axis.options == ["settings tried (n)", "expected train time (s)"]   # no FLOPs recorded
    axis.set_value("expected_time_s").run()   # (the column; options show its name)
    assert not at.exception, at.exception
    assert _traces(at.get("plotly_chart")[0])["full"][0] == pytest.approx([450.0, 900.0])
