"""When the training loop looks at the host: its running sums kept on the device, and the one host sync that
reads them and reduces the stop flags across ranks.

Reading a device value (`float(loss)`, `int(mask.sum())`) waits for the device to finish everything queued, and
the stop flags' all-reduce is a collective: done at every optimizer step, these fixed costs were most of a step
at the batch-8 demo's shape (8 x 16 tokens, MiniLM on a 2-core CPU) and stall a GPU's queue of kernels. So the
loop adds its loss and token counts on the device (`DeviceSums`) and syncs (`read`) only at the steps where
something must be decided (`due`): every SYNC_EVERY optimizer steps, the last step, an evaluation, a tracker's
log point. Those steps are a function of the step number alone, so every DDP rank reduces at the same steps;
a single process, which has no one to agree with, also syncs at once on a local stop signal, time limit or lost
lease.
"""

from __future__ import annotations

import torch

# Optimizer steps between two host syncs. The price of a larger number: a non-finite loss is noticed, and under
# DDP a stop signal, time limit or lost lease acted on, up to this many steps late (about a second at the demo's
# shape); the gain stops growing once the sync is a small share of 25 steps.
SYNC_EVERY = 25


def due(step: int, total_steps: int, eval_steps: int | None = None, log_every: int = 0) -> bool:
    """Whether the loop syncs after optimizer step `step`: a function of the step alone (DDP ranks must reduce
    at the same steps, or they hang)."""
    return (step % SYNC_EVERY == 0 or step >= total_steps or bool(eval_steps and step % eval_steps == 0)
            or bool(log_every and step % log_every == 0))


class DeviceSums:
    """The loop's running sums on the device, added to without waiting for it: the loss since the last evaluation
    and since the last tracker point (one add for both), and the tokens trained on. float64: a loss sum adds
    exactly as the Python floats it replaces did, and a token count stays an exact integer."""

    names = ("loss", "log_loss", "tokens")

    def __init__(self, device, start: dict | None = None):
        start = start or {}
        self.losses = torch.tensor([float(start.get("loss", 0.0)), float(start.get("log_loss", 0.0))],
                                   dtype=torch.float64, device=device)
        self.tokens = torch.tensor(float(start.get("tokens", 0.0)), dtype=torch.float64, device=device)
        self.pending = 0   # add() calls since the last read: something unchecked (the same count on every rank)

    def add(self, loss, tokens) -> None:
        """One micro-batch: its loss (a 0-dim tensor) and its tokens (a 0-dim tensor on the device, or a number);
        three small kernels, nothing read."""
        self.losses += loss.detach()
        self.tokens += tokens
        self.pending += 1

    def zero(self, name: str) -> None:
        self.losses[self.names.index(name)] = 0.0

    def vector(self):
        """Every sum, in the order of `names` (one tensor: one copy to the host)."""
        return torch.cat([self.losses, self.tokens.view(1)])


def read(acc, sums: DeviceSums, local_flags: list[bool]) -> tuple[list[bool], dict, dict]:
    """The loop's one host sync: ([any sum non-finite, *local_flags], each summed over ranks: True where any rank
    raised it; {name: this rank's value}; {"loss", "log_loss": summed over ranks}). Every rank must call it at
    the same step: it reduces. A non-finite sum means a non-finite loss since that sum was last zeroed (NaN and
    inf stay in a sum). The loss sums travel in the flags' all-reduce: a record's and a tracker's train loss are
    over every rank's micro-batches, not rank 0's alone, at no extra collective; a rank's own sums are what its
    checkpoint keeps."""
    values = sums.vector()
    flags = torch.tensor([0.0] + [float(f) for f in local_flags], dtype=torch.float64, device=values.device)
    flags[0] = (~torch.isfinite(values)).any()
    shared = torch.cat([flags, sums.losses])
    if acc.num_processes > 1:
        shared = acc.reduce(shared, reduction="sum")
    host = torch.cat([shared, values]).tolist()   # the one transfer
    sums.pending = 0
    n = len(flags)
    over_ranks = dict(zip(sums.names[:2], host[n:n + 2]))
    return [f > 0 for f in host[:n]], dict(zip(sums.names, host[n + 2:])), over_ranks
