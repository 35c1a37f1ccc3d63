"""Run statuses and regimes: one definition for every layer (plan, launch, store, report).

StrEnum members compare equal to their string values, and the values are exactly what stores written before
these enums hold, so old stores stay readable and SQL filters on the plain strings keep working.
"""

from __future__ import annotations

import math
from enum import Enum

from harness.spec.errors import InputError
from harness.spec.variables import env_text

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


def share(part: float, whole: float) -> str:
    """`part` of `whole` in whole percents, as `harness status`, the board's Grid page and a worker's progress lines
    say it: 0% and 100% only for none and all (1 of 201 rounded reads "0%", 200 of 201 "100%"), "<1%" and ">99%"
    between. Here, below the train and report layers, so that each says it by this one rule."""
    pct = 100 * part / whole if whole else 0.0
    if 0 < pct < 1:
        return "<1%"
    if 99 < pct < 100:
        return ">99%"
    return f"{pct:.0f}%"


# The default number of workers of a CPU `harness run` (GPUs: 1; harness.launch.workers.default_workers, which
# caps it at the physical cores). HARNESS_WORKERS overrides it. Here, not in harness.launch.workers, so that run's
# --workers help says it without loading the launcher. Measured (bench/RESULTS.md 2026-12-03, 2-core AMD EPYC,
# after the loop's per-step syncs were removed): 2 workers x 1 thread finished 0.81x the cells per minute of 1
# worker x 2 threads on the demo's shapes in batches of 8, and 0.79x in the demo's batches of 16 (0.71x on
# 2026-12-05, AVX512-BF16 EPYC, bf16), so one worker.
DEFAULT_CPU_WORKERS = 1

# the largest grid a suite may plan unless --max-cells says more: a bigger one is almost always a typo in a list.
# Here, not in harness.plan.grid: every command's parser shows it, and grid's import (pydantic) cost ~0.2 s of
# a 0.5 s `harness ls --help`
DEFAULT_MAX_CELLS = 10_000

# lease timing (each overridable per worker: --heartbeat-s / --lease-timeout-s, or the HARNESS_ variables)
DEFAULT_HEARTBEAT_S = 30.0        # a worker renews its lease this often
DEFAULT_LEASE_TIMEOUT_S = 300.0   # a lease without a heartbeat for this long is stale: the cell is taken over
# the longest a seconds option may be (heartbeat, lease timeout, status --watch): a year is longer than any of them
# means; past about 9.2e9 s a thread's wait or a sleep raises OverflowError (1e300: a traceback in the heartbeat
# thread while the cell trained, its lease never renewed)
MAX_SECONDS = 365 * 24 * 3600.0
# what a store's INTEGER column holds (PostgreSQL's 32 bits; store.schema's bound for every one). Here, not in the
# schema: the count options' parse reads it (as MAX_PROCESSES), which loaded SQLAlchemy
INTEGER_MAX = 2 ** 31 - 1
# the most processes a worker may run on: its rows' num_processes, the cell key's process count, are INTEGER
# (Slurm's node count stops there too, INT_MAX: sbatch 22.05 refuses --nodes=2147483648)
MAX_PROCESSES = INTEGER_MAX
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


def parse_seconds(value: str | float, zero_ok: bool = False) -> float:
    """`value` (an option's text, or a number) as a number of seconds by the one rule of every seconds option
    (--heartbeat-s, --lease-timeout-s, their HARNESS_ variables, status --watch): a number, positive (zero_ok: or 0,
    the waits set by a variable alone), finite, at most MAX_SECONDS. ValueError says what is wrong; the caller puts
    the option's name in front."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"not a number of seconds: {value!r}") from None
    # nan and inf too: a lease that never goes stale is no lease, a wait of inf or nan a hang or a traceback
    if not ((number >= 0 if zero_ok else number > 0) and math.isfinite(number)):
        raise ValueError(f"must be a {'non-negative' if zero_ok else 'positive'} number of seconds, not {number}")
    if number > MAX_SECONDS:
        raise ValueError(f"must be at most {MAX_SECONDS:.0f} seconds (a year), not {number:g}")
    return number


# Lease timing comes from the command line or the environment (HARNESS_HEARTBEAT_S, HARNESS_LEASE_TIMEOUT_S), so
# every worker of a Slurm array, and every reader of leases (status, the board, ingest), gets the same.
def _seconds(value, env: str, default: float, flag: str, zero_ok: bool = False) -> tuple[float, str]:
    """A number of seconds (parse_seconds; zero_ok: or 0): the flag's value, else the environment variable's, else
    the default; with the name of where it came from, for the errors that refuse it (the variable, where the flag
    was not given)."""
    source = flag
    if value is None:
        raw = env_text(env)
        value, source = (raw, f"${env}") if raw is not None else (default, flag)
    try:
        return parse_seconds(value, zero_ok), source
    except ValueError as e:
        raise InputError(f"{source}: {e}") from None


def env_seconds(env: str, default: float) -> float:
    """A wait set by an environment variable alone (HARNESS_FINISH_BACKOFF_S, HARNESS_SLURM_POLL_S, whose floor its
    caller checks): 0 (no wait) allowed, else the lease options' rule; the default where it is unset."""
    return _seconds(None, env, default, env, zero_ok=True)[0]


_LEASE_TIMEOUT = ("HARNESS_LEASE_TIMEOUT_S", DEFAULT_LEASE_TIMEOUT_S, "--lease-timeout-s")


def lease_timeout(value: float | None) -> float:
    """The lease timeout alone (readers of leases: status, ingest)."""
    return _seconds(value, *_LEASE_TIMEOUT)[0]


def lease_timing(heartbeat_s: float | None, lease_timeout_s: float | None) -> tuple[float, float]:
    """(heartbeat, lease timeout) of a worker: the timeout must leave room for a late heartbeat."""
    beat, beat_from = _seconds(heartbeat_s, "HARNESS_HEARTBEAT_S", DEFAULT_HEARTBEAT_S, "--heartbeat-s")
    timeout, timeout_from = _seconds(lease_timeout_s, *_LEASE_TIMEOUT)
    if timeout < 2 * beat:
        raise InputError(f"{timeout_from} ({timeout:g}) must be at least twice {beat_from} ({beat:g}): "
                         f"one late heartbeat would otherwise hand a live worker's cell to another")
    return beat, timeout
