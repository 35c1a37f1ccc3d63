"""What settling a suite's recorded cells costs at every worker start (harness.launch.summary._settle, one
attempt.settle per recorded cell), on a big grid.

Builds, per N (default 1,000 and 10,000), a SQLite store and an output tree of N completed cells the way a worker
records them, without training: every cell queued (Store.enqueue), claimed (claim_next), its files written into
its attempt folder (predictions.npz, adapter/ for the adapter methods), finished (Store.finish writing the real
record.json inside the transaction) and moved into the cell folder (attempt.promote), as runner._record does.
Then times, in this process, the settle pass over every recorded cell (the first pass, and the median of 5 more)
and the whole start-up read it is part of (summary.queue_summary: reading the rows, timed alone too, then the
settle pass), and counts the file-system calls one settle pass makes (os.listdir / os.scandir / os.stat /
os.lstat / os.open, wrapped here).
The page and dentry caches are warm (the tree was just written; nothing is dropped: the machine is shared); on a
network file system each of those calls is a metadata round trip instead (calls per cell x its latency).

  python bench/bench_settle.py [--cells 1000 10000] [--work DIR]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness import cpuinfo  # noqa: E402
from harness.launch import attempt, summary  # noqa: E402
from harness.plan.suite import parse_suite  # noqa: E402
from harness.spec import layout  # noqa: E402
from harness.spec.status import Status  # noqa: E402
from harness.store.db import Store  # noqa: E402
from harness.store.lease import current_worker  # noqa: E402
from harness.store.schema import RUN_COLUMNS  # noqa: E402
from harness.train.result import RunResult  # noqa: E402

TASKS = ["rte", "mrpc", "stsb", "cola", "sst2"]
METHODS = "[full, bitfit, {name: houlsby, size: 64}, {name: lora, rank: 8}]"
FS_CALLS = ("listdir", "scandir", "stat", "lstat", "open")


def suite_for(n: int, path: str):
    per_seed = len(TASKS) * 4
    if n % per_seed:
        raise SystemExit(f"--cells {n}: a multiple of {per_seed} (5 tasks x 4 methods x seeds)")
    seeds = list(range(1, n // per_seed + 1))
    return parse_suite(f"name: settle{n}\nmodels: [minilm]\ntasks: [{', '.join(TASKS)}]\nmethods: {METHODS}\n"
                       f"seeds: {seeds}\n", path)


def result_fields(cell, i: int, attempt_dir: str) -> dict:
    """A completed cell's columns as result_fields makes them (a plausible result, a few evaluations' history)."""
    score = 70.0 + (i % 97) / 10
    adapter = os.path.join(attempt_dir, layout.ADAPTER) if cell.method in ("houlsby", "lora") else None
    result = RunResult(
        total_params=22_700_000, trainable_params=900_000, head_params=1_538, added_params=890_000, trainable_pct=3.9,
        train_time_s=120.0 + i % 13, eval_time_s=4.5, peak_memory_mb=2100.0, peak_memory_kind="rss", steps=1_000,
        epochs_done=3.0, stopped_by="epochs", train_examples=2_490, eval_examples=277, num_threads=2, score=score,
        metrics={"accuracy": score}, best_score=score + 0.4, best_metrics={"accuracy": score + 0.4},
        history=[{"step": s, "epoch": s / 333, "loss": 0.7 - s / 5000, "accuracy": score - 1 + s / 1000}
                 for s in range(100, 1001, 100)], adapter_path=adapter, adapter_bytes=3_600_000 if adapter else None,
        attn_implementation="sdpa", model_source="sha256:" + "0" * 64)
    attempt.relocate(result, attempt_dir, os.path.dirname(attempt_dir))
    return {**result.columns(RUN_COLUMNS), "error": None,
            "env": {"python": "3.12", "torch": "2.13.0+cpu", "device": "cpu", "num_processes": 1}}


def build(n: int, work: str):
    """The store and the output tree of n completed cells, recorded as runner._record records them."""
    suite = suite_for(n, os.path.join(work, f"settle{n}.yaml"))
    cells = suite.cells()
    out = os.path.join(work, f"out{n}")
    store = Store(f"sqlite:///{os.path.join(work, f'h{n}.db')}")
    store.enqueue(cells, "bench_settle", out)
    worker, run_layout = current_worker(), layout.RunLayout(out)
    for i, cell in enumerate(cells):
        claim = store.claim_next(suite.name, [cell.key], worker, output_root=out)
        cell_dir = run_layout.cell_dir(suite.name, cell.key)
        src = attempt.folder(cell_dir, claim)
        os.makedirs(src)
        with open(os.path.join(src, layout.PREDICTIONS), "wb") as f:
            f.write(os.urandom(2_000))
        fields = result_fields(cell, i, src)
        if fields.get("adapter_path"):
            os.makedirs(os.path.join(src, layout.ADAPTER))
            for name in ("adapter_config.json", "pytorch_adapter.bin", layout.HEAD_FILE):
                with open(os.path.join(src, layout.ADAPTER, name), "wb") as f:
                    f.write(b"0" * 256)
        store.finish(claim, Status.COMPLETED, fields, [], before_commit=attempt.record_writer(src))
        attempt.remove_checkpoints(cell_dir)
        if not attempt.promote(src, cell_dir):
            raise SystemExit(f"cell {cell.key}: its files did not move in")
    return suite, store, out, {c.key for c in cells}


def counting():
    """Wrap os's metadata calls; returns the counter and a function that puts them back."""
    counts, real = collections.Counter(), {name: getattr(os, name) for name in FS_CALLS}

    def wrapped(name):
        def call(*args, **kwargs):
            counts[name] += 1
            return real[name](*args, **kwargs)
        return call

    for name in FS_CALLS:
        setattr(os, name, wrapped(name))
    return counts, lambda: [setattr(os, name, f) for name, f in real.items()]


def measure(n: int, work: str) -> str:
    t = time.perf_counter()
    suite, store, out, keys = build(n, work)
    build_s = time.perf_counter() - t
    rows = summary._rows(store, suite, keys)
    assert len(rows) == n and all(r.status == Status.COMPLETED for r in rows)
    t = time.perf_counter()
    summary._settle(rows, suite, out)
    first_s = time.perf_counter() - t
    again = []
    for _ in range(5):
        t = time.perf_counter()
        summary._settle(rows, suite, out)
        again.append(time.perf_counter() - t)
    counts, restore = counting()
    try:
        summary._settle(rows, suite, out)
    finally:
        restore()
    read, whole = [], []
    for _ in range(3):
        t = time.perf_counter()
        summary._rows(store, suite, keys)
        read.append(time.perf_counter() - t)
        t = time.perf_counter()
        summary.queue_summary(store, suite, keys, out)
        whole.append(time.perf_counter() - t)
    left = [k for k in keys if layout.attempt_dirs(layout.RunLayout(out).cell_dir(suite.name, k))]
    assert not left, f"{len(left)} cells kept an attempt folder"
    store.engine.dispose()
    per_cell = ", ".join(f"{name} {counts[name] / n:g}" for name in FS_CALLS)
    return (f"{n:,} clean completed cells (built in {build_s:.0f} s): settle pass {first_s:.3f} s first, "
            f"{statistics.median(again):.3f} s median of 5 ({1e6 * statistics.median(again) / n:.1f} us/cell); "
            f"file-system calls per cell: {per_cell}; page cache warm. The whole start-up read, queue_summary: "
            f"{statistics.median(whole):.3f} s, of which reading the rows {statistics.median(read):.3f} s (medians of 3)")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, nargs="+", default=[1_000, 10_000])
    p.add_argument("--work", default=None, help="where the stores and trees go (default: a new temporary folder)")
    args = p.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="bench-settle-")
    print(f"{cpuinfo.describe()}; {work}", flush=True)
    for n in args.cells:
        print(measure(n, work), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
