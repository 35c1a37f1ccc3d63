"""The worker side of a lease: a thread that keeps the claimed cell's heartbeat fresh while it trains.

Lease timing comes from the command line or the environment (HARNESS_HEARTBEAT_S, HARNESS_LEASE_TIMEOUT_S),
so every worker of a Slurm array gets the same without repeating flags.
"""

from __future__ import annotations

import sys
import threading

from harness.store.db import Store
from harness.store.lease import Claim


# How long a stop signal's question to the store (Heartbeat.lost_now) may take before the loop checkpoints anyway:
# a small part of the grace a preempted job gets (Slurm's KillWait, 30 s by default), the rest for the checkpoint
LOST_NOW_WAIT_S = 5.0   # docs/cluster.md quotes it


class Heartbeat:
    """Refreshes the lease every `interval_s` on its own thread (its own database connection). A database
    hiccup is retried at the next beat; a lost lease (another worker took the cell over after a stall) is said
    once and sets `lost`, which the training loop reads at every optimizer step (rank 0's answer is reduced
    across ranks): the attempt stops there (harness.spec.errors.LeaseLostStop), writes nothing into the cell
    folder and records nothing. The context manager's value is the Heartbeat itself."""

    def __init__(self, store: Store, claim: Claim, interval_s: float):
        self.store, self.claim, self.interval_s = store, claim, interval_s
        self.lost = False
        self._asked = False   # lost_now has asked the store itself
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{claim.cell_key}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def lost_now(self) -> bool:
        """`lost`, after asking the store once instead of waiting for the next beat. The loop asks it when a stop
        signal came, before it checkpoints into the cell folder: a worker frozen (or cut off from the store) until
        another took its cell over, and signalled before its next beat found out, wrote its checkpoint over the new
        holder's folder (the one its next claim resumes) and, after that holder's finish, left it in a completed
        cell's folder. A store that does not answer within LOST_NOW_WAIT_S leaves `lost` as it is: the checkpoint
        is written, since the lease may well be this worker's still (the stop of a maintenance that takes the
        database down too)."""
        if not self.lost and not self._asked:
            self._asked = True
            answer: list[bool] = []

            def ask() -> None:
                try:
                    answer.append(self.store.heartbeat(self.claim))
                except Exception:  # noqa: BLE001 - out of reach: as if not asked
                    pass

            # asked on a thread of its own, waited for at most LOST_NOW_WAIT_S: a store that holds the ask (another
            # process's write lock: the busy timeout, 30 s; a database host gone: the connect timeout) would eat
            # the grace time the checkpoint needs before Slurm's SIGKILL
            asking = threading.Thread(target=ask, name=f"lease-check-{self.claim.cell_key}", daemon=True)
            asking.start()
            asking.join(LOST_NOW_WAIT_S)
            if answer:
                self.lost = not answer[0]
            elif asking.is_alive():
                print(f"warning: cell {self.claim.cell_key}: the store did not answer in {LOST_NOW_WAIT_S:g} s whether "
                      f"the lease is still this worker's; checkpointing as if it is", file=sys.stderr, flush=True)
        return self.lost

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                alive = self.store.heartbeat(self.claim)
            except Exception as exc:  # the database may be briefly out of reach: the lease timeout allows for it
                print(f"warning: heartbeat of cell {self.claim.cell_key} failed ({type(exc).__name__}: {exc}); "
                      f"retrying", file=sys.stderr, flush=True)
                continue
            if not alive and self._stop.is_set():
                # a beat that reached the store after the attempt ended (__exit__ waits 10 s for it): the row is
                # the finish's now (recorded, or refused as LeaseLost), and the lease is nothing to speak of
                return
            if not alive:
                self.lost = True
                print(f"warning: cell {self.claim.cell_key}: lease lost (another worker took it over after this "
                      f"one missed its heartbeats); stopping it at the next step, its result will not be recorded",
                      file=sys.stderr, flush=True)
                return
