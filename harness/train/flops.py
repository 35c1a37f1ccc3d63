"""The FLOPs a cell actually runs, counted with torch.utils.flop_counter.FlopCounterMode on its real first batches.

What is counted: the matmuls (mm, addmm, bmm, attention kernels) of the forward, the backward and the optimizer
step, exactly as dispatched. So a frozen weight costs its forward and the gradient of its input, but no weight
gradient (autograd never asks for one), and a frozen first layer whose input needs no gradient costs neither.
Elementwise work (norms, activations, AdamW's update) is not counted, as in the 6N convention. Attention is
counted as the kernel that ran: a fused kernel's backward recomputes the scores (torch counts 5 products), the
math kernel's keeps them (4 bmm), as does attention written out: a model trained on either (on a CPU: with
attention dropout, or in bf16, harness/train/models.py training_forward) records less attention backward than on
a fused one.

How a few counted batches become a run's total: a dense model's matmul FLOPs depend only on the batch's shape,
B examples x L tokens: linear layers (mm / addmm) cost a fixed amount per token (B x L), attention's score and
value products (bmm, SDPA) a fixed amount per B x L^2. The first training batch (TRAIN_COUNTED micro-batches) and
the first evaluation batch are counted with the two parts apart; every batch's (B, L) is tallied; the run's
FLOPs are linear-per-token x sum(B x L) + attention-per-(B x L^2) x sum(B x L^2). Padding runs, so L is the padded
length: these are the FLOPs that ran, not the FLOPs of the real tokens.

Under DDP accelerate evens out every pass's last round of batches by repeating the pass's first examples
(harness/train/measure.py real_rows). In training those rows are trained on: train_flops counts them (they ran,
and moved the weights). In evaluation their predictions are dropped: eval_flops tallies only the dev examples'
rows (at their batch's padded length): each dev example once, as the dev metrics count them.

Cached frozen features (linear probe) have no token axis: the head's FLOPs per example x examples, plus the
encoder pass (counted on one batch of the same shape by the rank that extracted the features, when this cell did:
under DDP rank 0 alone, the others read its file; recipe.py).

FlopCounterMode is a TorchDispatchMode: it sees every op and, as used here (counter()), runs it unchanged (tests
check the weights after a counted step are bit-identical); a compiled model runs its counted batches eager
(eager()). It costs Python time per op on the counted batches only; that time stays in train_time_s (one
batch). The record's extra.flop_count.count_s is the counted batches' whole time, their own forward, backward and
step included, not what counting added: on the embedded model (batch 8, 10 steps) counting added 0.04-0.08 s of
CPU per cell, where count_s said 0.4-0.7 s.
"""

from __future__ import annotations

import contextlib
import time

import torch

TRAIN_COUNTED = 1   # micro-batches counted in training (the split into linear and attention parts is exact)
EVAL_COUNTED = 1    # batches counted in evaluation


def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    """torch's registry lacks the CPU flash-attention kernels SDPA runs on CPU (torch 2.x): same formulas as
    its other SDPA kernels."""
    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward
    return mapping


class _GlobalOnly:
    """FlopCounterMode's module tracker, reduced to what the harness reads: the "Global" counts (split_counts).
    torch's tracker hooks every module's forward, and where an input requires grad but has no grad_fn it fails:
    under no_grad a view of a trained parameter is such a tensor (prefix tuning's flat prefixes), so every counted
    evaluation of a `flat: true` cell failed with "Expected gradient function to be set"."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def counter():
    """A FlopCounterMode that prints nothing, knows the CPU attention kernels, counts the whole model only
    (_GlobalOnly), and runs every op as dispatched.

    torch's own mode runs an op that has both a kernel and a composite decomposition (silu_backward: the
    adapters' swish) through the decomposition, which rounds differently: Houlsby weights after one counted
    step differed by 6e-9 from an uncounted one. This one never decomposes (a decomposition could only reveal
    matmuls inside ops that have no kernel of their own, and those are decomposed before dispatch anyway)."""
    from torch.utils import flop_counter

    base = getattr(flop_counter, "_FlopCounterMode", None)
    if base is None:   # another torch layout: its own mode (counts the same; may round an op differently)
        mode = flop_counter.FlopCounterMode(display=False, custom_mapping=_custom_mapping())
        mode.mod_tracker = _GlobalOnly()
        return mode

    class AsDispatched(base):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if isinstance(func, torch._ops.HigherOrderOperator):
                return self._handle_higher_order_ops(func, types, args, kwargs or {})
            out = func(*args, **(kwargs or {}))
            return self.counter._count_flops(func._overloadpacket, out, args, kwargs or {})

    class Counter(flop_counter.FlopCounterMode):
        def __enter__(self):
            self.flop_counts.clear()
            self.mod_tracker.__enter__()
            self.mode = AsDispatched(self)
            self.mode.__enter__()
            return self

    mode = Counter(display=False, custom_mapping=_custom_mapping())
    mode.mod_tracker = _GlobalOnly()
    return mode


def eager():
    """Where the model is compiled (harness/train/compiling.py), the counted batches run eager: the mode sees
    no op inside compiled code, and a compiled forward first called under the mode is never compiled at all
    (measured, torch 2.13: dynamo gives up on its frame for good)."""
    set_stance = getattr(torch.compiler, "set_stance", None)   # torch >= 2.6
    return set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()


def split_counts(mode) -> tuple[int, int]:
    """(linear, attention) FLOPs of a finished FlopCounterMode: attention = batched matmuls and attention
    kernels (they scale with B x L^2), linear = the rest (mm, addmm, convolutions: B x L)."""
    linear = attention = 0
    for op, flops in mode.get_flop_counts().get("Global", {}).items():
        name = str(op)
        if "bmm" in name or "attention" in name:
            attention += flops
        else:
            linear += flops
    return linear, attention


def batch_shape(batch: dict) -> tuple[int, int]:
    """(B, L): examples and padded tokens per example; cached features (B x hidden, no token axis) count as
    L = 1."""
    if "input_ids" in batch:
        shape = tuple(batch["input_ids"].shape)
    elif "inputs_embeds" in batch:
        shape = tuple(batch["inputs_embeds"].shape)[:-1]
    else:
        shape = tuple(next(v.shape for v in batch.values() if torch.is_tensor(v)))
    return int(shape[0]), int(shape[1]) if len(shape) > 1 else 1


class Tally:
    """One phase (training or evaluation): the shapes of every batch, and the FLOPs of the counted ones."""

    def __init__(self, counted_max: int):
        self.counted_max = counted_max
        self.tokens = self.quad = self.examples = 0             # every batch: sum B x L, sum B x L^2, sum B
        self.c_tokens = self.c_quad = self.c_batches = 0       # the counted batches
        self.c_linear = self.c_attention = 0
        self.count_s = 0.0

    def see(self, shape: tuple[int, int]) -> None:
        b, l = shape
        self.tokens, self.quad, self.examples = self.tokens + b * l, self.quad + b * l * l, self.examples + b

    @contextlib.contextmanager
    def batch(self, batch: dict, rows: int | None = None):
        """Counts (or tallies) `batch`; `rows`: how many of its rows to tally (the dev examples, not the ones DDP
        repeats: measure.real_rows), at the batch's padded length. The counted FLOPs are the whole batch's."""
        shape = batch_shape(batch)
        self.see(shape if rows is None else (min(rows, shape[0]), shape[1]))
        if self.c_batches >= self.counted_max:
            yield
            return
        t0 = time.perf_counter()
        with eager(), counter() as mode:
            yield
        linear, attention = split_counts(mode)
        b, l = shape
        self.c_tokens, self.c_quad, self.c_batches = self.c_tokens + b * l, self.c_quad + b * l * l, self.c_batches + 1
        self.c_linear, self.c_attention = self.c_linear + linear, self.c_attention + attention
        self.count_s += time.perf_counter() - t0

    def total(self) -> float | None:
        """This rank's FLOPs over every batch seen, from the counted ones; None when nothing was counted."""
        if not self.c_batches:
            return None
        linear = self.c_linear / self.c_tokens * self.tokens if self.c_tokens else 0.0
        attention = self.c_attention / self.c_quad * self.quad if self.c_quad else 0.0
        return linear + attention

    def state(self) -> dict:
        return dict(vars(self))

    def load(self, state: dict) -> None:
        vars(self).update(state)


class FlopMeter:
    """The training loop's FLOP counter: `with meter.train.batch(batch):` around a training micro-batch's
    forward, backward and optimizer step; `meter.eval_forward(forward)` around the evaluation forward."""

    def __init__(self):
        self.train, self.eval = Tally(TRAIN_COUNTED), Tally(EVAL_COUNTED)
        self.extra_train = self.extra_eval = 0.0   # FLOPs counted whole outside the loop (the frozen encoder pass)

    def eval_forward(self, forward, rows=None):
        """`rows(n)`: how many of a batch's n rows are dev examples (the rest, DDP's repeats, are not tallied)."""
        def counted(batch):
            with self.eval.batch(batch, rows(batch_shape(batch)[0]) if rows is not None else None):
                return forward(batch)
        return counted

    def state(self) -> dict:
        """For a checkpoint: a resumed cell keeps the tallies of the steps trained before the stop."""
        return {"train": self.train.state(), "eval": self.eval.state(), "extra_train": self.extra_train,
                "extra_eval": self.extra_eval}

    def load(self, state: dict | None) -> None:
        if state:
            self.train.load(state["train"])
            self.eval.load(state["eval"])
            self.extra_train, self.extra_eval = state["extra_train"], state["extra_eval"]

    def record(self) -> dict:
        """What the counting saw, for the record's extra (per rank 0)."""
        out = {"train_counted_batches": self.train.c_batches, "eval_counted_batches": self.eval.c_batches,
               "count_s": round(self.train.count_s + self.eval.count_s, 4)}
        for name, tally in (("train", self.train), ("eval", self.eval)):
            if tally.c_tokens:
                out[f"{name}_flops_per_token"] = (tally.c_linear + tally.c_attention) / tally.c_tokens
                out[f"{name}_attention_share"] = round(tally.c_attention / max(tally.c_linear + tally.c_attention, 1), 4)
        if self.extra_train or self.extra_eval:
            out["encoder_pass_flops"] = {"train": self.extra_train, "eval": self.extra_eval}
        return out


def encoder_pass_flops(encoder, ds, collator, batch_size: int, device) -> float:
    """The FLOPs of one forward pass of `encoder` over the tokenized dataset `ds` (the linear probe's feature
    extraction): one batch of the longest examples counted, scaled by every batch's shape (no gradients)."""
    from harness.tasks.data import lengths

    if len(ds) == 0:
        return 0.0
    lens = sorted(lengths(ds), reverse=True)
    tally = Tally(1)
    first = collator([ds[i] for i in range(min(batch_size, len(ds)))])
    with torch.no_grad(), tally.batch(first):
        encoder(**{k: v.to(device) for k, v in first.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    # the shapes of every batch of the pass: tally them as if they were seen (the first was counted above)
    tally.tokens = tally.quad = tally.examples = 0
    for i in range(0, len(lens), batch_size):
        chunk = lens[i:i + batch_size]
        tally.see((len(chunk), max(chunk)))
    return tally.total() or 0.0


def flops_fields(acc, meter: FlopMeter, train_time: float, peak: dict | None) -> dict:
    """The record's FLOP fields, summed over ranks (every rank must call this: it reduces):
    train_flops, eval_flops, flops_per_s (train_flops / train_time_s), mfu (flops_per_s over the peak of the
    precision used x the number of processes)."""
    train, evals = meter.train.total(), meter.eval.total()
    values = torch.tensor([(train or 0.0) + meter.extra_train, (evals or 0.0) + meter.extra_eval],
                          dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        values = acc.reduce(values, reduction="sum")
    train_flops = float(values[0]) if train is not None or meter.extra_train else None
    eval_flops = float(values[1]) if evals is not None or meter.extra_eval else None
    flops_per_s = train_flops / train_time if train_flops and train_time and train_time > 0 else None
    mfu = None
    if flops_per_s and peak and peak.get("flops_per_s"):
        mfu = flops_per_s / (peak["flops_per_s"] * acc.num_processes)
    return {"train_flops": train_flops, "eval_flops": eval_flops, "flops_per_s": flops_per_s, "mfu": mfu}
