"""`harness run SUITE`: train and evaluate every cell of a suite that is not done yet."""

from __future__ import annotations

import sys

from harness.cli.common import (add_cache_dir, add_data_dir, add_db, add_lease_timeout, add_max_cells, add_output_dir,
                                add_suite, check_worker_variables, check_workers, positive_int)
from harness.spec.errors import EXIT_GROUP_BROKEN, InputError
from harness.spec.status import DEFAULT_CPU_WORKERS, DEFAULT_HEARTBEAT_S

HELP = "train and evaluate every cell of a suite that is not done yet"
EXAMPLES = """
  harness run suites/demo.yaml
  HARNESS_DATA_DIR=/path/to/glue harness run suites/demo.yaml --db sqlite:///out/h.db --output-dir out
  harness run suites/demo.yaml --workers 2 --threads-per-worker 1   (two one-thread workers on one store)
  accelerate launch -m harness.run suites/demo.yaml          (the same, as one worker of several processes)
"""


def add_arguments(p) -> None:
    add_suite(p)
    add_db(p)
    add_data_dir(p)
    add_output_dir(p)
    add_cache_dir(p)
    p.add_argument("--retry-failed", action="store_true", help="also re-run cells that failed before")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    p.add_argument("--verbose", action="store_true", help="also print the full traceback of a failing cell (it is "
                                                          "always in the cell's error.log and the store)")
    p.add_argument("--log-with", metavar="TRACKERS", default=None,
                   help="experiment trackers for every cell, comma-separated (tensorboard, mlflow, wandb, ...; "
                        "none or empty: no tracker); replaces the suite's log_with (its settings kept for the "
                        "trackers it names); see docs/tracking.md"
                   ).empty_ok = True   # `--log-with "$TRACKERS"` with it empty: tracking off, not the parser's error
    p.add_argument("--workers", type=positive_int, default=None,
                   help=f"workers on this machine, each a process claiming cells from the store (default: "
                        f"$HARNESS_WORKERS, else 1 with a GPU, {DEFAULT_CPU_WORKERS} on a CPU (at most its physical "
                        f"cores); at most one per cell of the suite: more is refused, a larger $HARNESS_WORKERS "
                        f"lowered to it; not under `accelerate launch`)")
    p.add_argument("--threads-per-worker", type=positive_int, default=None,
                   help="torch threads of each worker (default: the physical cores shared out among the workers; "
                        "one worker: torch's default); recorded with every result")
    add_max_cells(p)
    p.add_argument("--heartbeat-s", type=float, default=None,
                   help=f"how often a worker refreshes the lease of the cell it trains (default: "
                        f"$HARNESS_HEARTBEAT_S, else {DEFAULT_HEARTBEAT_S:g})")
    add_lease_timeout(p, "a lease without a heartbeat for this long is stale and its cell is taken over by the "
                         "next worker")


def install_stop_handlers() -> None:
    """SIGUSR1/SIGUSR2/SIGTERM: checkpoint the cell in progress, give it back, exit 3 (harness.train.preempt). The
    CLI calls this for `run` before it builds its parser: installed at run()'s start, after the parser's imports and
    run()'s own (0.35-0.6 s after the interpreter's start on a 2-core CPU), a stop signal before them ended the
    worker by the signal's default action (-15, -10: no requeue of its Slurm task)."""
    from harness.train import preempt   # (the standard library alone)

    preempt.install()


def run(args) -> int:
    from harness.launch import workers as local_workers
    from harness.plan.preflight import preflight
    from harness.plan.suite import load_suite
    from harness.spec.variables import env_whole_number
    from harness.store.env import local_processes
    from harness.train import preempt

    suite = load_suite(args.suite, args.max_cells)  # invalid input: exit 2 before anything is written
    check_worker_variables(args.heartbeat_s, args.lease_timeout_s)
    workers = _workers(args, suite)   # None: the default, which asks torch for a GPU, so only once there is work
    local_workers.check_threads(args.threads_per_worker)
    local_processes()   # $LOCAL_WORLD_SIZE: read by each cell's thread warning
    # accelerate reads it with int() in every run, launched or not (-1: no launcher): a traceback, the store created
    env_whole_number("LOCAL_RANK", -1)
    local_workers.check_launched()   # WORLD_SIZE=2 by hand: accelerate's traceback, or a wait for the other ranks
    # models, data, adapters, trackers installed: before the first cell, still writing nothing
    preflight(suite, args.data_dir, args.log_with)
    from harness.launch.output_binding import check_output_dir
    from harness.store.engine import default_db_url, make_engine

    check_output_dir(args.output_dir, args.db or default_db_url())   # another store's folder: before writing
    make_engine(args.db or default_db_url()).dispose()  # a bad --db fails here, before any training
    idle = _nothing_to_do(suite, args)
    if idle:   # said from the store alone: an idle worker does not import torch, transformers and adapters
        print("\n".join(idle), file=sys.stderr, flush=True)
        return 0
    from harness.plan.preflight import tracker_settings

    workers = workers or local_workers.default_workers()

    run_kwargs = dict(db_url=args.db, data_dir=args.data_dir, output_dir=args.output_dir,
                      retry_failed=args.retry_failed, cache_dir=args.cache_dir, heartbeat_s=args.heartbeat_s,
                      lease_timeout_s=args.lease_timeout_s, verbose=args.verbose,
                      trackers=tracker_settings(suite, args.log_with))
    threads = local_workers.threads_for(workers, args.threads_per_worker)
    if workers > 1:
        from harness.store.db import Store

        Store(args.db or default_db_url()).engine.dispose()   # the schema, once, before the workers start
        # several workers' step bars would overwrite each other: each prints its cells and evaluations as lines
        return local_workers.run_workers(workers, threads, args.suite, args.max_cells,
                                         {**run_kwargs, "show_progress": False})
    local_workers.set_threads(threads)
    from harness.launch.runner import leave_process_group, run_suite   # torch: only once the input is good

    code = run_suite(suite, show_progress=not args.no_progress, **run_kwargs)
    leave_process_group(code)
    if code == EXIT_GROUP_BROKEN:
        preempt.ignore()   # decided: the launcher's SIGTERM (another rank ended) must not turn exit 6 into -15
    return code


def _nothing_to_do(suite, args) -> list[str] | None:
    """harness.launch.summary.nothing_to_do for this process, where it is the only rank (the ranks of a launcher
    learn what to do from rank 0, after their imports; their cells' keys count the ranks)."""
    from harness.launch.workers import launcher_ranks

    if launcher_ranks() > 1:
        return None
    from harness.launch.summary import nothing_to_do
    from harness.store.db import Store
    from harness.store.engine import default_db_url

    store = Store(args.db or default_db_url())
    try:
        return nothing_to_do(suite, store, args.output_dir, args.retry_failed)
    finally:
        store.engine.dispose()


def _workers(args, suite) -> int | None:
    """--workers (or HARNESS_WORKERS), checked: several local workers are plain processes, not ranks of a
    launcher, and at most one per cell of the grid (check_workers: --workers beyond it refused, HARNESS_WORKERS
    lowered to it). None where neither is given and this process is a launcher's only rank: the default."""
    from harness.launch.workers import launcher_ranks, workers_asked

    ranks = launcher_ranks()
    if args.workers and args.workers > 1 and ranks > 1:
        raise InputError(f"--workers {args.workers}: this process is one of {ranks} ranks of a launcher "
                         f"(accelerate launch); start several launchers instead, or drop --workers")
    if ranks > 1 and not args.workers:
        return 1
    if args.workers:
        return check_workers(args.workers, suite)
    return check_workers(workers_asked(), suite, lower=True)
