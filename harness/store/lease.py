"""Who holds a cell: the worker identity written into a claimed cell's lease, and the claim it gets back.

A worker is one `harness run` process (rank 0 of an accelerate launch; one Slurm array task). Its id is
host/pid/pid-namespace/random: unique across machines and restarts, and it lets a worker on the same host see
that the process holding a lease is gone (no need to wait out the lease timeout after a kill).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from dataclasses import dataclass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Worker:
    """Who claims a cell: written into the lease of every cell it takes (current_worker() builds it from the
    process and its Slurm environment). `started_at` decides which failures are old enough to retry."""

    worker_id: str
    host: str
    pid: int
    pid_namespace: str | None = None
    slurm_job_id: str | None = None
    slurm_array_task_id: int | None = None
    slurm_restart_count: int | None = None
    started_at: dt.datetime = None

    def lease(self, now: dt.datetime) -> dict:
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


def namespace_of(worker_id: str | None) -> str | None:
    """worker ids are host/pid/pid-namespace/token (harness.launch.worker)."""
    parts = (worker_id or "").rsplit("/", 3)
    return parts[2] if len(parts) == 4 else None


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


def current_worker() -> Worker:
    """This process as a worker, with its Slurm job (the array's job id for array tasks), array task id and
    restart count (how often Slurm requeued it) when it runs under Slurm."""
    host, pid, ns = socket.gethostname(), os.getpid(), _pid_namespace()
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")   # an array's id, as sbatch printed it
    return Worker(worker_id=f"{host}/{pid}/{ns or '-'}/{secrets.token_hex(3)}", host=host, pid=pid,
                  pid_namespace=ns or "-", slurm_job_id=job, slurm_array_task_id=_int_env("SLURM_ARRAY_TASK_ID"),
                  # Slurm sets SLURM_RESTART_COUNT only once a job was requeued: 0 before that
                  slurm_restart_count=_int_env("SLURM_RESTART_COUNT") if os.environ.get("SLURM_RESTART_COUNT")
                  else (0 if job else None), started_at=utcnow())
