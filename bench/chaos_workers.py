"""Chaos on one store: 3 `harness run` workers (tiny random BERT, a few steps per cell) while random SIGKILL,
SIGTERM, SIGUSR1 and SIGSTOP (past the lease timeout) + SIGCONT hit random workers and killed ones are started
again (some with --retry-failed), until the store says every cell is finished; then the invariants the harness
promises (README "What is guaranteed", docs/cluster.md): every cell exactly once, its folder's files the accepted
attempt's, nothing left behind, exports / status / a fresh ingest agreeing with the rows.

    PYTHONPATH=. HARNESS_DATA_DIR=/path/to/glue python bench/chaos_workers.py --seed 1 [--db postgresql] [--work DIR]

Prints a JSON summary on its last line; exit 1 when an invariant broke."""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LEASE_TIMEOUT_S, HEARTBEAT_S = 3, 0.5
ACTIONS = ("kill", "term", "usr1", "stall")


# --flaky P: a worker whose cells fail at random (P of them; half before training, half after it: files in the
# attempt folder), as an out-of-memory or a node fault would, so failures, --retry-failed and a completed attempt
# replacing a failed one's files are in the chaos too
FLAKY = """
import os, random, sys
from harness.train import preempt
preempt.install()   # as `harness run` does first thing: the imports below take seconds
from harness.launch import runner
real, p = runner.train_and_evaluate, float(os.environ["CHAOS_FLAKY"])
draw = random.SystemRandom().random   # not the module's generator: every cell seeds it
def train_and_evaluate(*args, **kwargs):
    if draw() < p / 2:
        raise RuntimeError("injected: a flaky failure before training")
    result = real(*args, **kwargs)
    if draw() < p / 2:
        raise RuntimeError("injected: a flaky failure after training")
    return result
runner.train_and_evaluate = train_and_evaluate
from harness.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def suite_text(model: str, name: str) -> str:
    return f"""name: {name}
models: ["{model}"]
tasks: [rte, stsb]
methods: [full, bitfit, {{name: houlsby, size: 8}}, lora]
budgets: [{{max_steps: 8, max_train_samples: 64, max_eval_samples: 48}}]
seeds: [1, 2]
hparams: {{batch_size: 8, learning_rate: 1e-3}}
"""


def env() -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], env=env(), capture_output=True,
                          text=True, timeout=timeout, preexec_fn=lambda: os.nice(10))


class Workers:
    def __init__(self, suite, db, out, logs, rng, n=3, flaky=0.0):
        self.suite, self.db, self.out, self.logs, self.rng, self.n, self.flaky = suite, db, out, logs, rng, n, flaky
        self.procs: dict[int, tuple[subprocess.Popen, str]] = {}   # slot -> (process, log path)
        self.stalled: dict[int, float] = {}   # pid -> when to SIGCONT
        self.started = 0
        self.exits = collections.Counter()
        self.events = collections.Counter()
        self.timeline: list[str] = []
        self.t0 = time.monotonic()

    def say(self, line):
        self.timeline.append(f"{time.monotonic() - self.t0:7.2f} {line}")

    def start(self, slot, retry_failed=None):
        retry = self.rng.random() < 0.4 if retry_failed is None else retry_failed
        log = os.path.join(self.logs, f"w{self.started:03d}.log")
        entry = ["-c", FLAKY] if self.flaky else ["-m", "harness"]
        args = [sys.executable, *entry, "run", self.suite, "--db", self.db, "--output-dir", self.out,
                "--heartbeat-s", str(HEARTBEAT_S), "--lease-timeout-s", str(LEASE_TIMEOUT_S), "--no-progress",
                "--threads-per-worker", "1", *(["--retry-failed"] if retry else [])]
        p = subprocess.Popen(args, env={**env(), "CHAOS_FLAKY": str(self.flaky)}, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                             preexec_fn=lambda: os.nice(10))
        self.procs[slot] = (p, log)
        self.started += 1
        self.say(f"start slot {slot} pid {p.pid}{' --retry-failed' if retry else ''} log {os.path.basename(log)}")

    def reap(self, restart=True):
        for slot, (p, log) in list(self.procs.items()):
            code = p.poll()
            if code is None:
                continue
            self.stalled.pop(p.pid, None)
            self.exits[code] += 1
            self.say(f"exit slot {slot} pid {p.pid} code {code}")
            del self.procs[slot]
            if restart:
                self.start(slot)

    def wake(self, all_now=False):
        now = time.monotonic()
        for pid, when in list(self.stalled.items()):
            if all_now or now >= when:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                del self.stalled[pid]
                self.say(f"cont pid {pid}")

    def strike(self):
        live = [p for p, _ in self.procs.values() if p.poll() is None]
        if not live:
            return
        p = self.rng.choice(live)
        action = self.rng.choice(ACTIONS)
        if p.pid in self.stalled and action != "kill":
            return
        sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "usr1": signal.SIGUSR1, "stall": signal.SIGSTOP}[action]
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            return
        if action == "stall":
            self.stalled[p.pid] = time.monotonic() + self.rng.uniform(LEASE_TIMEOUT_S + 0.5, LEASE_TIMEOUT_S + 5)
        self.events[action] += 1
        self.say(f"{action} pid {p.pid}")


def finished(db, suite_name, n_cells) -> tuple[bool, collections.Counter]:
    from harness.store.db import Store

    store = Store(db)
    try:
        rows = [r for r in store.records(suite_name) if r.parent_id is None]
    finally:
        store.engine.dispose()
    counts = collections.Counter(str(r.status) for r in rows)
    return len(rows) == n_cells and counts["completed"] + counts["failed"] == n_cells, counts


def check(db, out, suite_path, suite_name, work) -> tuple[list[str], dict]:
    """Every invariant; the list of what broke (empty: all held) and some facts."""
    import numpy as np

    from harness.plan.suite import load_suite
    from harness.spec import layout
    from harness.spec.tasks import get_task
    from harness.store.db import Store
    from harness.tasks.kinds import kind_of
    from harness.train import checkpoint

    broke, facts = [], collections.Counter()
    cells = {c.key: c for c in load_suite(suite_path).cells(num_processes=1)}
    store = Store(db)
    rows = [r for r in store.records(suite_name) if r.parent_id is None]
    store.engine.dispose()
    per_key = collections.Counter(r.cell_key for r in rows)
    for key in cells:
        if per_key[key] != 1:
            broke.append(f"cell {key}: {per_key[key]} rows")
    for r in rows:
        if r.cell_key not in cells:
            broke.append(f"row {r.id}: cell {r.cell_key} not in the suite")
        if str(r.status) not in ("completed", "failed"):
            broke.append(f"cell {r.cell_key}: status {r.status}")
        facts[f"status_{r.status}"] += 1
        facts[f"attempts_{r.attempts}"] += 1
        cell_dir = os.path.join(out, suite_name, r.cell_key)
        names = sorted(os.listdir(cell_dir)) if os.path.isdir(cell_dir) else []
        rec_path = os.path.join(cell_dir, layout.RECORD)
        if not os.path.isfile(rec_path):
            broke.append(f"cell {r.cell_key} ({r.status}): no record.json; folder holds {names}")
            continue
        rec = json.loads(open(rec_path).read())
        for field in ("score", "attempts", "worker_id", "status", "id"):
            if rec.get(field) != (str(getattr(r, field)) if field == "status" else getattr(r, field)):
                broke.append(f"cell {r.cell_key}: record.json {field}={rec.get(field)!r}, row {getattr(r, field)!r}")
        if rec.get(layout.INGEST_ONLY):
            broke.append(f"cell {r.cell_key}: record.json is ingest_only")
        left = [n for n in names if n.startswith((layout.ATTEMPT_PREFIX, layout.REPLACED_PREFIX))]
        if left:
            broke.append(f"cell {r.cell_key}: left in the folder: {left}")
        ckpt = checkpoint.paths_under(cell_dir)
        if ckpt:
            broke.append(f"cell {r.cell_key} ({r.status}): checkpoint left: {[os.path.relpath(c, cell_dir) for c in ckpt]}")
        if ("error.log" in names) != (str(r.status) == "failed"):
            broke.append(f"cell {r.cell_key} ({r.status}): error.log {'present' if 'error.log' in names else 'missing'}")
        if str(r.status) == "completed":
            pred = os.path.join(cell_dir, layout.PREDICTIONS)
            if not os.path.isfile(pred):
                broke.append(f"cell {r.cell_key}: no predictions.npz")
            else:
                if os.path.getmtime(pred) > os.path.getmtime(rec_path):
                    broke.append(f"cell {r.cell_key}: predictions.npz newer than record.json")
                # the number stored is the one these predictions give (the accepted attempt's files)
                data = np.load(pred)
                task = get_task(r.task)
                split = sorted(k[:-len("_pred")] for k in data.files if k.endswith("_pred"))[0]
                rescored = kind_of(task).sample_score(task, data[f"{split}_pred"], data[f"{split}_label"])
                if abs(rescored - r.score) > 1e-6 and abs(rescored - (r.best_score or -1e9)) > 1e-6:
                    broke.append(f"cell {r.cell_key}: predictions score {rescored}, row score {r.score}")
            has_adapter = os.path.isdir(os.path.join(cell_dir, layout.ADAPTER))
            wants = r.method in ("houlsby", "lora")
            if has_adapter != wants:
                broke.append(f"cell {r.cell_key} ({r.method}): adapter folder {'present' if has_adapter else 'missing'}")
            if wants and r.adapter_path != os.path.join(cell_dir, layout.ADAPTER):
                broke.append(f"cell {r.cell_key}: row adapter_path {r.adapter_path}")
        if r.attempts and r.attempts > 1:
            facts["trained_more_than_once"] += 1
    # what else is in the suite folder: only cell folders
    for name in os.listdir(os.path.join(out, suite_name)):
        if name not in cells:
            broke.append(f"{suite_name}/{name}: not a cell folder")
    # export and status agree with the rows
    ex = cli("export", "--table", "runs", "--format", "json", "--suite", suite_name, "--db", db)
    if ex.returncode != 0:
        broke.append(f"export exit {ex.returncode}: {ex.stderr[-500:]}")
    else:
        exported = json.loads(ex.stdout)
        exported = exported["rows"]
        by_key = collections.Counter(e.get("cell_key") for e in exported)
        want = {r.cell_key: r.score for r in rows}   # failed rows too (no score)
        got = {e.get("cell_key"): e.get("score") for e in exported}
        if set(got) != set(want) or any(v != 1 for v in by_key.values()) or any(
                abs((got[k] or 0) - (want[k] or 0)) > 1e-9 for k in want if k in got):
            broke.append(f"export differs from the rows: {len(got)} exported, {len(want)} rows")
    st = cli("status", suite_path, "--db", db, "--json", "--all")
    if st.returncode != 0:
        broke.append(f"status exit {st.returncode}: {st.stderr[-500:]}")
    else:
        status = json.loads(st.stdout)
        facts["status_json_keys"] = len(status)
        counts = {k: v for k, v in status["counts"].items() if v and k != "total"}
        want_counts = collections.Counter(str(r.status) for r in rows)
        if counts != dict(want_counts) or status["counts"]["total"] != len(cells) or not status["done"]:
            broke.append(f"status counts {status['counts']}, rows {dict(want_counts)}")
        states = {c["key"]: c["state"] for c in status["cells"]}
        for r in rows:
            if states.get(r.cell_key) != str(r.status):
                broke.append(f"status: cell {r.cell_key} {states.get(r.cell_key)}, row {r.status}")
    # a fresh store from the output folder: the same rows
    fresh = f"sqlite:///{os.path.join(work, 'fresh.db')}"
    ing = cli("ingest", os.path.join(out, suite_name), "--db", fresh)
    if ing.returncode != 0:
        broke.append(f"ingest into a fresh store: exit {ing.returncode}: {ing.stderr[-800:]}")
    store2 = Store(fresh)
    rows2 = {r.cell_key: r for r in store2.records(suite_name) if r.parent_id is None}
    store2.engine.dispose()
    for r in rows:
        r2 = rows2.get(r.cell_key)
        if r2 is None:
            broke.append(f"ingest: cell {r.cell_key} missing from the fresh store")
            continue
        for field in ("score", "status", "attempts", "worker_id", "steps", "best_score"):
            if getattr(r, field) != getattr(r2, field):
                broke.append(f"ingest: cell {r.cell_key} {field} {getattr(r2, field)!r}, store {getattr(r, field)!r}")
    again = cli("ingest", os.path.join(out, suite_name), "--db", db)   # into its own store: every one the same
    if again.returncode != 0 or "conflict" in (again.stdout + again.stderr).lower():
        broke.append(f"ingest into its own store: exit {again.returncode}: {(again.stdout + again.stderr)[-800:]}")
    facts["ingest_fresh_said"] = ing.stdout.strip().splitlines()[-1:] if ing.stdout.strip() else ing.stderr[-200:]
    facts["ingest_again_said"] = again.stdout.strip().splitlines()[-1:] if again.stdout.strip() else again.stderr[-200:]
    return broke, dict(facts)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--work", default=None)
    ap.add_argument("--max-min", type=float, default=12.0, help="give up after this many minutes")
    ap.add_argument("--period", type=float, default=2.5, help="mean seconds between two strikes")
    ap.add_argument("--strikes", type=int, default=40, help="at most this many strikes; then the workers finish")
    ap.add_argument("--flaky", type=float, default=0.0, help="the share of cells that fail at random")
    ap.add_argument("--calm", action="store_true", help="no strikes (checks the checks)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = a.work or tempfile.mkdtemp(prefix=f"chaos-{a.seed}-")
    os.makedirs(work, exist_ok=True)
    from tests.helpers.files import make_tiny_model

    model = os.path.join(work, "tiny-bert")
    if not os.path.isdir(model):
        make_tiny_model(__import__("pathlib").Path(model))
    name = f"chaos{a.seed}"
    suite = os.path.join(work, f"{name}.yaml")
    open(suite, "w").write(suite_text(model, name))
    server = None
    if a.db == "postgresql":
        from tests.helpers.postgres import PostgresServer

        server = PostgresServer().start()
        db = server.create_database(f"chaos{a.seed}")
    else:
        db = f"sqlite:///{os.path.join(work, 'h.db')}"
    out = os.path.join(work, "out")
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    from harness.plan.suite import load_suite

    n_cells = len(load_suite(suite).cells(num_processes=1))
    w = Workers(suite, db, out, logs, rng, flaky=a.flaky)
    try:
        for slot in range(3):
            w.start(slot, retry_failed=False)
        deadline = time.monotonic() + a.max_min * 60
        next_strike = time.monotonic() + rng.uniform(4, 8)   # the first cells need their imports
        done = False
        while time.monotonic() < deadline:
            time.sleep(0.2)
            w.wake()
            w.reap()
            if time.monotonic() >= next_strike and not a.calm and sum(w.events.values()) < a.strikes:
                w.strike()
                next_strike = time.monotonic() + rng.expovariate(1 / a.period)
            if int(time.monotonic() * 5) % 10 == 0:
                done, counts = finished(db, name, n_cells)
                if done:
                    break
        w.wake(all_now=True)
        w.say(f"finished={done}; the workers left end by themselves")
        end = time.monotonic() + 90
        while w.procs and time.monotonic() < end:
            time.sleep(0.3)
            w.reap(restart=False)
        for slot, (p, _) in list(w.procs.items()):
            w.say(f"still running after 90 s: pid {p.pid}; killed")
            p.kill()
            p.wait()
        w.reap(restart=False)
        os.makedirs(os.path.join(work, "pre"), exist_ok=True)
        before, _ = check(db, out, suite, name, os.path.join(work, "pre"))
        # a last worker on the finished suite: settles what a kill left between a commit and its moves (failures
        # stay failed); then one with --retry-failed, which trains the failures again
        last = cli("run", suite, "--db", db, "--output-dir", out, "--no-progress")
        w.say(f"last worker exit {last.returncode}: {last.stderr.strip().splitlines()[-1:]}")
        os.makedirs(os.path.join(work, "settled"), exist_ok=True)
        settled, settled_facts = check(db, out, suite, name, os.path.join(work, "settled"))
        retried = cli("run", suite, "--db", db, "--output-dir", out, "--no-progress", "--retry-failed")
        w.say(f"--retry-failed worker exit {retried.returncode}: {retried.stderr.strip().splitlines()[-1:]}")
        broke, facts = check(db, out, suite, name, work)
        broke = [f"settled: {b}" for b in settled] + broke
        facts["failed_before_retry"] = settled_facts.get("status_failed", 0)
        tracebacks = []
        for log in sorted(os.listdir(logs)):
            text = open(os.path.join(logs, log)).read()
            if "Traceback" in text:
                tracebacks.append(log)
        summary = {"seed": a.seed, "db": a.db, "cells": n_cells, "finished": done, "workers_started": w.started,
                   "events": dict(w.events), "exits": {str(k): v for k, v in w.exits.items()},
                   "seconds": round(time.monotonic() - w.t0), "broke_before_last_worker": before,
                   "broke": broke, "facts": facts, "tracebacks_in": tracebacks, "work": work}
        with open(os.path.join(work, "timeline.txt"), "w") as f:
            f.write("\n".join(w.timeline) + "\n")
        print(json.dumps(summary, default=str))
        return 1 if broke or not done else 0
    finally:
        for p, _ in w.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.wait()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
