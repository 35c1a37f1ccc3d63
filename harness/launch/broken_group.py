"""A DDP group that lost a rank: another rank's process ended (the OOM killer's SIGKILL, a crash, a lost node).

What the ranks left see: torch's launcher sends them SIGTERM (harness.train.preempt sets its stop flag), and their
next collective fails on the closed connection (gloo: "Connection closed by peer", "Read error ... Connection reset
by peer"; NCCL: a DistBackendError), in either order. Nothing of the cell can be checkpointed then (a checkpoint
needs every rank), so the cell is recorded failed, not given back (a deterministic out-of-memory would be claimed
and killed again forever); `--retry-failed` runs it again. A checkpoint of an earlier stop of the cell is kept:
every rank wrote it, and a retry resumes it only where its setup matches (harness.train.checkpoint). The worker
then stops with EXIT_GROUP_BROKEN: its group can run no further collective, so no further cell.

A rank that hangs (its process still runs) breaks the group too: the others' collective times out (the group's
timeout, torch's default 30 minutes), and they are told so; the launcher then stops the hung one.
"""

from __future__ import annotations

from harness.spec.errors import EXIT_GROUP_BROKEN, GroupBroken

# how gloo words a connection a peer's process closed by ending (pair.cc)
CLOSED = ("Connection closed by peer", "Connection reset by peer")
# ... a collective a peer did not join within the group's timeout (unbound_buffer.cc), and the next one over the
# connections that timeout closed: the peer hung (a stalled file system, a deadlock) or fell far behind; no
# collective can follow either, and the first one's message alone names no other rank
TIMED_OUT = ("Timed out waiting", "Application timeout caused pair closure")


def broke(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed because the group lost a member (not a failure of this rank's)."""
    import torch.distributed as dist

    if isinstance(exc, GroupBroken):
        return True
    if isinstance(exc, (dist.DistBackendError, dist.DistNetworkError)):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in CLOSED + TIMED_OUT)


def recorded(error: str | None) -> bool:
    """Whether a failed row's error (its first line: `explained`'s reason, as runner.report_failure stores it) is a
    broken group's: the failure whose retry resumes the cell's checkpoint. Any other failure's retry starts over."""
    return bool(error) and error.startswith(f"{GroupBroken.__name__}: ")


def timed_out(exc: BaseException) -> bool:
    """Whether the group broke on a peer that did not answer in time (its process may still run), `exc` being the
    collective's error or `explained`'s."""
    if isinstance(exc, GroupBroken) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in TIMED_OUT)


def what_happened(stop_signal: str | None, hung: bool = False) -> str:
    """`stop_signal`: the one this rank received (the launcher's SIGTERM may come before or after the error);
    `hung`: the group timed out instead (this rank is the first to end: no SIGTERM says anything then)."""
    if hung:
        return "another rank did not join a collective within the DDP group's timeout (it hung, or fell far behind)"
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
    failure = GroupBroken(f"{what_happened(stop_signal, timed_out(exc))}: the DDP group broke and no checkpoint is "
                          f"possible without every rank, so the cell is recorded failed; {retry} "
                          f"({type(exc).__name__}: {cause})")
    failure.__cause__ = exc
    return failure


def stop_line(suite: str, stop_signal: str | None, before: str = "", hung: bool = False) -> str:
    """The worker's last line. `before`: what became of a cell claimed but not started; `hung`: as in
    what_happened."""
    return (f"suite {suite}: {what_happened(stop_signal, hung)}; {before}this worker stops "
            f"(exit {EXIT_GROUP_BROKEN}): its DDP group can run no further cell; the cells left stay queued for the "
            f"next worker")
