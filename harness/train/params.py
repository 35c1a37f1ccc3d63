"""Parameter accounting from requires_grad: each tensor counted once, however often it is shared or tied (and at
its full size under ZeRO-3, where numel() of a partitioned parameter is 0)."""

from __future__ import annotations

from torch import nn

from harness.train.zero import numel


def _unique(model: nn.Module):
    seen = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        yield name, p


def count_total(model: nn.Module) -> int:
    return sum(numel(p) for _, p in _unique(model))


def count_trainable(model: nn.Module) -> int:
    return sum(numel(p) for _, p in _unique(model) if p.requires_grad)


def breakdown(model: nn.Module, _unused=None) -> dict:
    """The pretrained model's parameters by part: embeddings (for ALBERT the factorised V x E table and the
    E x H projection) and the encoder stack (a cross-layer shared block once, pooler included). Added modules
    (adapters, LoRA, prefixes) and the head are counted elsewhere."""
    from harness.train.methods import ADAPTER_NAME

    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    embedding = encoder = 0
    for name, p in _unique(base):
        if ADAPTER_NAME in name:
            continue
        if "embedding" in name:
            embedding += numel(p)
        else:
            encoder += numel(p)
    return {"embedding_params": embedding, "encoder_params": encoder}


def head_parameter_names(model: nn.Module, missing_keys: set[str]) -> set[str]:
    """The task head: everything outside the pretrained encoder (base_model_prefix), plus any weight the
    checkpoint did not provide (newly initialised, so it has to train whatever the method freezes)."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    return {n for n, _ in _unique(model) if not n.startswith(prefix) or n in missing_keys}
