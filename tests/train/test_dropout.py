"""A CPU training step's dropout (harness/train/dropout.py): its masks' rate and scale, their generator, the
attention written out around them, and the loop drawing no mask with torch's bernoulli_."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.train.context import RunContext
from harness.train.dropout import CpuDropout, keep_mask
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


@pytest.mark.parametrize("kwargs", [{}, {"mask": True}, {"is_causal": True}, {"scale": 0.3}])
def test_attention_written_out_is_sdpa(kwargs):
    """With a rate that keeps every weight the written-out attention and its gradients are SDPA's."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    kw = dict(kwargs)
    if kw.pop("mask", False):
        mask = torch.zeros(2, 1, 7, 7, dtype=torch.float64)
        mask[..., 5:] = torch.finfo(torch.float64).min   # padding: the last two keys
        kw["attn_mask"] = mask

    def run(dropout_p):
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, **kw)
        grads = torch.autograd.grad((out * torch.arange(out.numel()).view_as(out)).sum(), (q, k, v))
        return out, grads

    expected = run(0.0)
    with CpuDropout():
        ops = _ops(lambda: run(1e-12))
        got = run(1e-12)
    assert "aten::_scaled_dot_product_attention_math" not in ops and "aten::bernoulli_" not in ops
    torch.testing.assert_close(got[0], expected[0])
    for g, e in zip(got[1], expected[1]):
        torch.testing.assert_close(g, e)


def test_forms_it_does_not_write_out_are_torchs():
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    allowed = torch.ones(5, 5, dtype=torch.bool).tril()
    with CpuDropout():
        ops = _ops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=0.5))
    assert "aten::bernoulli_" in ops


def test_the_loop_draws_no_mask_with_torchs_generator_on_a_cpu(tiny_bert, small_glue):
    """A CPU training run's dropout (the tiny BERT has 0.1 on hidden states and attention) goes through these
    masks, and the record says so."""
    ctx = RunContext(str(small_glue), None, show_progress=False)
    results = []
    ops = _ops(lambda: results.append(train_and_evaluate(_cell(tiny_bert, budget={"max_steps": 3}), ctx)))
    assert "aten::bernoulli_" not in ops and "aten::_scaled_dot_product_attention_math" not in ops
    assert results[0].dropout_masks == "harness" and results[0].steps == 3
