"""Run statuses and regimes: one definition for every layer (plan, launch, store, report).

StrEnum members compare equal to their string values, and the values are exactly what stores written before
these enums hold, so old stores stay readable and SQL filters on the plain strings keep working.
"""

from __future__ import annotations

from enum import Enum

try:
    from enum import StrEnum
except ImportError:   # Python 3.10
    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return self.value

        def __format__(self, spec: str) -> str:
            return self.value.__format__(spec)


class Status(StrEnum):
    """A cell's state in the store."""

    PENDING = "pending"       # queued: no worker holds it
    RUNNING = "running"       # claimed: a worker holds its lease (or held it, until the lease goes stale)
    COMPLETED = "completed"
    FAILED = "failed"


class CellState(StrEnum):
    """What `harness status` shows for a cell, in its display order: the stored Status, or STALE, a state derived
    on reading and never stored: running, but the lease's heartbeat is older than the lease timeout, so the
    next worker takes the cell over (the store's queue decides which leases are stale)."""

    COMPLETED = Status.COMPLETED.value
    RUNNING = Status.RUNNING.value
    STALE = "stale"
    PENDING = Status.PENDING.value
    FAILED = Status.FAILED.value


# lease timing (each overridable per worker: --heartbeat-s / --lease-timeout-s, or the HARNESS_ variables)
DEFAULT_HEARTBEAT_S = 30.0        # a worker renews its lease this often
DEFAULT_LEASE_TIMEOUT_S = 300.0   # a lease without a heartbeat for this long is stale: the cell is taken over
# The staleness rule: a running cell's lease is stale when its last heartbeat is missing or older than the lease
# timeout, on the database's clock (never a worker's). It is SQL: harness.store.queue.stale_lease, used by claims
# and by `harness status` alike.


class Regime(StrEnum):
    """How a row relates to its cell. A single-task run has no regime (NULL in the store)."""

    SEQUENTIAL = "sequential"               # a sequential cell: its last stage
    MULTITASK = "multitask"                 # a multi-task cell: the joint run
    SEQUENTIAL_STAGE = "sequential_stage"   # an earlier stage of a sequential cell (child row)
    MULTITASK_MEMBER = "multitask_member"   # one member task of a multi-task cell (child row)


# rows that are not a task result of their own: the joint row of a multi-task run (its member rows are) and
# the earlier stages of a sequential run (its last stage is)
NOT_RESULTS = (Regime.MULTITASK.value, Regime.SEQUENTIAL_STAGE.value)
