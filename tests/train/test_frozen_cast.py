"""Under bf16 autocast a frozen weight is cast again at every forward (autocast caches only weights that train):
the encoder's frozen Linear weights are stored in bf16 once instead, with bit-for-bit the same outputs."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from harness.spec.methods import get_method
from harness.train import recipe
from harness.train.methods import set_up
from harness.train.models import load_for_task
from harness.train.precision import cast_frozen_linears, remember_pretrained
from harness.spec.models import ModelSpec
from harness.spec.tasks import get_task
from tests.train.test_step_costs import _cell, _run


def _model(tiny_bert, method, params):
    _, model, _ = load_for_task(ModelSpec(str(tiny_bert)), get_task("rte"))
    remember_pretrained(model)
    set_up(model, method, get_method(method).resolve(params))
    for p in model.classifier.parameters():
        p.requires_grad = True
    return model


@pytest.mark.parametrize("method,params", [("houlsby", {"size": 8}), ("lora", {"rank": 4, "alpha": 8}),
                                           ("bitfit", {}), ("layernorm", {})])
def test_frozen_linears_in_bf16_give_the_same_outputs_and_gradients(tiny_bert, method, params):
    torch.manual_seed(0)
    ref = _model(tiny_bert, method, params)
    cast = copy.deepcopy(ref)
    n = cast_frozen_linears(cast, torch.bfloat16)
    # every frozen weight and bias of the encoder's Linear layers (the methods' own modules train)
    frozen_linear = sum(p.numel() for m in ref.bert.modules() if isinstance(m, torch.nn.Linear)
                        for p in m.parameters(recurse=False) if not p.requires_grad)
    assert n == frozen_linear > 0
    # what trains, the embeddings, LayerNorms, added modules and the head keep fp32
    for (name, p), (_, q) in zip(ref.named_parameters(), cast.named_parameters()):
        if q.dtype == torch.bfloat16:
            assert not p.requires_grad and "embeddings" not in name and "LayerNorm" not in name, name
            assert not name.startswith("classifier") and "adapters" not in name and "loras" not in name, name
        else:
            assert q.dtype == torch.float32, name
    assert sum(q.numel() for q in cast.parameters() if q.dtype == torch.bfloat16) == n
    ids = torch.randint(1000, 2000, (4, 12), generator=torch.Generator().manual_seed(1))
    outs, grads = [], []
    for model in (ref, cast):
        model.train()
        torch.manual_seed(3)   # the same dropout masks
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        logits.float().pow(2).sum().backward()
        outs.append(logits.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert torch.equal(outs[0], outs[1])
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


def test_a_frozen_adapter_keeps_its_precision(tiny_bert):
    """An adapter loaded to be evaluated trains nothing: its Linear weights are frozen but not the model's
    own, so they stay fp32 (the adapter a cell saves is the one it loaded)."""
    model = _model(tiny_bert, "houlsby", {"size": 8})
    for p in model.parameters():
        p.requires_grad = False
    cast_frozen_linears(model, torch.bfloat16)
    adapters = {n: p.dtype for n, p in model.named_parameters() if "adapters" in n}
    assert adapters and set(adapters.values()) == {torch.float32}
    assert model.bert.encoder.layer[0].intermediate.dense.weight.dtype == torch.bfloat16


def test_a_weight_tied_to_an_embedding_is_left_in_fp32():
    """The embedding reads it outside autocast: in bf16 it would look up rounded vectors."""
    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # the Linear first: the shared Parameter is named after it (enc.tied.weight)
            self.tied, self.emb, self.own = torch.nn.Linear(8, 8), torch.nn.Embedding(8, 8), torch.nn.Linear(8, 8)
            self.emb.weight = self.tied.weight

    class Model(torch.nn.Module):
        base_model_prefix = "enc"

        def __init__(self):
            super().__init__()
            self.enc = Encoder()

    model = Model().requires_grad_(False)
    remember_pretrained(model)
    assert cast_frozen_linears(model, torch.bfloat16) == 8 * 8 + 8 + 8   # own: weight, bias; tied: its bias
    assert model.enc.emb.weight.dtype == model.enc.tied.weight.dtype == torch.float32
    assert model.enc.own.weight.dtype == model.enc.tied.bias.dtype == torch.bfloat16


@pytest.mark.parametrize("method,params", [("lora", {"rank": 4, "alpha": 8}), ("houlsby", {"size": 8})])
def test_a_bf16_cell_trains_the_same_with_and_without_the_cast(tiny_bert, small_glue, monkeypatch, method, params):
    """The whole loop, twice on the same data and seed: every evaluation's metrics identical; the record says how
    many weights were stored in bf16."""
    cell = _cell(tiny_bert, method=method, method_params=params, hparams={"mixed_precision": "bf16"})
    with_cast = _run(cell, small_glue)
    monkeypatch.setattr(recipe, "cast_frozen_weights", lambda *args: None)
    without = _run(cell, small_glue)
    assert with_cast.frozen_cast["dtype"] == "bf16" and with_cast.frozen_cast["params"] > 0
    assert with_cast.history == without.history and with_cast.metrics == without.metrics
    assert with_cast.score == without.score


def test_no_cast_without_autocast_nor_for_full_fine_tuning(tiny_bert, small_glue):
    assert _run(_cell(tiny_bert, method="lora", method_params={"rank": 4}), small_glue).frozen_cast is None
    # fp16 asked on a CPU: Accelerate would run it in fp32 without autocast (fp16 weights would meet fp32 inputs),
    # so the harness chooses fp32 for it and says so.
    # Its MFU divides by the fp32 peak (timing a CPU's emulated fp16 matmul took minutes)
    t0 = time.perf_counter()
    fp16 = _run(_cell(tiny_bert, method="lora", method_params={"rank": 4}, hparams={"mixed_precision": "fp16"}),
                small_glue)
    assert fp16.frozen_cast is None and fp16.score is not None
    assert fp16.device_peak["precision"] == "no", fp16.device_peak
    # the record says what ran (fp32), the choice what was asked and why
    assert fp16.mixed_precision == "no" and fp16.precision_choice["requested"] == "fp16"
    assert time.perf_counter() - t0 < 60
    full = _run(_cell(tiny_bert, method="full", hparams={"mixed_precision": "bf16"}), small_glue)
    assert full.frozen_cast is None   # everything trains: nothing frozen to store
