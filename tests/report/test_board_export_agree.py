"""The board and `harness export` tell the same story for the same store: what the board shows or lets a user
download is what `harness export` writes. Real SQLite stores written through the store API; the board through Streamlit's AppTest."""

from __future__ import annotations

import csv

from sqlalchemy import update

from harness.store.db import Store
from harness.store.schema import RunRecord as R
from tests.report.test_table_claims import board_pages, export, store_of


def with_trivial_scores(url, score) -> None:
    """Every run's trivial baselines ({name: score}) set to `score(record)`."""
    store = Store(url)
    with store.engine.begin() as conn:
        for r in store.records("s"):
            conn.execute(update(R).where(R.id == r.id).values(trivial_scores=score(r)))
    store.engine.dispose()


def downloads(at_run, monkeypatch) -> dict[str, str]:
    """{file name: text} of every download button the board draws in `at_run()`: Streamlit's AppTest keeps a
    button's URL only, so the files are taken as the board hands them to the media storage."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files: dict[str, str] = {}
    keep = MemoryMediaFileStorage.load_and_get_id

    def load_and_get_id(self, data, mimetype, kind, filename=None):
        files[filename] = data.decode() if isinstance(data, bytes) else data
        return keep(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", load_and_get_id)
    at_run()
    return files


def test_the_board_s_leaderboard_csv_has_the_trivial_baseline_row_export_writes(tmp_path, monkeypatch):
    """The board's "Download CSV" of the leaderboard had no "trivial baseline" row, where `harness export
    --format csv` of the same table ends with it (and the Markdown and LaTeX downloads show it): the baseline a
    score must beat was in one file and not in the other."""
    text = "name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nmethods: [full, bitfit]\nseeds: [1, 2]\n"
    url = store_of(tmp_path, [text], lambda c: 60.0 + c.seed + 5 * (c.method == "full"))
    with_trivial_scores(url, lambda r: {"majority": 52.7 if r.task == "rte" else 68.4})
    files = downloads(lambda: list(board_pages(url, monkeypatch, "minilm", "rte", ("Leaderboard",))), monkeypatch)
    board = list(csv.DictReader(files["leaderboard-s.csv"].splitlines()))
    exported = list(csv.DictReader(export(url, "leaderboard", "csv").splitlines()))
    assert [r["method"] for r in exported] == ["full", "bitfit", "trivial baseline"]
    assert (exported[0]["rte_n"], exported[0]["rte_settings"]) == ("2", "1")   # counts, not "2.0" beside the row
    assert board == exported
    assert "| trivial baseline |" in files["leaderboard-s.md"]
    # the LaTeX file is export's too, its caption included (the board's had none)
    assert files["leaderboard-s.tex"] == export(url, "leaderboard", "latex", "--suite", "s", "--model", "minilm")


def test_the_board_s_csv_download_comes_with_the_notes_file_export_writes_beside_it(tmp_path, monkeypatch):
    """The Leaderboard page shows the table's notes (budgets differ, a failed cell, the average refused) and its
    LaTeX and Markdown downloads carry them, but its CSV download had none of them: `harness export -o
    leaderboard-s.csv` writes them to leaderboard-s.notes.txt. The board hands out that file beside its CSV."""
    from tests.helpers import call_cli

    text = ("name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nseeds: [1, 2]\n"
            "methods: [{name: full, learning_rate: [1e-5, 2e-5]}, bitfit]\n")
    url = store_of(tmp_path, [text], lambda c: None if (c.method, c.task) == ("bitfit", "mrpc") else 60.0 + c.seed)
    files = downloads(lambda: list(board_pages(url, monkeypatch, "minilm", "rte", ("Leaderboard",))), monkeypatch)
    out = tmp_path / "leaderboard-s.csv"
    assert call_cli("export", "--db", url, "--table", "leaderboard", "--suite", "s", "--model", "minilm",
                    "-o", out).returncode == 0
    assert files["leaderboard-s.csv"] == out.read_text()
    assert files["leaderboard-s.notes.txt"] == (tmp_path / "leaderboard-s.notes.txt").read_text()
    assert "Tuning budgets differ on rte" in files["leaderboard-s.notes.txt"]


def test_every_format_of_a_leaderboard_with_trivial_baselines_exports(tmp_path):
    """The trivial baseline row's empty counts (whole numbers kept whole beside it) must not take the other
    formats down: the JSON export of a store with trivial scores raised "boolean value of NA is ambiguous"."""
    import json

    text = "name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nmethods: [full, bitfit]\nseeds: [1, 2]\n"
    url = store_of(tmp_path, [text], lambda c: 60.0 + c.seed + 5 * (c.method == "full"))
    with_trivial_scores(url, lambda r: {"majority": 52.7 if r.task == "rte" else 68.4})
    rows = {r["method"]: r for r in json.loads(export(url, "leaderboard", "json"))["rows"]}
    assert rows["trivial baseline"]["rte_mean"] == 52.7 and rows["trivial baseline"]["rte_n"] is None
    assert rows["full"]["rte_n"] == 2
    for fmt in ("markdown", "latex", "csv"):
        assert "trivial baseline" in export(url, "leaderboard", fmt)


def test_the_board_s_runs_page_tells_a_sequence_s_earlier_stage_and_a_joint_run_as_export_does(tmp_path, monkeypatch):
    """An mrpc→rte sequence's mrpc stage carries the sequence's label, "full [after mrpc]": `harness export --table
    runs` says "full [after mrpc]: stage 1 of the sequence", but the board's Runs page (and its run picker) showed
    the bare label beside task mrpc and score 80, read as mrpc trained after mrpc; the joint multi-task row's mean
    over its tasks read as a task score."""
    from tests.report.test_table_claims import row, staged_store

    url = staged_store(tmp_path)
    exported = {(cells[2], cells[8]): cells[3] for cells in (row(line, "s") for line in export(url, "runs").splitlines()
                                                             if line.startswith("| s "))}   # (task, score): method
    ((_, at),) = board_pages(url, monkeypatch, "minilm", "rte", ("Runs",))
    runs = next(d.value for d in at.dataframe if "status" in d.value.columns)
    board = {(task, f"{score:.2f}"): method for task, score, method in zip(runs["task"], runs["score"], runs["method"])}
    assert board == exported, (board, exported)
    assert board[("mrpc", "80.00")] == "full [after mrpc]: stage 1 of the sequence"
    assert any(label.endswith(": the joint run (mean over its tasks)") for label in board.values())
    picker = next(s for s in at.selectbox if s.label == "Run details")
    assert any(": stage 1 of the sequence" in option for option in picker.options), picker.options


def test_the_board_counts_the_settings_of_a_variant_that_failed_everywhere_as_export_does(tmp_path, monkeypatch):
    """bitfit failed on every mrpc run (two rates): the leaderboard shows "– (all failed)" and export's best table
    has its row with "2 (2 failed)" settings, but the caption under the board's leaderboard counted the scored
    cells only: "3 (task, method) cells from 6 hyperparameter settings tried", where export's rows say 4 and 8."""
    import json

    text = ("name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nmethods: [full, bitfit]\nseeds: [1, 2]\n"
            "hparams: {learning_rate: [1e-4, 1e-3]}\n")
    url = store_of(tmp_path, [text], lambda c: None if (c.method, c.task) == ("bitfit", "mrpc") else 60.0 + c.seed)
    rows = json.loads(export(url, "best", "json"))["rows"]
    assert (len(rows), sum(r["settings_tried"] for r in rows)) == (4, 8)
    ((_, at),) = board_pages(url, monkeypatch, "minilm", "rte", ("Leaderboard",))
    captions = [c.value for c in at.main.caption]
    assert any(c.startswith("4 (task, method) cells from 8 hyperparameter settings tried") for c in captions), captions


def test_the_tuning_budget_page_counts_failed_settings_as_export_does(tmp_path, monkeypatch):
    """full tried four rates, two of which failed on every seed; bitfit two; layernorm one, which failed. Export's
    best table says "4 (2 failed)", "2" and "1 (1 failed)", but the board's Tuning budget page showed 2 settings
    each for full and bitfit (those with a score), nothing of layernorm, and called k = 2 a point where "every
    variant had the same tuning budget"."""
    import json

    text = ("name: s\nmodels: [minilm]\ntasks: [rte]\nseeds: [1, 2]\n"
            "methods: [full, {name: bitfit, learning_rate: [1e-4, 1e-3]}, {name: layernorm, learning_rate: 1e-3}]\n"
            "hparams: {learning_rate: [1e-5, 2e-5, 5e-5, 1e-4]}\n")
    scores = {1e-5: None, 2e-5: 70.0, 5e-5: 64.0, 1e-4: None}
    url = store_of(tmp_path, [text], lambda c: scores[c.hparams["learning_rate"]] if c.method == "full"
                   else None if c.method == "layernorm" else 60.0 + 1000 * c.hparams["learning_rate"])
    exported = {r["method_label"]: r for r in json.loads(export(url, "best", "json"))["rows"]}
    ((_, at),) = board_pages(url, monkeypatch, "minilm", "rte", ("Tuning budget",))
    table = at.dataframe[0].value.set_index("method")
    assert list(table.index) == list(exported), table
    for label, r in exported.items():
        assert table.loc[label, "settings tried"] == r["settings_tried"], (label, table)
        assert table.loc[label, "of them failed"] == r["settings_failed"], (label, table)
    assert table.loc["full", "settings with a score"] == 2 and table.loc["layernorm", "settings with a score"] == 0
    caption = next(c.value for c in at.main.caption if c.value.startswith("Expected validation performance"))
    assert "every variant had the same tuning budget" not in caption, caption
    assert "(settings tried: full 4 (2 failed), bitfit 2, layernorm 1 (1 failed))" in caption, caption


def test_the_trade_off_page_says_the_tuning_budgets_differ_as_the_leaderboard_does(tmp_path, monkeypatch):
    """full tried one rate, bitfit six: the leaderboard's footnote says the best of six is biased upward and that
    its scores are selected on dev, but the Trade-off page, which draws the same best-on-dev scores against their
    cost, said neither."""
    rates = "[1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4]"
    text = ("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [{name: full, learning_rate: 1e-4}, "
            f"{{name: bitfit, learning_rate: {rates}}}]\n")
    url = store_of(tmp_path, [text], lambda c: 70.0 if c.method == "full" else 60.0 + 1000 * c.hparams["learning_rate"])
    budgets = next(line for line in export(url).splitlines() if line.startswith("Tuning budgets differ on rte"))
    for task in ("rte", "average over tasks"):
        ((_, at),) = board_pages(url, monkeypatch, "minilm", task, ("Trade-off",))
        captions = [c.value for c in at.main.caption]
        assert budgets in captions, captions
        assert any(c.startswith("Scores on the dev set; each variant's hyperparameter setting") for c in captions)


def test_the_board_s_runs_csv_is_export_s_runs_csv(tmp_path, monkeypatch):
    """The Runs page's "Download CSV" lacked the provenance columns (torch, transformers, git commit, device,
    host) that `harness export --table runs --format csv` writes for the same runs; a filter on the page keeps its
    rows only."""
    text = "name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nmethods: [full, bitfit]\n"
    url = store_of(tmp_path, [text], lambda c: None if (c.task, c.method) == ("mrpc", "bitfit") else 70.0)
    files = downloads(lambda: list(board_pages(url, monkeypatch, "minilm", "rte", ("Runs",))), monkeypatch)
    board = list(csv.DictReader(files["runs-s.csv"].splitlines()))
    exported = list(csv.DictReader(export(url, "runs", "csv").splitlines()))
    assert "env_git_commit" in exported[0] and len(exported) == 4
    assert board == exported


def test_the_runs_page_s_table_and_its_csv_are_one_read_of_the_store(tmp_path, monkeypatch):
    """The Runs page's table came from a read of the store cached for 120 s, its "Download CSV" from one cached for
    5 s: a cell a worker finished after the board had first read the store showed "running" in the table and
    "completed" in the CSV beside it, for up to two minutes."""
    from harness.plan.suite import parse_suite
    from harness.spec.status import Status

    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    first, second = parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\nseeds: [1, 2]\n",
                                "s.yaml").cells()
    done = {"score": 70.0, "metrics": {"accuracy": 70.0}, "trainable_params": 1, "total_params": 10,
            "added_params": 0, "trainable_pct": 10.0, "train_time_s": 1.0}
    store.finish(store.start(first, first.config(), "cmd", None), Status.COMPLETED, done)
    running = store.start(second, second.config(), "cmd", None)
    list(board_pages(url, monkeypatch, "minilm", "rte", ("Leaderboard",)))   # the board reads the store
    store.finish(running, Status.COMPLETED, done)   # then the worker finishes its cell
    store.engine.dispose()
    pages: dict = {}
    files = downloads(lambda: pages.update(board_pages(url, monkeypatch, "minilm", "rte", ("Runs",))), monkeypatch)
    table = sorted(pages["Runs"].dataframe[0].value["status"])
    assert table == sorted(r["status"] for r in csv.DictReader(files["runs-s.csv"].splitlines())), files
    assert table == ["completed", "running"]   # the read the board made first, until it reads the store again
    at = pages["Runs"]   # the run's details are read now: they say the table is older
    (details,) = [s for s in at.selectbox if s.label == "Run details"]
    details.set_value(running.id).run()
    assert [w.value for w in at.warning if "This run is completed now" in w.value], at.warning


def test_a_variant_with_no_finished_setting_on_a_task_has_its_row_in_the_best_table_and_the_tuning_budget_page(
        tmp_path, monkeypatch):
    """bitfit completed on rte; on mrpc its two settings are running, none finished. The leaderboard says "– (not
    finished)" and "Settings not finished on mrpc (bitfit 2 of 2 ...)", but export's best table had no bitfit row
    on mrpc (nor a line on it) and the board's Tuning budget page for mrpc no bitfit row: the variant read as never
    run there in the two views whose settings column is meant to say "+2 unfinished"."""
    import json

    from tests.report.test_table_claims import queued_store, row

    text = ("name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\n"
            "methods: [full, {name: bitfit, learning_rate: [1e-4, 1e-3]}]\n")
    url = queued_store(tmp_path, text, lambda c: "running" if (c.method, c.task) == ("bitfit", "mrpc")
                       else "completed")
    rows = {(r["task"], r["method_label"]): r for r in json.loads(export(url, "best", "json"))["rows"]}
    bitfit = rows[("mrpc", "bitfit")]
    assert (bitfit["mean"], bitfit["settings_tried"], bitfit["settings_unfinished"]) == (None, 0, 2), bitfit
    md = export(url, "best")
    cells = next(r for r in (row(line, "minilm") for line in md.splitlines() if line.startswith("| minilm "))
                 if r[1:3] == ["mrpc", "bitfit"])
    header = row(md, "model")
    assert cells[header.index("score")] == "– (not finished)", md
    assert cells[header.index("settings")] == "0 (+2 unfinished)", md
    assert "– (not finished): the variant's runs of the task are queued or running" in md
    assert [r[1:3] for r in (row(line, "minilm") for line in md.splitlines() if line.startswith("| minilm "))] == [
        ["mrpc", "full"], ["mrpc", "bitfit"], ["rte", "bitfit"], ["rte", "full"]], md   # after the task's scores
    assert "– (not finished)" in export(url, "best", "latex")
    ((_, at),) = board_pages(url, monkeypatch, "minilm", "mrpc", ("Tuning budget",))
    table = at.dataframe[0].value.set_index("method")
    assert table.loc["bitfit", "not finished yet"] == 2 and table.loc["bitfit", "settings tried"] == 0, table
    assert any(c.value.startswith("Not finished yet:") for c in at.main.caption)


def test_a_trade_off_point_carries_the_marks_its_leaderboard_cell_has(tmp_path, monkeypatch):
    """bitfit's rte seed 3 failed: the leaderboard's cell says "61.5 ± 0.7 (2/3 seeds)" and its footnote what that
    means, but the Trade-off page drew the same 61.5 as bitfit's point on rte, and on the average, with nothing
    said: a mean of two of three seeds read as the variant's score. Each point's flags (the best table's `flags`,
    the leaderboard's marks) are said under the plot."""
    text = "name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nmethods: [full, bitfit]\nseeds: [1, 2, 3]\n"
    url = store_of(tmp_path, [text], lambda c: None if (c.method, c.task, c.seed) == ("bitfit", "rte", 3)
                   else 60.0 + c.seed + 5 * (c.method == "full"))
    assert "61.5 ± 0.7 (2/3 seeds)" in export(url), export(url)
    for task in ("rte", "average over tasks", "mrpc"):
        ((_, at),) = board_pages(url, monkeypatch, "minilm", task, ("Trade-off",))
        captions = [c.value for c in at.main.caption]
        said = [c for c in captions if "seeds_missing (2/3 completed)" in c]
        if task == "mrpc":   # bitfit's mrpc point is over its three seeds
            assert not said, captions
        else:
            assert said and "bitfit on rte" in said[0], (task, captions)
