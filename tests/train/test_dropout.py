"""A CPU training step's dropout (harness/train/dropout.py): its masks' rate and scale, their generator, the
attention written out around them, and the loop drawing no mask with torch's bernoulli_."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.train.context import RunContext
from harness.train.dropout import CpuDropout, drawn_by, keep_mask
from harness.train.recipe import train_and_evaluate
from tests.train.test_speed import _cell


def _ops(step) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_an_element_is_kept_with_probability_one_minus_p_and_scaled(p):
    torch.manual_seed(0)
    n = 4_000_000
    x = torch.rand(n) + 0.5
    with CpuDropout():
        y = F.dropout(x, p, training=True)
    kept = y != 0
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < 6 * sd
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))


def test_a_rate_at_the_ends_of_the_range_does_not_wrap():
    """(1 - p) * 2**32 past int32's range: every element kept, not none."""
    assert keep_mask((1000,), 1e-12).all()
    assert keep_mask((1000,), 1 - 1e-12).sum() <= 1


def test_masks_come_from_the_default_generator_a_checkpoint_saves():
    torch.manual_seed(3)
    a = keep_mask((64, 33), 0.1)
    state = torch.get_rng_state()
    b = keep_mask((64, 33), 0.1)
    torch.set_rng_state(state)
    assert torch.equal(keep_mask((64, 33), 0.1), b) and not torch.equal(a, b)
    torch.manual_seed(3)
    assert torch.equal(keep_mask((64, 33), 0.1), a)


def test_module_functional_and_inplace_dropout_take_these_masks():
    x = torch.ones(2000)
    torch.manual_seed(5)
    with CpuDropout():
        functional = F.dropout(x, 0.2, training=True)
        module = torch.nn.Dropout(0.2)(x)
        inplace = x.clone()
        returned = F.dropout(inplace, 0.2, training=True, inplace=True)
        evaluation = F.dropout(x, 0.2, training=False)
    torch.manual_seed(5)
    expected = [keep_mask((2000,), 0.2) for _ in range(3)]
    for out, mask in zip((functional, module, inplace), expected):
        assert torch.equal(out != 0, mask)
    assert returned is inplace and torch.equal(evaluation, x)


FORMS = {"plain": {}, "padding mask": {"mask": "float"}, "boolean mask": {"mask": "bool"},
         "causal": {"is_causal": True}, "scale": {"scale": 0.3}, "grouped-query heads": {"gqa": True},
         "a row all masked, -inf": {"mask": "float", "empty_row": True},
         "a row all masked, boolean": {"mask": "bool", "empty_row": True}}


@pytest.mark.parametrize("form", FORMS)
def test_attention_written_out_is_sdpas_with_the_same_mask(form):
    """Against SDPA's math kernel given the very dropout mask drawn here (fp64): the output and the gradients."""
    spec = dict(FORMS[form])
    torch.manual_seed(0)
    heads_kv = 1 if spec.pop("gqa", False) else 3
    q = torch.randn(2, 3, 7, 4, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, heads_kv, 5 if heads_kv == 3 else 7, 4, dtype=torch.float64, requires_grad=True)
            for _ in range(2))
    kw = {"enable_gqa": True} if heads_kv == 1 else {}
    kw.update({k_: v_ for k_, v_ in spec.items() if k_ in ("is_causal", "scale")})
    if spec.get("mask"):
        allowed = torch.ones(2, 1, 7, k.size(-2), dtype=torch.bool)
        allowed[0, ..., -2:] = False   # padding: the first example's last two keys
        if spec.get("empty_row"):
            allowed[1, 0, 3] = False
        kw["attn_mask"] = allowed if spec["mask"] == "bool" else torch.zeros(allowed.shape, dtype=torch.float64
                                                                               ).masked_fill(~allowed, -torch.inf)
    p = 0.3
    weight = torch.arange(2 * 3 * 7 * 4, dtype=torch.float64).view(2, 3, 7, 4)

    def run(attend):
        torch.manual_seed(7)
        out = attend()
        return out, torch.autograd.grad((out * weight).sum(), (q, k, v))

    drawn, got = set(), []
    with CpuDropout(drawn):
        ops = _ops(lambda: got.extend(run(lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=p, **kw))))
    torch.manual_seed(7)
    mask = keep_mask((2, 3, 7, k.size(-2)), p)
    if kw.get("attn_mask") is not None and kw["attn_mask"].dtype == torch.bool:   # SDPA converts it before the
        kw["attn_mask"] = torch.zeros(kw["attn_mask"].shape, dtype=torch.float64).masked_fill(   # math kernel
            ~kw["attn_mask"], -torch.inf)
    expected = run(lambda: torch.ops.aten._scaled_dot_product_attention_math(q, k, v, dropout_p=p,
                                                                               dropout_mask=mask, **kw)[0])
    assert drawn == {"harness"} and not {"aten::bernoulli_", "aten::_scaled_dot_product_attention_math"} & ops
    assert not got[0].isnan().any()
    torch.testing.assert_close(got[0], expected[0])
    for g, e in zip(got[1], expected[1]):
        torch.testing.assert_close(g, e)


def test_attention_in_bf16_with_a_float32_mask_outside_autocast():
    """SDPA takes a float32 mask with bf16 inputs (added in the inputs' dtype); so does the written-out form."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 8, dtype=torch.bfloat16) for _ in range(3))
    mask = torch.zeros(1, 1, 6, 6).masked_fill_(torch.arange(6) >= 4, torch.finfo(torch.float32).min)
    with CpuDropout():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=1e-12)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=0.02, rtol=0.02)


def test_who_drew_the_masks_is_collected():
    """A form left to torch (here 2-D dropout) is counted as torch's; evaluation draws nothing."""
    x = torch.ones(2, 3, 4, 4)
    drawn = set()
    with CpuDropout(drawn):
        F.dropout(x, 0.1, training=False)
        F.dropout2d(x, 0.1, training=False)
    assert drawn_by(drawn) == "none"
    with CpuDropout(drawn):
        F.dropout2d(x, 0.1, training=True)
    assert drawn_by(drawn) == "torch"
    with CpuDropout(drawn):
        F.dropout(x, 0.1, training=True)
    assert drawn_by(drawn) == "harness+torch"


def test_the_loop_draws_no_mask_with_torchs_generator_on_a_cpu(tiny_bert, small_glue):
    """A CPU training run's dropout (the tiny BERT has 0.1 on hidden states and attention) goes through these
    masks, and the record says so."""
    ctx = RunContext(str(small_glue), None, show_progress=False)
    results = []
    ops = _ops(lambda: results.append(train_and_evaluate(_cell(tiny_bert, budget={"max_steps": 3}), ctx)))
    assert "aten::bernoulli_" not in ops and "aten::_scaled_dot_product_attention_math" not in ops
    assert results[0].dropout_masks == "harness" and results[0].steps == 3
