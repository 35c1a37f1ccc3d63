"""A store with known numbers, written through the real store API (Store.start / Store.finish)."""

from __future__ import annotations

import os

import numpy as np

from harness.spec.status import Status
from harness.store.db import Store
from harness.plan.suite import parse_suite

SUITE = """
name: fx
models: [minilm]
tasks: [rte, mrpc]
methods:
  - full
  - {name: houlsby, size: 8}
seeds: [1, 2, 3]
hparams:
  learning_rate: [2e-5, 1e-4]
"""

# (task, method, lr) -> scores of seeds 1, 2, 3
SCORES = {
    ("rte", "full", 2e-5): [70.0, 72.0, 74.0],    # best full setting on rte: 72.0 ± 2.0
    ("rte", "full", 1e-4): [60.0, 61.0, 62.0],
    ("rte", "houlsby", 2e-5): [65.0, 66.0, 67.0],
    ("rte", "houlsby", 1e-4): [71.0, 71.5, 72.0],  # best houlsby on rte: 71.5 ± 0.5
    ("mrpc", "full", 2e-5): [85.0, 86.0, 87.0],    # 86.0 ± 1.0
    ("mrpc", "full", 1e-4): [80.0, 80.0, 80.0],
    ("mrpc", "houlsby", 2e-5): [84.0, 88.0, 86.0],  # 86.0 ± 2.0 (ties full on mrpc)
    ("mrpc", "houlsby", 1e-4): [None, 85.0, 85.0],  # seed 1 failed
}
TOTAL, ADDED = 22_713_986, 2 * 6 * (2 * 8 * 384 + 384 + 8)


def build(path, predictions_dir=None, url=None) -> str:
    """Into an SQLite file at `path`, or into the store at `url` (e.g. a PostgreSQL database)."""
    url = url or f"sqlite:///{path}"
    store = Store(url)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    for cell in parse_suite(SUITE, "fx.yaml").cells():
        score = SCORES[(cell.task, cell.method, cell.hparams["learning_rate"])][cell.seed - 1]
        out = os.path.join(predictions_dir, cell.key) if predictions_dir else None
        claim = store.start(cell, cell.config(), "accelerate launch harness/run.py fx.yaml", out)
        if score is None:
            store.finish(claim, Status.FAILED, {"error": "FloatingPointError: loss is not finite at step 3"})
            continue
        adapters = cell.method == "houlsby"
        total = TOTAL + (ADDED if adapters else 0)
        trainable = (ADDED + 770) if adapters else TOTAL
        metric = "accuracy" if cell.task == "rte" else "f1"
        store.finish(claim, Status.COMPLETED, {
            "score": score, "best_score": score + 1, "metrics": {metric: score}, "best_metrics": {metric: score + 1},
            "history": [{"step": 10, "epoch": 1.0, "score": score - 5, "metrics": {}},
                        {"step": 20, "epoch": 2.0, "score": score, "metrics": {}}],
            "trainable_params": trainable, "total_params": total, "added_params": ADDED if adapters else 0,
            "trainable_pct": 100.0 * trainable / total, "train_time_s": 100.0 if adapters else 150.0,
            "peak_memory_mb": 900.0 if adapters else 1500.0, "train_examples_per_s": 20.0,
            "env": {"torch": "2.13.0", "git_commit": "abc", "git_dirty": False},
        })
        if adapters and cell.task == "rte" and cell.seed == 1 and cell.hparams["learning_rate"] == 1e-4:
            spans = [[i, j, 71.0 - 3.0 * (j - i + 1)] for i in range(6) for j in range(i, 6)]
            store.add_analysis(claim.id, "adapter_ablation", {"num_layers": 6, "baseline": 71.0, "spans": spans})
        if out and cell.task == "rte":
            os.makedirs(out, exist_ok=True)
            # predictions whose accuracy on the 200 common examples follows the method
            correct = rng.random(200) < (0.75 if cell.method == "full" else 0.55)
            preds = np.where(correct, labels, 1 - labels)
            np.savez(os.path.join(out, "predictions.npz"), validation_idx=np.arange(200),
                     validation_pred=preds, validation_label=labels)
    # closed, so that SQLite checkpoints its write-ahead log into the file now: a store at rest, whose bytes
    # change only when something writes to it (not when this Store is garbage-collected during a later test)
    store.engine.dispose()
    return url


def downgrade_to_0004(path) -> None:
    """The SQLite store at `path` as a harness before revision 0005 (no store identity, no checkpoint step: 0006)
    left it: what a command that opens it for writing migrates, and one that only reads or refuses must leave byte
    for byte."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE store_info")
        for column in ("checkpoint_step", "checkpoint_total_steps"):
            conn.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        conn.execute("UPDATE alembic_version SET version_num = '0004'")
    conn.close()


def not_a_store(path, what: str) -> None:
    """A database file at `path` that is not a harness store: an "empty file", or "another program's database"
    (SQLite with a table of its own, no runs table). Commands must refuse it and leave it byte for byte."""
    import sqlite3

    if what == "empty file":
        path.write_bytes(b"")
        return
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
