"""Runs a suite: plans which cells need work, trains them one at a time, records every outcome.

Every process of an `accelerate launch` runs this; rank 0 decides the plan (and broadcasts it) and is the
only one that writes to the store or the output directory.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass

from harness.plan.cells import Cell
from harness.store.env import environment
from harness.train.progress import Progress
from harness.store.db import COMPLETED, FAILED, RUNNING, RunRecord, Store
from harness.plan.suite import Suite
from harness.train.loop import RunContext, process_state, train_and_evaluate
from harness.train.result import RunResult


@dataclass
class Plan:
    todo: list[Cell]
    skipped_done: list[Cell]
    skipped_failed: list[Cell]


def plan_cells(cells: list[Cell], store: Store, suite: str, retry_failed: bool) -> Plan:
    """Completed cells are skipped; failed ones too unless retry_failed; 'running' ones were left behind by a
    killed process, so they run again."""
    records = store.by_key(suite)
    todo, done, failed = [], [], []
    for cell in cells:
        rec = records.get(cell.key)
        if rec is not None and rec.status == COMPLETED:
            done.append(cell)
        elif rec is not None and rec.status == FAILED and not retry_failed:
            failed.append(cell)
        else:
            todo.append(cell)
    return Plan(todo, done, failed)


def reproduce_command(suite_path: str, num_processes: int) -> str:
    launcher = ("accelerate launch" if num_processes == 1 else
                f"accelerate launch --multi_gpu --num_processes {num_processes}")
    return f"{launcher} harness/run.py {shlex.quote(suite_path)} --retry-failed"


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) < 2000 else text[:2000] + " …"


def run_suite(suite: Suite, db_url: str | None, data_dir: str | None, output_dir: str, retry_failed: bool,
              cache_dir: str | None = None, show_progress: bool = True) -> int:
    """Returns the exit code: 1 if any cell failed in this run, else 0."""
    from accelerate.utils import broadcast_object_list

    state = process_state()
    main = state.is_main_process
    cells = suite.cells(num_processes=state.num_processes)
    store = Store(db_url) if main else None
    plan_holder = [None]
    if main:
        plan_holder[0] = plan_cells(cells, store, suite.name, retry_failed)
    if state.num_processes > 1:
        broadcast_object_list(plan_holder, from_process=0)
    plan: Plan = plan_holder[0]

    def say(line: str) -> None:
        if main:
            print(line, file=sys.stderr, flush=True)

    say(f"suite {suite.name}: {len(cells)} cells, {len(plan.skipped_done)} already completed (skipped), "
        f"{len(plan.skipped_failed)} failed before (skipped; --retry-failed runs them), {len(plan.todo)} to run "
        f"on {state.num_processes} process(es)")
    ctx = RunContext(data_dir=suite.data_dir(data_dir), cache_dir=cache_dir or os.path.join(output_dir, "cache"),
                     model_base_dir=os.path.dirname(os.path.abspath(suite.path)), show_progress=show_progress)
    suite_bar = Progress(len(plan.todo), f"suite {suite.name}", enabled=main, unit="cell", bars=show_progress)
    command = reproduce_command(suite.path, state.num_processes)
    failures = 0
    for cell in plan.todo:
        cell_dir = os.path.abspath(os.path.join(output_dir, suite.name, cell.key))
        run_id = store.start(cell, cell.config(), command, cell_dir) if main else None
        suite_bar.write(f"cell {cell.key}: {cell.label}")
        t0 = time.perf_counter()
        try:
            result = train_and_evaluate(cell, ctx, output_dir=cell_dir)
            status, error = COMPLETED, None
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # recorded, and the suite goes on
            failures += 1
            status, error = FAILED, _error_text(exc)
            result = RunResult()
            if main:
                traceback.print_exc(file=sys.stderr)
            _release_memory()
        if main:
            env = environment(state.num_processes, result.mixed_precision, result.distributed_type)
            rec = store.finish(run_id, status, {**result.columns(RunRecord.COLUMNS), "error": error, "env": env})
            for suffix, child in result.child_rows():
                store.add_child(run_id, suffix, {**child.columns(RunRecord.COLUMNS), "status": status, "env": env})
            _write_json(cell_dir, rec.as_dict())
            took = time.perf_counter() - t0
            if status == COMPLETED:
                suite_bar.write(f"cell {cell.key}: completed in {took:.0f}s, score {rec.score:.2f} "
                                f"(best {rec.best_score:.2f}), {rec.trainable_pct:.3g}% of {rec.total_params:,} params trainable")
            else:
                suite_bar.write(f"cell {cell.key}: FAILED after {took:.0f}s: {error}")
        suite_bar.update(1)
    suite_bar.close()
    say(f"suite {suite.name}: {len(plan.todo) - failures} completed, {failures} failed, "
        f"{len(plan.skipped_done)} skipped (already completed)")
    if main and suite.model.ablate:
        failures += run_ablations(suite, store, ctx, say)
    return 1 if failures else 0


def run_ablations(suite: Suite, store: Store, ctx: RunContext, say) -> int:
    """The suite's `ablate` entries: every matching completed single-task run without an ablation gets one.
    Returns the number that failed (each is reported; the others go on)."""
    from harness.analysis.ablate import ablate

    from harness.report.tables import best_setting_runs, runs_frame
    from harness.train.methods import methods_with

    done = {a.run_id for a in store.analyses(suite.name, "adapter_ablation")}
    runs = runs_frame(store, suite.name)
    runs = runs[(runs["status"] == COMPLETED) & runs["regime"].isna() & runs["method"].isin(methods_with("ablatable"))]
    wanted: set[int] = set()
    for e in suite.model.ablate:
        match = runs[(runs["task"] == e.task if e.task else True) & (runs["method"] == e.method if e.method else True)]
        if e.runs == "all":
            wanted.update(int(i) for i in match["id"])
            continue
        for _, group in match.groupby(["model", "task", "method_label"]):
            wanted.add(int(best_setting_runs(group).sort_values("seed").iloc[0]["id"]))
    failed = 0
    for rec in map(store.get, sorted(wanted - done)):
        try:
            payload = ablate(rec, ctx)
        except Exception as exc:
            failed += 1
            say(f"ablation of run {rec.id} FAILED: {_error_text(exc)}")
            continue
        store.add_analysis(rec.id, "adapter_ablation", payload)
        worst = min(payload["spans"], key=lambda s: s[2])
        say(f"ablation of run {rec.id} ({rec.task}, {rec.method_label}): {len(payload['spans'])} spans, baseline "
            f"{payload['baseline']:.2f}, worst {worst[2]:.2f} without layers {worst[0]}..{worst[1]}")
    return failed


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write_json(cell_dir: str, record: dict) -> None:
    os.makedirs(cell_dir, exist_ok=True)
    tmp = os.path.join(cell_dir, "record.json.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(tmp, os.path.join(cell_dir, "record.json"))


def status_rows(suite: Suite, store: Store | None, num_processes: int = 1) -> list[dict]:
    records = store.by_key(suite.name) if store is not None and store.columns() else {}
    rows = []
    for cell in suite.cells(num_processes=num_processes):
        rec = records.get(cell.key)
        status = "pending" if rec is None else rec.status
        if status == RUNNING:
            status = "running (or killed)"
        rows.append({"cell": cell, "status": status, "record": rec})
    return rows
