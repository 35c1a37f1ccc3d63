"""What a training step costs beyond its math: host syncs every SYNC_EVERY steps (not every step), clipping over
foreach kernels, one host copy per dev split, SDPA attention, torch.compile behind its hparam, and a regression
head that starts at its targets' mean."""

from __future__ import annotations

import importlib
import math
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from tests.helpers import make_tiny_model
from harness.spec.cell import Cell
from harness.spec.methods import get_method
from harness.spec.models import ModelSpec
from harness.spec.schedule import Multitask
from harness.spec.tasks import get_task
from harness.train import compiling, sync
from harness.train.context import RunContext
from harness.train.recipe import CellRun, train_and_evaluate

HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__")
LOOP_FILES = tuple(os.path.join("harness", "train", f) for f in ("recipe.py", "measure.py", "sync.py"))


def _cell(model, task="rte", method="full", hparams=None, budget=None, seed=1, method_params=None, schedule=None):
    hp = dict(learning_rate=1e-3, batch_size=8, eval_batch_size=16, max_length=32, warmup_ratio=0.0,
              weight_decay=0.0, gradient_accumulation_steps=1, max_grad_norm=1.0, mixed_precision="no",
              padding="dynamic", group_by_length=True, eval_steps=None)
    hp.update(hparams or {})
    return Cell(suite="t", model=str(model), task=task, task_version=get_task(task).version, method=method,
                method_params=get_method(method).resolve(method_params or {}), budget=budget or {"epochs": 1.0},
                seed=seed, hparams=hp, schedule=schedule)


def _run(cell, glue):
    return train_and_evaluate(cell, RunContext(data_dir=str(glue), cache_dir=None, show_progress=False))


def _run_saving(cell, glue, output_dir):
    """_run, writing the cell's files (an adapter method's adapter/) into output_dir."""
    return train_and_evaluate(cell, RunContext(data_dir=str(glue), cache_dir=None, show_progress=False),
                              output_dir=str(output_dir))


# --- host syncs -------------------------------------------------------------------------------------------------

def test_sync_steps_are_a_function_of_the_step_alone():
    every = sync.SYNC_EVERY
    assert [s for s in range(1, 3 * every + 1) if sync.due(s, 1000)] == [every, 2 * every, 3 * every]
    assert sync.due(7, 7)                                  # the last step
    assert sync.due(10, 1000, eval_steps=5) and not sync.due(11, 1000, eval_steps=5)
    assert sync.due(4, 1000, log_every=2) and not sync.due(5, 1000, log_every=2)


def test_a_sync_reduces_the_flags_so_every_rank_decides_alike():
    """Under DDP a flag raised on one rank (a stop signal, a NaN there) reaches every rank at the same sync, and
    so do the loss sums (a train loss is the mean over every rank's micro-batches); the sums a rank keeps, and
    checkpoints, stay its own."""
    class TwoRanks:   # the other rank got a stop signal and a NaN loss; its losses since the last zeroing: 1.5
        num_processes = 2

        def reduce(self, tensor, reduction):
            assert reduction == "sum"
            return tensor + torch.tensor([1.0, 0.0, 1.0, 0.0, 1.5, 1.5], dtype=tensor.dtype)

    sums = sync.DeviceSums(torch.device("cpu"))
    sums.add(torch.tensor(0.5), torch.tensor(7))
    sums.add(torch.tensor(0.25), 3)
    flags, seen, over_ranks = sync.read(TwoRanks(), sums, [False, False, False])
    assert flags == [True, False, True, False]
    assert seen == {"loss": 0.75, "log_loss": 0.75, "tokens": 10.0} and sums.pending == 0
    assert over_ranks == {"loss": 2.25, "log_loss": 2.25}
    sums.zero("log_loss")
    sums.add(torch.tensor(float("inf")), 1)
    flags, seen, over_ranks = sync.read(TwoRanks(), sums, [True, False, False])   # this rank ran out of time
    assert flags == [True, True, True, False] and seen["log_loss"] == float("inf")
    assert over_ranks["log_loss"] == float("inf") and seen["loss"] == float("inf")


def test_one_process_reads_its_sums_as_the_sums_over_ranks():
    class One:
        num_processes = 1

        def reduce(self, tensor, reduction):
            raise AssertionError("a single process has no one to reduce with")

    sums = sync.DeviceSums(torch.device("cpu"), {"loss": 1.0, "log_loss": 0.5, "tokens": 4})
    sums.add(torch.tensor(0.25), 2)
    flags, seen, over_ranks = sync.read(One(), sums, [False, False, False])
    assert flags == [False] * 4 and seen == {"loss": 1.25, "log_loss": 0.75, "tokens": 6.0}
    assert over_ranks == {"loss": 1.25, "log_loss": 0.75}


def test_fit_syncs_with_the_host_every_sync_every_steps_not_every_step(tiny_bert, small_glue, monkeypatch):
    """100 optimizer steps (batch 1 over 48 examples; evaluations only at the end): the loop reads the device
    at steps 25, 50, 75 and 100, nowhere else."""
    reads, host = [], []
    real_read = sync.read

    def counted_read(*args, **kwargs):
        reads.append(1)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(sync, "read", counted_read)
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def spy(self, *args, _real=real, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename.endswith(LOOP_FILES) and caller.co_name not in ("record", "cost_fields"):
                host.append(f"{caller.co_name}:{_real.__name__}")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    steps = 100
    result = _run(_cell(tiny_bert, hparams={"batch_size": 1, "eval_steps": 1000},
                        budget={"max_steps": steps}), small_glue)
    assert result.steps == steps
    assert len(reads) == steps // sync.SYNC_EVERY == 4
    assert len(host) <= steps // sync.SYNC_EVERY, host   # the one transfer of each read
    assert result.train_tokens_per_s > 0 and result.num_threads == torch.get_num_threads()


def test_a_non_finite_loss_is_still_caught_at_the_next_sync(tiny_bert, small_glue, monkeypatch):
    """A loss that turns NaN at step 30 (between syncs) fails the cell at the next sync, step 50, and the
    message says where to look."""
    calls = {"n": 0}
    real_forward = CellRun.forward

    def poisoned(self, t, batch):
        out = real_forward(self, t, batch)
        calls["n"] += 1
        if calls["n"] >= 30:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(CellRun, "forward", poisoned)
    with pytest.raises(FloatingPointError, match=r"^loss is not finite at step 50 .*after step 25\)"):
        _run(_cell(tiny_bert, hparams={"batch_size": 1, "eval_steps": 1000}, budget={"max_steps": 100}),
             small_glue)


def test_a_non_finite_loss_in_an_epochs_last_steps_fails_before_its_evaluation(tiny_bert, small_glue, monkeypatch):
    """The epoch-end evaluation reads the steps since the last sync first: a NaN there is not averaged away."""
    calls = {"n": 0}
    real_forward = CellRun.forward

    def poisoned(self, t, batch):
        out = real_forward(self, t, batch)
        calls["n"] += 1
        if calls["n"] == 40:
            out.loss = out.loss * float("inf")
        return out

    monkeypatch.setattr(CellRun, "forward", poisoned)
    with pytest.raises(FloatingPointError, match="loss is not finite at step 48 "):
        _run(_cell(tiny_bert, hparams={"batch_size": 1}, budget={"epochs": 2.0}), small_glue)


# --- clipping and evaluation ------------------------------------------------------------------------------------

def test_gradient_clipping_runs_foreach_kernels(monkeypatch):
    """accelerate's clip_grad_norm_ leaves foreach to torch, which takes it on CPU and CUDA: one norm kernel
    over all the gradients, not one per parameter."""
    from accelerate import Accelerator

    seen = []
    real = torch._foreach_norm
    monkeypatch.setattr(torch, "_foreach_norm", lambda tensors, *a, **k: seen.append(len(tensors)) or real(
        tensors, *a, **k))
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    model(torch.ones(2, 4)).sum().backward()
    acc = Accelerator(cpu=True)
    norm = acc.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1e-3)
    assert seen == [4] and float(norm) > 1e-3
    assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])) <= 1.001e-3


def test_predict_copies_each_output_to_the_host_once(monkeypatch):
    from harness.tasks.kinds import KINDS
    from harness.train.evaluation import predict

    class Out:
        def __init__(self, x):
            self.logits = x @ torch.ones(3, 2)

    loader = [{"idx": torch.arange(i * 4, i * 4 + 4), "x": torch.randn(4, 3),
               "labels": torch.zeros(4, dtype=torch.long)} for i in range(5)]
    copies = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(1) or real_cpu(self, *a, **k))
    arrays = predict(None, loader, forward=lambda b: Out(b["x"]), kind=KINDS["classification"])
    assert len(copies) == 3   # idx, logits, labels: once each for the whole split
    assert arrays["logits"].shape == (20, 2) and (arrays["idx"] == np.arange(20)).all()


# --- attention --------------------------------------------------------------------------------------------------

def test_models_load_with_sdpa_and_the_record_says_so(tiny_bert, small_glue):
    from harness.train.models import attention_of, load_for_task

    _, model, _ = load_for_task(ModelSpec(str(tiny_bert)), get_task("rte"))
    assert attention_of(model) == "sdpa"
    result = _run(_cell(tiny_bert, budget={"max_steps": 2}), small_glue)
    assert result.attn_implementation == "sdpa" and result.compiled is False


def test_an_architecture_without_sdpa_falls_back_to_eager(tiny_bert, monkeypatch):
    from transformers import BertPreTrainedModel

    from harness.train.models import attention_of, load_for_task

    monkeypatch.setattr(BertPreTrainedModel, "_supports_sdpa", False)
    _, model, _ = load_for_task(ModelSpec(str(tiny_bert)), get_task("rte"))
    assert attention_of(model) == "eager"


@pytest.mark.parametrize("method, params", [("prefix_tuning", {"prefix_length": 4, "bottleneck_size": 8}),
                                            ("lora", {"rank": 2}), ("houlsby", {"size": 4})])
def test_adapters_under_sdpa_compute_what_they_compute_eager(tiny_bert, method, params):
    """The adapters library's SDPA attention classes (prefix tuning's extra keys and values included) give the
    plain implementation's outputs, padding masked."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from harness.train.methods import set_up

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    batch = tokenizer(["a short one", "a somewhat longer sentence than the first"], padding=True,
                      return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()
    logits = {}
    for attention in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2,
                                                                   attn_implementation=attention)
        set_up(model, method, get_method(method).resolve(params))
        if method == "prefix_tuning":   # a visible prefix: its reparametrisation starts near zero
            for name, p in model.named_parameters():
                if "prefix" in name:
                    torch.nn.init.normal_(p, std=0.5)
        model.eval()
        with torch.no_grad():
            logits[attention] = model(**batch).logits
    assert torch.allclose(logits["sdpa"], logits["eager"], atol=1e-5)


# --- torch.compile ----------------------------------------------------------------------------------------------

def test_compile_auto_is_for_gpu_cells_long_enough_to_pay_and_keeps_the_keys():
    long, short = compiling.AUTO_MIN_STEPS, compiling.AUTO_MIN_STEPS - 1
    assert compiling.chosen("auto", "cuda", long) and not compiling.chosen("auto", "cuda", short)
    assert not compiling.chosen("auto", "cpu", 10 * long)
    assert not compiling.chosen("auto", "cuda", long, deepspeed=True)
    assert compiling.chosen(True, "cpu", 1) and not compiling.chosen(False, "cuda", long)
    from harness.plan.suite import parse_suite

    plain = "name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n"
    key = parse_suite(plain, "s.yaml").cells()[0].key
    assert parse_suite(plain + "hparams: {compile: auto}\n", "s.yaml").cells()[0].key == key
    assert parse_suite(plain + "hparams: {compile: true}\n", "s.yaml").cells()[0].key != key
    assert compiling.pad_multiple({"padding": "dynamic", "max_length": 128}) == compiling.PAD_MULTIPLE
    assert compiling.pad_multiple({"padding": "dynamic", "max_length": 100}) is None   # 104 > max_length
    assert compiling.pad_multiple({"padding": "max_length", "max_length": 128}) is None


def test_auto_decides_on_the_steps_the_loop_then_trains(tmp_path, small_glue, monkeypatch):
    """`auto` weighs the cell's planned steps before its loaders exist (optim.planned_steps): the count must be
    the one the loop trains, for an epoch budget whose last batch is short and for two tasks in one cell."""
    model = make_tiny_model(tmp_path / "m", num_hidden_layers=1)
    planned = []
    real = compiling.chosen
    monkeypatch.setattr(compiling, "chosen", lambda setting, device, steps, *a, **k:
                        planned.append(steps) or real(setting, device, steps, *a, **k))
    one = _run(_cell(model, budget={"epochs": 1.5, "max_train_samples": 37, "max_eval_samples": 8}), small_glue)
    assert one.compiled is False and planned == [one.steps] == [8]   # ceil(37 / 8) = 5 batches, 1.5 epochs
    planned.clear()
    both = Multitask(("rte", "stsb"), (get_task("rte").version, get_task("stsb").version), "proportional", None, False)
    two = _run(_cell(model, budget={"epochs": 1.0, "max_train_samples": 20, "max_eval_samples": 8},
                     schedule=both), small_glue)
    assert planned == [two.steps] == [6]   # 3 batches of each task
    # an evaluation-only cell (a saved adapter scored as it is) plans no step, whatever its epochs: with the
    # threshold at one step on this device, `auto` would otherwise compile a model it only evaluates
    adapter = _run_saving(_cell(model, method="houlsby", method_params={"size": 4},
                                budget={"epochs": 1.0, "max_train_samples": 16, "max_eval_samples": 8}),
                          small_glue, tmp_path / "houlsby").adapter_path
    monkeypatch.setattr(compiling, "AUTO_DEVICES", ("cpu",))
    monkeypatch.setattr(compiling, "AUTO_MIN_STEPS", 1)
    planned.clear()
    scored = _run(_cell(model, method="pretrained_adapter", method_params={"path": adapter},
                        budget={"epochs": 3.0, "max_train_samples": 16, "max_eval_samples": 8}), small_glue)
    assert scored.stopped_by == "evaluation_only" and scored.steps == 0
    assert planned == [0] and scored.compiled is False


def test_planned_steps_are_the_batches_each_process_gets_from_accelerate():
    """Several processes: accelerate shards each task's batches over the ranks (BatchSamplerShard, even batches);
    planned_steps must count the batches one rank steps through, for tasks of different sizes."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    from harness.train.optim import planned_steps

    sizes, batch = [37, 100, 9], 8
    for processes in (1, 2, 3):
        per_rank = {sum(len(BatchSamplerShard(BatchSampler(SequentialSampler(range(n)), batch, False), processes, rank))
                        for n in sizes) for rank in range(processes)}
        assert len(per_rank) == 1   # every rank the same number of batches
        hp = {"batch_size": batch, "gradient_accumulation_steps": 1}
        assert planned_steps([range(n) for n in sizes], hp, {"epochs": 1.0}, processes) == per_rank.pop()
    hp = {"batch_size": batch, "gradient_accumulation_steps": 2}   # 5 + 13 + 2 batches, 2 per step
    assert planned_steps([range(n) for n in sizes], hp, {"epochs": 3.0}, 1) == 30
    assert planned_steps([range(n) for n in sizes], hp, {"epochs": 3.0, "max_steps": 12}, 1) == 12


def _inductor_missing() -> str | None:
    try:
        importlib.import_module("torch._inductor")
    except Exception as exc:
        return f"inductor unavailable: {exc}"
    if not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")):
        return "inductor needs a C compiler on CPUs"
    return None


def test_compile_true_trains_a_tiny_model_end_to_end(tmp_path, small_glue, monkeypatch):
    """One layer (compiling is most of this test's time: about a minute on a 2-core CPU without torch's on-disk
    cache). One graph serves every padded length; training and evaluation each compile once; the cell forgets
    its compiled code when it ends. In bf16, the precision `auto` picks on most CPUs here: autocast, the head
    outside it and the training attention's kernel choice all inside the compiled step."""
    why = _inductor_missing()
    if why:
        pytest.skip(why)
    from torch._dynamo.utils import counters

    model = make_tiny_model(tmp_path / "one-layer", num_hidden_layers=1)
    torch._dynamo.reset()
    counters.clear()
    released = []
    real_release = compiling.release
    monkeypatch.setattr(compiling, "release", lambda: released.append(1) or real_release())
    result = _run(_cell(model, hparams={"compile": True, "max_length": 16, "mixed_precision": "bf16"},
                        budget={"max_steps": 6, "max_eval_samples": 16}), small_glue)
    assert result.compiled is True and result.steps == 6 and math.isfinite(result.score)
    assert result.mixed_precision == "bf16" and math.isfinite(result.history[-1]["train_loss"])
    assert result.train_flops and result.flop_count["train_counted_batches"] == 1   # counted eager
    assert 1 <= counters["stats"]["unique_graphs"] <= 4, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])   # the whole step in one graph
    assert released == [1]


# --- the regression head ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "albert"])
def test_a_regression_head_starts_at_the_training_targets_mean(tmp_path, small_glue, arch):
    from harness.train.heads import output_layer
    from harness.train.model_setup import build_model

    model_dir = make_tiny_model(tmp_path / arch, arch)
    cell = _cell(model_dir, task="stsb", method="houlsby", method_params={"size": 4},
                 budget={"epochs": 1.0, "max_train_samples": 30})
    ctx = RunContext(str(small_glue), None)
    train = ctx.raw_data(get_task("stsb"))["train"].head(30)
    mean = float(np.mean(train.labels))
    tok, model, members, heads, _ = build_model(cell, ctx, [get_task("stsb")], train=[train])
    layer = output_layer(model, heads[0])
    assert layer.out_features == 1 and layer.bias.item() == pytest.approx(mean, abs=1e-6)
    model.eval()
    dev = ctx.raw_data(get_task("stsb"))["validation"]
    batch = tok(dev.columns["sentence1"][:8], dev.columns["sentence2"][:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = model(**{k: v for k, v in batch.items() if k in tok.model_input_names}).logits[:, 0]
    assert (preds - mean).abs().max() < 0.5   # the first step starts at the constant-mean baseline


def test_the_multitask_regression_member_starts_at_its_mean_and_classification_is_untouched(tiny_bert, small_glue):
    from harness.spec.schedule import Multitask
    from harness.train.heads import output_layer
    from harness.train.model_setup import build_model

    tasks = [get_task("rte"), get_task("stsb")]
    cell = _cell(tiny_bert, schedule=Multitask(("rte", "stsb"), (1, 2), "proportional", None, False))
    ctx = RunContext(str(small_glue), None)
    train = [ctx.raw_data(t)["train"] for t in tasks]
    _, model, members, heads, _ = build_model(cell, ctx, tasks, train=train)
    assert output_layer(members[1], heads[1]).bias.item() == pytest.approx(float(np.mean(train[1].labels)),
                                                                           abs=1e-6)
    assert (output_layer(members[0], heads[0]).bias == 0).all()   # classification: as transformers made it
