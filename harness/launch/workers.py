"""`harness run SUITE --workers N --threads-per-worker M`: N workers on this machine, each a process with M
threads, all claiming cells from the one store (the same coordination as N `harness run` in N terminals).

Why: at the small shapes PEFT cells train on (the demo: 8 x 16 tokens), a CPU step is partly fixed cost that a
second thread does not shorten, so two one-thread workers may train more cells per minute than one two-thread
worker (issue 20: measure it with `python bench/bench_step.py --modes workers`, bench/RESULTS.md). Scores depend on
the thread count in their last bits, so every record says the threads it trained with (`num_threads`).

The workers are started with multiprocessing's "spawn" (fresh interpreters: no forked torch thread pools); the
store is created before they start (two workers creating one SQLite file at once race). A stop signal sent to
this process is passed to every worker (each checkpoints its cell and gives it back); Ctrl-C reaches them as
members of the terminal's process group.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

from harness.launch.slurm import ENV_SLURM_REQUEUE, requeue_slurm_task
from harness.spec.errors import EXIT_PREEMPTED, EXIT_STORE_UNREACHABLE, InputError
from harness.spec.status import DEFAULT_CPU_WORKERS
from harness.spec.variables import env_whole_number
from harness.store.env import ENV_LOCAL_WORKERS, ENV_THREADS_SET, physical_cores
from harness.train import preempt   # (the standard library alone)

ENV_WORKERS = "HARNESS_WORKERS"


# Each launcher's count of the processes of the launch this process is one rank of, and what that launcher sets
# beside it: this rank's number (and, torch's, where the ranks meet). The counts as accelerate reads them
# (accelerate.utils.environment.get_cpu_distributed_information: the first of them that is set): WORLD_SIZE from
# `accelerate launch` and torchrun, the others from MPI launchers (accelerate's multi-CPU `--mpirun`): MPICH /
# Intel MPI, Open MPI, MVAPICH. On a CPU accelerate starts a group from any of them above 1.
LAUNCHER_VARIABLES = {"WORLD_SIZE": ("RANK", "MASTER_ADDR"), "PMI_SIZE": ("PMI_RANK",),
                      "OMPI_COMM_WORLD_SIZE": ("OMPI_COMM_WORLD_RANK",),
                      "MV2_COMM_WORLD_SIZE": ("MV2_COMM_WORLD_RANK",)}
RANK_VARIABLES = tuple(LAUNCHER_VARIABLES)


def launcher_ranks() -> int:
    """The processes of this launch; a variable set to something else is bad input (accelerate's int() of it
    fails too, later and as a traceback)."""
    for name in RANK_VARIABLES:
        if name in os.environ:   # set, even empty: accelerate reads it with int()
            return env_whole_number(name, 0)
    return 1


def launcher_rank() -> int:
    """This process's rank in its launch as accelerate reads it (get_cpu_distributed_information: the first of the
    launchers' rank variables that is set), before PartialState copies it into RANK; 0 where none is set. An MPI
    launcher sets PMI_RANK (or its own), never RANK: read as RANK alone, every rank of it was rank 0."""
    for name, *_ in LAUNCHER_VARIABLES.values():
        if os.environ.get(name):
            return env_whole_number(name, 0)
    return 0


def check_launched() -> None:
    """A count of ranks above 1 without what its launcher sets beside it: no launcher started this process (a
    shell's leftover, or set by hand), bad input. `harness run` ended in accelerate's traceback (MASTER_ADDR unset),
    the store created; with MASTER_ADDR set it waited for ranks that never came (11 min here, deaf to SIGTERM)."""
    for name, beside in LAUNCHER_VARIABLES.items():
        size = env_whole_number(name, 0)
        missing = [other for other in beside if not os.environ.get(other)]
        if size and size > 1 and missing:
            who = "accelerate launch and torchrun set both" if name == "WORLD_SIZE" else "its MPI launcher sets it"
            raise InputError(f"${name}: {size} processes, but ${missing[0]} is unset: no launcher started this one "
                             f"({who}); unset {name} to run alone")
    _check_mpi_meeting_point()


def _check_mpi_meeting_point() -> None:
    """An MPI launch of CPU ranks (its count above 1, its rank set: `mpirun -np 2 harness run`) without MASTER_ADDR,
    which mpirun does not set (accelerate launch --mpirun_hostfile does): accelerate forms their gloo group through
    torch's env:// rendezvous, which reads rank 0's host there, and `harness run` ended in accelerate's or torch's
    ValueError traceback, the store's file created. Torch is asked only then: GPU ranks (accelerate makes each a
    world of its own without a LOCAL_RANK) and a torch built with MPI need no address."""
    if os.environ.get("WORLD_SIZE") is not None or os.environ.get("MASTER_ADDR"):
        return   # WORLD_SIZE's launchers: checked above
    sizes = [(n, env_whole_number(n, 0)) for n in RANK_VARIABLES[1:]]   # the MPI launchers' counts
    name, size = next(((n, size) for n, size in sizes if size and size > 1), (None, None))
    if name is None:
        return
    import torch

    from harness.train.context import _cpu_only

    if _cpu_only() and not torch.distributed.is_mpi_available():
        raise InputError(f"${name}: {size} processes, but $MASTER_ADDR is unset: their group meets at rank 0's host, "
                         f"which torch reads from it; export MASTER_ADDR to every rank (mpirun -x MASTER_ADDR=HOST), "
                         f"or start them with accelerate launch --mpirun_hostfile")


def workers_asked() -> int | None:
    """HARNESS_WORKERS, checked (bad input: an InputError); None where it is unset."""
    return env_whole_number(ENV_WORKERS, 1)


def default_workers() -> int:
    asked = workers_asked()
    if asked:
        return asked
    import torch

    return 1 if torch.cuda.is_available() else min(DEFAULT_CPU_WORKERS, physical_cores())


def check_threads(threads_per_worker: int | None) -> None:
    """--threads-per-worker, at most the CPUs this machine has: more only oversubscribe them, and a number past
    a C long reached torch.set_num_threads as a traceback, after the store was created."""
    cpus = os.cpu_count() or 1
    if threads_per_worker and threads_per_worker > cpus:
        raise InputError(f"--threads-per-worker: {threads_per_worker} threads, but this machine has {cpus} CPU(s)")


def threads_for(workers: int, threads_per_worker: int | None) -> int | None:
    """Threads each worker uses: as asked, else the cores shared out (None: one worker, torch's own default)."""
    if threads_per_worker:
        return threads_per_worker
    return max(1, physical_cores() // workers) if workers > 1 else None


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = os.environ[ENV_THREADS_SET] = str(threads)
        torch.set_num_threads(threads)


def _worker(index: int, count: int, threads: int | None, run_kwargs: dict, suite_path: str, max_cells,
            started=None, stop=None) -> None:
    """One worker process: its threads, its stop-signal handlers, then the same loop as `harness run`.
    `started`: set once the handlers are in (the parent passes its stop signals on from then); `stop`: the one it
    kept while this interpreter started (run_workers), 0 for none."""
    preempt.install()   # before torch's import (set_threads)
    if started is not None:
        started.set()
        if stop.value:   # (read after the set: a signal since is passed on by the parent itself)
            signal.raise_signal(stop.value)
    os.environ[ENV_LOCAL_WORKERS] = str(count)
    # a Slurm task is requeued by the parent, once every worker has stopped: a worker's own `scontrol requeue`
    # ends every process of the task, the other workers in the middle of their checkpoint
    os.environ.pop(ENV_SLURM_REQUEUE, None)
    set_threads(threads)
    from harness.plan.suite import load_suite
    from harness.launch.runner import leave_process_group, run_suite

    code = run_suite(load_suite(suite_path, max_cells), **run_kwargs)
    leave_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)   # the exit code reaches the parent as the process's exitcode


def run_workers(count: int, threads: int | None, suite_path: str, max_cells, run_kwargs: dict) -> int:
    """Starts `count` workers and waits for all of them. Exit code: EXIT_PREEMPTED if any worker was stopped
    by a stop signal, else the first failing worker's code, else 0."""
    ctx = multiprocessing.get_context("spawn")
    stop, started = ctx.Value("i", 0, lock=False), [ctx.Event() for _ in range(count)]
    procs = [ctx.Process(target=_worker, args=(i, count, threads, run_kwargs, suite_path, max_cells, started[i], stop),
                         name=f"harness-worker-{i}") for i in range(count)]
    print(f"harness run: {count} workers x {threads or 'default'} thread(s) on this machine, one store",
          file=sys.stderr, flush=True)

    forwarding = []

    def forward(signum, frame):
        # passed on to a worker whose handlers are in; one still starting (the spawn bootstrap imports this module
        # and what it imports, before _worker) ended by the default action (-15: the parent ended 1, no requeue),
        # so it takes the signal from `stop` once they are in
        stop.value = signum
        if forwarding:   # a second signal while the first is passed on: Event.is_set holds a lock (not reentrant)
            return       # that this handler, run inside it, would wait for forever; the first reaches every worker
        forwarding.append(signum)
        try:
            for p, ready in zip(procs, started):
                if p.pid and p.is_alive() and ready.is_set():
                    os.kill(p.pid, signum)
        finally:
            forwarding.clear()

    old = {sig: signal.signal(sig, forward) for sig in preempt.STOP_SIGNALS}
    try:
        if preempt.requested():   # taken since `harness run` started (harness.cli.main): said, then lost
            print(f"harness run: {preempt.signal_name()} received before the workers started: no worker started",
                  file=sys.stderr, flush=True)
            requeue_slurm_task()   # as a lone worker stopped before its first claim (run_suite)
            return EXIT_PREEMPTED
        for p in procs:
            p.start()
        codes = []
        for p in procs:
            p.join()
            codes.append(p.exitcode)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if EXIT_PREEMPTED in codes or EXIT_STORE_UNREACHABLE in codes:   # what a lone worker requeues its task for
        requeue_slurm_task()
    if EXIT_PREEMPTED in codes:
        return EXIT_PREEMPTED
    failed = [c for c in codes if c]   # a worker's own code (1: a cell failed; store unreachable; a signal: -N)
    return (failed[0] if failed[0] > 0 else 1) if failed else 0
