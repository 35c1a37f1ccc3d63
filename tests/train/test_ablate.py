"""`harness ablate` re-scores a stored run as the run was scored: its precision, its dev examples, one matrix per
run. One tiny STS-B run under bf16 autocast (a regression score, sensitive to rounding), trained for real
(subprocess, SQLite), then ablated through the CLI."""

import pytest

from tests.helpers import assert_refused, run_cli, write_small_glue, write_suite
from harness.store.db import Store

KIND = "adapter_ablation"


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, tiny_bert, small_glue):
    work = tmp_path_factory.mktemp("ablate")
    suite = write_suite(work / "s.yaml", f"""
name: abl
models: ["{tiny_bert}"]
tasks: [stsb]
methods: [{{name: houlsby, size: 4, learning_rate: 1e-3}}]
budgets: [{{epochs: 1}}]
hparams: {{batch_size: 8, mixed_precision: bf16}}
""")
    db = f"sqlite:///{work / 'h.db'}"
    proc = run_cli("run", suite, "--db", db, "--output-dir", work / "out", "--data-dir", small_glue, cwd=work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    store = Store(db)
    (rec,) = store.records()
    assert rec.env["mixed_precision"] == "bf16"
    return {"work": work, "db": db, "store": store, "rec": rec, "data": small_glue}


def ablate(run, *extra):
    return run_cli("ablate", run["rec"].cell_key, "--db", run["db"], "--cache-dir", run["work"] / "cache", *extra,
                   cwd=run["work"])


def test_no_adapter_removed_is_the_recorded_score_in_the_runs_precision(bf16_run):
    """The span "none" is the run itself: scored in fp32, a bf16-trained run's STS-B score read 30.7 against the
    42.1 it recorded, and every change in the matrix was measured from that other number."""
    proc = ablate(bf16_run, "--data-dir", bf16_run["data"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    (analysis,) = bf16_run["store"].analyses("abl", KIND)
    assert analysis.payload["baseline"] == pytest.approx(bf16_run["rec"].score, rel=1e-6)


def test_other_dev_data_is_refused_before_anything_is_stored(bf16_run, tmp_path):
    """Another data folder (other bytes under the same names) gave the matrix of other dev examples, stored as
    this run's: refused in one line, nothing written."""
    other = write_small_glue(tmp_path / "glue", n_dev=15)
    before = len(bf16_run["store"].analyses("abl", KIND))
    assert_refused(ablate(bf16_run, "--data-dir", other), "is not the data it was scored on")
    assert len(bf16_run["store"].analyses("abl", KIND)) == before
    # the same bytes in another folder are the same data
    same = write_small_glue(tmp_path / "copy")
    proc = ablate(bf16_run, "--data-dir", same)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_ablating_again_keeps_one_matrix_per_run(bf16_run):
    """Each `harness ablate` stores a row; the tables read the newest of each run: the export listed every span
    of the same run once per time it was ablated (and the board drew the oldest)."""
    import csv
    import io

    from sqlalchemy import func, select

    from harness.store.schema import AnalysisRecord

    for _ in range(2):
        assert ablate(bf16_run, "--data-dir", bf16_run["data"]).returncode == 0
    (newest,) = bf16_run["store"].analyses("abl", KIND)
    with bf16_run["store"].engine.connect() as conn:   # every row is kept; the newest is the one read
        assert newest.id == conn.execute(select(func.max(AnalysisRecord.id))).scalar() > 1
    proc = run_cli("export", "--db", bf16_run["db"], "--table", "ablation", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert sorted((r["first_layer"], r["last_layer"]) for r in rows) == [("0", "0"), ("0", "1"), ("1", "1")]


def test_a_run_named_twice_is_ablated_and_stored_once(bf16_run):
    """`harness ablate 4 4` (or a run's id and its cell key) re-scored every span twice and stored two rows of the
    same run; once now."""
    from sqlalchemy import func, select

    from harness.store.schema import AnalysisRecord

    def rows():
        with bf16_run["store"].engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(AnalysisRecord)).scalar()

    before = rows()
    rec = bf16_run["rec"]
    proc = run_cli("ablate", rec.cell_key, str(rec.id), "--db", bf16_run["db"], "--cache-dir",
                   bf16_run["work"] / "cache", "--data-dir", bf16_run["data"], cwd=bf16_run["work"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rows() == before + 1 and proc.stdout.count("first\\last") == 1
