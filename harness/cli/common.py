"""Options several subcommands share, defined once; their defaults come from harness.spec.layout."""

from __future__ import annotations

import argparse
import os

from harness.spec.errors import InputError
from harness.spec.layout import DEFAULT_DB_URL, DEFAULT_OUTPUT_DIR, RunLayout
from harness.spec.status import DEFAULT_LEASE_TIMEOUT_S
from harness.spec.variables import env_text


def subparser(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand's parser: its one-line help, and the examples shown under `harness NAME --help`."""
    return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".",
                          epilog="examples:\n" + examples.strip("\n"),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def bounded_int(text: str, least: int, most: int | None = None, why: str = "") -> int:
    from harness.spec.variables import whole_number

    try:
        value = whole_number(text, least)   # the rule of the variables that hold counts too (HARNESS_WORKERS)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}{f' ({why})' if why else ''} (got {value})")
    return value


def positive_int(text: str) -> int:
    """The type of every count option (processes, workers, resamples, ...): a whole number >= 1."""
    return bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    """A count where 0 means none (e.g. --gpus-per-worker 0: CPU only)."""
    return bounded_int(text, 0)


def step_count(text: str) -> int:
    """A count of optimizer steps (estimate's --pilot-steps): 1 to a budget's max_steps bound. A pilot trains at
    most one epoch of its data whatever it is given, and 10**20 was printed as "pilots of 10**20 steps"."""
    from harness.spec.hparams import MAX_STEPS

    return bounded_int(text, 1, MAX_STEPS, "a budget's max_steps bound")


def process_count(text: str) -> int:
    """A process count (--num-processes of validate, status and estimate): 1 to MAX_PROCESSES, the most a worker
    may run on (slurm's --gpus-per-worker x --nodes-per-worker is bounded by it too). 10**20 was read as a count
    no launch could have, and listed the suite's cells under it."""
    from harness.spec.status import MAX_PROCESSES

    return bounded_int(text, 1, MAX_PROCESSES, "the process count a run's row records")


def add_suite(p) -> None:
    p.add_argument("suite", help="suite YAML file")


def add_db(p) -> None:
    p.add_argument("--db", default=None, help=f"SQLAlchemy URL of the store (default: $HARNESS_DB, else "
                                              f"{DEFAULT_DB_URL})")


def add_output_dir(p, what: str = "run outputs (record.json, predictions)") -> None:
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=f"{what} (default: %(default)s)")


def add_cache_dir(p, default: str | None = None) -> None:
    p.add_argument("--cache-dir", default=default,
                   help="tokenized-data cache (default: %(default)s)" if default else
                        "tokenized-data cache (default: OUTPUT_DIR/cache)")


def add_data_dir(p, help: str = "local GLUE directory (classic layout); default: the suite's data_dir, then "
                                "$HARNESS_DATA_DIR, then the Hugging Face hub") -> None:
    p.add_argument("--data-dir", default=None, help=help)


def add_max_cells(p) -> None:
    from harness.spec.status import DEFAULT_MAX_CELLS

    p.add_argument("--max-cells", type=positive_int, default=DEFAULT_MAX_CELLS,
                   help="refuse a grid larger than this (default: %(default)s): a longer list than meant costs "
                        "GPU-days")


def add_num_processes(p, note: str = "") -> None:
    """--num-processes of the commands that plan a suite's cells (validate, estimate): one process unless told,
    as Suite.cells (`harness status` reads the count from the store instead)."""
    p.add_argument("--num-processes", type=process_count, default=1,
                   help=f"process count the suite will run with (part of the cell key{note}; default: %(default)s)")


def add_lease_timeout(p, what: str) -> None:
    p.add_argument("--lease-timeout-s", type=float, default=None,
                   help=f"{what} (default: $HARNESS_LEASE_TIMEOUT_S, else {DEFAULT_LEASE_TIMEOUT_S:g})")


def default_cache_dir() -> str:
    return RunLayout().cache_dir


def resolve_user_paths(args) -> None:
    """Relative paths the user gave, made absolute where they are read: the flags and HARNESS_DATA_DIR /
    HARNESS_DB (written back, so subprocesses and accelerate ranks inherit the same place)."""
    from harness.atomic import file_in_the_way, try_folder
    from harness.store.engine import absolute_db_url, check_db_url, default_db_url

    # `export HARNESS_DB=$PG_URL` with $PG_URL unset, in a job script: not the local default store (checked by
    # the commands that read the variable)
    for name, option in (("HARNESS_DB", "db"), ("HARNESS_DATA_DIR", "data_dir")):
        if hasattr(args, option):
            env_text(name)
    for name in ("data_dir", "output_dir", "cache_dir"):
        value = getattr(args, name, None)
        if value:
            setattr(args, name, os.path.abspath(os.path.expanduser(value)))
    for name in ("output_dir", "cache_dir"):   # folders a command creates: refused before it writes anything
        value = getattr(args, name, None)
        if not value:
            continue
        blocking = file_in_the_way(value)
        if blocking:
            raise InputError(f"--{name.replace('_', '-')}: {blocking} is a file, not a folder")
        # one that cannot be created or written in (/proc, a read-only mount): it failed after the store was
        # created (a traceback), or each cell failed in turn (--cache-dir)
        try:
            try_folder(value)
        except OSError as e:
            what = "write in" if os.path.isdir(value) else "create"
            raise InputError(f"--{name.replace('_', '-')}: cannot {what} the folder {value}: "
                             f"{e.strerror or e}") from None
    if hasattr(args, "db"):
        # where the store's URL came from, for the error that refuses it (engine.py names --db): the option as
        # typed (estimate's --from-store is --db too), else $HARNESS_DB
        option = getattr(args, "db_option", "--db")
        args.db_source = option if args.db or not os.environ.get("HARNESS_DB") else "$HARNESS_DB"
        args.db = absolute_db_url(args.db or default_db_url())
        check_db_url(args.db)   # not a URL, or in memory: refused by every command with --db, before any work
    if os.environ.get("HARNESS_DATA_DIR"):
        os.environ["HARNESS_DATA_DIR"] = os.path.abspath(os.path.expanduser(os.environ["HARNESS_DATA_DIR"]))
    if os.environ.get("HARNESS_DB"):
        os.environ["HARNESS_DB"] = absolute_db_url(os.environ["HARNESS_DB"])


def existing_store(url: str | None, read_only: bool = True, new_ok: bool = False):
    """A store that must already exist (ablate, compare and export read runs from it): never creates one, nor
    writes the harness's tables into a database that is not a store (an empty file, another program's). new_ok
    (ingest, which creates the store its first valid record goes into; status, before any worker has): None where
    there is no store yet, an SQLite file that does not exist or a server's database without any table (as
    `createdb` leaves it)."""
    from sqlalchemy import inspect

    from harness.store.db import Store
    from harness.store.engine import default_db_url

    try:
        probe = Store(url, read_only=True)
    except FileNotFoundError:
        if new_ok:
            return None
        raise InputError(f"--db: no store at {url or default_db_url()}") from None
    try:
        if not probe.columns():
            if new_ok and probe.backend != "sqlite" and not inspect(probe.engine).get_table_names():
                return None
            raise InputError(f"--db: {url or default_db_url()} is not a harness store (it has no runs table)")
    finally:
        probe.engine.dispose()
    return Store(url, read_only=read_only)


def check_workers(workers: int | None, suite, lower: bool = False) -> int | None:
    """At most one worker per cell of the grid (run's local workers, slurm's array tasks): the ones beyond never
    have a cell to claim (`run --workers 10**20` spawned processes until the kernel killed them for memory). An
    explicit --workers beyond it is refused; with `lower` (HARNESS_WORKERS, a default: a machine's, or every task's
    of a Slurm array, where refused it ended every task of a smaller suite 2) it is lowered to the cells."""
    if not workers:   # (the default's: nothing to count the cells for)
        return workers
    cells = len(suite.cells())
    if workers > cells:
        if lower:
            return cells
        raise InputError(f"--workers: {workers} workers, but suite {suite.name} has {cells} cell(s): a worker beyond "
                         f"one per cell never has one to claim")
    return workers


def check_worker_variables(heartbeat_s: float | None = None, lease_timeout_s: float | None = None) -> None:
    """The variables every worker reads (bad input: an InputError, before anything is written): by `harness run`
    with its flags, and by `harness slurm` for its array tasks, which inherit them (sbatch's --export=ALL) and
    each failed on them."""
    from harness.launch.attempt import retry_timing
    from harness.spec.status import lease_timing
    from harness.train import peaks

    lease_timing(heartbeat_s, lease_timeout_s)   # (the workers read them again: checked here, once)
    retry_timing()   # $HARNESS_FINISH_*: read by the workers only once the store fails
    peaks.check_variables()   # $HARNESS_PEAK_FLOPS, $HARNESS_PEAKS_FILE: read by each cell


def task_option(name: str) -> str:
    """--task's registered name; an unknown one refused naming the option."""
    from harness.spec.tasks import TASKS

    try:
        return TASKS.canonical(name)
    except InputError as e:
        raise InputError(f"--task: {e}") from None


def find_run(store, ref: str):
    """A run by id or by cell key (or a unique prefix of one)."""
    from sqlalchemy import Integer

    from harness.store.schema import INT_BOUNDS

    # an id is ASCII digits within the id column's INTEGER: "²" is a digit to str.isdigit but not to int, and a
    # bigger number overflows the driver; neither is any run's id, so they are looked up as cell keys
    if ref.isascii() and ref.isdigit() and int(ref) <= INT_BOUNDS[Integer] and store.get(int(ref)) is not None:
        return store.get(int(ref))
    records = store.records()
    found = [r for r in records if r.cell_key == ref] or [r for r in records if r.cell_key.startswith(ref)]
    if len(found) != 1:
        raise InputError(f'run "{ref}": {"no run has" if not found else "several runs have"} this id or cell key')
    return found[0]
