"""Frozen features: when nothing below the task head trains, run the encoder once and train the head on its output.

A linear probe's encoder is frozen, so every epoch would recompute the same forward pass. Instead the encoder
runs once per (encoder weights, tokenized data, pooling, precision), in eval mode (no dropout inside the
frozen encoder: the features are the encoder's deterministic output), and its output is cached in memory per
process and on disk under the cache directory. The loop then trains the very same model object, whose encoder
is swapped for `CachedEncoder`: the head code of each architecture (BERT's pooler + classifier, RoBERTa's
classification head, DistilBERT's pre-classifier) runs unchanged on the cached vectors, with the same
batches, seed, budget, evaluation and records as the uncached path.

Pooling: `cls` (the default) caches the first token's last hidden state and lets the model's own head path
read it (BERT/ALBERT: through their frozen pretrained pooler, as the uncached model does); `mean` caches the
attention-masked mean of the last hidden states (how sentence-embedding models such as all-MiniLM-L6-v2
were trained) and hands it to the head in place of the first token, bypassing any pooler.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from harness.spec import layout
from harness.spec.methods import FEATURE_ROLES, reads_cached_features, variant_problem
from harness.tasks.data import lengths
from harness.train.digest import hash_tensors
from harness.train.loaders import longest_first

POOLINGS = ("cls", "mean")
_MEMORY: "OrderedDict[str, np.ndarray]" = OrderedDict()   # per process: key -> (N, hidden) float32
_MEMORY_ENTRIES = 16


def pooling_of(method_params: dict) -> str:
    return method_params.get("pooling") or "cls"


def frozen_below_head(model: nn.Module) -> bool:
    """True when no parameter of the encoder (base model) trains: only the head does."""
    prefix = model.base_model_prefix + "."
    return not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(prefix))


class CachedEncoder(nn.Module):
    """Stands in for the encoder: returns cached vectors (passed as `inputs_embeds`, shape (batch, hidden)) as a
    one-token sequence, and the pooled output the head expects. The frozen pretrained pooler, if any, is kept
    (as a submodule, so it still counts and autocasts) and applied for `cls` pooling."""

    def __init__(self, encoder: nn.Module, pooling: str):
        super().__init__()
        self.pooler = getattr(encoder, "pooler", None)   # BERT: a module that reads the first token itself
        self.pooler_activation = getattr(encoder, "pooler_activation", None)   # ALBERT: a Linear, then this
        self.pooling = pooling

    def forward(self, input_ids=None, inputs_embeds=None, return_dict=None, **_):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        sequence = inputs_embeds[:, None, :]
        pooled = inputs_embeds
        if self.pooler is not None and self.pooling == "cls":
            pooled = self.pooler_activation(self.pooler(inputs_embeds)) if self.pooler_activation is not None \
                else self.pooler(sequence)
        return BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled)


def _table_digest(ds, columns) -> bytes:
    """The exact token ids the encoder would read (values and row offsets of each list column)."""
    h = hashlib.sha256()
    for c in columns:
        for chunk in ds.data.column(c).chunks:
            h.update(c.encode())
            h.update(np.asarray(chunk.offsets).tobytes())
            h.update(np.asarray(chunk.flatten()).tobytes())
    return h.digest()


def _encoder_digest(encoder: nn.Module) -> bytes:
    """What the encoder computes, not where it was loaded from: its class and every weight."""
    h = hashlib.sha256(type(encoder).__name__.encode())
    hash_tensors(h, encoder.state_dict(), values=True)
    return h.digest()


def encode(encoder: nn.Module, ds, collator, batch_size: int, pooling: str, autocast, device) -> np.ndarray:
    """One forward pass of the frozen encoder over `ds`, longest first (least padding): (N, hidden) float32,
    row i is example i."""
    from torch.utils.data import DataLoader

    columns = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in ds.column_names]
    loader = DataLoader(ds.with_format(columns=columns + ["idx"]), batch_size=batch_size,
                        sampler=longest_first(lengths(ds)), collate_fn=collator)
    out = np.zeros((len(ds), encoder.config.hidden_size), dtype=np.float32)
    was_training = encoder.training
    encoder.eval()
    with torch.inference_mode():
        for batch in loader:
            idx = batch.pop("idx").numpy()
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast():
                hidden = encoder(**batch).last_hidden_state
            hidden = hidden.float()
            if pooling == "cls":
                vectors = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[idx] = vectors.cpu().numpy()
    encoder.train(was_training)
    return out


@dataclasses.dataclass
class FrozenFeatures:
    """The cached-feature path of one cell: what the loop needs, and what the record keeps."""

    pooling: str
    cache_dir: str | None
    extract_s: float = 0.0      # encoder time spent by this cell on training features (counted as training)
    eval_extract_s: float = 0.0  # ... and on dev features (counted as evaluation)
    # splits per role (FEATURE_ROLES): found cached (memory or disk), or computed by this cell's encoder
    loaded: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(FEATURE_ROLES, 0))
    computed: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(FEATURE_ROLES, 0))

    def record(self) -> dict:
        # per role: a time estimate reads extract_s as the encoder's pass over the training data only where this
        # cell computed all of it, and eval_extract_s likewise for dev (harness/report/throughput.py)
        return {"pooling": self.pooling, "extract_s": round(self.extract_s, 3),
                "eval_extract_s": round(self.eval_extract_s, 3), "splits_cached": sum(self.loaded.values()),
                "splits_computed": sum(self.computed.values()),
                **{f"{role}_splits_{what}": counts[role] for role in FEATURE_ROLES
                   for what, counts in (("computed", self.computed), ("cached", self.loaded))}}

    def _features(self, role: str, encoder, encoder_key: bytes, ds, collator, batch_size, precision, autocast,
                  device):
        columns = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in ds.column_names]
        key = hashlib.sha256(encoder_key + _table_digest(ds, columns)
                             + f"|{self.pooling}|{precision}".encode()).hexdigest()[:24]
        if key in _MEMORY:
            _MEMORY.move_to_end(key)
            self.loaded[role] += 1
            return _MEMORY[key]
        path = os.path.join(layout.features_dir(self.cache_dir), f"{key}.npy") if self.cache_dir else None
        if path and os.path.isfile(path):
            values = np.load(path)
            self.loaded[role] += 1
        else:
            values = encode(encoder, ds, collator, batch_size, self.pooling, autocast, device)
            self.computed[role] += 1
            if path:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp{os.getpid()}.npy"
                np.save(tmp, values)
                os.replace(tmp, path)   # atomic: a concurrent rank reads all of it or nothing
        _MEMORY[key] = values
        while len(_MEMORY) > _MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)
        return values

    def swap_in(self, model: nn.Module, train_sets: list, eval_sets: list, collator, batch_size: int, precision: str,
                autocast, device):
        """Cached features in place of token ids: returns (train sets, eval sets, collator) for the loop and
        replaces the model's encoder by a CachedEncoder. The sets keep the `length` column, so the
        length-grouped sampler draws exactly the batches the uncached path would."""
        import datasets
        from transformers import default_data_collator

        prefix = model.base_model_prefix
        encoder = getattr(model, prefix)
        encoder_key = _encoder_digest(encoder)

        def as_features(ds, train: bool):
            values = self._features("train" if train else "eval", encoder, encoder_key, ds, collator, batch_size,
                                    precision, autocast, device)
            lengths_ = lengths(ds)
            out = datasets.Dataset.from_dict({
                "inputs_embeds": values, "labels": ds.data.column("labels").to_pylist(),
                "idx": ds.data.column("idx").to_pylist(), "length": lengths_,
                "num_tokens": lengths_})   # what the encoder read for each example: the loop's tokens/s
            columns = ["inputs_embeds", "labels", "idx"] + (["num_tokens"] if train else [])
            return out.with_format("torch", columns=columns)

        t0 = time.perf_counter()
        train_sets = [as_features(ds, True) for ds in train_sets]
        t1 = time.perf_counter()
        eval_sets = [[dataclasses.replace(es, dataset=as_features(es.dataset, False)) for es in sets] for sets in eval_sets]
        self.extract_s, self.eval_extract_s = t1 - t0, time.perf_counter() - t1
        setattr(model, prefix, CachedEncoder(encoder, self.pooling))
        return train_sets, eval_sets, default_data_collator


def plan(cell, method, kinds: list, model: nn.Module, single_task: bool,
         cache_dir: str | None) -> FrozenFeatures | None:
    """The cached-feature path when it applies: the method declares a frozen encoder, the task kind's head reads
    one vector per example (classification, not span extraction), the cell trains one task (sequential and
    multi-task cells hand on or share the encoder: they keep the plain path), and no encoder weight trains in
    this model (a checkpoint lacking e.g. its pooler makes that pooler train: plain path). `pooling: mean`
    exists only on this path, so it is refused where the path does not apply."""
    pooling = pooling_of(cell.method_params)
    if (reads_cached_features(method, cell.method_params, tuple(k.name for k in kinds), single_task)
            and frozen_below_head(model)):
        return FrozenFeatures(pooling, cache_dir)
    problem = variant_problem(cell.method, {**cell.method_params, "pooling": pooling},
                              tuple(k.name for k in kinds), single_task)
    if problem:
        raise ValueError(problem[1])
    if pooling != "cls":   # the tasks allow it, but this model's encoder is not entirely frozen
        raise ValueError(f"{cell.method}: pooling {pooling} needs cached frozen features, which apply to "
                         f"cells whose encoder is entirely frozen")
    return None
