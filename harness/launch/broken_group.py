"""A DDP group that lost a rank: another rank's process ended (the OOM killer's SIGKILL, a crash, a lost node).

What the ranks left see: torch's launcher sends them SIGTERM (harness.train.preempt sets its stop flag), and their
next collective fails on the closed connection (gloo: "Connection closed by peer", "Read error ... Connection reset
by peer"; NCCL: a DistBackendError), in either order. Nothing of the cell can be checkpointed then (a checkpoint
needs every rank), so the cell is recorded failed, not given back (a deterministic out-of-memory would be claimed
and killed again forever); `--retry-failed` runs it again. A checkpoint of an earlier stop of the cell is kept:
every rank wrote it, and a retry resumes it only where its setup matches (harness.train.checkpoint). The worker
then stops with EXIT_GROUP_BROKEN: its group can run no further collective, so no further cell.
"""

from __future__ import annotations

from harness.spec.errors import EXIT_GROUP_BROKEN, GroupBroken

# how gloo words a connection a peer's process closed by ending (pair.cc)
CLOSED = ("Connection closed by peer", "Connection reset by peer")


def broke(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed because the group lost a member (not a failure of this rank's)."""
    import torch.distributed as dist

    if isinstance(exc, GroupBroken):
        return True
    if isinstance(exc, (dist.DistBackendError, dist.DistNetworkError)):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in CLOSED)


def what_happened(stop_signal: str | None) -> str:
    """`stop_signal`: the one this rank received (the launcher's SIGTERM may come before or after the error)."""
    if stop_signal:
        return f"another rank's process ended and the launcher stopped this one ({stop_signal})"
    return "another rank's process ended (or lost its connection)"


def explained(exc: BaseException, stop_signal: str | None, checkpoint_kept: bool) -> GroupBroken:
    """The cell's failure as the record's first line says it; the collective's own error stays its cause (the
    traceback in error.log and the store)."""
    retry = ("`--retry-failed` runs it again, resuming from the cell's earlier checkpoint (kept) where its setup "
             "matches" if checkpoint_kept else "`--retry-failed` runs it again")
    cause = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(cause) > 120:
        cause = cause[:120] + " …"
    failure = GroupBroken(f"{what_happened(stop_signal)}: the DDP group broke and no checkpoint is possible "
                          f"without every rank, so the cell is recorded failed; {retry} ({type(exc).__name__}: "
                          f"{cause})")
    failure.__cause__ = exc
    return failure


def stop_line(suite: str, stop_signal: str | None, before: str = "") -> str:
    """The worker's last line. `before`: what became of a cell claimed but not started."""
    return (f"suite {suite}: {what_happened(stop_signal)}; {before}this worker stops (exit {EXIT_GROUP_BROKEN}): "
            f"its DDP group can run no further cell; the cells left stay queued for the next worker")
