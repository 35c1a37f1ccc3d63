"""`harness` command line: run, slurm, prefetch, validate, status, ingest, ls, params, export, board, ablate, compare."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from harness.spec.errors import InputError


def _add_db(p):
    p.add_argument("--db", default=None, help="SQLAlchemy URL of the store (default: $HARNESS_DB, else "
                                             "sqlite:///results/harness.db)")


def _add_max_cells(p):
    from harness.plan.suite import DEFAULT_MAX_CELLS

    p.add_argument("--max-cells", type=_positive_int, default=DEFAULT_MAX_CELLS,
                   help=f"refuse a grid larger than this (default {DEFAULT_MAX_CELLS:,}): a longer list than meant "
                        f"costs GPU-days")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _add_lease_timeout(p, what: str):
    p.add_argument("--lease-timeout-s", type=float, default=None,
                   help=f"{what} (default: $HARNESS_LEASE_TIMEOUT_S, else 300)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Benchmark harness for parameter-efficient "
                                                                 "transfer learning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train and evaluate every cell of a suite that is not done yet")
    p.add_argument("suite")
    _add_db(p)
    p.add_argument("--data-dir", help="local GLUE directory (classic layout); default: the suite's data_dir, "
                                      "then $HARNESS_DATA_DIR, then the Hugging Face hub")
    p.add_argument("--output-dir", default="results", help="run outputs (record.json, predictions), default results/")
    p.add_argument("--cache-dir", default=None, help="tokenized-data cache, default OUTPUT_DIR/cache")
    p.add_argument("--retry-failed", action="store_true", help="also re-run cells that failed before")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    p.add_argument("--verbose", action="store_true", help="also print the full traceback of a failing cell (it is "
                                                          "always in the cell's error.log and the store)")
    _add_max_cells(p)
    p.add_argument("--heartbeat-s", type=float, default=None,
                   help="how often a worker refreshes the lease of the cell it trains (default: "
                        "$HARNESS_HEARTBEAT_S, else 30)")
    _add_lease_timeout(p, "a lease without a heartbeat for this long is stale and its cell is taken over by the "
                          "next worker")

    p = sub.add_parser("validate", help="check a suite and print its grid size; trains nothing")
    p.add_argument("suite")
    p.add_argument("--num-processes", type=_positive_int, default=1)
    p.add_argument("--list", action="store_true", help="also print every cell")
    p.add_argument("--data-dir", help="check the data there (default: the suite's data_dir, then "
                                      "$HARNESS_DATA_DIR, then the hub)")
    _add_max_cells(p)

    p = sub.add_parser("status", help="done / failed / running / pending per cell of a suite")
    p.add_argument("suite")
    _add_db(p)
    _add_max_cells(p)
    p.add_argument("--num-processes", type=int, default=None,
                   help="process count the suite runs with (part of the cell key; default: any count seen "
                        "in the store, else 1)")
    _add_lease_timeout(p, "a running cell whose last heartbeat is older than this is shown stale")

    p = sub.add_parser("slurm", help="submit a suite as a Slurm array of workers on one store (or print the script)")
    p.add_argument("suite")
    p.add_argument("--workers", type=int, required=True, help="array tasks: each a worker claiming cells")
    p.add_argument("--gpus-per-worker", type=int, default=1,
                   help="GPUs (ranks) per worker and node; > 1: accelerate --multi_gpu; 0: CPU only (default 1)")
    p.add_argument("--nodes-per-worker", type=int, default=1,
                   help="nodes per worker; > 1: one accelerate launch per node, c10d rendezvous (default 1)")
    p.add_argument("--partition", default=None)
    p.add_argument("--time", default=None, help="time limit per task (Slurm format, e.g. 04:00:00); the worker "
                                                 "gets SIGUSR2 90 s before it, checkpoints and requeues itself")
    _add_db(p)
    p.add_argument("--output-dir", default="results", help="run outputs, checkpoints and slurm-logs/ (default "
                                                            "results/; must be on a filesystem every node sees)")
    p.add_argument("--data-dir", default=None, help="local GLUE directory for the workers ($HARNESS_DATA_DIR)")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="extra #SBATCH line, repeatable: --sbatch-arg=--mem=32G --sbatch-arg=--account=abc")
    p.add_argument("--accelerate-config", default=None, metavar="YAML",
                   help="accelerate config for every launch, e.g. slurm/deepspeed_zero2.yaml or _zero3.yaml")
    p.add_argument("--throttle", type=int, default=None, metavar="K",
                   help="at most K array tasks running at once (--array=0-(N-1)%%K)")
    p.add_argument("--retry-failed", action="store_true", help="the workers also re-run cells that failed before")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script; submit nothing")
    p.add_argument("--wait", action="store_true",
                   help="block until the array ends; exit 0 only if every cell of the suite completed")

    p = sub.add_parser("prefetch", help="download every model, tokenizer and data set a suite needs into the "
                                        "Hugging Face cache (for compute nodes without internet)")
    p.add_argument("suite")
    p.add_argument("--data-dir", default=None, help="local GLUE directory (its tasks need no download)")
    p.add_argument("--check", action="store_true",
                   help="offline: list what is missing from the cache; exit 1 if anything is")

    sub.add_parser("ls", help="list tasks, methods and model aliases")

    p = sub.add_parser("export", help="write results as CSV, LaTeX or Markdown")
    _add_db(p)
    p.add_argument("--format", choices=("csv", "latex", "markdown"), default="csv")
    p.add_argument("--table", choices=("runs", "leaderboard", "best", "ablation"), default="runs",
                   help="runs: one row per run; best: Houlsby protocol; leaderboard: variants x tasks; "
                        "ablation: every stored adapter-ablation span")
    p.add_argument("--suite", default=None)
    p.add_argument("--model", default=None, help="leaderboard/best: one model (default: every model)")
    p.add_argument("-o", "--output", default=None, help="file to write (default: standard output)")

    p = sub.add_parser("params", help="total / trainable / added parameters per model x method of a suite, "
                                      "from configs alone (trains nothing)")
    p.add_argument("suite")
    p.add_argument("--task", default=None, help="task whose head is counted (default: the suite's first)")
    _add_max_cells(p)

    p = sub.add_parser("ablate", help="remove the adapters of every span of layers of a stored run and re-score "
                                      "on dev (Houlsby et al. Fig. 6); stores the matrix")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id or cell key")
    _add_db(p)
    p.add_argument("--data-dir", help="local GLUE directory (default: $HARNESS_DATA_DIR, then the hub)")
    p.add_argument("--cache-dir", default="results/cache", help="tokenized-data cache")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the model's own code from its repository; never taken from the store, which anyone "
                        "who can write to it could change")

    p = sub.add_parser("compare", help="paired bootstrap of two runs (or two method variants over seeds) on the "
                                       "same dev examples")
    p.add_argument("a", help="run id or cell key; with --task: a method label")
    p.add_argument("b")
    _add_db(p)
    p.add_argument("--suite", default=None, help="with --task: the suite of the two method variants")
    p.add_argument("--task", default=None, help="compare method variants A and B on this task, runs paired by seed")
    p.add_argument("--resamples", type=int, default=1000)

    p = sub.add_parser("ingest", help="load record.json files (written by workers that could not reach the store) "
                                      "into the store; idempotent")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders searched for record.json files (or the files)")
    _add_db(p)
    p.add_argument("--replace", action="store_true",
                   help="let a completed record replace a different completed result of the same cell")

    p = sub.add_parser("board", help="start the Streamlit leaderboard")
    _add_db(p)
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1",
                   help="interface to serve on (default 127.0.0.1: this machine only; the board has no login and "
                        "shows hosts, paths, commands and errors of the store)")
    return parser


def cmd_validate(args) -> int:
    from harness.plan.suite import load_suite

    from harness.plan.preflight import preflight

    suite = load_suite(args.suite, args.max_cells)
    notes = preflight(suite, args.data_dir)
    cells = suite.cells(num_processes=args.num_processes)
    m = suite.model
    outer = len(m.models) * len(m.tasks) * len(m.budgets) * len(m.seeds)
    print(f"{args.suite}: suite {suite.name} is valid: {len(cells)} cells = {len(m.models)} model(s) x "
          f"{len(m.tasks)} task(s) x {len(cells) // outer} method/hparam setting(s) "
          f"({len(suite.method_variants)} method variant(s)) x {len(m.budgets)} budget(s) x {len(m.seeds)} seed(s)")
    for note in notes:
        print(note)
    if args.list:
        for c in cells:
            print(f"  {c.key}  {c.label}")
    return 0


def cmd_run(args) -> int:
    from harness.plan.preflight import preflight
    from harness.plan.suite import load_suite
    from harness.train import preempt

    preempt.install()   # SIGUSR1/SIGUSR2/SIGTERM: checkpoint the cell in progress, give it back, exit 3

    suite = load_suite(args.suite, args.max_cells)  # invalid input: exit 2 before anything is written
    preflight(suite, args.data_dir)   # models, data, adapters: before the first cell, still writing nothing
    from harness.store.db import make_engine, default_db_url

    make_engine(args.db or default_db_url()).dispose()  # a bad --db fails here, before any training
    from harness.launch.runner import leave_process_group, run_suite   # torch: only once the input is good
    code = run_suite(suite, args.db, args.data_dir, args.output_dir, args.retry_failed, cache_dir=args.cache_dir,
                     show_progress=not args.no_progress, heartbeat_s=args.heartbeat_s,
                     lease_timeout_s=args.lease_timeout_s, verbose=args.verbose)
    leave_process_group()
    return code


def cmd_slurm(args) -> int:
    from harness.launch import slurm
    from harness.plan.suite import load_suite

    suite = load_suite(args.suite)
    req = slurm.SlurmRequest(
        suite_path=args.suite, suite_name=suite.name, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        nodes_per_worker=args.nodes_per_worker, partition=args.partition, time=args.time, db=args.db,
        output_dir=args.output_dir, sbatch_args=args.sbatch_arg, accelerate_config=args.accelerate_config,
        throttle=args.throttle, run_args=["--retry-failed"] if args.retry_failed else [], data_dir=args.data_dir)
    script = slurm.render(req)
    if args.dry_run:
        print(script, end="")
        return 0
    from harness import atomic

    path = slurm.script_path(args.output_dir, suite.name)
    atomic.write_file(path, lambda tmp: open(tmp, "w").write(script))
    log_dir = os.path.join(os.path.abspath(args.output_dir), "slurm-logs")
    os.makedirs(log_dir, exist_ok=True)   # Slurm does not create the folder of --output
    job = slurm.submit(path)
    print(f"submitted job {job}: {args.workers} worker(s) for suite {suite.name} ({req.template}); script {path}; "
          f"logs {log_dir}/harness-{suite.name}-{job}_<task>.out", flush=True)
    if not args.wait:
        return 0
    slurm.wait_for(job, float(os.environ.get("HARNESS_SLURM_POLL_S", "10")))
    from harness.launch.runner import status_rows
    from harness.store.db import Store

    rows = status_rows(suite, Store(slurm.absolute_db_url(args.db or default_db_url_())), num_processes=req.world)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"job {job} ended: {len(rows)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0 if counts.get("completed", 0) == len(rows) else 1


def default_db_url_() -> str:
    from harness.store.db import default_db_url

    return default_db_url()


def cmd_prefetch(args) -> int:
    from harness.launch.prefetch import prefetch
    from harness.plan.suite import load_suite

    return prefetch(load_suite(args.suite), data_dir=args.data_dir, check_only=args.check)


def _who(rec) -> str:
    """worker, host, pid and Slurm job of a record's (last) lease."""
    host = getattr(rec, "host", None)
    if not host:
        return "an earlier harness"
    text = f"{host} pid {rec.pid}"
    if rec.slurm_job_id:
        text += f", Slurm job {rec.slurm_job_id}"
        if rec.slurm_array_task_id is not None:
            text += f"_{rec.slurm_array_task_id}"
        if rec.slurm_restart_count:
            text += f" (requeued {rec.slurm_restart_count}x)"
    return text


def _ago(when) -> str:
    from harness.store.lease import utcnow

    if when is None:
        return "never"
    s = max(0, int((utcnow() - when).total_seconds()))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def cmd_ingest(args) -> int:
    """Every record.json under the given folders, by (suite, cell key): added, updated (the store had the cell
    pending, running or failed), already there, or a conflict (a different completed result is stored: never
    replaced silently)."""
    import json

    from harness.store.db import Store, default_db_url

    paths = []
    for d in args.dirs:
        if os.path.isfile(d):
            paths.append(d)
        elif os.path.isdir(d):
            paths += sorted(os.path.join(root, "record.json") for root, _, files in os.walk(d)
                            if "record.json" in files)
        else:
            raise InputError(f"ingest: {d}: no such file or folder")
    if not paths:
        raise InputError(f"ingest: no record.json under {', '.join(args.dirs)}")
    store = Store(args.db or default_db_url())
    counts = {"added": 0, "updated": 0, "same": 0, "conflict": 0, "unreadable": 0}
    for path in paths:
        try:
            with open(path) as f:
                record = json.load(f)
            outcome = store.ingest(record, record.get("children") or [], replace=args.replace)
        except (OSError, ValueError, KeyError, InputError) as exc:
            counts["unreadable"] += 1
            print(f"{path}: not ingested: {exc}", file=sys.stderr)
            continue
        counts[outcome] += 1
        if outcome == "conflict":
            print(f"{path}: conflict: suite {record['suite']} cell {record['cell_key']} already has a different "
                  f"completed result (kept; --replace takes this one)", file=sys.stderr)
    print(f"ingested {len(paths)} record(s): " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return 1 if counts["conflict"] or counts["unreadable"] else 0


def cmd_status(args) -> int:
    from harness.launch.runner import status_rows
    from harness.store.db import Store, default_db_url
    from harness.plan.suite import load_suite

    suite = load_suite(args.suite, args.max_cells)
    url = args.db or default_db_url()
    try:
        store = Store(url, read_only=True)  # status only reads: it never creates or changes a store
    except FileNotFoundError:
        store = None
    nprocs = args.num_processes
    if nprocs is None:  # the process count is part of the key: use the one the store has results for
        seen = {r.num_processes for r in store.records(suite.name)} if store else set()
        nprocs = seen.pop() if len(seen) == 1 else 1
    rows = status_rows(suite, store, nprocs, args.lease_timeout_s)
    counts: dict[str, int] = {}
    for row in rows:
        rec, status = row["record"], row["status"]
        counts[status] = counts.get(status, 0) + 1
        detail = ""
        if status == "completed":
            detail = f"score {rec.score:.2f}  {rec.train_time_s:.0f}s  by {_who(rec)}"
        elif status == "failed":
            detail = (rec.error or "").splitlines()[0][:120] if rec.error else ""
        elif status in ("running", "stale"):
            detail = (f"by {_who(rec)}, since {_ago(rec.started_at)}, last heartbeat {_ago(rec.heartbeat_at)}"
                      f", attempt {rec.attempts}")
        print(f"{status:<10} {row['cell'].key}  {row['cell'].label}  {detail}".rstrip())
    order = ("completed", "running", "stale", "pending", "failed")
    summary = ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))
    print(f"suite {suite.name} ({nprocs} process(es)): {len(rows)} cells: {summary}")
    return 0


def cmd_ls(args) -> int:
    from harness.spec.methods import METHODS
    from harness.spec.models import ALIASES
    from harness.spec.tasks import TASKS

    print("tasks:")
    for benchmark in dict.fromkeys(t.benchmark for t in TASKS.values()):
        print(f"  {benchmark.upper()}:")
        for t in (t for t in TASKS.values() if t.benchmark == benchmark):
            print(f"    {t.name:<9} v{t.version}  {t.kind:<15} main: {'+'.join(t.main):<16} "
                  f"metrics: {', '.join(t.metric_names()):<40} {t.description}")
    print("methods:")
    for m in METHODS.values():
        params = ", ".join(f"{k}={'(unset)' if p.default is None else '(required)' if p.default == '' else p.default}"
                           for k, p in m.params.items())
        print(f"  {m.name:<18} {m.description}" + (f"  [{params}]" if params else ""))
    print("model aliases:")
    for name, (_, what) in ALIASES.items():
        print(f"  {name:<8} {what}")
    return 0


def cmd_export(args) -> int:
    from harness.report.export import export

    text = export(args.db, args.format, args.table, args.suite, args.model)
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_params(args) -> int:
    from harness.analysis.accounting import format_rows, param_rows
    from harness.plan.suite import load_suite
    from harness.spec.tasks import get_task
    from harness.train.context import quiet_libraries

    suite = load_suite(args.suite, args.max_cells)
    task = get_task(args.task).name if args.task else None
    quiet_libraries()
    rows = param_rows(suite, task)
    sys.stdout.write(format_rows(rows, task or "the suite's first task"))
    return 0


def _existing_store(url: str | None, read_only: bool = True):
    """A store that must already exist (ablate and compare read runs from it): never creates one."""
    from harness.store.db import Store, default_db_url

    try:
        Store(url, read_only=True).engine.dispose()
    except FileNotFoundError:
        raise InputError(f"--db: no store at {url or default_db_url()}") from None
    return Store(url, read_only=read_only)


def _find_run(store, ref: str):
    """A run by id or by cell key (or a unique prefix of one)."""
    if ref.isdigit() and store.get(int(ref)) is not None:
        return store.get(int(ref))
    records = store.records()
    found = [r for r in records if r.cell_key == ref] or [r for r in records if r.cell_key.startswith(ref)]
    if len(found) != 1:
        raise InputError(f'run "{ref}": {"no run has" if not found else "several runs have"} this id or cell key')
    return found[0]


def cmd_ablate(args) -> int:
    from harness.analysis.ablate import ablate
    from harness.plan.suite import resolve_data_dir
    from harness.train.context import RunContext, quiet_libraries

    store = _existing_store(args.db, read_only=False)
    records = [_find_run(store, ref) for ref in args.runs]  # every reference checked before any work
    quiet_libraries()
    ctx = RunContext(data_dir=resolve_data_dir(args.data_dir), cache_dir=args.cache_dir, show_progress=False)
    for rec in records:
        payload = ablate(rec, ctx, trust_remote_code=args.trust_remote_code)
        store.add_analysis(rec.id, "adapter_ablation", payload)
        print(format_ablation(rec, payload))
    return 0


def format_ablation(rec, payload: dict) -> str:
    n = payload["num_layers"]
    lines = [f"run {rec.id} ({rec.task}, {rec.method_label}): dev score {payload['baseline']:.2f} with every "
             f"adapter (recorded {payload['recorded_score']:.2f}); change when layers first..last lose theirs:",
             "first\\last " + " ".join(f"{j:>7}" for j in range(n))]
    cells = {(i, j): s - payload["baseline"] for i, j, s in payload["spans"]}
    for i in range(n):
        lines.append(f"{i:>10} " + " ".join(f"{cells[(i, j)]:>+7.2f}" if (i, j) in cells else f"{'':>7}"
                                            for j in range(n)))
    return "\n".join(lines)


def cmd_compare(args) -> int:
    from harness.analysis.compare import compare_runs, compare_variants

    store = _existing_store(args.db)
    if args.task:
        result, pairs = compare_variants(store, args.suite, args.task, args.a, args.b, args.resamples)
        what = f"{args.a} vs {args.b} on {args.task}, {pairs} seed pair(s)"
    else:
        a, b = _find_run(store, args.a), _find_run(store, args.b)
        result = compare_runs(a, b, args.resamples)
        what = f"run {a.id} ({a.task}, {a.method_label}) vs run {b.id} ({b.method_label})"
    print(f"{what}: {result.n_examples} paired dev examples")
    print(f"score A {result.score_a:.2f}  score B {result.score_b:.2f}  A-B {result.diff:+.2f}  "
          f"95% CI [{result.ci_low:+.2f}, {result.ci_high:+.2f}]  p = {result.p_value:.4f} "
          f"(paired bootstrap, {result.resamples} resamples)")
    return 0


def cmd_board(args) -> int:
    import subprocess

    app = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "leaderboard", "app.py")
    cmd = [sys.executable, "-m", "streamlit", "run", app, "--server.port", str(args.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--"]
    cmd[cmd.index("--server.headless"):cmd.index("--server.headless")] = ["--server.address", args.address]
    if args.db:
        cmd += ["--db", args.db]
    if args.address in ("127.0.0.1", "localhost", "::1"):
        print(f"leaderboard on http://{args.address}:{args.port} (this machine only; --address 0.0.0.0 serves "
              f"every interface)", file=sys.stderr)
    else:
        print(f"warning: serving the leaderboard on {args.address}:{args.port} with no login: anyone who can reach "
              f"it sees the store's hosts, paths, commands and errors", file=sys.stderr)
    return subprocess.call(cmd)


COMMANDS = {"slurm": cmd_slurm, "prefetch": cmd_prefetch, "ingest": cmd_ingest, "run": cmd_run, "validate": cmd_validate, "status": cmd_status, "ls": cmd_ls, "export": cmd_export,
            "board": cmd_board, "params": cmd_params, "ablate": cmd_ablate, "compare": cmd_compare}


def absolute_db_url(url: str | None) -> str | None:
    """sqlite:///relative.db made absolute (against the current directory, once): every process and Slurm task
    that gets the URL then opens the same file, wherever it starts. Other URLs are returned as they are."""
    if not url:
        return url
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return url   # make_engine reports it
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:" \
            or os.path.isabs(parsed.database):
        return url
    return parsed.set(database=os.path.abspath(os.path.expanduser(parsed.database))).render_as_string(
        hide_password=False)


def resolve_user_paths(args) -> None:
    """Relative paths the user gave, made absolute where they are read: the flags and HARNESS_DATA_DIR /
    HARNESS_DB (written back, so subprocesses and accelerate ranks inherit the same place)."""
    for name in ("data_dir", "output_dir", "cache_dir"):
        value = getattr(args, name, None)
        if value:
            setattr(args, name, os.path.abspath(os.path.expanduser(value)))
    if hasattr(args, "db"):
        from harness.store.db import default_db_url

        args.db = absolute_db_url(args.db or default_db_url())
    if os.environ.get("HARNESS_DATA_DIR"):
        os.environ["HARNESS_DATA_DIR"] = os.path.abspath(os.path.expanduser(os.environ["HARNESS_DATA_DIR"]))
    if os.environ.get("HARNESS_DB"):
        os.environ["HARNESS_DB"] = absolute_db_url(os.environ["HARNESS_DB"])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    resolve_user_paths(args)
    try:
        return COMMANDS[args.command](args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
