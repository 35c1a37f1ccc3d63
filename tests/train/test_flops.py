"""FLOPs per run (harness/train/flops.py): counted with FlopCounterMode on real steps of tiny BERTs, against the
6N / 4N rules; the count leaves training bit-identical; a cell's record carries train/eval FLOPs, FLOP/s and MFU."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.spec.methods import get_method
from harness.spec.models import ModelSpec
from harness.spec.tasks import get_task
from harness.train import flops
from harness.train.methods import set_up
from harness.train.models import load_for_task
from harness.train.params import head_parameter_names

D, I, LAYERS = 64, 256, 2          # a tiny BERT with a 4x FFN, as real BERTs have
B, L = 8, 16                       # the demo's batch shape


@pytest.fixture(scope="module")
def bert64(tmp_path_factory):
    from tests.helpers import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("bert64") / "m", hidden_size=D, intermediate_size=I,
                           num_attention_heads=4)


def model_with(model_dir, method, params=None):
    _, model, missing = load_for_task(ModelSpec(str(model_dir)), get_task("rte"))
    head = head_parameter_names(model, missing)
    set_up(model, method, get_method(method).resolve(params or {}))
    for name, p in model.named_parameters():
        if name in head:
            p.requires_grad = True
    return model


def block_params(model) -> int:
    """N: the transformer blocks' parameters (no embeddings: a lookup, no matmul; no pooler or head: they run
    once per example, not per token; no adapter)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if ".encoder.layer." in n and "adapter" not in n)


def adapter_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "adapter" in n)


def a_batch(b=B, l=L, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, l, dtype=torch.long)
    mask[0, l // 2:] = 0   # padding runs too: its FLOPs count
    return {"input_ids": torch.randint(1000, 30000, (b, l), generator=g), "attention_mask": mask,
            "token_type_ids": torch.zeros(b, l, dtype=torch.long), "labels": torch.randint(0, 2, (b,), generator=g)}


def train_step(model, optimizer, batch):
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def counted_step_flops(model, batch) -> float:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tally = flops.Tally(1)
    with tally.batch(batch):
        train_step(model, optimizer, batch)
    return tally.total()


def test_full_fine_tuning_costs_6n_per_token(bert64):
    model = model_with(bert64, "full")
    n = block_params(model)
    counted = counted_step_flops(model, a_batch())
    assert counted == pytest.approx(6 * n * B * L, rel=0.10)
    assert counted > 6 * n * B * L     # plus attention, pooler and head: above, never below


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
def test_frozen_encoder_with_adapters_costs_between_2n_and_4_5n(bert64, method):
    """A frozen weight costs its forward (2N) and its input's gradient (2N), no weight gradient; the adapters
    train in full (6 per parameter and token)."""
    model = model_with(bert64, method, {"size": 8})
    n, a = block_params(model), adapter_params(model)
    assert a > 0 and not any(p.requires_grad for n_, p in model.named_parameters() if ".encoder.layer." in n_
                             and "adapter" not in n_)
    counted = counted_step_flops(model, a_batch())
    tokens = B * L
    assert 2 * n * tokens + 6 * a * tokens < counted < 4.5 * n * tokens + 6 * a * tokens
    full = counted_step_flops(model_with(bert64, "full"), a_batch())
    assert counted < 0.8 * full     # no weight gradients: clearly cheaper than full fine-tuning


def test_counting_changes_nothing_in_training(bert64):
    """FlopCounterMode only watches: the weights after a counted step are bit-identical to an uncounted one."""
    torch.manual_seed(0)
    plain = model_with(bert64, "houlsby", {"size": 8})
    counted = copy.deepcopy(plain)
    batch = a_batch()
    plain.train()
    torch.manual_seed(1)   # the same dropout masks in both
    train_step(plain, torch.optim.AdamW([p for p in plain.parameters() if p.requires_grad], lr=1e-3), batch)
    torch.manual_seed(1)
    assert counted_step_flops(counted, batch) > 0
    for (name, a), (_, b) in zip(plain.named_parameters(), counted.named_parameters()):
        assert torch.equal(a, b), name


def test_first_batch_scales_to_the_others(bert64):
    """One counted batch predicts the FLOPs of batches of other shapes (linear part per B x L, attention per
    B x L^2): against counting every batch."""
    model = model_with(bert64, "full")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    shapes = [(8, 16), (8, 40), (3, 7), (8, 64)]
    tally = flops.Tally(1)
    exact = 0
    for i, (b, l) in enumerate(shapes):
        batch = a_batch(b, l, seed=i)
        with flops.counter() as mode:
            with tally.batch(batch):
                train_step(model, optimizer, batch)
        exact += mode.get_total_flops()
    assert tally.c_batches == 1 and tally.examples == sum(b for b, _ in shapes)
    assert tally.total() == pytest.approx(exact, rel=0.02)
    # attention really is counted (torch's registry lacks the CPU SDPA kernels: harness/train/flops.py adds them)
    linear, attention = flops.split_counts(mode)
    assert attention > 0.02 * (linear + attention)


def test_eval_counts_forward_only(bert64):
    model = model_with(bert64, "full")
    model.eval()
    meter = flops.FlopMeter()
    forward = meter.eval_forward(lambda b: model(**b))
    with torch.no_grad():
        forward(a_batch())
        forward(a_batch(4, 16, seed=1))
    n = block_params(model)
    total = meter.eval.total()
    assert meter.eval.c_batches == 1 and meter.eval.tokens == 12 * 16
    assert total == pytest.approx(2 * n * 12 * 16, rel=0.10)


def _cell(model, method="full", method_params=None, hparams=None):
    from harness.spec.cell import Cell

    hp = dict(learning_rate=1e-3, batch_size=8, eval_batch_size=16, max_length=32, warmup_ratio=0.0,
              weight_decay=0.0, gradient_accumulation_steps=1, max_grad_norm=1.0, mixed_precision="no",
              padding="dynamic", group_by_length=True, eval_steps=None)
    hp.update(hparams or {})
    m = get_method(method)
    return Cell(suite="t", model=str(model), task="rte", task_version=get_task("rte").version, method=method,
                method_params=m.resolve(method_params or {}), budget={"epochs": 1.0}, seed=1, hparams=hp)


def test_a_cells_record_has_flops_and_mfu(tiny_bert, small_glue, tmp_path, monkeypatch):
    """Through the one loop: train and eval FLOPs from the counted batches scaled by the batches run, FLOP/s
    over train_time_s, MFU over the peak (here HARNESS_PEAK_FLOPS: the source is recorded)."""
    from harness.store.schema import RunRecord
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    monkeypatch.setenv("HARNESS_PEAK_FLOPS", "no=2e9,bf16=8e9")
    ctx = RunContext(str(small_glue), str(tmp_path / "cache"), show_progress=False)
    result = train_and_evaluate(_cell(tiny_bert), ctx)
    assert result.train_flops > 0 and result.eval_flops > 0
    assert result.flops_per_s == pytest.approx(result.train_flops / result.train_time_s)
    assert result.device_peak == {"flops_per_s": 2e9, "source": "env", "precision": "no"}
    assert result.mfu == pytest.approx(result.flops_per_s / 2e9)
    count = result.flop_count
    assert count["train_counted_batches"] == 1 and count["eval_counted_batches"] == 1
    # 48 examples, 6 steps: the scaled total is per token x every token trained (padding included)
    assert result.train_flops > 6 * count["train_flops_per_token"] * 8   # more than 6 batches of one token each
    # evaluation is a forward pass: about a third of a training step per token
    assert 0.2 < count["eval_flops_per_token"] / count["train_flops_per_token"] < 0.5
    cols = result.columns({c.name for c in RunRecord.__table__.columns})
    assert {"train_flops", "eval_flops", "flops_per_s", "mfu"} <= set(cols)
    assert {"flop_count", "device_peak", "precision_choice"} <= set(cols["extra"])


def test_the_linear_probe_counts_its_encoder_pass(tiny_bert, small_glue, tmp_path, monkeypatch):
    """Frozen features: the encoder's one pass counts where this cell ran it, not when it came from the cache."""
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    monkeypatch.setenv("HARNESS_PEAK_FLOPS", "1e9")
    ctx = RunContext(str(small_glue), str(tmp_path / "cache"), show_progress=False)
    first = train_and_evaluate(_cell(tiny_bert, "linear_probe"), ctx)
    passes = first.flop_count["encoder_pass_flops"]
    assert passes["train"] > 0 and passes["eval"] > 0
    assert first.train_flops > passes["train"] and first.eval_flops > passes["eval"]
    again = train_and_evaluate(_cell(tiny_bert, "linear_probe"), ctx)   # features cached now
    assert "encoder_pass_flops" not in again.flop_count
    assert 0 < again.train_flops < passes["train"]


def test_a_flat_prefix_tuning_cell_is_counted_and_evaluated(tiny_bert, small_glue, tmp_path):
    """Flat prefixes reach attention as a view of a trained parameter; under no_grad torch marks that view
    requires_grad with no grad_fn, and FlopCounterMode's module tracker failed the counted evaluation batch on
    it ("Expected gradient function to be set"): every prefix_tuning cell with flat: true failed."""
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    ctx = RunContext(str(small_glue), str(tmp_path / "cache"), show_progress=False)
    result = train_and_evaluate(_cell(tiny_bert, "prefix_tuning", {"prefix_length": 4, "flat": True}), ctx)
    assert result.flop_count["eval_counted_batches"] == 1 and result.eval_flops > 0
    assert result.train_flops > 0 and result.score is not None


def test_a_bad_peak_override_fails_the_cell_at_once(tiny_bert, small_glue, monkeypatch):
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    monkeypatch.setenv("HARNESS_PEAK_FLOPS", "fast")
    with pytest.raises(ValueError, match=r"^\$HARNESS_PEAK_FLOPS: not FLOP/s: 'fast'"):
        train_and_evaluate(_cell(tiny_bert), RunContext(str(small_glue), None, show_progress=False))


def test_flops_reach_the_store_and_the_runs_export(tiny_bert, small_glue, tmp_path):
    """`harness run` (a real process) stores the FLOP columns; `harness export --table runs` shows them."""
    import csv
    import io

    from tests.helpers import run_cli, write_suite

    suite = write_suite(tmp_path / "s.yaml", f"""
name: fl
models: ["{tiny_bert}"]
tasks: [rte]
methods: [{{name: houlsby, size: 4}}]
budgets: [{{max_steps: 2}}]
hparams: {{batch_size: 8, learning_rate: 1e-3, mixed_precision: "no"}}
""")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    env = {"HARNESS_PEAK_FLOPS": "5e9"}
    proc = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", small_glue,
                   "--no-progress", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_cli("export", "--db", db, "--table", "runs", "--format", "csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    (row,) = list(csv.DictReader(io.StringIO(out.stdout)))
    assert float(row["train_flops"]) > 0 and float(row["eval_flops"]) > 0
    assert float(row["mfu"]) == pytest.approx(float(row["flops_per_s"]) / 5e9)
    assert float(row["flops_per_s"]) == pytest.approx(float(row["train_flops"]) / float(row["train_time_s"]))
