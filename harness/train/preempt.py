"""Stop signals: SIGUSR1, SIGUSR2 or SIGTERM ask a worker to stop at the next optimizer step.

Slurm sends the job's warning signal (`--signal=USR2@WARNING_S` of harness.launch.slurm; USR2 is submitit's
convention: USR1 is NCCL's) to every process of the job step; SIGTERM comes at a time limit or preemption; `kill -USR1 PID` does the same for a plain
`harness run`. The handler only sets a flag: the training loop reads it at its next optimizer step (every rank
reduces it, so all ranks stop at the same step), checkpoints the cell and raises `Preempted`; between cells the
runner reads it before claiming the next one. Installed once per worker process (`install()`, by the CLI).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)

_received: list[int] = []


def _handler(signum, frame) -> None:
    first = not _received
    _received.append(signum)
    if first:   # one line; a second signal (srun forwards what the step already got) changes nothing
        os.write(2, f"harness: {signal.Signals(signum).name} received: stopping at the next optimizer step "
                    f"({_outcome()})\n".encode())


def _outcome() -> str:
    """What the stop comes to. Under DDP the checkpoint needs every rank, and the launcher's SIGTERM also comes
    when another rank's process has ended (harness.launch.broken_group): this rank cannot tell which, yet."""
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        return ("the cell is checkpointed and given back if every rank gets there; if another rank's process has "
                "ended, none can, and the cell is recorded failed")
    return "the cell is checkpointed and given back"


def install() -> None:
    """The handlers for this process (main thread only, as Python requires). A launcher that started this
    process with the signals ignored (harness.launch.relay) does not matter: handlers replace SIG_IGN."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _handler)


def ignore() -> None:
    """Stop signals ignored from now on: for a worker that has decided how it ends (its DDP group broke: exit 6)
    and only shuts down. The launcher SIGTERMs the ranks left once it sees one end; a SIGTERM that came while the
    interpreter was finalizing, which puts Python-level handlers back to the default (but leaves SIG_IGN), killed
    the process (-15 in the launcher's table) after it had chosen its exit code."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def ends_wait(what: str, on_stop=None):
    """A wait inside C code that a stop signal ends: torch's rendezvous (the first join of a DDP group), where
    Python's handler (above) runs only once the main thread is back in the interpreter, that is once the other ranks
    came or its timeout (30 min) passed: a rank whose peers never came ignored SIGTERM, and Slurm's grace time ended
    in SIGKILL. Here the signal's byte (signal.set_wakeup_fd, written by the C-level handler at once) wakes a
    thread that says one line, calls `on_stop()` (rank 0's Slurm requeue) and ends the process: EXIT_PREEMPTED,
    nothing was claimed yet. A stop signal that came before the wait ends it at once."""
    from harness.spec.errors import EXIT_PREEMPTED

    stopping = threading.Event()   # the watcher took a signal: the process ends with it, whatever on_stop does

    def stop(signum: int) -> None:
        stopping.set()
        try:
            print(f"harness: {signal.Signals(signum).name} received while {what}: stopping; no cell was claimed",
                  file=sys.stderr, flush=True)
            if on_stop is not None:
                on_stop()
            sys.stdout.flush()
        except BaseException as exc:  # noqa: BLE001 - said, and the process still ends
            print(f"harness: the stop while {what} could not finish ({type(exc).__name__}: {exc}); stopping anyway",
                  file=sys.stderr, flush=True)
        finally:
            os._exit(EXIT_PREEMPTED)

    if _received:
        stop(_received[0])
    if threading.current_thread() is not threading.main_thread():   # set_wakeup_fd is the main thread's
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)   # set_wakeup_fd's requirement
    old = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            try:
                got = reader.recv(64)
            except OSError:
                return
            if not got:   # the wait is over: the sockets are closed
                return
            for signum in got:
                if signum in STOP_SIGNALS:
                    stop(signum)

    watcher = threading.Thread(target=watch, name="stop-during-wait", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old)
        writer.close()
        reader.shutdown(socket.SHUT_RDWR)
        watcher.join(timeout=5)
        if stopping.is_set():
            # a signal taken as the wait ended: the watcher ends the process once on_stop is done (scontrol: up to
            # a minute); going on, this rank opened the store and claimed a cell that exit then dropped
            watcher.join()
        reader.close()


def requested() -> bool:
    return bool(_received)


def signal_name() -> str | None:
    return signal.Signals(_received[0]).name if _received else None


def reset() -> None:
    """Forget a received signal (tests; a worker that stopped exits instead)."""
    _received.clear()
