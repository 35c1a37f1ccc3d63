"""The Streamlit leaderboard: every page through AppTest on a fixture store, then a real browser."""

import os

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import call_cli, fixture_store
from harness.board import APP

APP = str(APP)


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("board")
    return fixture_store.build(tmp / "h.db", predictions_dir=str(tmp / "out"))


def app(url, monkeypatch):
    monkeypatch.setenv("HARNESS_DB", url)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_leaderboard_shows_houlsby_protocol_numbers(store_url, monkeypatch):
    at = app(store_url, monkeypatch)
    table = at.dataframe[0].value
    rows = {r["method"]: r for _, r in table.iterrows()}
    assert list(table.columns[:3]) == ["method", "mrpc", "rte"]  # GLUE order
    # best lr on dev, mean ± std over 3 seeds; ‡: the fixture's dev curves rise by 5 at the last evaluation
    assert rows["full"]["rte"] == "72.0 ± 2.0 ‡"
    assert rows["houlsby(size=8,non_linearity=swish)"]["rte"] == "71.5 ± 0.5 ‡"
    assert rows["full"]["mrpc"] == "86.0 ± 1.0 ‡"
    # the fixture saves predictions for rte only, so mrpc is not tested; but houlsby's mean ties full's exactly,
    # so it is a best of the column as much as full is (not "not tested" against itself)
    assert rows["houlsby(size=8,non_linearity=swish)"]["mrpc"] == "86.0 ± 2.0 ‡"
    assert rows["full"]["GLUE avg"] == "79.0"
    assert rows["houlsby(size=8,non_linearity=swish)"]["GLUE avg"] == "78.8 (not tested)"
    assert rows["full"]["% trained"] == "100.000"
    assert rows["full"]["params (all tasks)"].endswith("(2.00x)")       # a full model per task
    assert rows["houlsby(size=8,non_linearity=swish)"]["params (all tasks)"].endswith("(1.01x)")
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download CSV notes", "Download LaTeX",
                                                            "Download Markdown"]
    # the 'final' vs 'best' evaluation switch changes the numbers
    at.sidebar.radio[0].set_value("best_score").run()
    rows = {r["method"]: r for _, r in at.dataframe[0].value.iterrows()}
    assert rows["full"]["rte"] == "73.0 ± 2.0 ‡"
    # a run saves its final evaluation's predictions only: the best evaluations' scores are not tested
    assert rows["houlsby(size=8,non_linearity=swish)"]["rte"] == "72.5 ± 0.5 ‡ (not tested)"
    assert any("no test against the best: the scores are each run's best dev evaluation" in c.value
               for c in at.main.caption), [c.value for c in at.main.caption]


def test_leaderboard_reads_a_postgresql_store_read_only(pg_server, tmp_path, monkeypatch):
    """The same numbers from a server store, through a read-only transaction."""
    url = fixture_store.build(None, predictions_dir=str(tmp_path / "out"), url=pg_server.create_database("board"))
    at = app(url, monkeypatch)
    rows = {r["method"]: r for _, r in at.dataframe[0].value.iterrows()}
    assert rows["full"]["rte"] == "72.0 ± 2.0 ‡" and rows["houlsby(size=8,non_linearity=swish)"]["rte"] == "71.5 ± 0.5 ‡"
    from harness.store.db import Store

    with pytest.raises(Exception, match="read-only"):
        Store(url, read_only=True).add_analysis(1, "x", {})


def test_leaderboard_filter_and_sort(store_url, monkeypatch):
    at = app(store_url, monkeypatch)
    sort = next(s for s in at.selectbox if s.label == "Sort by")
    sort.set_value("rte").run()
    assert list(at.dataframe[0].value["method"]) == ["full", "houlsby(size=8,non_linearity=swish)"]
    at.multiselect[0].unselect("full").run()
    assert list(at.dataframe[0].value["method"]) == ["houlsby(size=8,non_linearity=swish)"]


def test_leaderboard_with_every_method_taken_out_says_so(store_url, monkeypatch):
    """Every method taken out of the filter: the page raised a traceback ("Length of values (0) does not match
    length of index (6)", building the Markdown download of no rows)."""
    at = app(store_url, monkeypatch)
    at.multiselect[0].set_value([]).run()
    assert not at.exception, at.exception
    assert not at.dataframe and not at.get("download_button")
    assert at.info[0].value == "No method chosen: choose one or more under Methods."


def test_tradeoff_runs_and_analyses_pages(store_url, monkeypatch):
    at = app(store_url, monkeypatch)
    at.sidebar.radio[1].set_value("Trade-off").run()
    assert not at.exception
    chart = at.get("plotly_chart")
    assert len(chart) == 1
    at.sidebar.radio[1].set_value("Runs").run()
    assert not at.exception
    runs = at.dataframe[0].value
    assert len(runs) == 24 and (runs["status"] == "failed").sum() == 1
    assert "accelerate launch harness/run.py fx.yaml" in at.code[0].value
    status = next(m for m in at.multiselect if m.label == "Status")
    status.select("failed").run()
    assert len(at.dataframe[0].value) == 1
    assert "FloatingPointError" in at.error[0].value
    at.sidebar.radio[1].set_value("Analyses").run()
    assert not at.exception
    next(s for s in at.selectbox if s.label == "Task").set_value("rte").run()
    labels = [m.label for m in at.metric]
    assert labels == ["A − B (rte)", "95% CI", "p-value"]
    # fixture predictions: full is right on ~75% of examples, houlsby on ~55%: A (full) is clearly better
    assert float(at.metric[0].value) > 10 and float(at.metric[2].value) < 0.01
    # the same pairs as `harness compare` (each variant's best setting, runs paired by seed), not the single
    # best-scoring run of each variant (a seed picked on dev)
    cli = call_cli("compare", "full", "houlsby(size=8,non_linearity=swish)", "--task", "rte", "--db", store_url)
    assert cli.returncode == 0, cli.stderr
    assert at.metric[0].value in cli.stdout and at.metric[1].value in cli.stdout, (at.metric, cli.stdout)
    # the stored ablation of one houlsby run is drawn as a heatmap
    assert len(at.get("plotly_chart")) == 1
    assert any("score with every adapter: 71.00" in c.value for c in at.main.caption)


def test_ablation_matrix_layout():
    from harness.report.tables import ablation_matrix

    m = ablation_matrix({"num_layers": 2, "baseline": 71.0, "spans": [[0, 0, 70.0], [0, 1, 60.0], [1, 1, 72.0]]})
    assert m.loc[0, 0] == -1.0 and m.loc[0, 1] == -11.0 and m.loc[1, 1] == 1.0 and m.isna().loc[1, 0]


def test_empty_and_missing_store_show_help_not_traceback(tmp_path, monkeypatch):
    at = app(f"sqlite:///{tmp_path / 'missing.db'}", monkeypatch)
    assert "No results store" in at.info[0].value and "harness run suites/demo.yaml" in at.info[0].value
    from harness.store.db import Store

    Store(f"sqlite:///{tmp_path / 'empty.db'}")
    at = app(f"sqlite:///{tmp_path / 'empty.db'}", monkeypatch)
    assert "holds no runs" in at.info[0].value


def test_real_browser_renders_the_leaderboard(store_url, tmp_path):
    """`streamlit run` on localhost, opened in headless Debian Chromium through Playwright; saves a screenshot."""
    from harness.board.screenshot import CHROMIUM, screenshot

    assert os.path.exists(CHROMIUM), "install Debian's chromium (see .ci/run)"
    shot = screenshot(store_url, str(tmp_path / "leaderboard.png"), wait_for_text="72.0 ± 2.0")
    assert os.path.getsize(shot) > 10_000


def test_tradeoff_joins_a_sweep_into_a_curve(tmp_path, monkeypatch):
    import json

    from harness.store.db import Store
    from harness.plan.suite import parse_suite

    suite = parse_suite("""
name: sweep
models: [minilm]
tasks: [rte]
methods: [full, {name: houlsby, size: [8, 64, 256]}]
""")
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    for cell, (score, trained) in zip(suite.cells(), [(70, 1e6), (60, 1e3), (66, 1e4), (68, 1e5)]):
        claim = store.start(cell, cell.config(), "", str(tmp_path))
        store.finish(claim, "completed", {"score": score, "trainable_params": trained, "total_params": 1e6,
                                           "added_params": 0, "trainable_pct": 100 * trained / 1e6})
    at = app(url, monkeypatch)
    at.sidebar.radio[1].set_value("Trade-off").run()
    assert not at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    lines = [t for t in spec["data"] if t.get("mode") == "lines" and t.get("name") != "Pareto frontier"]
    assert len(lines) == 1                       # houlsby's three sizes; full is a single point

    def values(v):  # plotly sends arrays as base64 typed arrays
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist() if isinstance(v, dict) else v

    assert values(lines[0]["x"]) == [1e3, 1e4, 1e5] and values(lines[0]["y"]) == [60, 66, 68]


def test_runs_page_reproduce_box_and_environment_hide_the_password(tmp_path, monkeypatch):
    """The reproduce box names the store (password hidden), the output folder and the suite; the environment
    panel and the error never show a password, also for rows written before redaction existed."""
    from harness.plan.suite import parse_suite
    from harness.store.db import Store

    secret = "s3cr3t-pw"
    leaked = f"postgresql+psycopg://alice:{secret}@db.example/harness"
    suite = parse_suite("name: sec\nmodels: [minilm]\ntasks: [rte]\nmethods: [bitfit]\n")
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    cell = suite.cells()[0]
    claim = store.start(cell, cell.config(), "cmd", str(tmp_path / "out" / "sec" / cell.key))   # OUTPUT/suite/key
    store.finish(claim, "failed", {"error": "boom"})
    import json

    import sqlalchemy as sa

    with store.engine.begin() as conn:   # as a harness before redaction wrote it: no column type in between
        conn.execute(sa.text("update runs set command = :c, error = :e, env = :v"),
                     {"c": f"accelerate launch -m harness.run /abs/sec.yaml --db {leaked}",
                      "e": f"OperationalError: cannot reach {leaked}",
                      "v": json.dumps({"argv": ["harness/run.py", "sec.yaml", "--db", leaked], "host": "h"})})
    at = app(url, monkeypatch)
    at.sidebar.radio[1].set_value("Runs").run()
    assert not at.exception
    (box,) = [c.value for c in at.code if "harness.run" in c.value]   # the reproduce box (the other: the error)
    assert secret not in box and "--db postgresql+psycopg://alice:***@db.example/harness" in box, box
    assert "/abs/sec.yaml" in box and f"--output-dir {tmp_path / 'out'}" in box and cell.key in box
    assert secret not in at.error[0].value and "cannot reach" in at.error[0].value
    (error,) = [c.value for c in at.code if "OperationalError" in c.value]   # the whole text, as typed
    assert secret not in error and "cannot reach" in error, error
    shown = " ".join(str(j.proto.body) for j in at.get("json"))
    assert "--db" in shown and secret not in shown, shown
