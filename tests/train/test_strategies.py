"""Sequential and multi-task cells, saved adapters stitched back in, ablation, compare and params: one tiny
suite run for real (subprocess, SQLite), then checked through the store and the CLI."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import assert_refused, make_tiny_model, run_cli, write_suite
from harness.store.db import Store
from harness.train.models import dir_source

L, D = 2, 32  # layers and hidden size of the tiny model


@pytest.fixture(scope="module")
def strat(tmp_path_factory, tiny_bert, small_glue):
    work = tmp_path_factory.mktemp("strategies")
    suite = write_suite(work / "s.yaml", f"""
name: strat
models: ["{tiny_bert}"]
tasks:
  - rte
  - stsb
  - {{sequence: [rte, stsb]}}
  - {{multitask: [rte, stsb, cola], sampling: temperature, temperature: 2}}
methods:
  - full
  - {{name: houlsby, size: 4, learning_rate: 1e-3}}
budgets: [{{epochs: 1}}]
hparams: {{batch_size: 8, learning_rate: 1e-4}}
ablate: [{{task: rte, method: houlsby}}]
""")
    # a new adapter stacked per stage: only for methods that have one to stack (validate refuses it for full);
    # three stages, so the last stacks two earlier adapters
    stacked = write_suite(work / "stacked.yaml", f"""
name: strat
models: ["{tiny_bert}"]
tasks: [{{sequence: [rte, stsb], adapter: new}}, {{sequence: [rte, stsb, cola], adapter: new}}]
methods: [{{name: houlsby, size: 4, learning_rate: 1e-3}}]
budgets: [{{epochs: 1}}]
hparams: {{batch_size: 8, learning_rate: 1e-4}}
""")
    db = f"sqlite:///{work / 'h.db'}"
    log = ""
    for path in (suite, stacked):
        proc = run_cli("run", path, "--db", db, "--output-dir", work / "out", "--data-dir", small_glue, cwd=work)
        assert proc.returncode == 0, proc.stderr[-4000:]
        log += proc.stderr
    return {"work": work, "db": db, "store": Store(db), "suite": suite, "log": log, "data": small_glue}


def by(store, **equal):
    return [r for r in store.records() if all(getattr(r, k) == v for k, v in equal.items())]


def test_multitask_rows_link_to_the_joint_run(strat):
    store = strat["store"]
    for method in ("full", "houlsby"):
        (joint,) = by(store, regime="multitask", method=method)
        assert joint.task == "rte+stsb+cola" and joint.status == "completed"
        members = store.children(joint.id)
        assert [m.task for m in members] == ["rte", "stsb", "cola"]
        assert all(m.regime == "multitask_member" and m.parent_id == joint.id for m in members)
        assert joint.score == pytest.approx(np.mean([m.score for m in members]))
        assert set(members[1].metrics) == {"pearson", "spearman"} and set(members[2].metrics) == {"mcc"}
        # one shared encoder: every head, but the encoder once
        single = by(store, task="rte", method=method, regime=None)[0]
        heads = sum(m.head_params for m in members)
        assert joint.total_params == single.total_params - single.head_params + heads
        # member rows line up with the single-task rows in the leaderboard; the joint row is not a task column
    from harness.report.tables import best_table, leaderboard_table, runs_frame

    board = leaderboard_table(best_table(runs_frame(store, "strat")))
    assert "rte+stsb+cola_mean" not in board.columns
    row = board[board["method"].str.startswith("full [multitask")].iloc[0]
    member = by(store, regime="multitask_member", method="full", task="stsb")[0]
    assert row["stsb_mean"] == pytest.approx(member.score)
    assert row["params_all_tasks"] == by(store, regime="multitask", method="full")[0].total_params


def test_sequential_hands_the_encoder_over(strat):
    store = strat["store"]
    (last,) = by(store, regime="sequential", method="full", method_label="full [after rte]")
    (first,) = store.children(last.id)
    assert (first.task, first.stage, first.regime) == ("rte", 0, "sequential_stage")
    assert last.task == "stsb"
    c1, c2 = first.extra["encoder_checksum"], last.extra["encoder_checksum"]
    assert c1["start"] != c1["end"]          # full fine-tuning moved the encoder in stage 0
    assert c2["start"] == c1["end"]          # stage 1 started from exactly those weights
    direct = by(store, task="stsb", method="full", regime=None)[0]
    assert last.score != direct.score        # so it is not the direct run again
    assert last.train_time_s == pytest.approx(first.train_time_s + last.extra["stage_train_time_s"])
    # adapters: the encoder stays frozen through both stages
    (ad,) = by(store, regime="sequential", method="houlsby", method_label="houlsby(size=4,non_linearity=swish) [after rte]")
    c = ad.extra["encoder_checksum"]
    assert c["start"] == c["end"] == store.children(ad.id)[0].extra["encoder_checksum"]["end"]


PER_ADAPTER = L * 2 * (2 * 4 * 32 + 32 + 4)   # houlsby size 4: two bottlenecks per layer of the tiny model


def test_sequential_new_adapter_stacks_on_the_previous(strat):
    store = strat["store"]
    sequential = by(store, regime="sequential", method="houlsby", task="stsb")
    (new,) = [r for r in sequential if "new adapter" in r.method_label]
    (cont,) = [r for r in sequential if "new adapter" not in r.method_label]
    assert new.total_params == cont.total_params + PER_ADAPTER   # the previous adapter stays in, frozen
    assert new.trainable_params == cont.trainable_params


def test_sequential_new_adapter_keeps_every_earlier_stage(strat):
    """Three stages: the last holds three adapters (two frozen, one training), each stage one more than the
    one before; one name for "the previous adapter" left the last stage with two."""
    store = strat["store"]
    (last,) = by(store, regime="sequential", method="houlsby", task="cola")
    rows = sorted(store.children(last.id), key=lambda r: r.stage) + [last]
    assert [r.task for r in rows] == ["rte", "stsb", "cola"]
    assert [r.added_params for r in rows] == [PER_ADAPTER, 2 * PER_ADAPTER, 3 * PER_ADAPTER]
    assert all(r.trainable_params - r.head_params == PER_ADAPTER for r in rows)


def test_new_adapter_hand_over_stacks_each_stage_with_its_weights(tiny_bert, small_glue):
    """Hand-over mode "new" through build_model, stage by stage: every earlier stage's adapter is in the
    model with the weights that stage ended with, frozen, stacked in stage order under the fresh one."""
    from harness.plan.suite import parse_suite
    from harness.spec.tasks import get_task
    from harness.train.context import RunContext
    from harness.train.methods import ADAPTER_NAME
    from harness.train.model_setup import build_model
    from harness.train.schedules import handover_state

    (cell,) = parse_suite(f"""
name: chain
models: ["{tiny_bert}"]
tasks: [{{sequence: [rte, stsb, cola, mrpc], adapter: new}}]
methods: [{{name: houlsby, size: 4}}]
""").cells()
    ctx, handover, trained = RunContext(str(small_glue), None), None, []
    for stage, task in enumerate(cell.tasks):
        _, model, _, _, counts = build_model(cell, ctx, [get_task(task)], handover)
        base = getattr(model, model.base_model_prefix)
        assert counts["added_params"] == (stage + 1) * PER_ADAPTER
        assert {n.split(".adapters.")[1].split(".")[0] for n, p in base.named_parameters()
                if p.requires_grad and ".adapters." in n} == {ADAPTER_NAME}   # only the fresh one trains
        stack = list(model.active_adapters)   # the earlier stages' adapters in stage order, the fresh one on top
        assert len(stack) == stage + 1 and stack[-1] == ADAPTER_NAME and len(set(stack)) == len(stack)
        state = base.state_dict()
        for i, weights in enumerate(trained):   # what each earlier stage ended with, in its place in the stack
            mine = {k.replace(f".{ADAPTER_NAME}.", f".{stack[i]}."): v for k, v in weights.items()}
            assert mine and all(torch.equal(state[k], v) for k, v in mine.items()), (stage, i)
        with torch.no_grad():   # "training": this stage's adapter ends with weights of its own
            for n, p in base.named_parameters():
                if f".{ADAPTER_NAME}." in n:
                    p.add_(torch.randn_like(p))
        handover = {"state": handover_state(model), "mode": "new"}
        trained.append({k: v for k, v in handover["state"].items() if f".{ADAPTER_NAME}." in k})


def test_adapter_runs_save_their_adapter_and_head(strat):
    rec = by(strat["store"], task="rte", method="houlsby", regime=None)[0]
    assert rec.adapter_bytes > 0
    files = set(p.name for p in __import__("pathlib").Path(rec.adapter_path).iterdir())
    assert {"adapter_config.json", "harness_head.safetensors"} <= files
    assert rec.adapter_bytes == sum(p.stat().st_size for p in __import__("pathlib").Path(rec.adapter_path).iterdir())
    assert by(strat["store"], task="rte", method="full", regime=None)[0].adapter_path is None


def test_pretrained_adapter_reproduces_the_saved_run(strat, tiny_bert):
    store = strat["store"]
    rec = by(store, task="rte", method="houlsby", regime=None)[0]
    suite = write_suite(strat["work"] / "stitch.yaml", f"""
name: stitch
models: ["{tiny_bert}"]
tasks: [rte]
methods:
  - {{name: pretrained_adapter, path: "{rec.adapter_path}"}}
  - {{name: pretrained_adapter, path: "{rec.adapter_path}", train: true, learning_rate: 1e-3}}
budgets: [{{epochs: 1}}]
hparams: {{batch_size: 8}}
""")
    proc = run_cli("run", suite, "--db", strat["db"], "--output-dir", strat["work"] / "out", "--data-dir",
                   strat["data"], cwd=strat["work"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated, trained = sorted(by(store, suite="stitch"), key=lambda r: r.method_params["train"])
    assert evaluated.stopped_by == "evaluation_only" and evaluated.steps == 0 and evaluated.trainable_params == 0
    assert evaluated.metrics == rec.metrics            # same adapter, same head, same dev set: same predictions
    assert trained.steps > 0 and trained.trainable_params == rec.trainable_params
    # what each stitched in, by content: the saved folder's every file (a folder its run rewrites is told apart)
    # (compared across edits, not recomputed: a copy of the folder reads alike, a copy with its head rewritten not)
    folder = Path(rec.adapter_path)
    source = evaluated.extra["adapter_source"]
    assert source == trained.extra["adapter_source"] and source.startswith(f"dir:{folder}:sha256:")
    copy = strat["work"] / "adapter-copy"
    shutil.copytree(folder, copy)
    assert dir_source(str(copy)).split(":sha256:")[1] == source.split(":sha256:")[1]
    (copy / "harness_head.safetensors").write_bytes((copy / "harness_head.safetensors").read_bytes() + b" ")
    assert dir_source(str(copy)).split(":sha256:")[1] != source.split(":sha256:")[1]
    assert "adapter_source" not in rec.extra   # (a run that stitched nothing in)


def test_ablation_shape_and_identity(strat):
    store = strat["store"]
    rec = by(store, task="rte", method="houlsby", regime=None)[0]
    (analysis,) = [a for a in store.analyses("strat", "adapter_ablation") if a.run_id == rec.id]
    p = analysis.payload
    assert p["num_layers"] == L and len(p["spans"]) == L * (L + 1) // 2
    assert sorted((i, j) for i, j, _ in p["spans"]) == [(0, 0), (0, 1), (1, 1)]
    assert p["baseline"] == pytest.approx(rec.score)   # span "none": the run itself
    # only the rte houlsby run was asked for
    assert len(store.analyses("strat", "adapter_ablation")) == 1


def test_removing_every_adapter_is_the_model_without_adapters(strat):
    from harness.analysis.ablate import _removable, load_trained_adapter

    rec = by(strat["store"], task="rte", method="houlsby", regime=None)[0]
    tok, model = load_trained_adapter(rec)
    batch = tok(["the cat sat on the mat", "a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        with_adapters = model(**batch).logits
        for params in _removable(model).values():
            for p in params:
                p.zero_()
        removed = model(**batch).logits
        model.set_active_adapters(None)
        without = model(**batch).logits
    assert not torch.allclose(with_adapters, removed)
    assert torch.allclose(removed, without, atol=1e-6)


def test_ablate_and_compare_commands(strat):
    rec = by(strat["store"], task="rte", method="houlsby", regime=None)[0]
    full = by(strat["store"], task="rte", method="full", regime=None)[0]
    proc = run_cli("ablate", rec.cell_key, "--db", strat["db"], "--data-dir", strat["data"],
                   "--cache-dir", strat["work"] / "cache", cwd=strat["work"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    # ablated again by hand after the suite's: the newer matrix is the run's, one in every table
    (again,) = strat["store"].analyses("strat", "adapter_ablation")
    assert "first\\last" in proc.stdout and again.run_id == rec.id and again.payload["spans"]
    proc = run_cli("compare", str(full.id), rec.cell_key, "--db", strat["db"], "--resamples", "200")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "21 paired dev examples" in proc.stdout and "95% CI" in proc.stdout
    proc = run_cli("compare", "full", rec.method_label, "--task", "rte", "--suite", "strat", "--db", strat["db"])
    assert proc.returncode == 0 and "1 seed pair(s)" in proc.stdout, proc.stderr[-2000:]
    assert_refused(run_cli("compare", "ful", rec.method_label, "--task", "rte", "--db", strat["db"]),
                   'did you mean "full')
    assert_refused(run_cli("ablate", str(full.id), "--db", strat["db"], "--data-dir", strat["data"]),
                   "ablation needs")
    proc = run_cli("export", "--db", strat["db"], "--table", "ablation", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert sorted((r["first_layer"], r["last_layer"]) for r in rows) == [("0", "0"), ("0", "1"), ("1", "1")]
    assert all(float(r["change"]) == pytest.approx(float(r["score"]) - float(r["baseline"])) for r in rows)
    proc = run_cli("export", "--db", strat["db"], "--table", "ablation", "--format", "markdown")
    assert "| layers 0-1 " in proc.stdout and "adapters removed" in proc.stdout
    missing = strat["work"] / "missing.db"
    assert_refused(run_cli("compare", "1", "2", "--db", f"sqlite:///{missing}"), "no store at")
    assert not missing.exists()


def test_rerun_skips_composite_cells(strat):
    db = strat["db"]
    proc = run_cli("run", strat["suite"], "--db", db, "--output-dir", strat["work"] / "out", "--data-dir",
                   strat["data"], cwd=strat["work"])
    assert proc.returncode == 0 and "8 already completed" in proc.stderr, proc.stderr[-2000:]
    proc = run_cli("status", strat["suite"], "--db", db)
    assert "8 completed" in proc.stdout


@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_params_command_counts_what_the_run_trains(tmp_path, small_glue, task):
    """`harness params` against the model a run builds (build_model), method by method, on a checkpoint saved
    without its pooler: the run initialises the pooler anew, so it trains with the head whatever the method
    freezes; params counted it frozen (and not as head) because a model built from a config has no missing keys."""
    from harness.analysis.accounting import format_rows, param_rows
    from harness.plan.suite import parse_suite
    from harness.spec.tasks import get_task
    from harness.train.context import RunContext
    from harness.train.model_setup import build_model

    model = make_tiny_model(tmp_path / "no-pooler", pooler=False)
    suite = parse_suite(f"""
name: p
models: ["{model}"]
tasks: [{task}]
methods: [full, linear_probe, layernorm, {{name: houlsby, size: 4}}, {{name: lora, rank: 2}}, ia3,
          {{name: prefix_tuning, prefix_length: 5, bottleneck_size: 16}}]
""")
    rows = {r.method: r for r in param_rows(suite)}
    pooler = D * D + D
    for cell in suite.cells():
        *_, counts = build_model(cell, RunContext(str(small_glue), None), [get_task(task)])
        row = rows[cell.method_label]
        assert (row.total, row.trainable, row.added, row.head, row.embedding, row.encoder) == (
            counts["total_params"], counts["trainable_params"], counts["added_params"], counts["head_params"],
            counts["embedding_params"], counts["encoder_params"]), cell.method_label
        assert row.head == pooler + D * (2 if task == "rte" else 1) + (2 if task == "rte" else 1)
    # the title explains a multi-task row only where the table has one (it named "rte+stsb" for every suite)
    assert "multi-task" not in format_rows(list(rows.values())).splitlines()[0]


def test_params_command_counts_a_multi_task_entry_s_joint_model(tmp_path, small_glue):
    """A multi-task entry trains one model with a head per task (and an adapter per task where it asks): `harness
    params` counted a single-task model for it (houlsby with adapter_per_task: half the added parameters, one
    head)."""
    from harness.analysis.accounting import format_rows, param_rows
    from harness.plan.suite import parse_suite
    from harness.spec.tasks import get_task
    from harness.train.context import RunContext
    from harness.train.model_setup import build_model

    model = make_tiny_model(tmp_path / "m")
    suite = parse_suite(f"""
name: p
models: ["{model}"]
tasks: [rte, {{multitask: [rte, stsb], adapter_per_task: true}}, {{multitask: [rte, stsb, sst2]}}]
methods: [{{name: houlsby, size: 4}}, {{name: lora, rank: 2}}]
""")
    rows = {(r.method, r.tasks): r for r in param_rows(suite)}
    assert {tasks for _, tasks in rows} == {"rte", "rte+stsb", "rte+stsb+sst2"}
    assert "a multi-task entry (rte+stsb)" in format_rows(list(rows.values())).splitlines()[0]
    for cell in suite.cells():
        *_, counts = build_model(cell, RunContext(str(small_glue), None), [get_task(t) for t in cell.tasks])
        row = rows[(cell.method_label, cell.task)]
        assert (row.total, row.trainable, row.added, row.head) == (
            counts["total_params"], counts["trainable_params"], counts["added_params"], counts["head_params"]), cell
    single, joint = rows[("houlsby(size=4,non_linearity=swish)", "rte")], rows[("houlsby(size=4,non_linearity=swish)",
                                                                                 "rte+stsb")]
    assert joint.added == 2 * single.added and joint.head == single.head + D + 1   # stsb's head: one output
    proc = run_cli("params", write_suite(tmp_path / "p.yaml", suite_text(model)))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    assert any(line.split()[2] == "rte+stsb" for line in proc.stdout.splitlines()[3:]), proc.stdout


def suite_text(model) -> str:
    return (f'name: p\nmodels: ["{model}"]\ntasks: [rte, {{multitask: [rte, stsb], adapter_per_task: true}}]\n'
            f"methods: [{{name: houlsby, size: 4}}]\n")


def test_the_encoder_checksum_is_of_values_whatever_dtype_holds_them(tmp_path):
    """DeepSpeed's bf16 engine holds a stage's weights in bf16 at its end; the next stage, handed those values,
    starts from them in fp32: the checksums must agree (review: they were hashed with their dtype)."""
    from transformers import AutoModelForSequenceClassification

    from harness.train.schedules import encoder_checksum

    model = AutoModelForSequenceClassification.from_pretrained(make_tiny_model(tmp_path / "m"))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())   # values a bf16 tensor holds exactly
    fp32 = encoder_checksum(model)
    assert encoder_checksum(model.to(torch.bfloat16)) == fp32
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert encoder_checksum(model) != fp32


def test_params_command_says_which_variants_it_does_not_count(tmp_path):
    """A pretrained_adapter variant's size is the saved adapter's, which configs alone do not give: params left
    its row out without a word (a suite of saved adapters alone printed an empty table)."""
    model = make_tiny_model(tmp_path / "m")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "adapter_config.json").write_text("{}")
    suite = write_suite(tmp_path / "p.yaml", f"""
name: p
models: ["{model}"]
tasks: [rte]
methods: [{{name: houlsby, size: 4}}, {{name: pretrained_adapter, path: ./saved}}]
""")
    proc = run_cli("params", suite)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    rows = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith(str(model))]
    assert rows == ["houlsby(size=4,non_linearity=swish)"], proc.stdout
    note = [ln for ln in proc.stdout.splitlines() if "pretrained_adapter(path=./saved" in ln]
    assert len(note) == 1 and "not counted" in note[0], proc.stdout


def test_params_command_prints_a_probe_s_share_as_the_tables_do(tmp_path):
    """The tables print a share below 0.01 % with two significant digits (a probe's head on a large model read
    "0.000", training nothing); `harness params` printed minilm's STS-B probe (385 of 22.7M) as "0.002"."""
    from tests.helpers import call_cli

    suite = write_suite(tmp_path / "p.yaml", "name: p\nmodels: [minilm]\ntasks: [stsb]\nmethods: [linear_probe]\n")
    proc = call_cli("params", suite)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("minilm")]
    assert row[4:6] == ["385", "0.0017"], proc.stdout


def test_params_command_counts_albert_against_bert(tmp_path):
    bert = make_tiny_model(tmp_path / "b", arch="bert")
    albert = make_tiny_model(tmp_path / "a", arch="albert")
    suite = write_suite(tmp_path / "p.yaml", f"""
name: p
models: ["{bert}", "{albert}"]
tasks: [rte]
methods: [full, {{name: houlsby, size: 4}}]
""")
    proc = run_cli("params", suite)
    assert proc.returncode == 0, proc.stderr[-2000:]
    V, D, E, I, P = 30522, 32, 16, 64, 128
    layer = 4 * (D * D + D) + 2 * D + (D * I + I) + (I * D + D) + 2 * D
    bert_emb = V * D + P * D + 2 * D + 2 * D
    albert_emb = V * E + P * E + 2 * E + 2 * E + (E * D + D)   # factorised: V x E, then E x H
    pooler = D * D + D
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(str(albert)) and "full" in ln]
    assert lines, proc.stdout
    # the shared block is counted once: ALBERT's encoder is one layer (+ pooler) whatever the depth
    from harness.analysis.accounting import bert_equivalent_params, model_config
    from harness.spec.models import ModelSpec
    from harness.train.params import breakdown
    from harness.spec.tasks import get_task
    from transformers import AutoModelForSequenceClassification

    cfg = model_config(ModelSpec(str(albert)), get_task("rte"))
    parts = breakdown(AutoModelForSequenceClassification.from_config(cfg))
    assert parts == {"embedding_params": albert_emb, "encoder_params": layer + pooler}
    assert bert_equivalent_params(cfg) == bert_emb + L * layer + pooler
    assert "fewer)" in proc.stdout and "ALBERT" in proc.stdout


@pytest.mark.parametrize("tasks,msg", [
    ("[rte, {sequence: [rte]}]", "tasks[1].sequence: List should have at least 2 items"),
    ("[{sequence: [rte, stbs]}]", 'tasks[0].sequence[1]: unknown task "stbs"'),
    ("[{multitask: [rte, stsb], sampling: temperature}]", "temperature is needed"),
    ("[{multitask: [rte, rte]}]", "a task appears twice"),
    ("[{sequence: [rte, rte]}]", "tasks[0].sequence: a task appears twice"),   # its stages: one task's metrics
    ("[{sequnce: [rte, stsb]}]", "a task is a name"),
    ("[{multitask: [rte, stsb], samplng: uniform}]", 'unknown field (did you mean "sampling"'),
])
def test_bad_task_entries(tmp_path, tasks, msg):
    suite = write_suite(tmp_path / "bad.yaml", f"name: x\nmodels: [minilm]\ntasks: {tasks}\nmethods: [full]\n")
    assert_refused(run_cli("validate", suite), msg, where=f"{suite}:3")


def test_board_shows_composite_runs_next_to_single_task(strat, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from harness.board import APP

    monkeypatch.setenv("HARNESS_DB", strat["db"])
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    board = at.dataframe[0].value
    assert any("[multitask rte+stsb+cola" in m for m in board["method"])
    assert any(m == "full [after rte]" for m in board["method"])
    for page in ("Trade-off", "Runs", "Analyses"):
        at.sidebar.radio[1].set_value(page).run()
        assert not at.exception, (page, at.exception)
    assert "Multi-task and sequential vs single-task" in [h.value for h in at.subheader]
    table = at.dataframe[0].value
    store = strat["store"]
    seq = by(store, regime="sequential", method_label="full [after rte]")[0]
    direct = by(store, task="stsb", method="full", regime=None)[0]
    row = table[table["variant"] == "full [after rte]"].iloc[0]
    assert row["score"] == pytest.approx(round(seq.score, 2))
    assert row["difference"] == pytest.approx(round(seq.score - direct.score, 2), abs=0.011)


def test_multitask_adapter_per_task(tiny_bert, small_glue):
    """One adapter per task on the shared frozen base: a batch of task t trains adapter t and head t only."""
    from harness.plan.suite import parse_suite
    from harness.train.context import RunContext
    from harness.train.model_setup import build_model

    suite = parse_suite(f"""
name: apt
models: ["{tiny_bert}"]
tasks: [{{multitask: [rte, stsb], adapter_per_task: true}}]
methods: [{{name: houlsby, size: 4}}]
""")
    (cell,) = suite.cells()
    assert "adapter per task" in cell.row_label
    tok, model, members, heads, counts = build_model(cell, RunContext(str(small_glue), None), [
        __import__("harness.spec.tasks", fromlist=["get_task"]).get_task(t) for t in ("rte", "stsb")])
    per_adapter = L * 2 * (2 * 4 * 32 + 32 + 4)
    assert counts["added_params"] == 2 * per_adapter
    assert counts["trainable_params"] == 2 * per_adapter + (32 * 2 + 2) + (32 + 1)
    batch = tok(["the cat sat", "a dog"], padding=True, return_tensors="pt")
    model(task_index=1, **batch, labels=torch.tensor([0.5, 2.0])).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("harness_stsb" in n for n in grads) and not any("harness_rte" in n for n in grads)
    assert any(n.startswith("members.1.classifier") for n in grads)
    assert not any(n.startswith("members.0.classifier") for n in grads)
    with pytest.raises(Exception, match="adapter_per_task needs adapter methods"):
        parse_suite(f"""
name: apt
models: ["{tiny_bert}"]
tasks: [{{multitask: [rte, stsb], adapter_per_task: true}}]
methods: [full]
""")


@pytest.mark.parametrize("which,expected", [("best", {("1e-3", 1)}), ("all", {("1e-3", 1), ("1e-3", 2),
                                                                              ("1e-4", 1), ("1e-4", 2)})])
def test_suite_ablates_the_best_setting_by_default(tmp_path, monkeypatch, which, expected):
    """`ablate: runs: best` picks, per variant, the first seed of the best-on-dev setting; `all` every run."""
    import harness.analysis.ablate
    from harness.launch.runner import run_ablations
    from harness.plan.suite import parse_suite

    suite = parse_suite(f"""
name: abl
models: [minilm]
tasks: [rte]
methods: [{{name: houlsby, size: 8}}, full]
seeds: [1, 2]
hparams: {{learning_rate: [1e-3, 1e-4]}}
ablate: [{{method: houlsby, runs: {which}}}]
""")
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    scores = {(1e-3, 1): 70.0, (1e-3, 2): 72.0, (1e-4, 1): 80.0, (1e-4, 2): 50.0}  # means 71 vs 65: 1e-3 wins
    for cell in suite.cells():
        claim = store.start(cell, cell.config(), "", str(tmp_path))
        store.finish(claim, "completed", {"score": scores[(cell.hparams["learning_rate"], cell.seed)]})
    seen = []
    monkeypatch.setattr(harness.analysis.ablate, "ablate", lambda rec, ctx, trust_remote_code=False: seen.append(rec) or {
        "num_layers": 1, "baseline": rec.score, "spans": [[0, 0, rec.score]]})
    assert run_ablations(suite, store, None, lambda line: None) == 0
    assert {(f"{r.learning_rate:.0e}".replace("e-0", "e-"), r.seed) for r in seen} == expected
    assert all(r.method == "houlsby" for r in seen)
    seen.clear()
    run_ablations(suite, store, None, lambda line: None)   # already ablated: not again
    assert seen == []


def test_a_small_sampling_temperature_does_not_overflow():
    """p ~ n^(1/T): at T = 1e-3 the powers overflow a float (n^1000); the mixture works in log space, so the
    largest task is drawn (almost) always instead of the run failing on NaN probabilities."""
    from harness.train.schedules import TaskMixture

    loaders = [list(range(400)), list(range(300))]   # anything with len() and iteration: batches
    for temperature, share in ((1e-3, 1.0), (1.0, 400 / 700)):
        mixture = TaskMixture(loaders, "temperature", temperature, seed=0)
        order = mixture._order()
        assert len(order) == 700
        assert abs(order.count(0) / 700 - share) < 0.06, (temperature, order.count(0))


def test_a_multitask_member_row_counts_its_own_task_s_training_examples(tmp_path, tiny_bert, small_glue):
    """A member row's train_examples is its own task's, as its eval_examples is: it took the joint row's (every
    member's, 96 for rte's 48 in a multi-task cell of rte and stsb), a number no task of the row trained on."""
    from harness.launch.runner import result_fields
    from harness.plan.suite import parse_suite
    from harness.spec.status import Status
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    (cell,) = parse_suite(f"""
name: mte
models: ["{tiny_bert}"]
tasks: [{{multitask: [rte, stsb]}}]
methods: [full]
budgets: [{{max_steps: 2, max_train_samples: 40}}]
hparams: {{batch_size: 8}}
""").cells()
    result = train_and_evaluate(cell, RunContext(str(small_glue), None, show_progress=False),
                                output_dir=str(tmp_path / "out"))
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    claim = store.start(cell, cell.config(), "test", str(tmp_path / "out"))
    rec = store.finish(claim, Status.COMPLETED, *result_fields(result, Status.COMPLETED, None, 1))
    members = {m.task: m for m in store.children(rec.id)}
    assert rec.train_examples == 80 and rec.eval_examples == 42   # the joint row: both tasks
    assert [members[t].train_examples for t in ("rte", "stsb")] == [40, 40]
    assert [members[t].eval_examples for t in ("rte", "stsb")] == [21, 21]
    assert members["rte"].steps == rec.steps == 2   # the joint run's steps: one model trained on both


def test_a_multitask_member_s_history_does_not_show_the_joint_loss_as_its_own(tmp_path, tiny_bert, small_glue):
    """The training loss of a multi-task cell is the mean over every task's batches (rte's cross-entropy and
    stsb's squared error together): each member row's history repeated it as that task's train_loss (the Task
    page drew it as rte's loss curve). It stays on the joint row only."""
    from harness.plan.suite import parse_suite
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    (cell,) = parse_suite(f"""
name: mtl
models: ["{tiny_bert}"]
tasks: [{{multitask: [rte, stsb]}}]
methods: [full]
budgets: [{{max_steps: 2}}]
hparams: {{batch_size: 8}}
""").cells()
    result = train_and_evaluate(cell, RunContext(str(small_glue), None, show_progress=False))
    assert isinstance(result.history[-1]["train_loss"], float)
    assert [[h["train_loss"] for h in m.history] for m in result.members] == [[None], [None]]
    assert [m.history[-1]["score"] for m in result.members] == [m.score for m in result.members]


@pytest.mark.parametrize("sampling", ["proportional", "uniform"])
def test_a_multitask_cell_with_accumulation_trains_the_epochs_its_budget_plans(tmp_path, tiny_bert, small_glue,
                                                                                sampling):
    """rte + stsb, 5 batches each, accumulation 4: 3 optimizer steps an epoch (4 + 4 + 2 micro-batches), 6 for
    2 epochs, the schedule's length. Accelerate also ended a step wherever one task's loader ran out: the 6 steps
    were over after 1.8 epochs (proportional) or 2.2 (uniform), and the record said so."""
    from harness.plan.suite import parse_suite
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    (cell,) = parse_suite(f"""
name: mta
models: ["{tiny_bert}"]
tasks: [{{multitask: [rte, stsb], sampling: {sampling}}}]
methods: [full]
budgets: [{{epochs: 2, max_train_samples: 40}}]
hparams: {{batch_size: 8, gradient_accumulation_steps: 4}}
""").cells()
    result = train_and_evaluate(cell, RunContext(str(small_glue), None, show_progress=False))
    assert (result.steps, result.epochs_done, result.stopped_by) == (6, 2.0, "epochs")
    assert [(e["step"], e["epoch"]) for e in result.history] == [(3, 1.0), (6, 2.0)]
