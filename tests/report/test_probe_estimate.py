"""Time estimates of linear probes, whose frozen encoder runs once per feature set and is cached for every later
cell (harness/train/features.py): `harness estimate`, `harness status`, the board's time left and the prediction a
worker writes at its claim charge that pass once, not to every epoch of every cell. Hand-computed figures on real
stores (SQLite and PostgreSQL), and a real run of a tiny model."""

from __future__ import annotations

import json

import pytest

from harness.board.grid_page import estimate as board_estimate
from harness.plan.suite import parse_suite
from harness.spec.status import Status
from harness.store.db import Store
from harness.store.lease import Worker, utcnow
from tests.helpers import call_cli, run_cli, write_suite

PAST = """
name: past
models: [minilm]
tasks: [rte]
methods: [linear_probe]
seeds: [1, 2, 3]
budgets: [{epochs: 1, max_train_samples: 100, max_eval_samples: 50}]
hparams: {batch_size: 10}
"""
NEXT = """
name: next
models: [minilm]
tasks: [rte]
methods: [{name: linear_probe, pooling: [cls, mean]}, full]
seeds: [3, 4]
budgets: [{epochs: 2, max_train_samples: 100, max_eval_samples: 50}]
hparams: {batch_size: 10}
"""


def _worker() -> Worker:
    return Worker(worker_id="w/1/-/w", host="w", pid=1, slurm_job_id=None, slurm_array_task_id=None,
                  started_at=utcnow())


def _finish(store, cell, train_s: float, eval_s: float, device: str = "CPU: Test x2", extra: dict | None = None):
    """A completed run of one epoch over 100 training examples, 50 dev examples scored once."""
    claim = store.start(cell, cell.config(), "test", None, worker=_worker())
    store.finish(claim, Status.COMPLETED, {
        "train_time_s": train_s, "train_examples_per_s": 100 / train_s, "eval_time_s": eval_s, "steps": 10,
        "epochs_done": 1.0, "train_examples": 100, "eval_examples": 50, "env": {"device": device}, "extra": extra})


def _ff(extract: float, eval_extract: float, computed: bool) -> dict:
    return {"frozen_features": {
        "pooling": "cls", "extract_s": extract, "eval_extract_s": eval_extract, "splits_cached": 0 if computed else 2,
        "splits_computed": 2 if computed else 0, "train_splits_computed": int(computed),
        "train_splits_cached": int(not computed), "eval_splits_computed": int(computed),
        "eval_splits_cached": int(not computed)}}


@pytest.fixture()
def probes(db_url, tmp_path, monkeypatch):
    """Two completed probe cells of PAST (seed 3 queued, pending) on "CPU: Test x2", each 100 RTE examples for one
    epoch and 50 scored once. Seed 1 computed the features: its encoder took 5.0 s over the 100 training examples
    and 2.5 s over the 50 dev ones (0.05 s per example each), its head 1.0 s and 1.0 s (0.01 s per training
    example, 0.02 s per dev example). Seed 2 found them cached (10 ms each) and its head took the same. Three
    full fine-tuning runs of another suite on "GPU: Fake" make that the store's main device."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)   # sizes from the stored runs, not the files
    store = Store(db_url)
    cells = {c.seed: c for c in parse_suite(PAST, "past.yaml").cells()}
    _finish(store, cells[1], 1.0 + 5.0, 1.0 + 2.5, extra=_ff(5.0, 2.5, computed=True))
    _finish(store, cells[2], 1.0 + 0.01, 1.0 + 0.01, extra=_ff(0.01, 0.01, computed=False))
    # more runs on another device, in another suite: the store's main device is not this suite's
    for cell in parse_suite(PAST.replace("past", "gpu").replace("linear_probe", "full"), "gpu.yaml").cells():
        _finish(store, cell, 0.5, 0.25, device="GPU: Fake")
    store.enqueue([cells[3]])
    return write_suite(tmp_path / "past.yaml", PAST), write_suite(tmp_path / "next.yaml", NEXT), db_url, store


def test_estimate_charges_the_encoder_pass_to_the_first_cell_of_each_feature_set(probes):
    _, next_suite, url, _ = probes
    r = call_cli("estimate", next_suite, "--from-store", url, "--json", "--device", "CPU")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    cells = {(c["label"].split()[2], c["label"].split()[-1]): c for c in e["cells"]}
    # each cell: 2 epochs of 100 = 200 training examples, 2 evaluations of 50 = 100 scored. The head: 200 x 0.01 +
    # 100 x 0.02 = 4 s. cls features: computed by the stored seed 1 (same model, task, caps, max_length): 4 s each
    for seed in ("seed=3", "seed=4"):
        assert cells[("linear_probe(pooling=cls)", seed)]["seconds"] == pytest.approx(4.0)
        assert cells[("linear_probe(pooling=cls)", seed)]["encoder_pass_s"] is None
    # mean pooling: never computed. Its first cell runs the encoder once: 100 x 0.05 + 50 x 0.05 = 7.5 s more
    first, second = cells[("linear_probe(pooling=mean)", "seed=3")], cells[("linear_probe(pooling=mean)", "seed=4")]
    assert first["seconds"] == pytest.approx(11.5) and first["encoder_pass_s"] == pytest.approx(7.5)
    assert second["seconds"] == pytest.approx(4.0) and second["encoder_pass_s"] is None
    assert first["level"] == "exact" and first["runs"] == 2   # the head's rate from both runs
    # full fine-tuning (model level: only probes stored) runs its encoder at every step: the probes' pass per
    # example joins each epoch's: 200 x (0.01 + 0.05) + 100 x (0.02 + 0.05) = 19 s, ± the 60% floor
    full = cells[("full", "seed=3")]
    assert full["level"] == "model" and full["seconds"] == pytest.approx(19.0)
    assert full["plus_minus"] == pytest.approx(0.6 * 19.0)
    assert e["seconds"] == pytest.approx(4 + 4 + 11.5 + 4 + 19 + 19)
    text = call_cli("estimate", next_suite, "--from-store", url, "--device", "CPU").stdout
    assert text.count("its frozen encoder's one pass 7.5 s") == 1, text


def test_status_and_the_board_count_the_probes_left_without_the_pass_already_made(probes):
    past_suite, _, url, store = probes
    status = json.loads(call_cli("status", past_suite, "--db", url, "--json").stdout)["estimate"]
    (group,) = status["groups"]
    # seed 3 reads the features seed 1 cached: its head alone, 100 x 0.01 + 50 x 0.02 = 2 s (the completed cells'
    # mean, 9.5 and 2.02 s, would say 5.76 s), on this suite's device (the store's main one, the GPU, not)
    assert group["left"] == 1 and group["source"] == "stored" and group["work_s"] == pytest.approx(2.0)
    assert status["left_s"] == pytest.approx(2.0)
    # the board, from the store's rows alone (every cell of the suite is queued here): the same
    board = board_estimate(store, "past", 300.0)
    assert board["left_s"] == pytest.approx(2.0) and board["groups"] == status["groups"]


def test_a_pass_no_run_timed_is_never_charged_as_zero_and_each_data_split_is_charged_apart(db_url, tmp_path,
                                                                                           monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    store = Store(db_url)
    past = {c.seed: c for c in parse_suite(PAST, "past.yaml").cells()}
    # one probe run, which found its features cached (its cache came from elsewhere): head rates 0.01 / 0.02 s
    # per example, no pass timed; and a mean-pooling probe on another device, which timed its pass there
    _finish(store, past[2], 1.0 + 0.01, 1.0 + 0.01, extra=_ff(0.01, 0.01, computed=False))
    mean_past = parse_suite(PAST.replace("linear_probe", "{name: linear_probe, pooling: mean}"), "p.yaml").cells()
    _finish(store, mean_past[0], 0.1 + 0.5, 0.1 + 0.25, device="GPU: Fake", extra=_ff(0.5, 0.25, computed=True))
    suite = write_suite(tmp_path / "next.yaml", NEXT.replace(
        "{epochs: 2, max_train_samples: 100, max_eval_samples: 50}",
        "{epochs: 2, max_train_samples: 100, max_eval_samples: 50}, {epochs: 2, max_train_samples: 100, "
        "max_eval_samples: 40}"))
    b50, b40 = ("[epochs=2,max_train_samples=100,max_eval_samples=50]",
                "[epochs=2,max_train_samples=100,max_eval_samples=40]")

    def cells():
        r = call_cli("estimate", suite, "--from-store", db_url, "--json", "--device", "CPU")
        assert r.returncode == 0, r.stderr
        return {(c["label"].split()[2], c["label"].split()[-2], c["label"].split()[-1]): c
                for c in json.loads(r.stdout)["cells"]}

    e = cells()
    for seed in ("seed=3", "seed=4"):
        assert e[("linear_probe(pooling=cls)", b50, seed)]["seconds"] == pytest.approx(4.0)   # read: cached
        # a new feature set here (the GPU's cache is not this device's), and full fine-tuning from a probe's head:
        # no run on this device says what the pass costs. Not the first cell, nor the next as if it were cached
        for method in ("linear_probe(pooling=mean)", "full"):
            c = e[(method, b50, seed)]
            assert c["seconds"] is None and c["why"] == "no stored run of minilm timed its encoder's pass", c
    # a full fine-tuning run (its forward pass: 0.03 s per dev example scored) stands in for the pass
    full = parse_suite(PAST.replace("linear_probe", "full"), "past.yaml").cells()[0]
    _finish(store, full, 10.0, 1.5)
    e = cells()
    first, second = e[("linear_probe(pooling=mean)", b50, "seed=3")], e[("linear_probe(pooling=mean)", b50, "seed=4")]
    # 4 s of head + the pass over 100 training and 50 dev examples at 0.03 s each = 4 + 4.5 s; a guess: the
    # coarsest level's 60% floor
    assert first["seconds"] == pytest.approx(8.5) and first["encoder_pass_s"] == pytest.approx(4.5)
    assert first["plus_minus"] == pytest.approx(0.6 * 8.5)
    assert second["seconds"] == pytest.approx(4.0) and second["encoder_pass_s"] is None
    # 40 dev examples instead of 50: the training features are the cached ones, the dev features are new:
    # 200 x 0.01 + 80 x 0.02 of head + 40 x 0.03 of the dev pass only
    capped = e[("linear_probe(pooling=cls)", b40, "seed=3")]
    assert capped["seconds"] == pytest.approx(2.0 + 1.6 + 1.2) and capped["encoder_pass_s"] == pytest.approx(1.2)
    assert e[("linear_probe(pooling=cls)", b40, "seed=4")]["seconds"] == pytest.approx(3.6)


def test_status_leaves_a_probe_without_a_timed_pass_unestimated(db_url, tmp_path, monkeypatch):
    """A suite's probe cell that read cached features (no pass timed anywhere): its seed's next cell is predicted
    from its head; the mean-pooling cells, a new feature set, are counted without an estimate, not as free."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    text = PAST.replace("seeds: [1, 2, 3]", "seeds: [1, 2]").replace(
        "methods: [linear_probe]", "methods: [{name: linear_probe, pooling: [cls, mean]}]")
    path = write_suite(tmp_path / "past.yaml", text)
    store = Store(db_url)
    cells = {(c.method_params["pooling"], c.seed): c for c in parse_suite(text, str(path)).cells()}
    _finish(store, cells[("cls", 1)], 1.0 + 0.01, 1.0 + 0.01, extra=_ff(0.01, 0.01, computed=False))
    status = json.loads(call_cli("status", path, "--db", db_url, "--json").stdout)["estimate"]
    assert status["unestimated"] == 2 and status["stored_device"] == "CPU: Test x2"
    # the mean-pooling setting has no completed cell, and no stored run timed the pass the stored rates would
    # need: the reason says both (the time of the cls cell, which read cached features, is not theirs)
    why = ("no completed cell of its setting in this suite and, on CPU: Test x2, no stored run of minilm timed its "
           "encoder's pass")
    assert status["unestimated_why"] == [why]
    text = call_cli("status", path, "--db", db_url).stdout
    assert f"2 cell(s) without an estimate: {why}" in text, text
    groups = {g["variant"]: g for g in status["groups"]}
    # the cls seed 2: 100 x 0.01 + 50 x 0.02 = 2 s; the two mean-pooling cells: none
    cls, mean = groups["linear_probe(pooling=cls)"], groups["linear_probe(pooling=mean)"]
    assert cls["left"] == 1 and cls["work_s"] == pytest.approx(2.0) and cls["source"] == "stored"
    assert mean["left"] == 2 and mean["work_s"] is None and mean["source"] is None


def test_an_older_probe_row_without_its_pass_or_rates_leaves_the_next_cell_unestimated(db_url, tmp_path,
                                                                                        monkeypatch):
    """A completed probe cell recorded before runs kept `frozen_features` and their rates (its time mixes the
    encoder's pass with its head's epochs, and no stored run gives a rate): the next cell of its setting is not
    priced at that time, and status says that neither source timed the pass."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    text = PAST.replace("seeds: [1, 2, 3]", "seeds: [1, 2]")
    path = write_suite(tmp_path / "past.yaml", text)
    store = Store(db_url)
    cells = {c.seed: c for c in parse_suite(text, str(path)).cells()}
    claim = store.start(cells[1], cells[1].config(), "test", None, worker=_worker())
    store.finish(claim, Status.COMPLETED, {"train_time_s": 6.0, "eval_time_s": 3.5, "env": {"device": "CPU: Test x2"}})
    status = json.loads(call_cli("status", path, "--db", db_url, "--json").stdout)["estimate"]
    assert status["unestimated"] == 1 and status["left_s"] is None and status["actual_s"] == pytest.approx(9.5)
    assert status["unestimated_why"] == [
        "neither a completed cell of its setting nor a stored run timed its feature set's encoder pass"]
    (group,) = status["groups"]
    assert (group["completed"], group["left"], group["work_s"], group["source"]) == (1, 1, None, None)


def test_dev_caps_apply_to_each_dev_split_and_the_store_counts_first(tmp_path):
    """MNLI has two dev splits: a cap applies to each. Sizes from the local files (line counts) unless a stored
    run read the data (what it really read), in whatever order they are asked."""
    from harness.report.throughput import DataSizes

    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    for name, n in (("train.tsv", 120), ("dev_matched.tsv", 30), ("dev_mismatched.tsv", 20)):
        (mnli / name).write_text("header\n" + "row\n" * n)
    files = DataSizes(None, str(tmp_path))
    assert files.size("eval", "mnli", 25) == 25 + 20 and files.size("eval", "mnli", None) == 50
    assert files.size("train", "mnli", 100) == 100 and files.size("train", "mnli", None) == 120
    assert DataSizes(None, None).size("eval", "mnli", 25) == 2 * 25   # no files: the cap, per dev split
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    (cell,) = parse_suite("name: m\nmodels: [minilm]\ntasks: [mnli]\nmethods: [full]\n", "m.yaml").cells()
    claim = store.start(cell, cell.config(), "test", None, worker=_worker())
    store.finish(claim, Status.COMPLETED, {"train_examples": 100, "eval_examples": 48, "train_time_s": 1.0})
    for order in ((50, None), (None, 50)):   # 100 examples read (some lines are not examples), whatever asks first
        sizes = DataSizes(store, str(tmp_path))
        assert [sizes.size("train", "mnli", cap) for cap in order] == [{None: 100, 50: 50}[c] for c in order]
    assert DataSizes(store, str(tmp_path)).size("eval", "mnli", 25) == 45   # the files split the stored 48


def test_a_record_says_which_passes_it_timed_old_records_included():
    """The rates a probe's record gives: the head's, and the encoder's pass per example only for the data this run
    computed (records from before the per-role counts: only where nothing was cached)."""
    from types import SimpleNamespace

    from harness.report.throughput import observation

    def obs(ff):
        return observation(SimpleNamespace(
            model="m", method="linear_probe", task="rte", hparams={}, env={"device": "d"}, num_processes=1,
            train_time_s=6.0, train_examples_per_s=100 / 6.0, eval_time_s=3.5, steps=10, epochs_done=1.0,
            train_examples=100, eval_examples=50, frozen_features=ff))

    both = {"extract_s": 5.0, "eval_extract_s": 2.5}
    new = obs({**both, "splits_computed": 1, "splits_cached": 1, "train_splits_computed": 1,
               "train_splits_cached": 0, "eval_splits_computed": 0, "eval_splits_cached": 1})
    assert (new.train_s_per_example, new.eval_s_per_example) == pytest.approx((0.01, 0.02))
    assert new.extract_s_per_example == pytest.approx(0.05) and new.eval_extract_s_per_example is None
    middle = obs({**both, "splits_computed": 1, "splits_cached": 1, "train_splits_computed": 0,
                  "train_splits_cached": 1})   # the training counts only: dev = total - training
    assert middle.extract_s_per_example is None and middle.eval_extract_s_per_example == pytest.approx(0.05)
    oldest = obs({**both, "splits_computed": 2, "splits_cached": 0})
    assert (oldest.extract_s_per_example, oldest.eval_extract_s_per_example) == pytest.approx((0.05, 0.05))
    mixed = obs({**both, "splits_computed": 1, "splits_cached": 1})   # which split was which: unknown
    assert (mixed.extract_s_per_example, mixed.eval_extract_s_per_example) == (None, None)
    assert mixed.features and mixed.train_s_per_example == pytest.approx(0.01)


def test_a_worker_predicts_a_probe_on_cached_features_from_the_head_alone(tmp_path, tiny_bert, small_glue):
    """Three probe cells of a tiny model on one worker, one feature set: the first computes the features, the
    second and third read them. At its claim each later cell is predicted from the records before it, its
    encoder pass taken out: the record's numbers, worked through by hand."""
    suite = write_suite(tmp_path / "s.yaml", f"""
name: tiny
models: ["{tiny_bert}"]
tasks: [rte]
methods: [linear_probe]
seeds: [1, 2, 3]
budgets: [{{epochs: 2}}]
hparams: {{batch_size: 8, learning_rate: 1e-2}}
""")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", small_glue,
                   "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second, third = sorted(Store(db).records("tiny"), key=lambda r: r.finished_at)
    ff = first.extra["frozen_features"]
    assert (ff["train_splits_computed"], ff["eval_splits_computed"], ff["splits_computed"]) == (1, 1, 2)
    for later in (second, third):
        assert later.extra["frozen_features"]["splits_computed"] == 0
        assert (later.extra["frozen_features"]["train_splits_cached"],
                later.extra["frozen_features"]["eval_splits_cached"]) == (1, 1)
    # 48 training examples x 2 epochs, 21 dev examples x 2 evaluations, at the first cell's head rates
    head_train = (first.train_time_s - ff["extract_s"]) / (2 * first.train_examples)
    head_eval = (first.eval_time_s - ff["eval_extract_s"]) / (2 * first.eval_examples)
    assert first.train_examples == 48 and first.eval_examples == 21
    assert second.predicted_time_s == pytest.approx(96 * head_train + 42 * head_eval, rel=1e-6)
    # the third: the mean of the two head rates before it (the second's pass took milliseconds: out too)
    ff2 = second.extra["frozen_features"]
    head_train2 = (second.train_time_s - ff2["extract_s"]) / (2 * second.train_examples)
    head_eval2 = (second.eval_time_s - ff2["eval_extract_s"]) / (2 * second.eval_examples)
    assert third.predicted_time_s == pytest.approx(96 * (head_train + head_train2) / 2
                                                   + 42 * (head_eval + head_eval2) / 2, rel=1e-6)


def test_a_pilot_of_a_probe_measures_its_pass_apart(tmp_path, tiny_bert, small_glue):
    suite = write_suite(tmp_path / "s.yaml", f"""
name: tiny
models: ["{tiny_bert}"]
tasks: [rte]
methods: [{{name: linear_probe, pooling: [cls, mean]}}]
seeds: [1, 2]
budgets: [{{epochs: 2}}]
hparams: {{batch_size: 8, learning_rate: 1e-2}}
""")
    r = run_cli("estimate", suite, "--pilot", "--pilot-steps", "2", "--json", "--data-dir", small_glue, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    cells = {(c["label"].split()[2], c["label"].split()[-1]): c for c in json.loads(r.stdout)["cells"]}
    for pooling in ("linear_probe(pooling=cls)", "linear_probe(pooling=mean)"):   # one pilot, two feature sets
        first, second = cells[(pooling, "seed=1")], cells[(pooling, "seed=2")]
        assert first["encoder_pass_s"] > 0 and second["encoder_pass_s"] is None
        assert first["seconds"] == pytest.approx(second["seconds"] + first["encoder_pass_s"])
