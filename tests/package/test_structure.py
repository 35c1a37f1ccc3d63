"""The seams every feature hangs on: the typed run result and its one mapping to store columns, status and
regime enums that keep the stored strings, method capability flags, task kinds."""

import dataclasses

import pytest

from harness.spec.status import Regime, Status
from harness.plan.suite import parse_suite
from harness.store.db import Store
from harness.store.schema import RUN_COLUMNS
from harness.train.result import COLUMN, RunResult

SUITE = "name: s\nmodels: [minilm]\ntasks: [{sequence: [mrpc, rte]}]\nmethods: [full]\n"


def test_every_column_field_of_the_result_is_a_store_column():
    for f in dataclasses.fields(RunResult):
        if f.metadata["store"] == COLUMN:
            assert f.name in RUN_COLUMNS, f.name


def test_result_columns_raise_on_a_field_the_store_lacks():
    result = RunResult(score=70.0, steps=3)
    with pytest.raises(KeyError, match="'steps' has no store column"):
        result.columns([c for c in RUN_COLUMNS if c != "steps"])


def test_result_round_trip_through_the_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    cell = parse_suite(SUITE, "s.yaml").cells()[0]
    assert cell.regime == Regime.SEQUENTIAL
    claim = store.start(cell, cell.config(), "cmd", "out")
    rid = claim.id
    stage = RunResult(score=60.0, task="mrpc", stage=0, regime=Regime.SEQUENTIAL_STAGE,
                      encoder_checksum={"start": "a", "end": "b"}, state={"w": 1})
    result = RunResult(score=70.0, metrics={"accuracy": 70.0}, train_time_s=5.0, stage_train_time_s=2.0,
                       encoder_checksum={"start": "b", "end": "c"}, mixed_precision="no", stages=[stage])
    fields = result.columns(RUN_COLUMNS)
    assert "mixed_precision" not in fields and "stages" not in fields and "state" not in fields
    children = [(suffix, {**child.columns(RUN_COLUMNS), "status": Status.COMPLETED})
                for suffix, child in result.child_rows()]
    rec = store.finish(claim, Status.COMPLETED, fields, children)
    assert rec.extra == {"encoder_checksum": {"start": "b", "end": "c"}, "stage_train_time_s": 2.0}
    child = store.children(rid)[0]
    assert child.cell_key == f"{cell.key}.stage0" and child.score == 60.0 and child.task == "mrpc"
    assert child.extra == {"encoder_checksum": {"start": "a", "end": "b"}}
    # the enums store their plain strings: stores written before them read the same
    rows = store.engine.connect().exec_driver_sql("SELECT status, regime FROM runs ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("completed", "sequential"), ("completed", "sequential_stage")]
    assert store.get(rid).status == Status.COMPLETED == "completed"


def test_rows_that_are_no_result_of_their_own_stay_out_of_the_tables(tmp_path):
    """A sequential cell's earlier stage and a multi-task cell's joint row are in the store, not in the results
    table; the sequential cell's last stage and the multi-task member tasks are."""
    from harness.report.tables import best_table, runs_frame

    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    suite = parse_suite("name: s\nmodels: [minilm]\nmethods: [full]\n"
                        "tasks: [{sequence: [mrpc, rte]}, {multitask: [mrpc, stsb]}]\n", "s.yaml")
    sequential, multitask = suite.cells()
    claim = store.start(sequential, sequential.config(), "cmd", "out")
    result = RunResult(score=70.0, task="rte", stages=[RunResult(score=60.0, task="mrpc", stage=0,
                                                                  regime=Regime.SEQUENTIAL_STAGE)])
    store.finish(claim, Status.COMPLETED, result.columns(RUN_COLUMNS),
                 [(k, {**c.columns(RUN_COLUMNS), "status": Status.COMPLETED}) for k, c in result.child_rows()])
    claim = store.start(multitask, multitask.config(), "cmd", "out")
    result = RunResult(score=50.0, members=[RunResult(score=s, task=t, regime=Regime.MULTITASK_MEMBER)
                                            for t, s in (("mrpc", 40.0), ("stsb", 60.0))])
    store.finish(claim, Status.COMPLETED, result.columns(RUN_COLUMNS),
                 [(k, {**c.columns(RUN_COLUMNS), "status": Status.COMPLETED}) for k, c in result.child_rows()])
    runs = runs_frame(store)
    assert len(runs) == 5 and set(runs["regime"]) == {r.value for r in Regime}   # every row is stored
    table = best_table(runs)
    assert sorted(zip(table["regime"], table["task"], table["mean"])) == [
        ("multitask_member", "mrpc", 40.0), ("multitask_member", "stsb", 60.0), ("sequential", "rte", 70.0)]


def test_capability_flags_decide_what_a_suite_may_ask():
    """Each method's flags are what the suite checks read: an ablate entry only for an ablatable method,
    `adapter: new` only for a stackable one, a saved adapter only in a single-task
    cell."""
    from harness.spec.errors import InputError
    from harness.spec.methods import METHODS

    def refusal(name: str, tasks: str, extra: str = "") -> str:
        try:
            parse_suite(f"name: s\nmodels: [minilm]\ntasks: {tasks}\nmethods: [{name}]\n{extra}", "s.yaml")
        except InputError as e:
            return str(e)
        return ""

    for name, method in METHODS.items():
        ablate = refusal(name, "[rte]", f"ablate:\n  - {{method: {name}}}\n")
        assert ("cannot be ablated" in ablate) is not method.ablatable, (name, ablate)
        stack = refusal(name, "[{sequence: [mrpc, rte], adapter: new}]")
        assert ("adapter: new stacks" in stack) is (not method.stackable), (name, stack)
        for schedule in ("[{sequence: [mrpc, rte]}]", "[{multitask: [mrpc, rte]}]"):
            saved = refusal(name, schedule)
            assert ("saved single-task adapter" in saved) is method.loads_saved, (name, saved)


def test_ablate_entry_accepts_only_ablatable_methods():
    from harness.spec.errors import InputError

    text = "name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [bitfit]\nablate:\n  - {method: bitfit}\n"
    with pytest.raises(InputError, match=r's.yaml:6: ablate\[0\].method: "bitfit" cannot be ablated'):
        parse_suite(text, "s.yaml")


def test_every_task_has_a_kind():
    from harness.tasks.kinds import KINDS, kind_of
    from harness.spec.tasks import TASKS

    for task in TASKS.values():
        assert kind_of(task) is KINDS[task.kind]
