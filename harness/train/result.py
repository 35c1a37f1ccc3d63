"""The typed result of one run (what the training loop produces), and its one mapping to store columns.

Every field says where it goes: a store column of the same name, the row's `extra` JSON, the environment
record, child rows (sequential stages, multi-task members), or nowhere (hand-over state between stages).
`columns()` is the only place a result becomes store values, and it raises on a field that names no column,
so a misspelt or forgotten column is an error at once instead of a value that silently vanishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Collection

from harness.spec.status import Regime

COLUMN, EXTRA, ENV, CHILDREN, NOT_STORED = "column", "extra", "env", "children", "not_stored"


def _f(where: str = COLUMN, default=None):
    return field(default=default, metadata={"store": where})


def _list(where: str):
    return field(default_factory=list, metadata={"store": where})


@dataclass
class RunResult:
    # parameters (harness/train/params.py)
    total_params: int | None = _f()
    trainable_params: int | None = _f()
    head_params: int | None = _f()
    added_params: int | None = _f()
    trainable_pct: float | None = _f()
    embedding_params: int | None = _f()
    encoder_params: int | None = _f()
    # cost
    train_time_s: float | None = _f()
    eval_time_s: float | None = _f()
    peak_memory_mb: float | None = _f()
    peak_memory_kind: str | None = _f()
    train_examples_per_s: float | None = _f()
    train_tokens_per_s: float | None = _f()
    steps: int | None = _f()
    epochs_done: float | None = _f()
    stopped_by: str | None = _f()
    train_examples: int | None = _f()      # examples (SQuAD: questions), not features
    eval_examples: int | None = _f()
    train_flops: float | None = _f()
    eval_flops: float | None = _f()
    flops_per_s: float | None = _f()
    mfu: float | None = _f()
    num_threads: int | None = _f()
    # quality
    score: float | None = _f()
    metrics: dict | None = _f()
    best_score: float | None = _f()
    best_metrics: dict | None = _f()
    history: list | None = _f()
    trivial_scores: dict | None = _f()
    # artefacts
    adapter_path: str | None = _f()
    adapter_bytes: int | None = _f()
    # set on child rows only (a stage or a member task); None on a cell's own row
    task: str | None = _f()
    stage: int | None = _f()
    output_dir: str | None = _f()
    regime: Regime | None = _f()
    # into the row's `extra`
    encoder_checksum: dict | None = _f(EXTRA)       # sequential stages: the encoder at the start and the end
    stage_train_time_s: float | None = _f(EXTRA)    # a sequence's last stage alone (train_time_s: all stages)
    frozen_features: dict | None = _f(EXTRA)        # linear probe: the encoder's one pass (harness/train/features.py)
    head_outside_autocast: list | None = _f(EXTRA)  # mixed precision: head modules run in fp32 (train/precision.py)
    checkpoint_refused: str | None = _f(EXTRA)      # a checkpoint was there but from another setup: started over
    resume_s: float | None = _f(EXTRA)              # reading a checkpoint (and replaying its batches): outside
                                                    # train_time_s (harness/train/checkpoint.py)
    flop_count: dict | None = _f(EXTRA)             # what the FLOP count saw (harness/train/flops.py)
    device_peak: dict | None = _f(EXTRA)            # MFU's denominator: FLOP/s, source, rates, timings (train/peaks.py)
    precision_choice: dict | None = _f(EXTRA)       # mixed_precision asked, chosen, why, rates (train/precision.py)
    attn_implementation: str | None = _f(EXTRA)     # the attention that ran: sdpa, or eager (train/models.py)
    compiled: bool | None = _f(EXTRA)               # torch.compile ran the model (hparam compile, train/compiling.py)
    dropout_masks: str | None = _f(EXTRA)           # who drew them: harness (CPU) or torch (train/dropout.py)
    frozen_cast: dict | None = _f(EXTRA)            # frozen Linear weights stored in bf16/fp16 (train/precision.py)
    host_allocator: dict | None = _f(EXTRA)         # CPU: malloc's settings while training (train/host_memory.py)
    rss_at_start_mb: float | None = _f(EXTRA)       # CPU: the RSS peak_memory_mb counted from (train/measure.py)
    model_source: str | None = _f(EXTRA)            # what config, weights and tokenizer were loaded from, by
                                                    # content: hub commit or files' sha256 (train/models.py)
    adapter_source: str | None = _f(EXTRA)          # pretrained_adapter: the folder stitched in, by content
                                                    # (train/model_setup.py)
    data_sources: dict | None = _f(EXTRA)           # {task: {split: what was read}}: files by sha256, hub by
                                                    # fingerprint, `[:n]` for a cap (harness/tasks/data.py)
    data_skipped: dict | None = _f(EXTRA)           # {task: {split: {rows, first}}}: rows of a data file skipped
                                                    # as malformed, among those read ({}: none; data.py)
    data_truncated: dict | None = _f(EXTRA)         # {task: {split: examples cut at max_length}} ({}: none;
                                                    # harness/tasks/data.py)
    # into the environment record
    mixed_precision: str | None = _f(ENV)
    distributed_type: str | None = _f(ENV)
    # child rows
    stages: list[RunResult] = _list(CHILDREN)
    members: list[RunResult] = _list(CHILDREN)
    # between sequential stages only
    state: dict | None = _f(NOT_STORED)

    def columns(self, known: Collection[str]) -> dict:
        """{column: value} for the store: every COLUMN field that is set, plus `extra` when an EXTRA field is.
        Raises KeyError when a field has no column of its name in `known` (the store's columns)."""
        out, extra = {}, {}
        for f in fields(self):
            where, value = f.metadata["store"], getattr(self, f.name)
            if where == COLUMN:
                if f.name not in known:
                    raise KeyError(f"run result field {f.name!r} has no store column")
                if value is not None:
                    out[f.name] = value
            elif where == EXTRA and value is not None:
                extra[f.name] = value
        if extra:
            if "extra" not in known:
                raise KeyError("the store has no extra column")
            out["extra"] = extra
        return out

    def child_rows(self) -> list[tuple[str, RunResult]]:
        """(cell key suffix, result) for the rows a sequential cell's earlier stages and a multi-task cell's
        member tasks get; fields left None there are the parent row's."""
        return [(f"stage{s.stage}", s) for s in self.stages] + [(m.task, m) for m in self.members]
