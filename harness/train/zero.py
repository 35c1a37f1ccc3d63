"""DeepSpeed ZeRO-3 partitions every parameter over the ranks: outside a gather a parameter's numel() is 0 and its
data empty. Counting uses ds_numel (the full size); saving an adapter or a head gathers the full tensors first.
Both are no-ops without DeepSpeed (deepspeed stays an optional extra)."""

from __future__ import annotations

import contextlib


def under_deepspeed(acc) -> bool:
    """The Accelerator runs DeepSpeed (it then owns the weights' dtype, their partitioning and the checkpoints)."""
    return str(acc.distributed_type).endswith("DEEPSPEED")


def numel(p) -> int:
    """The full number of elements, also for a ZeRO-3 partitioned parameter."""
    return int(getattr(p, "ds_numel", 0) or p.numel())


@contextlib.contextmanager
def gathered(params):
    """Within the block, ZeRO-3 partitioned parameters among `params` hold their full tensors (read-only: nothing
    is scattered back). A collective: every rank must enter it, not only the one that writes files."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield
