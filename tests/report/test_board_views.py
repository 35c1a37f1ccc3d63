"""The board's shareable views: the Grid page of a suite in progress, views opened from URL query parameters, the
per-task drill-down, the trade-off page's axes, and the Grid page photographed while a real worker runs."""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time

import pytest
import streamlit as st
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from harness.board import APP
from harness.report.text import duration
from harness.plan.suite import parse_suite
from harness.spec.status import Status
from harness.store.db import Store
from harness.store.lease import Worker, utcnow
from harness.store.schema import RunRecord as R
from tests.helpers import ROOT, call_cli, fixture_store

APP = str(APP)
GRID = """
name: grid
models: [minilm]
tasks: [rte, mrpc]
methods: [full, bitfit]
seeds: [1, 2]
"""


def app(url, monkeypatch, **params):
    monkeypatch.setenv("HARNESS_DB", url)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(params)
    at.run()
    assert not at.exception, at.exception
    return at


def table(at, first_column):
    return next(d.value for d in at.dataframe if list(d.value.columns)[:1] == [first_column])


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("views")
    return fixture_store.build(tmp / "h.db", predictions_dir=str(tmp / "out"))


@pytest.fixture
def grid_url(tmp_path):
    return grid_store(f"sqlite:///{tmp_path / 'g.db'}")


def grid_store(url):
    """8 cells through the real queue: 3 completed, 1 failed, 1 running (fresh heartbeat), 1 stale (its last
    heartbeat an hour ago, on a Slurm array task), 2 pending."""
    store = Store(url)
    cells = parse_suite(GRID, "grid.yaml").cells()
    store.enqueue(cells, "harness run grid.yaml")
    keys = [c.key for c in cells]
    done = Worker("w-done", "node-a", 11)
    for seconds in (100.0, 120.0, 140.0):
        claim = store.claim_next("grid", keys, done)
        store.finish(claim, Status.COMPLETED, {"score": 70.0, "train_time_s": seconds, "eval_time_s": 0.0})
    claim = store.claim_next("grid", keys, done)
    # as the runner stores it: the reason's line, then the traceback
    store.finish(claim, Status.FAILED, {"error": "torch.OutOfMemoryError: CUDA out of memory\nTraceback (most "
                                                 "recent call last):\n  File \"model.py\", line 3, in __init__\n"
                                                 "    self.f(*args, **kw)\ntorch.OutOfMemoryError: CUDA out "
                                                 "of memory. Tried to allocate 2.00 GiB"})
    live = store.claim_next("grid", keys, Worker("w-live", "node-b", 22))
    stale = store.claim_next("grid", keys, Worker("w-stale", "node-c", 33, slurm_job_id="4242",
                                                  slurm_array_task_id=3))
    with store.engine.begin() as conn:   # its worker died an hour ago: no heartbeat since
        conn.execute(update(R).where(R.id == stale.id).values(heartbeat_at=utcnow() - dt.timedelta(hours=1)))
    return url, {"failed": claim.id, "live": live.cell_key, "stale": stale.cell_key}


def test_grid_page_shows_states_workers_failures_and_time_left(grid_url, monkeypatch):
    url, ids = grid_url
    at = app(url, monkeypatch, page="Grid", suite="grid")
    assert at.title[0].value == "Grid"
    counts = {m.label: m.value for m in at.metric}
    assert {k: counts[k] for k in ("completed", "running", "stale", "pending", "failed")} == \
        {"completed": "3", "running": "1", "stale": "1", "pending": "2", "failed": "1"}
    assert "3 of 8 cells completed" in at.subheader[0].value
    assert at.get("progress")[0].proto.value == 37   # 3/8
    # workers: the live one and the stale one, its Slurm job/task shown, its heartbeat an hour old, highlighted
    workers = table(at, "state")
    rows = {r["worker"]: r for _, r in workers.iterrows()}
    assert set(rows) == {"w-live", "w-stale"}
    assert rows["w-live"]["cell"] == ids["live"] and rows["w-live"]["heartbeat age (s)"] < 60
    assert rows["w-stale"]["state"] == "stale" and rows["w-stale"]["slurm job/task"] == "4242_3"
    assert 3500 < rows["w-stale"]["heartbeat age (s)"] < 3700
    styler = next(d.proto.arrow_data.styler.styles for d in at.dataframe if "w-stale" in d.value.to_string())
    stale_row = list(workers["worker"]).index("w-stale")
    assert "rgba(248, 81, 73, 0.22)" in styler and f"row{stale_row}_col0" in styler   # the stale row only
    assert f"row{1 - stale_row}_col" not in styler
    # failures: the reason's line (not the traceback), and a link to the failed run's page
    failures = table(at, "cell")
    assert list(failures["reason"]) == ["torch.OutOfMemoryError: CUDA out of memory"]
    assert failures["run page"][0] == f"?page=Runs&suite=grid&model=minilm&run={ids['failed']}"
    # time left: no setting left has a completed cell and no stored run has a throughput (no examples
    # counted), so no estimate, and the reason, not the completed groups' mean; one live worker (the stale one
    # does not count)
    assert counts["Time left (estimate)"] == "unknown yet"
    assert any(c.value == "1 live worker(s) · 4 cell(s) without an estimate: no completed cell of its setting in "
               "this suite and no stored run of minilm" for c in at.caption), [c.value for c in at.caption]
    # the link opens the failed run's page
    link = dict(p.split("=") for p in failures["run page"][0][1:].split("&"))
    run_page = app(url, monkeypatch, **link)
    assert run_page.title[0].value == "Runs"
    # the reason's line in the red box; the traceback as typed (Markdown made `__init__` bold, `*args` italic)
    error = Store(url).get(ids["failed"]).error
    assert run_page.error[0].value == "torch.OutOfMemoryError: CUDA out of memory"
    assert [c.value for c in run_page.code if "Traceback" in c.value] == [error]


def _complete(store, cell, worker, train_s: float, eval_s: float, examples: int, dev: int,
              predicted_s: float | None = None):
    """A completed cell as a worker records it: one epoch over `examples`, `dev` examples scored once; the time
    predicted at its claim, if any."""
    claim = store.claim_next(cell.suite, [cell.key], worker)
    if predicted_s is not None:
        store.predict(claim, predicted_s)
    store.finish(claim, Status.COMPLETED, {
        "score": 70.0, "train_time_s": train_s, "eval_time_s": eval_s, "train_examples_per_s": examples / train_s,
        "train_examples": examples, "eval_examples": dev, "steps": examples // 8, "epochs_done": 1.0,
        "env": {"device": "CPU: Test x2"}})


def test_grid_page_time_left_is_harness_status_s(tmp_path, monkeypatch):
    """The board's time left is `harness status`'s over the same cells (the board rebuilds them from the store's
    rows): a (method, task) with completed cells from their mean, one without from the store's other runs on the
    suite's device, with the ±; the cells nothing predicts are counted apart, with the reason. Before, the board
    gave a group it had no cell of the mean of every other group, and no ±."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = Store(url)
    worker = Worker("w-done", "node-a", 11)
    # another suite: full fine-tuning of the same model on MRPC, on the same device, 50 and 55 s for 400 examples
    other = [c for c in parse_suite(GRID.replace("name: grid", "name: other"), "o.yaml").cells()
             if c.task == "mrpc" and c.method == "full"]
    store.enqueue(other)
    for cell, seconds in zip(other, (50.0, 55.0)):
        _complete(store, cell, worker, seconds, 5.0, 400, 400)
    cells = {(c.task, c.method, c.seed): c for c in parse_suite(GRID, "grid.yaml").cells()}
    store.enqueue(list(cells.values()))
    for (task, method, seed), seconds in {("rte", "full", 1): 100.0, ("rte", "full", 2): 140.0,
                                          ("rte", "bitfit", 1): 60.0}.items():   # the last two predicted at claim
        _complete(store, cells[(task, method, seed)], worker, seconds, 2.0, 2490, 277,
                  predicted_s=None if seed == 1 and method == "full" else 80.0)
    # left: rte bitfit seed 2 (its group's mean), the MRPC cells (stored runs: full's own on MRPC, bitfit's on RTE)
    suite = tmp_path / "grid.yaml"
    suite.write_text(GRID)
    r = call_cli("status", suite, "--db", url, "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)["estimate"]
    # rte bitfit: its one completed cell (60 + 2 s); MRPC full: the other suite's two runs (57.5 s on average);
    # MRPC bitfit: bitfit's rate on RTE, a task of the same kind
    groups = {(g["method"], g["task"]): (g["source"], g["left"]) for g in status["groups"]}
    assert groups == {("full", "rte"): (None, 0), ("bitfit", "rte"): ("suite", 1), ("full", "mrpc"): ("stored", 2),
                      ("bitfit", "mrpc"): ("stored", 2)}
    assert status["left_s"] == pytest.approx(62.0 + 2 * 57.5 + sum(g["work_s"] for g in status["groups"]
                                                                    if g["method"] == "bitfit" and g["task"] == "mrpc"))
    assert status["plus_minus_s"] > 0 and status["unestimated"] == 0
    at = app(url, monkeypatch, page="Grid", suite="grid")
    shown = {m.label: m.value for m in at.metric}["Time left (estimate)"]
    assert shown == f"~{duration(status['left_s'])} ± {duration(status['plus_minus_s'])}"
    # and how the workers' predictions at claim came out, as status says it: 160 s predicted, 142 + 62 s taken
    assert (status["predicted_cells"], status["predicted_s"], status["predicted_actual_s"]) == (2, 160.0, 204.0)
    assert any(c.value == "0 live worker(s) · estimated from this suite's completed cells per setting, else stored "
               "throughput on CPU: Test x2 · the workers' predictions at claim, for 2 completed cell(s): 2m40s "
               "predicted, 3m24s taken (ratio 1.27)" for c in at.caption), [c.value for c in at.caption]
    # in the words of `harness status`'s text: the same spans, written alike (before: "2m 40s" here, "2m40s" there)
    text = call_cli("status", suite, "--db", url).stdout
    left, pm = re.search(r"^time left: (\S+) ± (\S+) with", text, re.M).groups()
    assert shown == f"~{left} ± {pm}", (shown, text)
    predicted, actual = re.search(r"predicted (\S+), actual (\S+) \(ratio", text).groups()
    assert any(f"{predicted} predicted, {actual} taken" in c.value for c in at.caption), (text, at.caption)
    # and the device whose stored runs priced the MRPC cells, named alike (before: status named it, the board not)
    source = "from this suite's completed cells per setting, else stored throughput on CPU: Test x2"
    assert source in text and any(source in c.value for c in at.caption), (text, at.caption)
    listed = table(at, "model")
    assert {(r["method"], r["task"], r["source"]) for _, r in listed.iterrows()} == \
        {("bitfit", "rte", "suite"), ("full", "mrpc", "stored"), ("bitfit", "mrpc", "stored")}


def test_time_left_keeps_each_model_and_budget_apart(tmp_path, monkeypatch):
    """Two models x two budgets of one method and task, seed 1 of each done in 10 / 30 s (minilm, 1 / 3 epochs)
    and 100 / 300 s (bert-base): the Grid page's time left per variant and `harness status --json` listed one row
    "full, rte: 4 completed, 4 left, 110 s per cell", a mean of no cell, with no model or budget named."""
    text = GRID.replace("name: grid", "name: mm").replace("[minilm]", "[minilm, bert-base-uncased]").replace(
        "tasks: [rte, mrpc]", "tasks: [rte]").replace("[full, bitfit]", "[full]") + \
        "budgets: [{epochs: 1}, {epochs: 3}]\n"
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = Store(url)
    cells = parse_suite(text, "mm.yaml").cells()
    store.enqueue(cells)
    for c in cells:
        if c.seed == 1:
            seconds = (10.0 if c.model == "minilm" else 100.0) * c.budget["epochs"]
            _complete(store, c, Worker("w", "node-a", 11), seconds, 0.0, 80, 80)
    expected = {("minilm", "epochs=1", 10.0), ("minilm", "epochs=3", 30.0), ("bert-base-uncased", "epochs=1", 100.0),
                ("bert-base-uncased", "epochs=3", 300.0)}
    suite = tmp_path / "mm.yaml"
    suite.write_text(text)
    r = call_cli("status", suite, "--db", url, "--json")
    assert r.returncode == 0, r.stderr
    groups = json.loads(r.stdout)["estimate"]["groups"]
    assert {(g["model"], g["budget"], g["mean_s"]) for g in groups} == expected, groups
    assert all((g["variant"], g["task"], g["completed"], g["left"]) == ("full", "rte", 1, 1) for g in groups)
    listed = table(app(url, monkeypatch, page="Grid", suite="mm"), "model")
    assert {(r["model"], r["budget"], r["mean s per cell"]) for _, r in listed.iterrows()} == expected, listed
def test_grid_page_names_the_model_of_each_worker_s_cell_and_each_failure(tmp_path, monkeypatch):
    """Two models of one suite, the same (task, method, seed) failed on each and running on each: the Workers and
    Failures tables showed two rows alike but for the cell key ("rte, full, seed 1"), which model not said."""
    text = GRID.replace("name: grid", "name: mm").replace("[minilm]", "[minilm, bert-base-uncased]").replace(
        "tasks: [rte, mrpc]", "tasks: [rte]").replace("[full, bitfit]", "[full]")
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = Store(url)
    cells = parse_suite(text, "mm.yaml").cells()
    store.enqueue(cells)
    for c in cells:
        claim = store.claim_next("mm", [c.key], Worker(f"w-{c.model}-{c.seed}", "node-a", 11))
        if c.seed == 1:
            store.finish(claim, Status.FAILED, {"error": "FloatingPointError: loss is not finite"})
    at = app(url, monkeypatch, page="Grid", suite="mm")
    failures, workers = table(at, "cell"), table(at, "state")
    assert sorted(zip(failures["model"], failures["task"], failures["method"], failures["seed"])) == [
        ("bert-base-uncased", "rte", "full", 1), ("minilm", "rte", "full", 1)]
    assert sorted(zip(workers["model"], workers["worker"])) == [("bert-base-uncased", "w-bert-base-uncased-2"),
                                                                ("minilm", "w-minilm-2")]


def test_grid_page_reads_a_postgresql_store(pg_server, monkeypatch):
    """The staleness rule and heartbeat ages on the server's clock, through a read-only transaction."""
    url, ids = grid_store(pg_server.create_database("grid"))
    at = app(url, monkeypatch, page="Grid", suite="grid")
    counts = {m.label: m.value for m in at.metric}
    assert [counts[k] for k in ("completed", "running", "stale", "pending", "failed")] == ["3", "1", "1", "2", "1"]
    ages = dict(zip(table(at, "state")["worker"], table(at, "state")["heartbeat age (s)"]))
    assert ages["w-live"] < 60 and 3500 < ages["w-stale"] < 3700


def test_a_share_of_the_cells_is_never_written_as_none_or_all_of_them(tmp_path, monkeypatch):
    """1 failed cell of 201 was "1 failed (0%)" in `harness status` and "0% of the cells" on the Grid page, and the
    200 pending "(100%)": rounded to whole percents, a share that is some of the cells read as none or as all of
    them. 0% and 100% are said only of none and all; between them, "<1%" and ">99%"."""
    text = "name: many\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\nseeds: [%s]\n" % ", ".join(
        str(i) for i in range(1, 202))
    (tmp_path / "many.yaml").write_text(text)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    cells = parse_suite(text, "many.yaml").cells()
    store.enqueue(cells, "harness run many.yaml")
    claim = store.claim_next("many", [c.key for c in cells], Worker("w", "node-a", 11))
    store.finish(claim, Status.FAILED, {"error": "FloatingPointError: loss is not finite at step 3"})
    store.engine.dispose()
    status = call_cli("status", tmp_path / "many.yaml", "--db", url).stdout.splitlines()[0]
    assert status == "suite many (1 process(es)): 201 cells: 200 pending (>99%), 1 failed (<1%)", status
    at = app(url, monkeypatch, page="Grid", suite="many")
    shares = {m.label: m.proto.delta for m in at.metric if m.label in ("completed", "pending", "failed")}
    assert shares == {"completed": "0% of the cells", "pending": ">99% of the cells", "failed": "<1% of the cells"}


def test_grid_page_lists_cells_of_the_states_in_the_url(grid_url, monkeypatch):
    url, ids = grid_url
    at = app(url, monkeypatch, page="Grid", suite="grid", state=["stale", "pending"])
    listed = table(at, "cell_key")
    assert sorted(listed["state"]) == ["pending", "pending", "stale"]
    assert at.query_params["state"] == ["stale", "pending"]


def test_a_suite_with_only_queued_cells_opens_on_its_grid(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    Store(url).enqueue(parse_suite(GRID, "grid.yaml").cells())
    at = app(url, monkeypatch)
    assert at.title[0].value == "Grid" and at.metric[3].label == "pending" and at.metric[3].value == "8"
    assert at.metric[5].value == "unknown yet"


def test_the_grid_page_says_it_counts_rows_status_would_not_count(tmp_path, monkeypatch):
    """Seeds 3 and 4 were removed from the suite's YAML after the grid was queued: `harness status grid.yaml`
    counts 4 cells and says 4 rows are no cell of it, while the Grid page, which knows the suite by its name only,
    counted 8 (4 pending for good) without a word (review)."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    Store(url).enqueue(parse_suite(GRID.replace("seeds: [1, 2]", "seeds: [1, 2, 3, 4]"), "grid.yaml").cells())
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    p = json.loads(call_cli("status", path, "--db", url, "--json").stdout)
    assert p["counts"]["total"] == 8 and p["notes"][0].startswith("8 row(s) of suite grid in the store are no cell")
    at = app(url, monkeypatch, page="Grid", suite="grid")
    assert at.metric[3].value == "16"
    assert any(c.value.startswith("The cells counted are the rows the store holds of this suite: a cell removed")
               for c in at.caption), [c.value for c in at.caption]


def test_a_row_that_is_not_a_cell_is_counted_without_an_estimate_and_the_page_stays_up(grid_url, monkeypatch):
    """Rows whose stored configuration does not rebuild into a cell (written by hand, say): counted among the
    cells without an estimate, with that reason; the rest of the Grid page is drawn as before."""
    url, _ = grid_url
    with Store(url).engine.begin() as conn:
        conn.execute(update(R).where(R.status == Status.PENDING.value).values(config={"seed": 1}))
    at = app(url, monkeypatch, page="Grid", suite="grid")
    assert {m.label: m.value for m in at.metric}["Time left (estimate)"] == "unknown yet"
    assert any(c.value == "1 live worker(s) · 4 cell(s) without an estimate: its row's stored configuration is not "
               "a cell's; no completed cell of its setting in this suite and no stored run of minilm"
               for c in at.caption), [c.value for c in at.caption]
    assert "3 of 8 cells completed" in at.subheader[0].value and len(table(at, "state")) == 2   # the workers


def test_runs_filters_that_leave_no_run_show_an_empty_table(store_url, monkeypatch):
    """Task rte and status failed: no such run. The page raised building the Markdown download of no rows (review)."""
    at = app(store_url, monkeypatch, page="Runs", suite="fx", model="minilm", tasks="rte", statuses="failed")
    assert at.dataframe[0].value.empty


def test_the_runs_page_builds_its_download_files_once_per_read_and_rows(store_url, monkeypatch):
    """On a store of 2,230 runs each draw of the Runs page (a filter changed, a run chosen: every click) built its
    table's CSV, LaTeX and Markdown files again, 3.1 s of the page's 3.8 s. They are built once per read of the
    store and rows shown: choosing another run builds none; another filter, the files of its rows."""
    import harness.report.export as export   # (AppTest runs the page's file anew: it imports to_latex each draw)

    built = []
    real = export.to_latex
    monkeypatch.setattr(export, "to_latex", lambda kind, frame, *a: built.append(len(frame)) or real(kind, frame, *a))
    page = dict(page="Runs", suite="fx", model="minilm")
    first = app(store_url, monkeypatch, **page)
    runs = table(first, "id")
    assert len(runs) == 24 and len(built) <= 1   # (none where an earlier test drew these rows of this read)
    drawn = len(built)
    for run in runs["id"][1:4]:
        assert app(store_url, monkeypatch, **page, run=str(run)).subheader[0].value.startswith(f"#{run} ")
    assert len(built) == drawn, built
    app(store_url, monkeypatch, **page, tasks="mrpc", statuses="failed")
    assert built[drawn:] == [1]


def test_url_opens_the_chosen_view_and_follows_the_choices(store_url, monkeypatch):
    at = app(store_url, monkeypatch, page="Runs", suite="fx", model="minilm", metric="best_score",
             tasks="mrpc", statuses="failed")
    assert at.title[0].value == "Runs"
    assert at.sidebar.radio[0].value == "best_score"
    runs = at.dataframe[0].value
    assert list(runs["task"]) == ["mrpc"] and list(runs["status"]) == ["failed"]
    assert "FloatingPointError" in at.error[0].value
    # choices are written back into the URL; the parameters of the page left behind are dropped
    at.sidebar.radio[1].set_value("Leaderboard").run()
    assert dict(at.query_params) == {"suite": "fx", "model": "minilm", "metric": "best_score",
                                     "page": "Leaderboard", "sort": "as exported"}
    # an unknown value in the URL falls back to the default view, no traceback
    at = app(store_url, monkeypatch, page="nope", suite="missing")
    assert at.title[0].value == "Leaderboard" and at.query_params["suite"] == "fx"


def test_a_link_s_value_that_is_no_choice_here_is_named_with_what_is_shown_instead(tmp_path, monkeypatch):
    """A link whose values are not among the board's choices opened another view than the link's without a word:
    ?tasks=rtee showed every task's runs (no filter), ?run=999 another run's details, ?suite=nope and ?page=Runz
    the first suite's leaderboard. Each is named now, with what is shown instead; a value that stops being a
    choice after a click (the model, once the suite changed) is no mistake of the link's and says nothing."""
    from tests.report.test_table_claims import store_of

    url = store_of(tmp_path, ["name: a\nmodels: [minilm]\ntasks: [rte, mrpc]\nmethods: [full]\n",
                              "name: b\nmodels: [bert-base-uncased]\ntasks: [rte]\nmethods: [full]\n"], lambda c: 70.0)
    at = app(url, monkeypatch, page="Runs", suite="a", model="minilm", tasks=["rtee", "rte"], run="999")
    runs = at.dataframe[0].value
    assert sorted(set(runs["task"])) == ["rte"]   # the filter's valid value kept
    first = next(s for s in at.selectbox if s.label == "Run details")
    assert [w.value for w in at.warning] == [
        "The link's tasks='rtee' is not among the choices of \"Task\" here: left out.",
        f"The link's run='999' is not among the choices of \"Run details\" here: showing "
        f"{first.format_func(first.value)} instead."]
    at = app(url, monkeypatch, page="Runz", suite="nope", metric="best")
    assert at.title[0].value == "Leaderboard" and at.sidebar.selectbox[0].value == "a"
    assert [w.value for w in at.warning] == [
        "The link's suite='nope' is not among the choices of \"Suite\" here: showing a instead.",
        "The link's metric='best' is not among the choices of \"Dev score\" here: showing final evaluation instead.",
        "The link's page='Runz' is not among the choices of \"Page\" here: showing Leaderboard instead."]
    at.sidebar.selectbox[0].set_value("b").run()   # minilm is no model of suite b: bert-base-uncased, silently
    assert not at.exception and not at.warning and at.sidebar.selectbox[1].value == "bert-base-uncased"
    assert at.query_params["model"] == "bert-base-uncased"


def test_analyses_comparison_opens_from_the_url(store_url, monkeypatch):
    at = app(store_url, monkeypatch, page="Analyses", task="rte", a="houlsby(size=8,non_linearity=swish)", b="full")
    assert at.metric[0].label == "A − B (rte)"
    assert float(at.metric[0].value) < -10        # houlsby (A) is right less often than full (B) on these examples
    assert "(the leaderboard's)" in next(c.value for c in at.caption if c.value.startswith("Each variant's best"))


def test_analyses_comparison_in_best_evaluation_mode_says_it_compares_final_evaluations(store_url, monkeypatch):
    """The leaderboard on each run's best dev evaluation is not what the paired comparison can test (a run saves
    its final evaluation's predictions): the caption says which evaluations and settings it compares."""
    final = app(store_url, monkeypatch, page="Analyses", task="rte", a="houlsby(size=8,non_linearity=swish)",
                b="full")
    best = app(store_url, monkeypatch, page="Analyses", task="rte", a="houlsby(size=8,non_linearity=swish)",
               b="full", metric="best_score")
    assert best.metric[0].value == final.metric[0].value   # the same comparison, of final evaluations
    caption = next(c.value for c in best.caption if c.value.startswith("Each variant's best setting"))
    assert "the leaderboard's" not in caption and "chosen on the final dev evaluation" in caption


def test_the_vs_single_task_table_shows_the_dev_evaluation_the_sidebar_chose(tmp_path, monkeypatch):
    """In best-evaluation mode the leaderboard beside it shows each run's best dev evaluation; the multi-task vs
    single-task table still showed the final ones, and its caption did not say so."""
    import sqlite3

    from tests.report.test_table_claims import store_of

    text = "name: s\nmodels: [minilm]\ntasks: [rte, {multitask: [sst2, rte]}]\nmethods: [full]\n"
    url = store_of(tmp_path, [text], lambda c: 70.0 if c.task == "rte" else 80.0)
    with sqlite3.connect(tmp_path / "h.db") as db:   # every run's best evaluation 3 points above its final one
        db.execute("UPDATE runs SET best_score = score + 3")

    def shown(metric):
        at = app(url, monkeypatch, page="Analyses", suite="s", metric=metric)
        rows = table(at, "task").set_index("task")
        caption = next(c.value for c in at.caption if c.value.startswith("Sequential:"))
        return rows.loc["rte", "score"], rows.loc["rte", "single-task"], caption

    assert shown("score")[:2] == (80.0, 70.0) and "final dev evaluation" in shown("score")[2]
    score, single, caption = shown("best_score")
    assert (score, single) == (83.0, 73.0) and "best dev evaluation" in caption


def test_the_tuning_budget_page_says_which_dev_evaluation_its_curves_are_on(store_url, monkeypatch):
    for metric, which in (("score", "final"), ("best_score", "best")):
        at = app(store_url, monkeypatch, page="Tuning budget", metric=metric)
        caption = next(c.value for c in at.caption if c.value.startswith("Expected validation performance"))
        assert f"each run's {which} dev evaluation" in caption, caption
        # in the unit of the Trade-off page's score axis (it had none)
        layout = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]
        assert layout["yaxis"]["title"]["text"] == "expected best dev score (points, x100)"
        assert layout["xaxis"]["title"]["text"] == "settings tried (n)"


def test_task_drilldown_overlays_one_dev_curve_per_run(store_url, monkeypatch):
    at = app(store_url, monkeypatch, page="Task", task="rte", method="full")
    assert at.title[0].value == "Task"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t["name"] for t in spec["data"]]
    assert len(names) == 6                              # 2 learning rates x 3 seeds
    assert "learning_rate=2e-05 seed=3" in " ".join(names) and "learning_rate=0.0001 seed=1" in " ".join(names)
    runs = table(at, "id")
    assert len(runs) == 6 and runs["run_page"].str.startswith("?page=Runs&suite=fx&model=minilm&run=").all()
    # the method chosen in the page goes into the URL
    next(s for s in at.selectbox if s.label == "Method").set_value("houlsby(size=8,non_linearity=swish)").run()
    assert at.query_params["method"] == "houlsby(size=8,non_linearity=swish)"


def test_task_drilldown_tells_the_budgets_of_its_runs_apart(tmp_path, monkeypatch):
    """One learning rate, two budgets, two seeds: the legend read "#1 seed=1" and "#3 seed=1" (a budget is not
    among the hyperparameters it named), and the table below left the budget out, so the 1-epoch and 3-epoch
    curves of a seed could not be told apart."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    text = "name: b\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\nseeds: [1, 2]\n" \
           "budgets: [{epochs: 1}, {epochs: 3}]\n"
    for c in parse_suite(text, "b.yaml").cells():
        epochs = int(c.budget["epochs"])
        store.finish(store.start(c, c.config(), "cmd", None), Status.COMPLETED, {
            "score": 60.0 + epochs, "history": [{"step": 10 * e, "epoch": float(e), "score": 55.0 + e}
                                                for e in range(1, epochs + 1)]})
    at = app(url, monkeypatch, page="Task", suite="b", task="rte", method="full")
    names = sorted(t["name"] for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"])
    assert [n.split(" ", 1)[1] for n in names] == ["[epochs=1] seed=1", "[epochs=1] seed=2", "[epochs=3] seed=1",
                                                   "[epochs=3] seed=2"], names
    runs = table(at, "id")
    assert sorted(zip(runs["budget"], runs["seed"])) == [("epochs=1", 1), ("epochs=1", 2), ("epochs=3", 1),
                                                         ("epochs=3", 2)]


def values(v):   # plotly sends arrays as base64 typed arrays
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist() if isinstance(v, dict) else v


def _tradeoff_spec(at):
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return spec, {t["name"]: t for t in spec["data"] if t.get("mode") == "markers"}


def test_tradeoff_any_two_axes_coloured_by_method(store_url, monkeypatch):
    at = app(store_url, monkeypatch, page="Trade-off", task="rte", x="peak_memory_mb", y="train_time_s")
    x_axis = next(s for s in at.selectbox if s.label == "x axis")
    assert x_axis.options == ["trainable parameters", "train time (s)", "peak memory (MB)", "dev score (points, x100)"]
    assert any("No FLOPs recorded" in c.value for c in at.caption)
    spec, points = _tradeoff_spec(at)
    assert set(points) == {"full", "houlsby"}   # one colour per method (its variants: one curve)
    assert spec["layout"]["xaxis"]["title"]["text"] == "peak memory (MB)"
    assert spec["layout"]["yaxis"]["title"]["text"] == "train time (s)"


def test_tradeoff_offers_flops_once_recorded(tmp_path, monkeypatch):
    suite = parse_suite("name: fl\nmodels: [minilm]\ntasks: [rte]\nmethods: [full, bitfit]\n")
    url = f"sqlite:///{tmp_path / 'f.db'}"
    store = Store(url)
    for cell, (score, flops) in zip(suite.cells(), [(70.0, 4e15), (65.0, 1e15)]):
        claim = store.start(cell, cell.config(), "", str(tmp_path))
        store.finish(claim, "completed", {"score": score, "train_flops": flops, "trainable_params": 1e6,
                                           "total_params": 1e6, "added_params": 0, "trainable_pct": 1.0,
                                           "train_time_s": 10.0, "peak_memory_mb": 100.0})
    at = app(url, monkeypatch, page="Trade-off", x="train_flops", y="score")
    assert not any("No FLOPs recorded" in c.value for c in at.caption)
    spec, points = _tradeoff_spec(at)
    assert spec["layout"]["xaxis"]["title"]["text"] == "train FLOPs" and spec["layout"]["xaxis"]["type"] == "log"
    xs = {name: values(t["x"]) for name, t in points.items()}
    assert xs == {"full": [4e15], "bitfit": [1e15]}


LIVE = """
name: live
models: ["{model}"]
tasks: [rte]
methods: [full, bitfit]
budgets: [{{max_steps: 2}}, {{max_steps: 1000000, time_limit_min: 5}}]
hparams: {{batch_size: 8, learning_rate: 1e-4}}
"""


def _wait_for(predicate, what, proc, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the worker exited before {what}: " + proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_real_browser_photographs_the_grid_while_a_worker_runs(tmp_path, tiny_bert, small_glue):
    """A real `harness run` worker on a tiny suite in the background; while it holds a cell (fresh heartbeat),
    `streamlit run` serves the board and headless Chromium photographs its Grid page."""
    from harness.board.screenshot import CHROMIUM, screenshot
    from tests.helpers.files import write_suite

    assert os.path.exists(CHROMIUM), "install Debian's chromium (see .ci/run)"
    # per method: a 2-step cell that completes, then one with enough steps to be still running while the browser
    # looks (the worker is stopped afterwards; its time limit keeps the page's time left to minutes)
    suite = write_suite(tmp_path / "live.yaml", LIVE.format(model=tiny_bert))
    url = f"sqlite:///{tmp_path / 'live.db'}"
    Store(url)   # the schema, so the test can read the store while the worker starts
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_HEARTBEAT_S": "1", "HARNESS_LEASE_TIMEOUT_S": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--db", url, "--output-dir",
                             str(tmp_path / "out"), "--data-dir", str(small_glue), "--no-progress"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def beating():
            rows = Store(url, read_only=True).records("live")
            done = [r for r in rows if r.status == Status.COMPLETED]
            live = [r for r in rows if r.status == Status.RUNNING and r.heartbeat_at and r.heartbeat_at > r.claimed_at]
            return bool(done) and bool(live)
        _wait_for(beating, "a completed cell and a heartbeat on the next", proc)
        (rec,) = Store(url, read_only=True).records("live", Status.RUNNING)
        # the worker's id is in the page's workers table (the grid's cells are hidden accessibility nodes)
        shot = screenshot(url, str(tmp_path / "grid.png"), query="?page=Grid&suite=live", wait_for_text=rec.worker_id,
                          height=1300)
        assert proc.poll() is None, "the worker was still running when photographed"
        (now,) = Store(url, read_only=True).records("live", Status.RUNNING)
        assert now.worker_id == rec.worker_id and now.heartbeat_at > rec.heartbeat_at   # it kept beating
        assert os.path.getsize(shot) > 10_000
        if os.environ.get("HARNESS_SAVE_GRID_PNG"):   # refreshes docs/grid.png
            import shutil

            shutil.copy(shot, os.environ["HARNESS_SAVE_GRID_PNG"])
        # the page re-reads the store on its own while the cell runs: no reload, a newer reading
        from playwright.sync_api import sync_playwright

        from harness.board.screenshot import CHROMIUM_FLAGS, served

        with served(url) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.goto(base + "?page=Grid&suite=live", wait_until="domcontentloaded")
            reading = page.get_by_text("Read at ").first
            reading.wait_for(timeout=60_000)
            first = reading.inner_text()
            page.wait_for_function(f"() => [...document.querySelectorAll('p')].some(e => e.innerText.startsWith("
                                   f"'Read at ') && e.innerText !== {json.dumps(first)})", timeout=30_000)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def test_pareto_front_on_any_two_axes():
    import pandas as pd

    from harness.report.pareto import pareto_front_axes

    points = pd.DataFrame({"name": ["a", "b", "c", "d"], "score": [80.0, 70.0, 60.0, 75.0],
                           "train_time_s": [100.0, 50.0, 80.0, 120.0], "peak_memory_mb": [9.0, 5.0, 1.0, 9.0]})
    # higher score and lower time: c (slower and worse than b) and d (slower and worse than a) are dominated
    assert list(pareto_front_axes(points, "train_time_s", "score")["name"]) == ["b", "a"]
    assert list(pareto_front_axes(points, "score", "train_time_s")["name"]) == ["b", "a"]
    # two costs, both lower is better: c has the least memory, b the least time; a and d lose to b on both
    assert list(pareto_front_axes(points, "train_time_s", "peak_memory_mb")["name"]) == ["b", "c"]


def test_the_vs_single_task_table_says_what_split_squad_scores_are_on(tmp_path, monkeypatch):
    """The Analyses page's multi-task / sequential vs single-task table shows SQuAD scores: the offline split's
    note (a split of the v1.1 dev set, not SQuAD's training set) goes under it, as under every other table."""
    from tests.report.test_compare import OFFLINE_SQUAD
    from tests.report.test_table_claims import store_of

    text = "name: s\nmodels: [minilm]\ntasks: [squad, {multitask: [squad, rte]}]\nmethods: [full]\n"
    url = store_of(tmp_path, [text], lambda c: 60.0, extra=lambda c: {"data_sources": {"squad": OFFLINE_SQUAD}})
    at = app(url, monkeypatch, page="Analyses", suite="s")
    assert "squad" in set(table(at, "task")["task"])
    assert any(c.value.startswith("squad: trained or evaluated on files other than the official v1.1 ones")
               for c in at.caption), [c.value for c in at.caption]


def test_the_leaderboard_s_tuning_budget_s_and_ablation_s_choices_are_in_the_link(store_url, monkeypatch):
    """The Leaderboard's method filter and sort, the Tuning budget page's task and x axis, and the Analyses page's
    ablated run were widgets outside the URL: a link to the leaderboard sorted by rte without full, or to the
    Tuning budget curves of mrpc, reopened as the unsorted table of every method, or rte's curves."""
    at = app(store_url, monkeypatch, page="Leaderboard")
    next(s for s in at.selectbox if s.label == "Sort by").set_value("rte").run()
    next(m for m in at.multiselect if m.label == "Methods").unselect("full").run()
    link = dict(at.query_params)
    shown = app(store_url, monkeypatch, **link)
    assert list(shown.dataframe[0].value["method"]) == ["houlsby(size=8,non_linearity=swish)"], link
    assert next(s for s in shown.selectbox if s.label == "Sort by").value == "rte"
    # every method chosen again: no parameter (a short link); none chosen: said, not read as every method
    methods = next(m for m in shown.multiselect if m.label == "Methods")
    methods.select("full").run()
    assert "show" not in shown.query_params
    next(m for m in shown.multiselect if m.label == "Methods").set_value([]).run()
    link = dict(shown.query_params)
    assert app(store_url, monkeypatch, **link).info[0].value.startswith("No method chosen"), link

    at = app(store_url, monkeypatch, page="Tuning budget")
    next(s for s in at.selectbox if s.label == "Task").set_value("mrpc").run()
    next(s for s in at.selectbox if s.label == "x axis").set_value("expected_time_s").run()
    link = dict(at.query_params)
    shown = app(store_url, monkeypatch, **link)
    assert [s.value for s in shown.selectbox if s.label in ("Task", "x axis")] == ["mrpc", "expected_time_s"], link
    assert json.loads(shown.get("plotly_chart")[0].proto.spec)["layout"]["xaxis"]["title"]["text"] == \
        "expected train time (s)"

    at = app(store_url, monkeypatch, page="Analyses", task="rte")
    ablated = next(s for s in at.selectbox if s.label == "Run")
    assert at.query_params["ablation"] == str(ablated.value)


def complete(url, suite, methods, models="[minilm]"):
    """Every cell of a one-task suite completed, through the real store API."""
    store = Store(url)
    text = f"name: {suite}\nmodels: {models}\ntasks: [rte]\nmethods: {methods}\n"
    for cell in parse_suite(text, f"{suite}.yaml").cells():
        claim = store.start(cell, cell.config(), f"harness run {suite}.yaml", None)
        store.finish(claim, Status.COMPLETED, {"score": 70.0, "metrics": {"accuracy": 70.0}, "trainable_params": 10,
                                               "total_params": 100, "trainable_pct": 10.0})
    store.engine.dispose()


def test_the_leaderboard_s_methods_follow_the_store_until_one_is_taken_out(tmp_path, monkeypatch):
    """The Methods filter kept its list in the session: a variant that completed while the board was open was left
    out of the table and its files (the URL then named the old list), and after one method was taken out, another
    model whose variants are others showed "No method chosen"."""
    import streamlit as st

    url = f"sqlite:///{tmp_path / 'h.db'}"
    complete(url, "s", "[full]", models="[minilm, org/tiny]")
    at = app(url, monkeypatch, page="Leaderboard", suite="s", model="minilm")
    assert list(at.dataframe[0].value["method"]) == ["full"]
    complete(url, "s", "[bitfit]", models="[minilm]")   # completes while the board is open
    st.cache_data.clear()   # (the tables' cache expires)
    at.run()
    assert not at.exception, at.exception
    assert sorted(at.dataframe[0].value["method"]) == ["bitfit", "full"]
    assert "show" not in at.query_params
    next(m for m in at.multiselect if m.label == "Methods").unselect("full").run()
    assert list(at.dataframe[0].value["method"]) == ["bitfit"] and at.query_params["show"] == "bitfit"
    next(s for s in at.sidebar.selectbox if s.label == "Model").set_value("org/tiny").run()   # full only
    assert not at.info, [i.value for i in at.info]
    assert list(at.dataframe[0].value["method"]) == ["full"]
    assert not at.warning, [w.value for w in at.warning]   # (a link's mistake is warned of; this is no link's)
    linked = app(url, monkeypatch, page="Leaderboard", suite="s", model="minilm", show="nope")
    assert sorted(linked.dataframe[0].value["method"]) == ["bitfit", "full"]
    assert "show='nope'" in linked.warning[0].value and "showing the default" in linked.warning[0].value


def test_the_grid_page_reads_a_store_of_an_older_revision(tmp_path, monkeypatch):
    """A store from before leases, opened read-only and never migrated (as `harness status` reads it): the Grid
    page raised "no such column: runs.heartbeat_at" where status counts 1 completed, 1 stale."""
    from tests.store.test_store import SUITE, store_from_before_migrations

    full, probe = parse_suite(SUITE, "s.yaml").cells()
    url = store_from_before_migrations(tmp_path / "old.db", [
        {"cell": full, "status": "completed", "score": 61.25}, {"cell": probe, "status": "running"}])
    at = app(url, monkeypatch, page="Grid", suite="s")
    counts = {m.label: m.value for m in at.metric}
    assert (counts["completed"], counts["stale"], counts["running"]) == ("1", "1", "0")
    assert list(table(at, "state")["state"]) == ["stale"]


def test_tradeoff_of_runs_that_recorded_no_cost_says_so(tmp_path, monkeypatch):
    """Completed runs with a score and no cost recorded (no trainable parameters, time, memory or FLOPs, as rows of
    an older store): the score was the only axis offered, y had no choice and the page raised "KeyError: [None]"."""
    suite = parse_suite("name: nc\nmodels: [minilm]\ntasks: [rte]\nmethods: [full, bitfit]\n")
    url = f"sqlite:///{tmp_path / 'nc.db'}"
    store = Store(url)
    for cell, score in zip(suite.cells(), (70.0, 65.0)):
        store.finish(store.start(cell, cell.config(), "", str(tmp_path)), "completed", {"score": score})
    at = app(url, monkeypatch, page="Trade-off", task="rte")
    assert at.info[0].value.startswith("Only the dev score (points, x100) is recorded for these runs: no cost")


def test_a_run_without_a_learning_rate_shows_as_missing_on_the_runs_page_and_in_the_exports(tmp_path, monkeypatch):
    """`harness ingest` takes a record whose configuration has no learning rate (another tool's, or one written by
    hand: Cell.from_config does not need it), and stores NULL in the column. The board's Runs page raised
    "unsupported format string passed to NoneType.__format__" (f"{lr:g}"), as did `export --table runs` and
    `--table best` in Markdown and LaTeX."""
    from harness.spec.layout import RECORD
    from tests.store.test_ingest import _with_config, finish_with_record

    (cell,) = parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", "s.yaml").cells()
    record = finish_with_record(Store(f"sqlite:///{tmp_path / 'node.db'}"), cell, tmp_path / "out" / cell.key)
    config = json.loads(json.dumps(record["config"]))
    del config["hparams"]["learning_rate"]
    record = {k: v for k, v in _with_config(record, config).items() if k != "setting_key"}   # (ingest derives it)
    record.update(learning_rate=None, hparams={k: v for k, v in record["hparams"].items() if k != "learning_rate"})
    path = tmp_path / "in" / RECORD
    path.parent.mkdir()
    path.write_text(json.dumps(record))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    assert call_cli("ingest", path, "--db", url).returncode == 0
    (row,) = Store(url, read_only=True).records("s")
    assert row.learning_rate is None and row.status == Status.COMPLETED
    for table in ("runs", "best"):
        for fmt in ("markdown", "latex"):
            r = call_cli("export", "--db", url, "--table", table, "--format", fmt)
            assert r.returncode == 0, (table, fmt, r.stderr)
    runs_md = call_cli("export", "--db", url, "--table", "runs", "--format", "markdown").stdout
    assert "| 1      | –    |" in runs_md, runs_md   # seed 1, the learning rate missing
    at = app(url, monkeypatch, page="Runs", suite="s", model="minilm")
    (details,) = [s for s in at.selectbox if s.label == "Run details"]
    assert details.options == [f"#{row.id} rte full lr=– seed=1 (completed)"]


def test_a_store_written_during_the_board_s_read_is_read_again_and_never_shown_torn(store_url, monkeypatch):
    """A store at rest is read without locks, and such a read refuses (StoreChanged) where a worker wrote the file
    meanwhile: the board showed the command line's refusal as a traceback. It reads again; where every read is
    written over, it says so and shows nothing from them."""
    from harness.store import engine

    changed = {"left": 1}   # the file is seen changed at the end of the first read only

    def state_or_none(path, real=engine._state_or_none):
        if changed["left"]:
            changed["left"] -= 1
            return None
        return real(path)

    monkeypatch.setattr(engine, "_state_or_none", state_or_none)
    st.cache_data.clear()   # (an earlier test's read of the same store may be cached)
    at = app(store_url, monkeypatch, page="Leaderboard", suite="fx", model="minilm")
    assert changed["left"] == 0 and not at.warning and table(at, "method") is not None

    st.cache_data.clear()   # (the first page's read is cached: read anew)
    changed["left"] = 10 ** 6   # every read is written over
    at = app(store_url, monkeypatch, page="Leaderboard", suite="fx", model="minilm")
    assert [w.value for w in at.warning if "was written while it was read, 4 times in a row" in w.value], at.warning
    assert not at.dataframe


GRID_REFRESH = """
from harness.board.grid_page import _grid
from harness.store import engine
from harness.store.db import Store

engine._real_state = real = getattr(engine, "_real_state", engine._state_or_none)   # (each rerun of the script)
engine._state_or_none = real
store = Store({url!r}, read_only=True)
engine._state_or_none = lambda path: None   # every read of the store at rest is written over from now on
_grid(store, "fx", 600.0, True)
"""


def test_the_grid_s_own_refresh_reads_again_and_never_shows_a_torn_read(tmp_path, monkeypatch):
    """The Grid page refreshes itself (a Streamlit fragment, every REFRESH_S while cells run) without the page's
    main(), so a store written during that read showed a traceback there, the time left as "No estimate
    (StoreChanged …)" before it. The refresh reads again, and says so when every read was written over."""
    from harness.store import engine

    url = fixture_store.build(tmp_path / "fx.db")
    # the script runs in this process: both restored after the test, whatever the script left
    monkeypatch.setattr(engine, "_real_state", engine._state_or_none, raising=False)
    monkeypatch.setattr(engine, "_state_or_none", engine._state_or_none)
    at = AppTest.from_string(GRID_REFRESH.format(url=url), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning if "was written while it was read, 4 times in a row" in w.value], at.warning
    assert not at.metric and not [c.value for c in at.caption if "StoreChanged" in c.value]


def three_shares_store(tmp_path) -> str:
    """Three completed rte runs that train 100%, 9% and 0.000306% of the model (a linear probe's head on a large
    one): shares that sort differently as numbers and as texts."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    cells = parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full, bitfit, lora]\n", "s.yaml").cells()
    for cell, share in zip(cells, (100.0, 9.0, 0.000306)):
        store.finish(store.start(cell, cell.config(), "cmd", None), Status.COMPLETED,
                     {"score": 70.0, "trainable_pct": share, "trainable_params": 1, "total_params": 326_797})
    store.engine.dispose()
    return url


def test_the_runs_page_prints_a_tiny_trained_share_as_the_exports_do_and_sorts_it_as_a_number(tmp_path, monkeypatch):
    """A linear probe's head on a large model trains 0.000306% of it: the exports print 0.00031 (pct_text), the
    board's Runs page formatted the number itself (%.3f) and showed 0.000, training nothing. Then the column was
    pct_text's texts, which a click on its header sorted as text: "10.000" before "9.000". It is the numbers, shown
    as pct_text's texts (the Styler's display values, which Streamlit shows on a number column without a format)."""
    import json

    import pyarrow as pa

    url = three_shares_store(tmp_path)
    at = app(url, monkeypatch, page="Runs", suite="s", model="minilm")
    (element,) = [d for d in at.dataframe if list(d.value.columns)[:1] == ["id"]]
    assert list(element.value["% trained"]) == [100.0, 9.0, 0.000306]   # numbers: sorted as numbers
    shown = pa.ipc.open_stream(element.proto.arrow_data.styler.display_values).read_all().to_pandas()
    assert list(shown["% trained"]) == ["100.000", "9.000", "0.00031"], shown
    config = json.loads(element.proto.columns)
    assert "format" not in config.get("% trained", {}).get("type_config", {}), config   # (a format hides the text)
    from harness.report.export import export

    assert " 0.00031 |" in export(Store(url, read_only=True), "markdown", "runs")


def test_the_runs_page_shows_more_runs_than_a_styler_may_hold(tmp_path, monkeypatch):
    """Streamlit refuses a pandas Styler of more cells than styler.render.max_elements (262,144: some 18,700 runs
    of the Runs page's 14 columns, where the board is timed on a store of 100,000): the Runs page ended in
    StreamlitAPIException. Played with the limit lowered to 20 cells (3 runs, 42): the page shows the runs, the
    share as pct_text's texts."""
    import pandas as pd

    url = three_shares_store(tmp_path)
    with pd.option_context("styler.render.max_elements", 20):
        at = app(url, monkeypatch, page="Runs", suite="s", model="minilm")
    (element,) = [d for d in at.dataframe if list(d.value.columns)[:1] == ["id"]]
    assert list(element.value["% trained"]) == ["100.000", "9.000", "0.00031"]


def test_the_leaderboard_caption_counts_a_multitask_setting_once(tmp_path, monkeypatch):
    """full on rte and full jointly on rte+mrpc, 2 learning rates each: 4 settings trained, 3 (task, method) cells.
    The caption said "from 6 hyperparameter settings": each joint setting counted once per member task's cell."""
    from tests.report.test_table_claims import store_of

    suite = ("name: s\nmodels: [minilm]\ntasks: [rte, {multitask: [rte, mrpc]}]\nseeds: [1, 2]\n"
             "methods: [{name: full, learning_rate: [1e-5, 2e-5]}]\n")
    url = store_of(tmp_path, [suite], lambda c: 60.0 + c.seed)
    at = app(url, monkeypatch, suite="s", model="minilm", page="Leaderboard")
    (caption,) = [c.value for c in at.caption if "cells from" in c.value]
    assert caption.startswith("3 (task, method) cells from 4 hyperparameter settings tried;"), caption


def test_streamlit_s_own_markup_and_bare_links_in_a_name_are_text_on_the_board(tmp_path, monkeypatch):
    """Streamlit's Markdown reads `:red[x]` as x in red, `:smile:` as an emoji, `:material/home:` as an icon and a
    bare www. or http:// as a link; md_escape let them through: a variant named so showed them so in the
    Leaderboard's footnote and the Runs page's header. Every element that names it holds none of the patterns
    Streamlit (remark-directive, remark-emoji, its icons, GFM's autolinks) looks for, and reads as typed."""
    import html as html_lib

    from sqlalchemy import text

    from harness.report.export import WORD_JOINER
    from tests.report.test_table_claims import store_of

    markdown = pytest.importorskip("markdown")
    name = " :red[x] :smile: :material/home: www.example.com http://e.org a@b.org"
    suite = ("name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nseeds: [1, 2]\n"
             "methods: [{name: full, learning_rate: [1e-5, 2e-5]}, bitfit]\n")
    url = store_of(tmp_path, [suite], lambda c: None if (c.method, c.task) == ("bitfit", "mrpc") else 60.0 + c.seed)
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET method_label = method_label || :n"), {"n": name})
    store.engine.dispose()
    # a directive with its text, a shortcode or an icon; an autolink
    markup = re.compile(r":[a-z][\w-]*[\[{]|:[\w+-]+:|:material/|://|www\.|@[\w-]", re.I)
    named = 0
    for page in ("Leaderboard", "Runs"):
        at = app(url, monkeypatch, suite="s", model="minilm", page=page)
        for element in [*at.caption, *at.subheader, *at.info, *at.markdown]:
            if "red[x]" not in element.value.replace(WORD_JOINER, ""):
                continue
            named += 1
            assert not markup.search(re.sub(r"`[^`]*`", "", element.value)), (page, element.value)
            shown = html_lib.unescape(re.sub(r"<[^>]+>", "", markdown.markdown(element.value)))
            assert re.search("(full|bitfit)" + re.escape(name), shown.replace(WORD_JOINER, "")), (page, element.value)
    assert named >= 3


def test_a_name_is_text_in_the_board_s_captions_headers_and_messages(tmp_path, monkeypatch):
    """Streamlit reads st.caption, st.subheader and st.info as Markdown: a variant named `full *x* _y_` showed
    "full x y" with x and y in italics in the footnote's budget and average lines, the Runs and Task pages' headers
    and the Analyses page's message. Every such element that names it shows it as typed (the exports' one rule,
    md_escape), and the footnote's commands stay code."""
    import html as html_lib

    from sqlalchemy import text

    from tests.report.test_table_claims import store_of

    markdown = pytest.importorskip("markdown")
    suite = ("name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nseeds: [1, 2]\n"
             "methods: [{name: full, learning_rate: [1e-5, 2e-5]}, bitfit]\n")
    url = store_of(tmp_path, [suite], lambda c: None if (c.method, c.task) == ("bitfit", "mrpc") else 60.0 + c.seed)
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET method_label = method_label || ' *x* _y_'"))
    store.engine.dispose()
    named = 0
    for page in ("Leaderboard", "Runs", "Task", "Analyses", "Trade-off"):
        at = app(url, monkeypatch, suite="s", model="minilm", page=page, task="rte")
        for element in [*at.caption, *at.subheader, *at.info, *at.warning, *at.markdown]:
            shown = html_lib.unescape(re.sub(r"<[^>]+>", "", markdown.markdown(element.value)))
            if "x*" in element.value or "_y" in element.value:
                named += 1
                assert "full *x* _y_" in shown or "bitfit *x* _y_" in shown, (page, element.value, shown)
    assert named >= 5
