"""Dropout in a CPU training step, with its masks drawn at half of torch's generator work.

torch's CPU dropout draws each element of its mask with `bernoulli_(1 - p)`: a double built from two 32-bit
outputs of the sequential mt19937 generator, one element at a time (public wheels take no parallel path on any CPU
vendor: bench/RESULTS.md, 2026-12-05). On the 2-core AMD EPYC that drawing was 14-15% of a full fine-tuning step
at 16 x 56 tokens (bench/RESULTS.md, 2026-12-03 night). Here a mask element is one half of a 64-bit draw of the
same default CPU generator, compared with (1 - p) * 2**32: an element is kept with probability 1 - p to within
2**-32, and the kept ones are scaled by 1 / (1 - p) as torch does. The generator is the one the cell's seed sets
and its checkpoint saves (train/checkpoint.py), so a resumed cell draws the masks an uninterrupted one draws. The
masks differ from torch's for the same seed: scores trained before this module are not reproduced bit for bit.

Attention dropout happens inside SDPA's math kernel (a CPU's fused kernels have none), so where a training
forward asks SDPA for dropout, the attention is written out instead: matmul, softmax, this dropout, matmul, the
way the model's eager implementation computes it (under bf16 autocast its products in bf16, the softmax in bf16,
or in fp32 where a float32 padding mask promotes the scores; SDPA's math kernel computes all of it in fp32), with
SDPA's rules for boolean masks, fully masked rows and grouped-query heads. A form this does not
write out (nested tensors, a mask together with is_causal) is left to torch, and the record says so.

Used by models.training_forward on CPUs, not under torch.compile (inductor draws its own masks); the record says
who drew a run's masks: extra.dropout_masks (drawn_by).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# extra.dropout_masks: who drew a training run's dropout masks
DRAWN_HERE = "harness"
DRAWN_BY_TORCH = "torch"

_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}
_DROPOUT_ARGS = ("input", "p", "training", "inplace")
_DROPOUT_DEFAULTS = {"p": 0.5, "training": True, "inplace": False}
# the functions themselves, as imported: a spy or patch put on torch.nn.functional later is called through
_DROPOUT_FN, _SDPA_FN = F.dropout, torch._C._nn.scaled_dot_product_attention
_DROPOUTS = frozenset({_DROPOUT_FN, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout})


def keep_mask(shape, p: float) -> torch.Tensor:
    """A boolean CPU tensor of `shape`, each element True with probability 1 - p (to within 2**-32), from the
    default CPU generator: one 64-bit draw per two elements."""
    n = math.prod(shape)
    bits = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-2 ** 63, None)   # the full 64-bit range
    halves = bits.view(torch.int32)[:n].view(shape)                                 # each uniform over int32
    # kept: the (1 - p) * 2**32 lowest of the 2**32 values (a bound past int32's range would wrap)
    return halves < min(round((1 - p) * 2 ** 32) - 2 ** 31, 2 ** 31 - 1)


def dropout(x: torch.Tensor, p: float, inplace: bool = False) -> torch.Tensor:
    """Training dropout of x (0 < p < 1): kept elements scaled by 1 / (1 - p), as torch's."""
    noise = keep_mask(x.shape, p).to(x.dtype).div_(1 - p)
    return x.mul_(noise) if inplace else x * noise


def attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa) -> torch.Tensor:
    """SDPA's attention written out, with this module's dropout on the attention weights. As SDPA's math
    kernel: a boolean mask allows where True; a row whose every key is masked gets zero weights (a safe
    softmax), not NaN; grouped-query key/value heads are repeated. A float mask is added as the eager
    implementation adds it: a float32 padding mask promotes bf16 scores, so the softmax runs in float32."""
    scale = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa and key.size(-3) != query.size(-3):
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    scores = torch.matmul(query * scale, key.transpose(-2, -1))
    if is_causal:   # SDPA's rule: query i sees keys 0..i (top-left aligned); no row is all masked
        rows, cols = query.size(-2), key.size(-2)
        attn_mask = torch.ones(rows, cols, dtype=torch.bool, device=scores.device).tril()
    safe = False
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=scores.dtype).masked_fill_(~attn_mask, float("-inf"))
        scores = scores + attn_mask
        safe = bool(torch.isneginf(attn_mask).all(-1).any())   # on the mask: small beside the scores
    weights = torch._safe_softmax(scores, -1) if safe else torch.softmax(scores, dim=-1)
    return torch.matmul(dropout(weights, dropout_p).to(value.dtype), value)   # (autocast casts it the same)


def _bind(names, defaults, args, kwargs) -> dict | None:
    if len(args) > len(names) or not set(kwargs) <= set(names):
        return None
    bound = {**defaults, **dict(zip(names, args)), **kwargs}
    return bound if set(names) <= set(bound) else None


class CpuDropout(TorchFunctionMode):
    """While active: F.dropout in training and SDPA with dropout_p > 0, on CPU tensors, take this module's
    masks. Everything else runs as it would. `drawn` (a set) collects who drew the masks of the calls seen:
    DRAWN_HERE, and DRAWN_BY_TORCH for a form left to torch (and torch's other dropouts: 2-D, alpha, ...)."""

    def __init__(self, drawn: set | None = None):
        super().__init__()
        self.drawn = drawn if drawn is not None else set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # every torch call of a training forward passes here: the others go straight through
        kwargs = kwargs or {}
        if func in _DROPOUTS:
            a = _bind(_DROPOUT_ARGS, _DROPOUT_DEFAULTS, args, kwargs)
            if a and a["training"] and 0 < a["p"] < 1:
                if func is _DROPOUT_FN and _plain_cpu(a["input"]):
                    self.drawn.add(DRAWN_HERE)
                    return dropout(a["input"], a["p"], a["inplace"])
                self.drawn.add(DRAWN_BY_TORCH)
        elif func is _SDPA_FN:
            a = _bind(_SDPA_ARGS, _SDPA_DEFAULTS, args, kwargs)
            if a and 0 < a["dropout_p"] < 1:
                if _writes_out(a):
                    self.drawn.add(DRAWN_HERE)
                    return attention(**{k: a[k] for k in _SDPA_ARGS})
                self.drawn.add(DRAWN_BY_TORCH)
        return func(*args, **kwargs)


def drawn_by(drawn: set) -> str:
    """extra.dropout_masks of a CPU run from its CpuDropout's `drawn`: "harness", "torch", "harness+torch" (some
    of each), or "none" (no dropout drawn in training)."""
    return "+".join(sorted(drawn)) or "none"


def _plain_cpu(t) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "cpu" and not t.is_nested and t.layout == torch.strided


def _writes_out(a: dict) -> bool:
    """The forms written out: plain CPU tensors; a boolean or floating mask, or is_causal, not both (SDPA
    refuses both); grouped-query heads that divide evenly."""
    mask = a["attn_mask"]
    q, k, v = a["query"], a["key"], a["value"]
    return (all(_plain_cpu(t) for t in (q, k, v)) and q.dim() >= 3
            and (mask is None or (_plain_cpu(mask) and not a["is_causal"]))
            and (not a["enable_gqa"] or (k.size(-3) == v.size(-3) and q.size(-3) % k.size(-3) == 0)))
