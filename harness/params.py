"""Parameter accounting from requires_grad: each tensor counted once, however often it is shared or tied."""

from __future__ import annotations

from torch import nn


def _unique(model: nn.Module):
    seen = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        yield name, p


def count_total(model: nn.Module) -> int:
    return sum(p.numel() for _, p in _unique(model))


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for _, p in _unique(model) if p.requires_grad)


def head_parameter_names(model: nn.Module, missing_keys: set[str]) -> set[str]:
    """The task head: everything outside the pretrained encoder (base_model_prefix), plus any weight the
    checkpoint did not provide (newly initialised, so it has to train whatever the method freezes)."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    return {n for n, _ in _unique(model) if not n.startswith(prefix) or n in missing_keys}
