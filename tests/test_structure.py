"""The seams every feature hangs on: the typed run result and its one mapping to store columns, status and
regime enums that keep the stored strings, method capability flags, task kinds."""

import dataclasses

import pytest

from harness.spec.status import NOT_RESULTS, Regime, Status
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
    assert set(NOT_RESULTS) == {"multitask", "sequential_stage"}


def test_method_capabilities_are_flags():
    from harness.spec.methods import methods_with

    assert methods_with("ablatable") == ("houlsby", "pfeiffer", "lora")
    assert methods_with("stackable") == ("houlsby", "pfeiffer", "compacter")
    assert methods_with("loads_saved") == ("pretrained_adapter",)


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
    assert kind_of(TASKS["rte"]).auto_model == "AutoModelForSequenceClassification"
