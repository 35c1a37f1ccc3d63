"""`harness estimate` and `harness status` on multi-task and sequential cells, from a store a real worker wrote:
a cell of several tasks is counted and priced once, as what it really processes and takes, and its member or
stage rows do not stand in for their tasks."""

from __future__ import annotations

import json

import pytest

from harness.spec.status import Regime
from harness.store.db import Store
from tests.helpers import run_cli, write_suite

SUITE = """
name: {name}
models: ["{model}"]
tasks: [rte, {{sequence: [rte, stsb]}}, {{multitask: [rte, stsb]}}]
methods: [full]
seeds: [{seed}]
budgets: [{budget}]
hparams: {{batch_size: 8}}
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_bert, small_glue):
    """One real worker ran suite "ran": rte alone, a sequence rte -> stsb and a multi-task cell rte + stsb, one
    epoch each of small_glue's 48 training and 21 dev examples per task, batches of 8 (6 steps per task)."""
    tmp = tmp_path_factory.mktemp("schedules")
    suite = write_suite(tmp / "ran.yaml", SUITE.format(name="ran", model=tiny_bert, seed=1, budget="{epochs: 1}"))
    db = f"sqlite:///{tmp / 'h.db'}"
    proc = run_cli("run", suite, "--db", db, "--output-dir", tmp / "out", "--data-dir", small_glue, "--no-progress",
                   cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = Store(db).records("ran")
    top = {r.regime: r for r in rows if r.parent_id is None}
    assert len(rows) == 3 + 1 + 2 and set(top) == {None, Regime.SEQUENTIAL, Regime.MULTITASK}
    return tmp, suite, db, top, rows


def estimate_later(ran, tiny_bert, small_glue) -> tuple[dict, dict]:
    """The same cells, seed 2, under {epochs: 3, max_steps: 30}, estimated from the run's rows (each cell matches
    its own seed-1 row exactly): {task as labelled: its estimate}, and each top row's rates, {regime: (seconds per
    training example, per dev example scored)} (each ran one epoch: one evaluation)."""
    tmp, _, db, top, _ = ran
    later = write_suite(tmp / "later.yaml", SUITE.format(name="later", model=tiny_bert, seed=2,
                                                         budget="{epochs: 3, max_steps: 30}"))
    r = run_cli("estimate", later, "--from-store", db, "--data-dir", small_glue, "--json", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    cells = {c["label"].split()[1]: c for c in json.loads(r.stdout)["cells"]}
    assert {c["level"] for c in cells.values()} == {"exact"}
    return cells, {regime: (1 / row.train_examples_per_s, row.eval_time_s / row.eval_examples)
                   for regime, row in top.items()}


def test_multi_task_members_do_not_size_their_tasks(ran, tiny_bert, small_glue):
    """rte alone: 48 examples, 6 steps per epoch, 18 steps (the epochs bind): 144 training examples, 3 evaluations
    of 21. The multi-task cell's member rows carry the joint run's cost (its steps and times); their training
    examples are their own task's since 2026-12-06 (before, the joint run's 96, which read as rte's would have
    planned rte alone at 96 x 30 / 12 = 240 examples), and the estimate still sizes rte from rte's own row."""
    members = [r for r in ran[4] if r.regime == Regime.MULTITASK_MEMBER]
    assert {(r.task, r.train_examples, r.steps) for r in members} == {("rte", 48, 12), ("stsb", 48, 12)}
    cells, rates = estimate_later(ran, tiny_bert, small_glue)
    train_s, eval_s = rates[None]
    assert cells["rte"]["seconds"] == pytest.approx(144 * train_s + 3 * 21 * eval_s, rel=1e-9)


def test_a_multi_task_cell_is_planned_as_one_loop(ran, tiny_bert, small_glue):
    """The multi-task cell is one loop whose epoch is both tasks' 12 batches: 30 steps (max_steps binds), 240
    examples, 3 evaluations of its 42 dev examples; max_steps bounds the joint loop, not each task (per task, 18
    steps each: 288 examples and 6 evaluations)."""
    joint = ran[3][Regime.MULTITASK]
    assert (joint.steps, joint.train_examples, joint.eval_examples) == (12, 96, 42)
    cells, rates = estimate_later(ran, tiny_bert, small_glue)
    train_s, eval_s = rates[Regime.MULTITASK]
    assert cells["rte+stsb"]["seconds"] == pytest.approx(240 * train_s + 3 * 42 * eval_s, rel=1e-9)


def test_a_sequence_s_time_is_every_stage_s(ran):
    """A sequential cell's row holds the whole sequence's training time but its last stage's evaluation time; its
    first stage's evaluation is in that stage's row. Status counts a completed sequence's time as all of it, and
    prices the next seed of each setting at its completed cell's whole time: the same suite with seeds 1 and 2,
    seed 2 pending in all three settings, has exactly the seed-1 cells' time left."""
    tmp, _, db, top, rows = ran
    (stage,) = [r for r in rows if r.regime == Regime.SEQUENTIAL_STAGE]
    assert stage.eval_time_s > 0 and stage.parent_id == top[Regime.SEQUENTIAL].id
    took = sum(r.train_time_s + r.eval_time_s for r in top.values()) + stage.eval_time_s
    both = write_suite(tmp / "both.yaml", SUITE.format(name="ran", model=top[None].model, seed="1, 2",
                                                       budget="{epochs: 1}"))
    r = run_cli("status", both, "--db", db, "--json", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    e = json.loads(r.stdout)
    assert e["counts"]["completed"] == 3 and e["counts"]["pending"] == 3 and e["counts"]["total"] == 6
    assert e["estimate"]["actual_s"] == pytest.approx(took, rel=1e-9)
    assert e["estimate"]["work_s"] == pytest.approx(took, rel=1e-9)
