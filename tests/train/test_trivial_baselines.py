"""A real run on a tiny random BERT stores each row's trivial baselines (trivial_scores), computed on the dev
examples it is scored on: single-task GLUE and SQuAD v2.0 cells, a multi-task cell's members and joint row, a
sequential cell's stages."""

import csv
import json
from collections import Counter

import pytest

from tests.helpers import run_cli, write_small_glue, write_small_squad, write_suite
from harness.store.db import Store


def _rte_majority_accuracy(data) -> float:
    """By hand from the files: the most frequent train label, as a share of the dev labels."""
    def labels(split):
        with open(data / "RTE" / f"{split}.tsv", newline="") as f:
            return [row["label"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    counts = Counter(labels("train"))
    majority = max(sorted(counts), key=counts.get)   # ties: "entailment" (label 0) sorts first
    dev = labels("dev")
    return 100.0 * dev.count(majority) / len(dev)


def test_every_row_stores_its_trivial_baselines(tmp_path, tiny_bert):
    data = write_small_squad(write_small_glue(tmp_path / "data"))
    suite = write_suite(tmp_path / "t.yaml", f"""
name: triv
models: ["{tiny_bert}"]
tasks: [rte, stsb, squad_v2, {{multitask: [rte, stsb]}}, {{sequence: [stsb, rte]}}]
methods: [full]
budgets: [{{epochs: 1}}]
hparams: {{batch_size: 8, max_length: 64, doc_stride: 16, learning_rate: 1e-4}}
""")
    proc = run_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                   "--data-dir", data, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    rows = store.records()
    assert len(rows) == 5 + 2 + 1 and {r.status for r in rows} == {"completed"}
    majority = _rte_majority_accuracy(data)
    rte = pytest.approx(majority)
    for r in rows:
        expected = {"rte": {"majority": rte}, "stsb": {"constant_mean": 0.0}}.get(r.task)
        if r.regime == "multitask":   # the joint row scores the mean over tasks: so does its baseline
            assert r.trivial_scores == {"tasks_mean": pytest.approx((majority + 0.0) / 2)}
        elif r.task == "squad_v2":
            # write_small_squad: 3 of the 10 dev questions are unanswerable; the empty answer is right on them
            assert set(r.trivial_scores) == {"empty", "first_span"}
            assert r.trivial_scores["empty"] == pytest.approx(30.0)
            assert 0.0 <= r.trivial_scores["first_span"] <= 100.0
        else:   # single-task rows, multi-task members, sequential stages: their own task's baselines
            assert r.trivial_scores == expected, (r.task, r.regime)
        if r.parent_id is None:   # the cell's record.json carries them too
            record = json.loads((tmp_path / "out" / "triv" / r.cell_key / "record.json").read_text())
            assert record["trivial_scores"] == r.trivial_scores
    assert {r.regime for r in rows} >= {None, "multitask", "multitask_member", "sequential", "sequential_stage"}
