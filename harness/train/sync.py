"""When the training loop looks at the host: its running sums kept on the device, and the one host sync that
reads them and reduces the stop flags across ranks.

Reading a device value (`float(loss)`, `int(mask.sum())`) waits for the device to finish everything queued, and
the stop flags' all-reduce is a collective: done at every optimizer step, these fixed costs were most of a step
at the demo's shape (batch 8 x 16 tokens, MiniLM on a 2-core CPU) and stall a GPU's queue of kernels. So the
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
    """Named running sums on the device, added to without waiting for it (float64: a loss sum adds exactly as the
    Python floats it replaces, and a token count stays an exact integer)."""

    def __init__(self, names: tuple[str, ...], device, start: dict | None = None):
        self.names = names
        self.values = torch.tensor([float((start or {}).get(n, 0.0)) for n in names], dtype=torch.float64,
                                   device=device)
        self.pending = 0   # add() calls since the last read: something unchecked (the same count on every rank)

    def add(self, *values) -> None:
        """One value per name, in order: 0-dim tensors (on the device) or numbers."""
        self.values += torch.stack([torch.as_tensor(v, device=self.values.device).detach().to(torch.float64)
                                    for v in values])
        self.pending += 1

    def zero(self, name: str) -> None:
        self.values[self.names.index(name)] = 0.0


def read(acc, sums: DeviceSums, local_flags: list[bool]) -> tuple[list[bool], dict]:
    """The loop's one host sync: ([any sum non-finite, *local_flags], each summed over ranks: True where any rank
    raised it; {name: this rank's value}). Every rank must call it at the same step: it reduces. A non-finite
    sum means a non-finite loss since that sum was last zeroed (NaN and inf stay in a sum)."""
    flags = torch.tensor([0.0] + [float(f) for f in local_flags], dtype=torch.float64, device=sums.values.device)
    flags[0] = (~torch.isfinite(sums.values)).any()
    if acc.num_processes > 1:
        flags = acc.reduce(flags, reduction="sum")
    host = torch.cat([flags, sums.values]).tolist()   # the one transfer
    sums.pending = 0
    return [f > 0 for f in host[:len(flags)]], dict(zip(sums.names, host[len(flags):]))
