"""How fast the leaderboard renders on a large store.

Builds a store of N runs (default 100,000) with the store's own table, then times, in one process:
loading the runs, the Houlsby best table and the leaderboard (cold), and full renders of the Streamlit page
through AppTest, cold and then with the query cache warm. Target: a warm render under one second.

  python bench/bench_board.py [--runs 100000] [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from results_md import append_section  # noqa: E402
from harness.report.tables import best_table, leaderboard_table, runs_frame  # noqa: E402
from harness.spec.status import Status  # noqa: E402
from harness.store.db import Store  # noqa: E402
from harness.store.lease import utcnow  # noqa: E402
from harness.store.schema import RunRecord  # noqa: E402

TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
METHODS = [("full", {}), ("linear_probe", {})] + [("houlsby", {"size": s}) for s in (8, 64, 256)] + \
          [("pfeiffer", {"size": s}) for s in (8, 64, 256)] + [("lora", {"rank": r}) for r in (4, 8, 16)]


def build(path: str, n: int) -> str:
    url = f"sqlite:///{path}"
    store = Store(url)
    rng = np.random.default_rng(0)
    rows, now = [], utcnow()
    lrs = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        method, params = METHODS[(i // len(TASKS)) % len(METHODS)]
        lr = lrs[(i // (len(TASKS) * len(METHODS))) % len(lrs)]
        seed = i // (len(TASKS) * len(METHODS) * len(lrs))
        suite = "big" if i % 10 else "other"
        score = float(rng.normal(80 if method == "full" else 78, 2))
        label = method + ("(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
        setting = f"{suite}-{task}-{label}-{lr}"
        rows.append(dict(
            suite=suite, cell_key=f"{i:016x}", setting_key=setting[-64:], status=Status.COMPLETED.value, attempts=1,
            created_at=now, started_at=now, finished_at=now, config={"seed": seed}, model="bert-base-uncased",
            task=task, task_version=1, method=method, method_params=params, method_label=label,
            budget={"epochs": 3.0}, seed=seed, hparams={"learning_rate": lr}, learning_rate=lr, num_processes=1,
            trainable_params=110_000_000 if method == "full" else 1_000_000, added_params=0 if method == "full"
            else 900_000, total_params=110_000_000, trainable_pct=100.0 if method == "full" else 0.9,
            train_time_s=float(rng.uniform(100, 1000)), peak_memory_mb=float(rng.uniform(2000, 9000)),
            score=score, best_score=score + 0.5, metrics={"accuracy": score}, best_metrics={"accuracy": score + 0.5},
            env={"torch": "2.13.0"}))
        if len(rows) == 10_000:
            with store.engine.begin() as conn:
                conn.execute(insert(RunRecord), rows)
            rows = []
    if rows:
        with store.engine.begin() as conn:
            conn.execute(insert(RunRecord), rows)
    return url


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="board-bench-")
    t = time.perf_counter()
    url = build(os.path.join(tmp, "h.db"), args.runs)
    build_s = time.perf_counter() - t

    store = Store(url, read_only=True)
    t = time.perf_counter()
    runs = runs_frame(store)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    board = leaderboard_table(best_table(runs[runs["suite"] == "big"]))
    table_s = time.perf_counter() - t

    from streamlit.testing.v1 import AppTest

    os.environ["HARNESS_DB"] = url
    at = AppTest.from_file(os.path.join(ROOT, "harness", "board", "app.py"), default_timeout=300)
    t = time.perf_counter()
    at.run()
    cold_s = time.perf_counter() - t
    assert not at.exception, at.exception
    warm = []
    for _ in range(5):
        t = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t)
    assert not at.exception and len(at.dataframe[0].value) == len(board)
    warm_s = float(np.median(warm))
    lines = [f"| store of {args.runs:,} runs built | {build_s:.1f} s |",
             f"| load all runs (SQL -> DataFrame), cold | {load_s:.2f} s |",
             f"| best table + leaderboard ({len(board)} rows x 9 tasks) | {table_s:.2f} s |",
             f"| leaderboard page, first render (AppTest, cold cache) | {cold_s:.2f} s |",
             f"| leaderboard page, later renders (AppTest, warm cache, median of 5) | {warm_s:.3f} s |"]
    print("\n".join(lines))
    if args.write:
        append_section("leaderboard on a large store", f"python bench/bench_board.py --runs {args.runs}",
                       ["step", "time"], lines)
    return 0 if warm_s < 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
