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
