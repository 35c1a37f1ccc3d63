"""`harness slurm SUITE --workers N`: submit a suite as a Slurm array of workers on one store."""

from __future__ import annotations

import os
import shlex
import subprocess

from harness.cli.common import (add_db, add_max_cells, add_output_dir, add_suite, check_worker_variables,
                                 check_workers, non_negative_int, positive_int)
from harness.spec.errors import EXIT_FAILED, EXIT_OK, InputError

HELP = "submit a suite as a Slurm array of workers on one store (or print the script)"
EXAMPLES = """
  harness slurm suites/glue.yaml --workers 8 --time 04:00:00 --dry-run      (print the script only)
  harness slurm suites/glue.yaml --workers 8 --db postgresql://user@host/harness --partition gpu
  harness slurm suites/glue.yaml --workers 2 --gpus-per-worker 4 --accelerate-config deepspeed_zero2
"""


def add_arguments(p) -> None:
    add_suite(p)
    p.add_argument("--workers", type=positive_int, required=True,
                   help="array tasks: each a worker claiming cells (at most one per cell of the suite)")
    p.add_argument("--gpus-per-worker", type=non_negative_int, default=1,
                   help="GPUs (ranks) per worker and node; > 1: accelerate --multi_gpu; 0: CPU only "
                        "(default: %(default)s)")
    p.add_argument("--nodes-per-worker", type=positive_int, default=1,
                   help="nodes per worker; > 1: one accelerate launch per node, c10d rendezvous (default: "
                        "%(default)s)")
    p.add_argument("--partition", default=None)
    from harness.launch import slurm as launch

    p.add_argument("--time", default=None, help=f"time limit per task (Slurm format, e.g. 04:00:00); the worker "
                                                 f"gets SIGUSR2 {launch.WARNING_S} s before it, checkpoints and "
                                                 f"requeues itself")
    add_db(p)
    add_output_dir(p, "run outputs, checkpoints and slurm-logs/ (on a filesystem every node sees)")
    p.add_argument("--data-dir", default=None, help="local GLUE directory for the workers ($HARNESS_DATA_DIR)")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="extra #SBATCH line, repeatable: --sbatch-arg=--mem=32G --sbatch-arg=--account=abc")
    p.add_argument("--accelerate-config", default=None, metavar="YAML",
                   help="accelerate config for every launch: a file, or a shipped one by name: deepspeed_zero2, "
                        "deepspeed_zero3")
    p.add_argument("--throttle", type=positive_int, default=None, metavar="K",
                   help="at most K array tasks running at once (--array=0-(N-1)%%K; K at most --workers)")
    p.add_argument("--retry-failed", action="store_true", help="the workers also re-run cells that failed before")
    add_max_cells(p)   # checked here and handed on to every worker, which checks the grid again
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script; submit nothing")
    p.add_argument("--wait", action="store_true",
                   help="block until the array ends; exit 0 only if every cell of the suite completed, 1 if not, 5 if "
                        "squeue kept failing (the job may still run)")


def run(args) -> int:
    from harness.launch import slurm
    from harness.launch.workers import workers_asked
    from harness.spec.status import DEFAULT_MAX_CELLS
    from harness.plan.preflight import check_data_dir
    from harness.plan.suite import load_suite
    from harness.spec.layout import RunLayout
    from harness.spec.status import env_seconds

    suite = load_suite(args.suite, args.max_cells)
    check_workers(args.workers, suite)   # each array task one worker: 10**20 of them made a script (exit 0)
    check_worker_variables()   # the tasks' `harness run` reads them, and HARNESS_WORKERS (a task's local workers)
    workers_asked()
    if args.wait and args.dry_run:
        raise InputError("--wait: nothing is submitted with --dry-run, so there is nothing to wait for")
    # read once the job is submitted: checked before ('abc' was a traceback then, nan or inf a hang or one)
    poll_s = env_seconds(slurm.POLL_ENV, slurm.DEFAULT_POLL_S) if args.wait else None
    if poll_s is not None and poll_s < slurm.MIN_POLL_S:
        raise InputError(f"${slurm.POLL_ENV}: must be at least {slurm.MIN_POLL_S:g} s (each poll is a squeue call to "
                         f"the Slurm controller), not {poll_s:g}")
    # a data folder every array task would fail on, as `harness run` refuses it
    data_dir, data_source = check_data_dir(suite, args.data_dir)
    req = slurm.SlurmRequest(
        suite_path=args.suite, suite_name=suite.name, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        nodes_per_worker=args.nodes_per_worker, partition=args.partition, time=args.time, db=args.db,
        output_dir=args.output_dir, sbatch_args=args.sbatch_arg, accelerate_config=args.accelerate_config,
        throttle=args.throttle, data_dir=args.data_dir,
        run_args=(["--retry-failed"] if args.retry_failed else [])
        + (["--max-cells", str(args.max_cells)] if args.max_cells != DEFAULT_MAX_CELLS else []),
        data_env=data_dir if data_source == "$HARNESS_DATA_DIR" else None)
    script = slurm.render(req)
    from harness.launch.output_binding import check_output_dir
    from harness.store.engine import absolute_db_url, default_db_url

    # another store's folder is refused here, not by every array task (they check again where the store is); on a
    # dry run too: its script is the one to submit by hand
    check_output_dir(args.output_dir, absolute_db_url(args.db or default_db_url()), unreachable_ok=True)
    if args.dry_run:
        print(script, end="")
        return 0
    from harness import atomic

    slurm.check_sbatch()
    path = slurm.script_path(args.output_dir, suite.name)
    log_dir = RunLayout(args.output_dir).slurm_logs
    created = [atomic.missing_folders(d) for d in (os.path.dirname(path), log_dir)]
    atomic.write_file(path, lambda tmp: open(tmp, "w").write(script))
    os.makedirs(log_dir, exist_ok=True)   # Slurm does not create the folder of --output
    try:
        job = slurm.submit(path, req.db_url)
    except InputError:   # sbatch refused it (or is not there): nothing submitted, nothing left behind
        os.remove(path)
        for folders in created:
            atomic.remove_empty(folders)
        raise
    except subprocess.TimeoutExpired:   # it may be queued all the same: the script stays, for the record
        raise InputError(f"sbatch: no answer in {slurm.SBATCH_TIMEOUT_S} s; the job may be queued (see squeue); "
                         f"script {path}") from None
    print(f"submitted job {job}: {args.workers} worker(s) for suite {suite.name} ({req.template}); script {path}; "
          f"logs {log_dir}/harness-{suite.name}-{job}_<task>.out", flush=True)
    if not args.wait:
        return 0
    try:
        slurm.wait_for(job, poll_s)
    except slurm.SlurmUnreachable as e:
        import sys

        from harness.spec.errors import EXIT_SLURM_UNREACHABLE

        print(f"error: {e}; job {job} may still be running (squeue -j {job}; harness status "
              f"{shlex.quote(args.suite)})",
              file=sys.stderr)
        return EXIT_SLURM_UNREACHABLE
    from harness.launch.runner import status_rows
    from harness.spec.status import CellState
    from harness.store.db import Store

    rows = status_rows(suite, Store(absolute_db_url(args.db or default_db_url())), num_processes=req.world)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"job {job} ended: {len(rows)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return EXIT_OK if counts.get(CellState.COMPLETED, 0) == len(rows) else EXIT_FAILED
