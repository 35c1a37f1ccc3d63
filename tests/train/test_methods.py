"""Every method's trainable / added parameter counts against a hand computation, on tiny random models."""

import pytest
import torch

from harness.spec.methods import METHODS, get_method
from harness.train.methods import reduction_factor, set_up
from harness.spec.models import ModelSpec
from harness.train.models import load_for_task
from harness.train.params import count_total, count_trainable, head_parameter_names
from harness.spec.tasks import get_task

D, L, C = 32, 2, 2  # hidden size, layers, labels of the tiny model (tests.helpers.make_tiny_model)


def prepared(model_dir, method, params, task="rte"):
    tokenizer, model, missing = load_for_task(ModelSpec(str(model_dir)), get_task(task))
    head = head_parameter_names(model, missing)
    before = count_total(model)
    m = get_method(method)
    set_up(model, method, m.resolve(params))
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


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "albert"])
def test_every_method_on_every_architecture(tmp_path, arch):
    """Each method trains on each architecture: a finite loss, gradients on exactly the trainable tensors, and
    an optimizer step that moves them (and nothing frozen)."""
    from tests.helpers import make_tiny_model

    model_dir = make_tiny_model(tmp_path / f"tiny-{arch}", arch=arch)
    for name in METHODS:
        if name == "pretrained_adapter":
            continue  # needs a saved adapter: tests/train/test_strategies.py
        params = {"size": 8} if "size" in METHODS[name].params else {"k": 1} if name == "top_k" else {}
        model, before, head, tok = prepared(model_dir, name, params)
        batch = tok(["the cat sat", "a big dog ran under the red house"], padding=True, return_tensors="pt")
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        loss = model(**batch, labels=torch.tensor([1, 0])).loss
        loss.backward()
        assert torch.isfinite(loss), (arch, name)
        assert 0 < count_trainable(model) < count_total(model) or name == "full", (arch, name)
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad), (arch, name)
        torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
        assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen), (arch, name)


def test_ia3_rescales_keys_values_and_ffn(tiny_bert):
    model, before, _, _ = prepared(tiny_bert, "ia3", {})
    assert count_total(model) - before == L * (D + D + 64)  # one vector per k, v and FFN intermediate (I=64)
    assert count_trainable(model) == L * (2 * D + 64) + D * C + C


def test_prefix_tuning_counts(tiny_bert):
    n, b = 5, 16
    model, before, _, _ = prepared(tiny_bert, "prefix_tuning", {"prefix_length": n, "bottleneck_size": b})
    # prefix embedding (n x d) and the reparametrisation MLP d -> b -> 2 * layers * d (keys and values)
    assert count_total(model) - before == n * D + (D * b + b) + (b * 2 * L * D + 2 * L * D)
    model, before, _, _ = prepared(tiny_bert, "prefix_tuning", {"prefix_length": n, "flat": True})
    assert count_total(model) - before == n * 2 * L * D


def test_compacter_is_smaller_than_houlsby_of_the_same_width(tiny_bert):
    houlsby, hb, _, _ = prepared(tiny_bert, "houlsby", {"size": 8})
    compacter, cb, _, _ = prepared(tiny_bert, "compacter", {"size": 8, "phm_dim": 4})
    assert 0 < count_total(compacter) - cb < count_total(houlsby) - hb
    with pytest.raises(Exception, match="divisible by phm_dim"):
        prepared(tiny_bert, "compacter", {"size": 6, "phm_dim": 4})


@pytest.mark.parametrize("std", [1e-7, 1e-2, 1.0])
def test_init_std_sets_the_adapter_scale(tiny_bert, std):
    model, _, _, _ = prepared(tiny_bert, "houlsby", {"size": 8, "init_std": std})
    ws = [p for n, p in model.named_parameters() if ("adapter_down" in n or "adapter_up" in n) and n.endswith("weight")]
    assert len(ws) == 2 * 2 * L
    flat = torch.cat([w.detach().flatten() for w in ws])
    assert flat.abs().max() <= 2 * std + 1e-12
    assert 0.6 * std < float(flat.std()) < 1.1 * std  # a normal truncated at 2 std has std 0.88 std
    biases = [p for n, p in model.named_parameters() if ("adapter_down" in n or "adapter_up" in n) and n.endswith("bias")]
    assert all(float(b.detach().abs().max()) == 0.0 for b in biases)


def test_regression_head_for_stsb(tiny_bert):
    model, _, head, _ = prepared(tiny_bert, "linear_probe", {}, task="stsb")
    assert count_trainable(model) == D + 1
    assert model.config.problem_type == "regression"


@pytest.mark.parametrize("load_head", [True, False])
def test_a_pretrained_adapter_loads_its_saved_head_only_when_asked(tiny_bert, tmp_path, load_head):
    """`load_head: false` promises a new head: the adapters library's load_adapter also loads the head its
    save_adapter wrote beside the adapter (with_head defaults to true), so the saved head came in either way
    (evaluation-only cells with load_head true and false gave bitwise the same predictions)."""
    from harness.train.model_setup import save_adapter

    model, _, head, _ = prepared(tiny_bert, "houlsby", {"size": 4})
    with torch.no_grad():
        model.classifier.weight.fill_(0.5)
    save_adapter(model, head, str(tmp_path / "saved"))
    stitched, _, _, _ = prepared(tiny_bert, "pretrained_adapter",
                                 {"path": str(tmp_path / "saved"), "load_head": load_head})
    assert bool((stitched.classifier.weight == 0.5).all()) is load_head
