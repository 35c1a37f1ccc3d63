"""The embedded model (all-MiniLM-L6-v2 from its PyPI package) trained on real GLUE files, offline."""

import pytest

from conftest import run_cli, write_suite
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
