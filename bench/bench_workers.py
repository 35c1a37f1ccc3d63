"""Several workers on one suite: wall time, trainings per cell, and what claims and heartbeats cost.

A suite of small cells (default 12: a tiny random BERT, 3 methods x 2 tasks x 2 seeds, so the harness's own
overhead is visible, not hidden behind training) is run by 1, 2 and 4 concurrent `harness run` processes into
a fresh SQLite file and into a fresh database on a throwaway PostgreSQL server (started here, stopped at the
end). Per setting: wall time, completed rows, trainings per cell counted from every worker's log (must be
exactly 1), attempts. Then the store operations alone, timed in-process over the same cells: claim, heartbeat
and finish in milliseconds.

  python bench/bench_workers.py [--workers 1 2 4] [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness.spec.status import Status  # noqa: E402
from harness.store.db import Store  # noqa: E402
from harness.store.env import device_name, git_state  # noqa: E402
from harness.store.lease import current_worker  # noqa: E402
from tests.helpers import make_tiny_model, write_small_glue  # noqa: E402
from tests.helpers.postgres import PostgresServer  # noqa: E402

CLAIM = re.compile(r"cell ([0-9a-f]{16}): .*\(attempt (\d+)")


def suite_text(model: Path) -> str:
    return f"""
name: bench-workers
models: ["{model}"]
tasks: [rte, stsb]
methods: [full, {{name: houlsby, size: 4, learning_rate: 1e-3}}, bitfit]
budgets: [{{epochs: 2}}]
seeds: [1, 2]
hparams: {{batch_size: 8, learning_rate: 1e-4}}
"""


def run_workers(n: int, url: str, suite: Path, data: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--db", url, "--output-dir", str(out),
           "--data-dir", str(data), "--no-progress"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    logs = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise SystemExit("a worker failed:\n" + "\n".join(log[-2000:] for log in logs))
    trained = Counter(m.group(1) for log in logs for m in CLAIM.finditer(log))
    rows = [r for r in Store(url).records("bench-workers") if r.parent_id is None]
    return {"wall": wall, "rows": len(rows), "completed": sum(r.status == Status.COMPLETED for r in rows),
            "trainings": sorted(set(trained.values())), "attempts": sorted({r.attempts for r in rows}),
            "per_worker": sorted(Counter(r.worker_id for r in rows).values())}


def store_ops(url: str, cells) -> dict:
    """Milliseconds per claim, heartbeat and finish on this backend, over every cell of the suite."""
    store = Store(url)
    store.enqueue(cells)
    worker, keys = current_worker(), [c.key for c in cells]
    times = {"claim": [], "heartbeat": [], "finish": []}
    for _ in cells:
        t = time.perf_counter()
        claim = store.claim_next(cells[0].suite, keys, worker)
        times["claim"].append(time.perf_counter() - t)
        for _ in range(5):
            t = time.perf_counter()
            store.heartbeat(claim)
            times["heartbeat"].append(time.perf_counter() - t)
        t = time.perf_counter()
        store.finish(claim, Status.COMPLETED, {"score": 1.0})
        times["finish"].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    from harness.plan.suite import load_suite

    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    model, data = make_tiny_model(tmp / "tiny-bert"), write_small_glue(tmp / "glue", n_train=96, n_dev=32)
    suite = tmp / "suite.yaml"
    suite.write_text(suite_text(model))
    cells = load_suite(str(suite)).cells()
    server = PostgresServer().start()
    lines = ["| store | workers | wall s | cells completed | trainings per cell | attempts | cells per worker |",
             "|---|---:|---:|---:|---:|---:|---|"]
    ops = {}
    try:
        for backend in ("sqlite", "postgresql"):
            for n in args.workers:
                url = (f"sqlite:///{tmp / f'{backend}-{n}.db'}" if backend == "sqlite"
                       else server.create_database(f"bench_{n}"))
                r = run_workers(n, url, suite, data, tmp / f"out-{backend}-{n}")
                lines.append(f"| {backend} | {n} | {r['wall']:.1f} | {r['completed']}/{len(cells)} | "
                             f"{','.join(map(str, r['trainings']))} | {','.join(map(str, r['attempts']))} | "
                             f"{r['per_worker']} |")
                print(lines[-1], flush=True)
            url = (f"sqlite:///{tmp / 'ops.db'}" if backend == "sqlite" else server.create_database("ops"))
            ops[backend] = store_ops(url, cells)
    finally:
        server.stop()
    lines += ["", "| store | claim ms | heartbeat ms | finish ms (row + record.json transaction, no files) |",
              "|---|---:|---:|---:|"]
    lines += [f"| {b} | {o['claim']:.2f} | {o['heartbeat']:.2f} | {o['finish']:.2f} |" for b, o in ops.items()]
    text = "\n".join(lines)
    print(text)
    if args.write:
        header = (f"\n## Workers on one store — {dt.date.today().isoformat()} — {device_name()}, "
                  f"{os.cpu_count()} cores, commit {(git_state()['git_commit'] or 'n/a')[:10]}\n\n"
                  f"`python bench/bench_workers.py {' '.join(sys.argv[1:])}`\n\n")
        with open(os.path.join(ROOT, "bench", "RESULTS.md"), "a") as f:
            f.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
