"""The embedded model (all-MiniLM-L6-v2 from its PyPI package) trained on real GLUE files, offline."""

import pytest

from tests.helpers import run_cli, write_suite
from harness.store.db import Store


@pytest.mark.slow
def test_minilm_on_real_rte_and_stsb(tmp_path, glue_dir):
    suite = write_suite(tmp_path / "s.yaml", """
name: minilm
models: [minilm]
tasks: [rte, stsb]
methods:
  - full
  - {name: pfeiffer, size: 32, learning_rate: 1e-3}
budgets:
  - {max_steps: 6, max_train_samples: 96, max_eval_samples: 64}
hparams:
  batch_size: 16
  learning_rate: 5e-5
""")
    proc = run_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                   "--data-dir", glue_dir, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = {(r.task, r.method): r for r in Store(f"sqlite:///{tmp_path / 'h.db'}").records()}
    full, pfeiffer = recs[("rte", "full")], recs[("rte", "pfeiffer")]
    assert full.total_params == 22_713_986 == full.trainable_params  # 22.7M + a 2-way head
    assert pfeiffer.added_params == 6 * (2 * 32 * 384 + 384 + 32)
    assert pfeiffer.trainable_params == pfeiffer.added_params + 384 * 2 + 2
    for r in recs.values():
        assert r.steps == 6 and r.eval_examples == 64 and r.train_examples == 96
        assert r.env["device"].startswith("CPU") and r.peak_memory_kind.startswith("peak_rss")
    assert set(recs[("stsb", "full")].metrics) == {"pearson", "spearman"}
    # the tokenized cache was reused: one entry per (task, split), not per cell
    cache = list((tmp_path / "out" / "cache" / "tokenized").iterdir())
    assert len(cache) == 4


@pytest.mark.slow
def test_minilm_on_the_offline_squad_split(tmp_path, glue_dir):
    """SQuAD v1.1 on the shared split (NOT the official train set: 38 dev articles to train on, 10 to evaluate):
    full fine-tuning and an adapter; the stored EM / F1 equal a re-score of the written predictions.json against
    the dev file, read here independently; `harness compare` pairs the two runs per question."""
    import json

    from harness.tasks.squad_metrics import squad_metrics

    suite = write_suite(tmp_path / "s.yaml", """
name: qa
models: [minilm]
tasks: [squad]
methods:
  - full
  - {name: houlsby, size: 32, learning_rate: 1e-3}
budgets:
  - {epochs: 1, max_train_samples: 96, max_eval_samples: 48}
hparams:
  batch_size: 16
  learning_rate: 1e-4
  max_length: 192
  doc_stride: 64
""")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", glue_dir, "--no-progress",
                   cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    dev = json.load(open(glue_dir / "SQuAD" / "dev-v1.1.json"))
    golds = {qa["id"]: [a["text"] for a in qa["answers"]]
             for article in dev["data"] for p in article["paragraphs"] for qa in p["qas"]}
    recs = {r.method: r for r in Store(db).records()}
    assert set(recs) == {"full", "houlsby"}
    for r in recs.values():
        preds = json.load(open(tmp_path / "out" / "qa" / r.cell_key / "predictions.json"))
        assert len(preds) == 48 == r.eval_examples and r.train_examples == 96
        rescored = squad_metrics({q: golds[q] for q in preds}, preds, version=1)[0]
        assert r.metrics["exact"] == pytest.approx(rescored["exact"]) and r.metrics["f1"] == pytest.approx(rescored["f1"])
        assert r.score == pytest.approx(r.metrics["f1"]) and r.steps >= 96 // 16   # windows: at least a question each
        assert r.head_params == 384 * 2 + 2
    assert recs["full"].trainable_params == recs["full"].total_params
    assert recs["houlsby"].added_params == 6 * 2 * (2 * 32 * 384 + 384 + 32)
    proc = run_cli("compare", recs["full"].cell_key, recs["houlsby"].cell_key, "--db", db, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "48 paired dev examples" in proc.stdout
    assert f"score A {recs['full'].score:.2f}" in proc.stdout
