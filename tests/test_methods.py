"""Every method's trainable / added parameter counts against a hand computation, on tiny random models."""

import pytest
import torch

from harness.methods import METHODS, get_method, reduction_factor
from harness.models import ModelSpec, load_for_task
from harness.params import count_total, count_trainable, head_parameter_names
from harness.tasks import get_task

D, L, C = 32, 2, 2  # hidden size, layers, labels of the tiny model (conftest.make_tiny_model)


def prepared(model_dir, method, params, task="rte"):
    tokenizer, model, missing = load_for_task(ModelSpec(str(model_dir)), get_task(task))
    head = head_parameter_names(model, missing)
    before = count_total(model)
    m = get_method(method)
    m.setup(model, m.resolve(params))
    for name, p in model.named_parameters():
        if name in head:
            p.requires_grad = True
    return model, before, head, tokenizer


def head_size(model, head):
    return sum(p.numel() for n, p in model.named_parameters() if n in head)


def test_head_is_classifier_plus_uninitialised(tiny_bert):
    model, _, head, _ = prepared(tiny_bert, "full", {})
    # the tiny checkpoint is a BertModel saved with a pooler: only the classifier is new
    assert head == {"classifier.weight", "classifier.bias"}
    assert head_size(model, head) == D * C + C


def test_full_trains_everything(tiny_bert):
    model, before, _, _ = prepared(tiny_bert, "full", {})
    assert count_trainable(model) == count_total(model) == before


def test_linear_probe_trains_the_head_only(tiny_bert):
    model, before, head, _ = prepared(tiny_bert, "linear_probe", {})
    assert count_trainable(model) == D * C + C
    assert count_total(model) == before


@pytest.mark.parametrize("m", [4, 16])
def test_houlsby_adds_two_bottlenecks_per_layer(tiny_bert, m):
    model, before, head, _ = prepared(tiny_bert, "houlsby", {"size": m})
    added = count_total(model) - before
    assert added == L * 2 * (2 * m * D + D + m)  # Houlsby et al.: 2md + d + m per adapter, two per layer
    assert count_trainable(model) == added + D * C + C


def test_pfeiffer_adds_one_bottleneck_per_layer(tiny_bert):
    m = 8
    model, before, head, _ = prepared(tiny_bert, "pfeiffer", {"size": m})
    assert count_total(model) - before == L * (2 * m * D + D + m)
    assert count_trainable(model) == L * (2 * m * D + D + m) + D * C + C


def test_lora_adds_low_rank_pairs_on_q_and_v(tiny_bert):
    r = 4
    model, before, head, _ = prepared(tiny_bert, "lora", {"rank": r, "matrices": "qv"})
    added = count_total(model) - before
    assert added == L * 2 * (r * D + D * r)  # A (r x d) and B (d x r) for q and v in each layer
    assert count_trainable(model) == added + D * C + C
    model3, before3, _, _ = prepared(tiny_bert, "lora", {"rank": r, "matrices": "qkv"})
    assert count_total(model3) - before3 == L * 3 * 2 * r * D


def test_top_k_trains_the_top_layers(tiny_bert):
    per_layer = 4 * (D * D + D) + 2 * D + (D * 64 + 64) + (64 * D + D) + 2 * D  # attention, 2 LNs, FFN (I=64)
    model, _, _, _ = prepared(tiny_bert, "top_k", {"k": 1})
    assert count_trainable(model) == per_layer + D * C + C
    model, _, _, _ = prepared(tiny_bert, "top_k", {"k": 2})
    assert count_trainable(model) == 2 * per_layer + D * C + C
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("bert.embeddings") for n in trained)


def test_layernorm_and_bitfit(tiny_bert):
    model, _, _, _ = prepared(tiny_bert, "layernorm", {})
    # embeddings LN + 2 per layer, each weight and bias of size D
    assert count_trainable(model) == (1 + 2 * L) * 2 * D + D * C + C
    model, _, _, _ = prepared(tiny_bert, "bitfit", {})
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias") and not n.startswith("classifier"))
    assert count_trainable(model) == biases + D * C + C
    per_layer_biases = 4 * D + D + 64 + D + D  # q k v o, attn LN, FFN in, FFN out, out LN
    assert biases == L * per_layer_biases + D + D  # + embeddings LN + pooler


def test_adapter_changes_the_output_and_gets_gradients(tiny_bert):
    """The adapter is really in the forward pass (a random perturbation of its weights moves the logits)."""
    model, _, _, tok = prepared(tiny_bert, "houlsby", {"size": 4})
    batch = tok(["the cat sat", "a dog ran on the mat"], padding=True, return_tensors="pt")
    model.eval()
    before = model(**batch).logits.detach()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter_up" in name:
                p.add_(torch.randn_like(p))
    assert (model(**batch).logits - before).abs().max() > 1e-4
    model.train()
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("adapter" in n for n in grads) and "classifier.weight" in grads
    assert not any("attention.self.query.weight" in n for n in grads)


def test_reduction_factor_gives_exact_sizes():
    for hidden in (32, 384, 768, 1024):
        for size in range(1, hidden + 1):
            assert int(hidden // reduction_factor(hidden, size)) == size


def test_shared_tensors_are_counted_once():
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Module()
    model.a, model.b = lin, torch.nn.Linear(4, 4)
    model.b.weight = lin.weight  # tied
    assert count_total(model) == 16 + 4 + 4
    lin.weight.requires_grad = False
    assert count_trainable(model) == 8


def test_albert_works_with_every_method(tmp_path):
    from conftest import make_tiny_model

    albert = make_tiny_model(tmp_path / "tiny-albert", arch="albert")
    for name in METHODS:
        params = {"size": 8} if "size" in METHODS[name].params else {"k": 1} if name == "top_k" else {}
        model, before, head, tok = prepared(albert, name, params)
        batch = tok(["the cat sat"], return_tensors="pt")
        loss = model(**batch, labels=torch.tensor([1])).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert 0 < count_trainable(model) <= count_total(model)


def test_regression_head_for_stsb(tiny_bert):
    model, _, head, _ = prepared(tiny_bert, "linear_probe", {}, task="stsb")
    assert count_trainable(model) == D + 1
    assert model.config.problem_type == "regression"
