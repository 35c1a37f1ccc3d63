"""Who holds a cell: the worker identity written into a claimed cell's lease, and the claim it gets back.

A worker is one `harness run` process (rank 0 of an accelerate launch; one Slurm array task). Its id is
hostname/pid/host-id/random: unique across machines and restarts. The host id (host_identity) names the space
in which the pid means a process: this kernel boot (boot id, plus /etc/machine-id) and this PID namespace. A
worker with the same host id can see that the process holding a lease is gone and take the cell over without
waiting out the lease timeout; a hostname alone cannot tell (containers and cluster nodes share hostnames, and
the root PID namespace has the same number on every machine), so the shortcut needs the host ids to be equal.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import socket
from dataclasses import dataclass


def utcnow() -> dt.datetime:
    """This machine's clock (UTC, naive). Never for leases: those use the database's clock (store.queue.db_now)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Worker:
    """Who claims a cell: written into the lease of every cell it takes (current_worker() builds it from the
    process and its Slurm environment). `started_at` decides which failures are old enough to retry (only its
    age counts, measured on this machine's clock: the store compares it with the database's)."""

    worker_id: str
    host: str
    pid: int
    host_id: str | None = None   # host_identity(): None when it cannot be known (then only the timeout frees a lease)
    slurm_job_id: str | None = None
    slurm_array_task_id: int | None = None
    slurm_restart_count: int | None = None
    started_at: dt.datetime = None

    def lease(self, now) -> dict:
        """The lease columns of a claim at `now` (the database's clock: a SQL expression)."""
        return {"worker_id": self.worker_id, "host": self.host, "pid": self.pid, "slurm_job_id": self.slurm_job_id,
                "slurm_array_task_id": self.slurm_array_task_id, "slurm_restart_count": self.slurm_restart_count,
                "claimed_at": now, "heartbeat_at": now}


@dataclass(frozen=True)
class Claim:
    """A cell this worker holds the lease on (attempt = how many times it has been claimed, this one included)."""

    id: int
    suite: str
    cell_key: str
    worker_id: str
    attempt: int
    previous_status: str   # pending, running (a stale lease taken over) or failed (retried)
    # a retried failure's error, first line (harness.launch.broken_group.recorded reads it: only a broken group's
    # failure resumes the cell's checkpoint); None for any other claim. The claim empties the row's error.
    previous_error: str | None = None


def process_gone(pid: int) -> bool:
    """True when no such process runs here (a zombie counts as gone: it will never heartbeat again)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def host_id_of(worker_id: str | None) -> str | None:
    """The host id in a worker id (hostname/pid/host-id/token); None when unknown ("-"). Ids written before host
    ids existed hold a PID namespace number there, which equals no host id: their leases wait for the timeout."""
    parts = (worker_id or "").rsplit("/", 3)
    return parts[2] if len(parts) == 4 and parts[2] not in ("", "-") else None


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return None


def _first_line(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.readline().strip() or None
    except OSError:
        return None


def host_identity() -> str | None:
    """Where a pid names a process: this kernel boot (its random boot id, with /etc/machine-id) and this PID
    namespace, hashed. Two machines differ in boot id even with one hostname, one cloned image (same machine-id)
    or the same root PID namespace number; two containers on one kernel differ in PID namespace. None where the
    boot id or the namespace cannot be read (not Linux): such a worker never judges another's process gone."""
    boot, ns = _first_line("/proc/sys/kernel/random/boot_id"), _pid_namespace()
    if not boot or not ns:
        return None
    machine = _first_line("/etc/machine-id") or _first_line("/var/lib/dbus/machine-id") or ""
    return "h" + hashlib.sha256(f"{machine}\n{boot}\n{ns}".encode()).hexdigest()[:20]


def current_worker() -> Worker:
    """This process as a worker, with its Slurm job (the array's job id for array tasks), array task id and
    restart count (how often Slurm requeued it) when it runs under Slurm."""
    host, pid, host_id = socket.gethostname(), os.getpid(), host_identity()
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")   # an array's id, as sbatch printed it
    return Worker(worker_id=f"{host}/{pid}/{host_id or '-'}/{secrets.token_hex(3)}", host=host, pid=pid,
                  host_id=host_id, slurm_job_id=job, slurm_array_task_id=_int_env("SLURM_ARRAY_TASK_ID"),
                  # Slurm sets SLURM_RESTART_COUNT only once a job was requeued: 0 before that
                  slurm_restart_count=_int_env("SLURM_RESTART_COUNT") if os.environ.get("SLURM_RESTART_COUNT")
                  else (0 if job else None), started_at=utcnow())
