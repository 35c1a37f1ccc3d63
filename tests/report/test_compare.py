"""Paired bootstrap against known cases."""

import os

import numpy as np
import pytest

from harness.analysis.compare import A, B, paired_bootstrap
from harness.spec.tasks import get_task
from harness.stats.significance import Split
from tests.helpers import call_cli


def one_split(preds_a, preds_b, labels) -> list[Split]:
    """One run of each side on one dev split."""
    return [Split("validation", np.asarray(labels), {A: np.asarray(preds_a)[None], B: np.asarray(preds_b)[None]})]


def test_always_right_vs_always_wrong():
    labels = np.array([0, 1] * 50)
    res = paired_bootstrap(get_task("rte"), one_split(labels, 1 - labels, labels), resamples=200)
    # never 0: 200 resamples all on one side give p = 2 / 201, the smallest a two-sided p of B = 200 can be
    assert res.diff == 100.0 and res.ci_low == 100.0 and res.ci_high == 100.0 and res.p_value == 2 / 201


def test_identical_systems():
    rng = np.random.default_rng(1)
    labels, preds = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    res = paired_bootstrap(get_task("rte"), one_split(preds, preds, labels), resamples=200)
    assert res.diff == 0 and res.ci_low == res.ci_high == 0 and res.p_value == 1.0


def test_one_flip_in_a_thousand_is_not_significant_but_a_big_gap_is():
    labels = np.zeros(1000, dtype=int)
    a = labels.copy()
    b = labels.copy()
    b[0] = 1
    res = paired_bootstrap(get_task("rte"), one_split(a, b, labels), resamples=500)
    assert res.diff == pytest.approx(0.1) and res.ci_low >= 0 and res.p_value > 0.05
    b[:100] = 1
    res = paired_bootstrap(get_task("rte"), one_split(a, b, labels), resamples=500)
    assert res.diff == pytest.approx(10.0) and res.ci_low > 7 and res.p_value < 0.01


def test_non_decomposable_metric_is_recomputed_per_resample():
    labels = np.array([1, 0] * 100)
    res = paired_bootstrap(get_task("mrpc"), one_split(labels, np.ones(200, dtype=int), labels), resamples=100)
    # perfect: F1 100, acc 100 -> 100; all-positive: F1 66.7, acc 50 -> 58.3
    assert res.score_a == 100.0 and res.score_b == pytest.approx(58.333, abs=0.01)


def store_of(tmp_path, task: str, seeds, preds_of) -> str:
    """A store of full and bitfit on `task` (minilm), one run per seed; preds_of(cell) -> the arrays of its
    predictions.npz ({split}_idx, {split}_pred, {split}_label for each dev split)."""
    from harness.plan.suite import parse_suite
    from harness.spec.status import Status
    from harness.store.db import Store

    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    text = f"name: s\nmodels: [minilm]\ntasks: [{task}]\nmethods: [full, bitfit]\nseeds: {list(seeds)}\n"
    for cell in parse_suite(text, "s.yaml").cells():
        out = str(tmp_path / "out" / cell.key)
        claim = store.start(cell, cell.config(), "cmd", out)
        store.finish(claim, Status.COMPLETED, {"score": 70.0, "best_score": 70.0, "metrics": {"accuracy": 70.0},
                                               "trainable_params": 100, "total_params": 1000, "added_params": 0,
                                               "trainable_pct": 10.0, "train_time_s": 1.0})
        os.makedirs(out)
        np.savez(os.path.join(out, "predictions.npz"), **preds_of(cell))
    store.engine.dispose()
    return url


def run_of(url, method, seed):
    from harness.store.db import Store

    return next(r for r in Store(url).records() if r.method == method and r.seed == seed)


def test_seeds_are_not_pooled_into_more_examples(tmp_path):
    """Three seeds of the same predictions carry one seed's information: compare A B --task T resampled the 831
    pooled (seed, example) rows as if independent, a CI √3 too narrow. Each replicate now draws the
    277 dev examples once and scores every seed on them: the same interval as one run pair."""
    from harness.analysis.compare import compare_runs, compare_variants
    from harness.store.db import Store

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 277)
    preds = {m: np.where(rng.random(277) < p, labels, 1 - labels) for m, p in (("full", 0.66), ("bitfit", 0.6))}
    url = store_of(tmp_path, "rte", [1, 2, 3], lambda c: {"validation_idx": np.arange(277),
                                                          "validation_pred": preds[c.method],
                                                          "validation_label": labels})
    pooled, seeds = compare_variants(Store(url), None, "rte", "full", "bitfit")
    one = compare_runs(run_of(url, "full", 1), run_of(url, "bitfit", 1))
    assert seeds == 3 and pooled.n_examples == one.n_examples == 277
    assert (pooled.ci_low, pooled.ci_high, pooled.p_value) == pytest.approx((one.ci_low, one.ci_high,
                                                                             one.p_value))
    r = call_cli("compare", "full", "bitfit", "--task", "rte", "--db", url)
    assert r.returncode == 0, r.stderr
    assert "3 seed pair(s) (scores: mean over the seeds): 277 paired dev examples" in r.stdout and "two-sided" in r.stdout, r.stdout


def test_a_variant_s_score_is_the_mean_of_its_seeds_scores(tmp_path):
    """MRPC's F1 of the pooled seeds is not the mean of the seeds' F1: compare reported the former, the tables
    the latter."""
    from harness.analysis.compare import compare_variants
    from harness.store.db import Store
    from harness.tasks.kinds import kind_of

    task = get_task("mrpc")
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 100)
    preds = {(m, s): np.where(rng.random(100) < p, labels, 1 - labels) * (rng.random(100) < q)
             for m, p in (("full", 0.8), ("bitfit", 0.7)) for s, q in ((1, 1.0), (2, 0.3))}
    url = store_of(tmp_path, "mrpc", [1, 2], lambda c: {"validation_idx": np.arange(100),
                                                        "validation_pred": preds[(c.method, c.seed)],
                                                        "validation_label": labels})
    res, _ = compare_variants(Store(url), None, "mrpc", "full", "bitfit")
    mean = {m: np.mean([kind_of(task).sample_score(task, preds[(m, s)], labels) for s in (1, 2)])
            for m in ("full", "bitfit")}
    assert (res.score_a, res.score_b) == pytest.approx((mean["full"], mean["bitfit"]))
    assert res.n_examples == 100


def test_every_dev_split_is_compared(tmp_path):
    """MNLI's score is the mean over matched and mismatched: compare read only matched, where the two variants
    predict alike, and found no difference."""
    from harness.analysis.compare import compare_runs, compare_variants
    from harness.store.db import Store

    rng = np.random.default_rng(2)
    n = 300
    matched, mismatched = rng.integers(0, 3, n), rng.integers(0, 3, n)
    same = np.where(rng.random(n) < 0.7, matched, (matched + 1) % 3)
    right = {"full": rng.random(n) < 0.85, "bitfit": rng.random(n) < 0.55}
    other = {m: np.where(r, mismatched, (mismatched + 1) % 3) for m, r in right.items()}
    url = store_of(tmp_path, "mnli", [1], lambda c: {
        "validation_matched_idx": np.arange(n), "validation_matched_pred": same,
        "validation_matched_label": matched,
        "validation_mismatched_idx": np.arange(n), "validation_mismatched_pred": other[c.method],
        "validation_mismatched_label": mismatched})
    score = {m: 50 * (np.mean(same == matched) + np.mean(right[m])) for m in right}
    for res in (compare_variants(Store(url), None, "mnli", "full", "bitfit")[0],
                compare_runs(run_of(url, "full", 1), run_of(url, "bitfit", 1))):
        assert res.n_examples == 2 * n
        assert (res.score_a, res.score_b) == pytest.approx((score["full"], score["bitfit"]))
        assert res.diff == pytest.approx(score["full"] - score["bitfit"]) and res.ci_low > 0 and res.p_value < 0.01


def test_the_column_of_compare_counts_a_multitask_seed_that_failed_as_the_tables_do(tmp_path):
    """A multi-task cell's seed 2 failed (a failed cell has no member rows: its joint row stands for them).
    `harness export` said the member scores are over 1 of 2 seeds; `harness compare --task rte`, which kept the
    rows of task rte only before selecting, lost the joint row and printed seeds "1" and no flag."""
    import json

    from harness.plan.suite import parse_suite
    from harness.spec.status import Status
    from harness.store.db import Store

    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    text = "name: s\nmodels: [minilm]\ntasks: [rte, {multitask: [sst2, rte]}]\nmethods: [full]\nseeds: [1, 2]\n"
    done = {"trainable_params": 100, "total_params": 1000, "added_params": 0, "trainable_pct": 10.0,
            "train_time_s": 1.0}
    for cell in parse_suite(text, "s.yaml").cells():
        claim = store.start(cell, cell.config(), "cmd", None)
        if cell.seed == 2 and "+" in cell.task:
            store.finish(claim, Status.FAILED, {"error": "FloatingPointError: loss is not finite"})
            continue
        members = [(t, {**done, "task": t, "regime": "multitask_member", "stage": i, "score": s})
                   for i, (t, s) in enumerate((("sst2", 90.0), ("rte", 60.0)))] if "+" in cell.task else []
        store.finish(claim, Status.COMPLETED, {**done, "score": 75.0}, members)
    store.engine.dispose()
    r = call_cli("export", "--db", url, "--table", "best", "--format", "json")
    exported = {x["method_label"]: x for x in json.loads(r.stdout)["rows"] if x["task"] == "rte"}
    joint = next(label for label in exported if "multitask" in label)
    assert (exported[joint]["n_seeds"], exported[joint]["seeds_planned"]) == (1, 2)
    r = call_cli("compare", "--task", "rte", "--db", url, "--resamples", "10")
    assert r.returncode == 0, r.stderr
    line = next(line for line in r.stdout.splitlines() if line.startswith(joint))
    assert " 1/2 " in line and "seeds_missing (1/2 completed)" in line, r.stdout


def squad_run(out, ids, rng) -> str:
    """A SQuAD run's saved predictions (predictions.npz, predictions.json) on the questions `ids`, random F1."""
    from harness.tasks.kinds import SpanPredictions, kind_of

    task = get_task("squad")
    out.mkdir()
    f1 = rng.random(len(ids))
    kind_of(task).save_predictions(task, str(out), {"validation": SpanPredictions(
        ids, {q: "an answer" for q in ids}, {}, (f1 > 0.9).astype(float), f1)})
    return str(out)


class SquadRun:
    """What compare_runs reads of a stored run."""
    def __init__(self, i, out):
        self.id, self.task, self.output_dir = i, "squad", out


def test_squad_runs_on_other_questions_are_not_paired(tmp_path):
    """SQuAD's predictions.npz pairs questions by their position in the dev split and keeps EM, not a gold
    answer, in its label column, so nothing checked that two runs scored the same questions: a run on the offline
    split's dev (articles 38-47 of the v1.1 dev set) and one on the official dev (the hub) were paired question 0
    with question 0, and compared as if on the same evidence. The question ids of predictions.json now decide."""
    from harness.analysis.compare import compare_runs
    from harness.spec.errors import InputError
    from harness.stats.significance import load_column

    task = get_task("squad")
    rng = np.random.default_rng(4)
    offline = [f"offline{i}" for i in range(40)]
    a, b = squad_run(tmp_path / "a", offline, rng), squad_run(tmp_path / "b", offline[:30], rng)   # B capped at 30
    hub = squad_run(tmp_path / "hub", [f"official{i}" for i in range(60)], rng)   # other questions, same positions
    splits, untested = load_column(task, {"A": [a], "B": [b]})
    assert untested == [] and len(splits[0].labels) == 30
    splits, untested = load_column(task, {"A": [a], "hub": [hub]})
    assert untested == ["hub"]
    with pytest.raises(InputError, match="question ids"):
        compare_runs(SquadRun(1, a), SquadRun(2, hub))
    assert compare_runs(SquadRun(1, a), SquadRun(2, b)).n_examples == 30


def test_a_squad_run_without_its_question_ids_is_not_paired(tmp_path):
    """predictions.npz alone cannot say which questions a SQuAD run scored (it holds positions and EM): a run whose
    predictions.json was not there (an older run, a partial copy) was paired by position, unchecked."""
    import os

    from harness.analysis.compare import compare_runs
    from harness.spec.errors import InputError
    from harness.stats.significance import load_column

    rng = np.random.default_rng(5)
    questions = [f"offline{i}" for i in range(40)]
    a, b = squad_run(tmp_path / "a", questions, rng), squad_run(tmp_path / "b", questions, rng)
    assert load_column(get_task("squad"), {"A": [a], "B": [b]})[1] == []   # both with their ids: compared
    os.remove(os.path.join(b, "predictions.json"))
    assert load_column(get_task("squad"), {"A": [a], "B": [b]})[1] == ["B"]
    assert load_column(get_task("squad"), {"B": [b], "A": [a]})[1] == ["B"]   # first or not
    with pytest.raises(InputError, match="question ids"):
        compare_runs(SquadRun(1, a), SquadRun(2, b))


def squad_store(tmp_path) -> str:
    """A store of two SQuAD variants (full the column's best), two seeds each, their predictions saved in
    tmp_path/{method}{seed}: runs 1 and 3 are seed 1's."""
    from harness.plan.suite import parse_suite
    from harness.spec.status import Status
    from harness.store.db import Store

    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    rng = np.random.default_rng(7)
    questions = [f"q{i}" for i in range(40)]
    for cell in parse_suite("name: q\nmodels: [minilm]\ntasks: [squad]\nmethods: [full, {name: houlsby, size: 8}]\n"
                            "seeds: [1, 2]\n", "q.yaml").cells():
        out = squad_run(tmp_path / f"{cell.method}{cell.seed}", questions, rng)
        claim = store.start(cell, cell.config(), "cmd", out)
        score = 50.0 + cell.seed - 5 * (cell.method == "houlsby")
        store.finish(claim, Status.COMPLETED, {"score": score, "metrics": {"f1": score}})
    store.engine.dispose()
    return url


def assert_run_3_left_out(tmp_path, url) -> None:
    """`harness compare 1 3` refuses the pair in one line; the best table leaves houlsby untested."""
    import json

    from tests.helpers import assert_refused

    assert_refused(call_cli("compare", "1", "3", "--db", url, "--resamples", "50"),
                   "error: run 3 (" + str(tmp_path / "houlsby1") + "): saved predictions of some squad dev split")
    r = call_cli("export", "--db", url, "--table", "best", "--format", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {x["method"]: x for x in json.loads(r.stdout)["rows"]}
    assert rows["full"]["tested"] is True and rows["houlsby"]["tested"] is False, rows


@pytest.mark.parametrize("text", ["[" * 100_000, "{not json", "42"], ids=["nested_100000_deep", "not_json", "number"])
def test_a_squad_run_whose_question_ids_do_not_parse_is_not_paired(tmp_path, text):
    """A predictions.json that is not the object of question ids save_predictions writes is read as a missing one:
    `harness compare` and `harness export --table best` ended with a traceback (RecursionError on 100,000 '[',
    JSONDecodeError, TypeError)."""
    url = squad_store(tmp_path)
    (tmp_path / "houlsby1" / "predictions.json").write_text(text)
    assert_run_3_left_out(tmp_path, url)


@pytest.mark.parametrize("content", [b"suite,model,task\n", b"PK\x03\x04" + bytes(40), "no pred"],
                         ids=["a_csv", "truncated_zip", "without_its_predictions_array"])
def test_a_run_whose_predictions_npz_does_not_load_is_not_paired(tmp_path, content):
    """A predictions.npz that does not load (an export's CSV written over it, a truncated copy) or lacks an array:
    `harness compare` and `harness export --table best` ended with np.load's ValueError (or BadZipFile, KeyError)
    as a traceback; now as a run without the file."""
    url = squad_store(tmp_path)
    path = tmp_path / "houlsby1" / "predictions.npz"
    if content == "no pred":   # the split's positions and labels, not its predictions
        arrays = {k: v for k, v in np.load(path).items() if not k.endswith("_pred")}
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        path.write_bytes(content)
    assert_run_3_left_out(tmp_path, url)


def test_export_does_not_write_over_a_runs_saved_predictions(tmp_path):
    """`harness export --table best -o RUN/predictions.npz` wrote the CSV over the predictions the table had just
    read (exit 0), and every later test of that run was left out; by a link, or a SQuAD run's predictions.json, the
    same. Refused in one line, nothing written."""
    import shutil

    from tests.helpers import assert_refused

    url = squad_store(tmp_path)
    shutil.copytree(tmp_path / "houlsby1", tmp_path / "before")
    (tmp_path / "link.csv").symlink_to(tmp_path / "houlsby1" / "predictions.npz")
    for out in (tmp_path / "houlsby1" / "predictions.npz", tmp_path / "link.csv",
                tmp_path / "houlsby1" / ".." / "houlsby1" / "predictions.json"):
        assert_refused(call_cli("export", "--db", url, "--table", "best", "-o", out),
                       f"error: -o: {out} is the saved predictions of a stored run ({tmp_path / 'houlsby1'}), which "
                       f"the tables read")
    for name in ("predictions.npz", "predictions.json"):
        assert (tmp_path / "houlsby1" / name).read_bytes() == (tmp_path / "before" / name).read_bytes()
    assert sorted(os.listdir(tmp_path / "houlsby1")) == sorted(os.listdir(tmp_path / "before"))


def test_export_does_not_write_over_any_file_of_a_stored_run(tmp_path):
    """Only a run's predictions were refused: `harness export -o RUN/record.json` (or its error.log, a file of its
    adapter) wrote the CSV over it, exit 0. Every file already in a stored run's folder, at any depth and by a
    link too, is refused in one line, nothing written."""
    from tests.helpers import assert_refused

    url = squad_store(tmp_path)
    run = tmp_path / "houlsby1"
    (run / "adapter").mkdir()
    files = {run / "record.json": b'{"score": 45.0}\n', run / "error.log": b"Traceback ...\n",
             run / "adapter" / "adapter_model.safetensors": b"weights"}
    for path, content in files.items():
        path.write_bytes(content)
    (tmp_path / "link").symlink_to(run)
    for out in [*files, tmp_path / "link" / "error.log"]:
        assert_refused(call_cli("export", "--db", url, "-o", out),
                       f"error: -o: {out} is a file of a stored run ({run}); writing the export there would destroy it")
    assert {path: path.read_bytes() for path in files} == files


def test_export_writes_no_new_file_into_a_stored_runs_folder(tmp_path):
    """`harness export -o RUN/best.csv` (or RUN/adapter/runs.csv, a folder a retry of the cell replaces) wrote the
    export the first time, exit 0, and refused the same command the second time as a file of the run: now refused
    both times, in one line, nothing written there (its notes neither); a file beside the runs' folders is
    written, and written again."""
    from tests.helpers import assert_refused

    url = squad_store(tmp_path)
    run = tmp_path / "houlsby1"
    (run / "adapter").mkdir()
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for out in (run / "best.csv", run / "adapter" / "runs.csv", run / "predictions.npz.csv"):
        for _ in range(2):
            assert_refused(call_cli("export", "--db", url, "--table", "best", "-o", out),
                           f"error: -o: {out} is in the folder of a stored run ({run}), which holds the run's own "
                           f"files")
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    for _ in range(2):
        r = call_cli("export", "--db", url, "--table", "best", "-o", tmp_path / "best.csv")
        assert r.returncode == 0 and (tmp_path / "best.csv").read_text().startswith("suite,"), r.stderr


OFFLINE_SQUAD = {"train": "file:/data/SQuAD/train-v1.1.json:sha256:"
                          "a229f4d76b8be65de2a492c5853dca626d80175b32d8aa37c5b21b62002a97d7",
                 "validation": "file:/data/SQuAD/dev-v1.1.json:sha256:"
                               "2c9f5b3535e573db0f473120c74a2e289cf1271a07a29c5ae659bb20006df369"}
HUB_SQUAD = {"train": "hub:rajpurkar/squad/train:f1", "validation": "hub:rajpurkar/squad/validation:f2"}


@pytest.mark.parametrize("sources, noted", [(OFFLINE_SQUAD, True), (HUB_SQUAD, False)])
def test_a_comparison_of_squad_scores_says_what_split_they_are_on(tmp_path, sources, noted):
    """The offline SQuAD folder's note (a split of the v1.1 dev set, not SQuAD's training set) goes wherever its
    scores show: `harness compare A B` and `--task squad A B` printed two F1 scores on it with nothing said. Runs
    that read the official sets (here the hub) get no note, as in the tables."""
    from harness.plan.suite import parse_suite
    from harness.spec.status import Status
    from harness.store.db import Store

    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    rng = np.random.default_rng(6)
    questions = [f"q{i}" for i in range(40)]
    ids = []
    for cell in parse_suite("name: q\nmodels: [minilm]\ntasks: [squad]\nmethods: [full, {name: houlsby, size: 8}]\n",
                            "q.yaml").cells():
        out = squad_run(tmp_path / cell.method, questions, rng)
        claim = store.start(cell, cell.config(), "cmd", out)
        store.finish(claim, Status.COMPLETED, {"score": 50.0, "metrics": {"f1": 50.0},
                                               "extra": {"data_sources": {"squad": sources}}})
        ids.append(str(claim.id))
    store.engine.dispose()
    note = "squad: trained or evaluated on files other than the official v1.1 ones"
    for args in (ids, ["full", "houlsby(size=8,non_linearity=swish)", "--task", "squad", "--suite", "q"]):
        proc = call_cli("compare", *args, "--db", url, "--resamples", "50")
        assert proc.returncode == 0, proc.stderr
        assert "40 paired dev examples" in proc.stdout
        assert (note in proc.stdout) is noted, proc.stdout


def test_an_ablation_of_a_squad_run_says_what_split_its_scores_are_on():
    """`harness ablate` prints a run's dev score with and without adapters: on the offline SQuAD split, with its
    note, as the tables; on the official sets, without."""
    from types import SimpleNamespace

    from harness.report.text import format_ablation

    payload = {"num_layers": 2, "baseline": 40.0, "recorded_score": 40.0, "spans": [[0, 0, 38.0], [0, 1, 30.0]]}
    note = "squad: trained or evaluated on files other than the official v1.1 ones"
    for sources, noted in ((OFFLINE_SQUAD, True), (HUB_SQUAD, False)):
        rec = SimpleNamespace(id=3, task="squad", method_label="houlsby", extra={"data_sources": {"squad": sources}})
        text = format_ablation(rec, payload)
        assert "dev score 40.00" in text and (note in text) is noted, text


def test_runs_the_store_keeps_no_folder_for_are_named_without_none(tmp_path):
    """A store written without output folders: the refusal read `run 1 (None) and run 4 (None): saved predictions
    of some rte dev split not on this machine`."""
    from harness.store.db import Store
    from harness.store.schema import RunRecord
    from tests.helpers import assert_refused, fixture_store

    url = fixture_store.build(tmp_path / "fx.db")   # no predictions_dir: no run has an output folder
    assert_refused(call_cli("compare", "1", "4", "--db", url),
                   "error: run 1 and run 4: the store keeps no output folder for them: no saved predictions")
    url = fixture_store.build(tmp_path / "fx2.db", predictions_dir=str(tmp_path / "out"))
    store = Store(url)
    with store.engine.begin() as conn:   # one side's folder only
        conn.execute(RunRecord.__table__.update().where(RunRecord.id == 4).values(output_dir=None))
    store.engine.dispose()
    assert_refused(call_cli("compare", "1", "4", "--db", url),
                   "error: run 4: the store keeps no output folder for it: no saved predictions to compare")


def test_resamples_on_which_the_sides_tie_are_counted_as_ties(monkeypatch):
    """Three seeds: a side's per-example score is a third, so on a resample where both sides have as many examples
    right their sums differed in the last bits (±1.4e-14) and a tie fell on either side of zero: compare's p was
    0.004 where the draws' exact counts give 0.008 (the column's one-sided p 0.002 for 0.004). Both are checked
    against the exact integer sums of the same draws."""
    from harness.stats import significance

    drawn, real = [], significance.counts
    monkeypatch.setattr(significance, "counts", lambda idx, n: drawn.append(real(idx, n)) or drawn[-1])
    rng = np.random.default_rng(27)
    labels = rng.integers(0, 2, 300)
    right = {A: rng.random((3, 300)) < 0.8, B: rng.random((3, 300)) < 0.76}
    split = Split("validation", labels, {s: np.where(r, labels, 1 - labels) for s, r in right.items()})
    res = paired_bootstrap(get_task("rte"), [split], resamples=499)
    exact = drawn[0] @ (right[A].sum(0).astype(int) - right[B].sum(0))   # examples right over the seeds, A - B
    assert np.sum(exact == 0) == 1
    assert res.p_value == 2 * (1 + min(np.sum(exact <= 0), np.sum(exact >= 0))) / 500 == 0.008
    _, reps = significance.replicates(get_task("rte"), [split], 499)   # the same draws (fixed seed)
    assert significance.p_below(reps[A], reps[B]) == (1 + np.sum(exact <= 0)) / 500


def test_runs_scored_on_different_dev_examples_say_that_their_scores_are_on_the_shared_ones(tmp_path):
    """full was scored on 150 of RTE's 200 dev examples (a max_eval_samples cap), bitfit on all 200: compare paired
    the 150 and printed bitfit's score on them, not its stored one, with nothing but "150 paired dev examples" to
    tell (the tables' footnote names such a column). A line says what each side was scored on."""
    labels = np.random.default_rng(6).integers(0, 2, 200)
    kept = {"full": np.arange(150), "bitfit": np.arange(200)[::-1]}
    url = store_of(tmp_path, "rte", [1], lambda c: {"validation_idx": kept[c.method],
                                                    "validation_pred": labels[kept[c.method]],
                                                    "validation_label": labels[kept[c.method]]})
    a, b = run_of(url, "full", 1).id, run_of(url, "bitfit", 1).id
    note = "on different dev examples (A: 150, B: 200): the scores above are both sides' on the 150 they share"
    for args in ([a, b], ["full", "bitfit", "--task", "rte"]):
        r = call_cli("compare", *args, "--db", url)
        assert r.returncode == 0 and "150 paired dev examples" in r.stdout and note in r.stdout, r.stdout + r.stderr
    assert note.replace("A: 150, B: 200", "A: 200, B: 150") in call_cli("compare", b, a, "--db", url).stdout


def test_sides_whose_runs_differ_among_themselves_are_not_written_as_equal_counts():
    """Each side's count is the most any of its seeds was scored on: A's and B's seeds scored on 100 and 90
    examples (90 shared) read "different dev examples (A: 100, B: 100)", a sentence its numbers contradict."""
    from types import SimpleNamespace

    from harness.report.text import examples_note

    line = examples_note(SimpleNamespace(scored=(100, 100), n_examples=90))
    assert "up to 100 on each side" in line and "the 90 they share" in line, line
    assert "(A: 150, B: 200)" in examples_note(SimpleNamespace(scored=(150, 200), n_examples=150))
    assert examples_note(SimpleNamespace(scored=(90, 90), n_examples=90)) is None


def test_a_resample_count_that_never_finishes_is_refused(tmp_path):
    """--resamples 99999999999999999999 ran with no output until killed (1e8 already over a minute on 200 dev
    examples); a million give p-values to 1e-6."""
    from tests.helpers import assert_refused

    assert_refused(call_cli("compare", "1", "2", "--db", f"sqlite:///{tmp_path / 'h.db'}", "--resamples",
                            "99999999999999999999"), "--resamples: must be at most 1000000")
    assert list(tmp_path.iterdir()) == []
