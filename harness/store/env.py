"""The environment every result carries: package versions, harness git commit and dirtiness, host, device."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata

from harness.store.redact import redact_argv

# versions recorded with every result; peft and deepspeed are not dependencies: recorded only where installed
PACKAGES = ("torch", "transformers", "adapters", "peft", "accelerate", "datasets", "deepspeed")
HERE = os.path.dirname(os.path.abspath(__file__))


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """Commit of the harness checkout and whether tracked files differ from it (None outside git)."""
    def git(*args):
        return subprocess.run(["git", "-C", HERE, *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"git_commit": None, "git_dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"git_commit": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def device_name() -> str:
    """The GPU's name, else the CPU's model, instruction-set level and cores ("CPU: AMD EPYC (AVX2) x2"): what
    estimates match stored runs on, so two CPUs a VM names alike are two devices (harness/cpuinfo.py)."""
    import torch

    from harness import cpuinfo

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU: {cpuinfo.describe()}"


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# set in each worker `harness run --workers N` starts: how many workers share this machine (the warning below
# divides the cores by it)
ENV_LOCAL_WORKERS = "HARNESS_LOCAL_WORKERS"
# set where `harness run` set this process's threads itself (--threads-per-worker, or the cores shared out among
# --workers: harness.launch.workers.set_threads): a choice, not `accelerate launch`'s OMP_NUM_THREADS=1
ENV_THREADS_SET = "HARNESS_THREADS_SET"


def physical_cores() -> int:
    """The cores this process may run on, hyperthreads not counted (torch's default: one thread per physical
    core)."""
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, psutil.cpu_count(logical=False) or cores))


def local_processes(num_processes: int = 1) -> int:
    """The processes on this machine: a launcher's ranks here (LOCAL_WORLD_SIZE, from torchrun and `accelerate
    launch`; else num_processes) times the workers `harness run --workers N` started here. Bad input (an
    InputError): `harness run` calls this at its start, as each cell's thread warning read them (int(): 'abc' was
    a traceback, the store created)."""
    from harness.spec.variables import env_whole_number

    ranks = env_whole_number("LOCAL_WORLD_SIZE", 1) or num_processes or 1
    return ranks * env_whole_number(ENV_LOCAL_WORKERS, 1, 1)


def cpu_threads_warning(num_processes: int) -> str | None:
    """One line when a CPU run uses fewer threads than the cores its share of the machine has: `accelerate
    launch` sets OMP_NUM_THREADS=1 unless told --num_cpu_threads_per_process N (or --cpu), which on a 2-core
    machine leaves half of it idle. None on GPUs, when the threads match, and when `harness run` set them as asked
    (ENV_THREADS_SET: `--threads-per-worker 1` on a 2-core machine warned at every start, blaming accelerate)."""
    import torch

    if torch.cuda.is_available():
        return None
    cores = physical_cores()   # hyperthreads are not cores to fill
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():   # a job's share, where Slurm does not bind CPUs
        cores = min(cores, int(os.environ["SLURM_CPUS_PER_TASK"]))
    local = local_processes(num_processes)
    share = max(1, cores // max(1, local))
    threads = _torch_threads()
    if threads >= share or os.environ.get(ENV_THREADS_SET) == str(threads):
        return None
    return (f"torch uses {threads} thread(s) per process but each of the {local} process(es) on this machine has "
            f"{share} core(s) (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; `accelerate launch` "
            f"sets 1 unless given --num_cpu_threads_per_process {share}): training runs slower, and CPU results "
            f"differ in the last bits from a run with {share} thread(s)")


def environment(num_processes: int = 1, mixed_precision: str | None = None, distributed_type: str | None = None) -> dict:
    from harness import __version__

    return {
        "python": platform.python_version(),
        **{pkg: _version(pkg) for pkg in PACKAGES},
        "harness": __version__,
        **git_state(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device": device_name(),
        "num_processes": num_processes,
        "distributed_type": distributed_type,
        "mixed_precision": mixed_precision,
        "torch_threads": _torch_threads(),   # CPU results depend on it: reductions run in another order
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "argv": redact_argv(sys.argv),   # never a store password (--db URL): harness.store.redact
    }
