"""`harness estimate SUITE`: each cell's and the grid's train + eval time, in device-hours with an uncertainty,
from stored throughput of matching runs (harness/report/progress.py) or from a pilot of a few measured steps."""

from __future__ import annotations

import json

from harness.cli.common import add_data_dir, add_max_cells, add_num_processes, add_suite, step_count
from harness.spec.errors import InputError
from harness.spec.layout import DEFAULT_DB_URL

HELP = "predict each cell's and the grid's train + eval time (device-hours) before launching"
EXAMPLES = """
  harness estimate suites/glue.yaml
  harness estimate suites/glue.yaml --from-store sqlite:///results/harness.db --device H100 --json
  harness estimate suites/demo.yaml --pilot --pilot-steps 10
"""
PILOT_STEPS = 10          # optimizer steps a pilot measures per distinct (model, method, task)
PILOT_EVAL_EXAMPLES = 64  # dev examples it scores
# a pilot's prediction is uncertain by at least this: one short run per rate, on a machine whose speed moves.
# Each of the demo's 14 cells of one seed after its own pilot, side by side on a 2-core VM, twice: the ten cells
# that run their encoder 0.80-1.34x, a spread of 14-16% (the same 10 steps took 5.5-9.1 s in one process within
# minutes); bench/RESULTS.md, eleventh session. A typical error, not a bound.
PILOT_UNCERTAINTY = 0.30
# ... and a linear probe's: its pilot's encoder pass over a few hundred examples carries a part that does not grow
# with them (SST-2: 10.9 ms per sentence over the pilot's 160, 6.0 over the cell's 1,000; about 0.9 s fixed), and
# the same two runs' eight probe cells came out 0.80-2.44x (half of them beyond +25%). Probes are a small part of a
# grid's time (35 of 874 s there), but their ± should not claim the encoder cells' precision.
PILOT_PROBE_UNCERTAINTY = 1.0


def add_arguments(p) -> None:
    add_suite(p)
    p.add_argument("--from-store", "--db", dest="db", default=None, metavar="DB",
                   help=f"SQLAlchemy URL of the store whose completed runs give the throughput (default: $HARNESS_DB, "
                        f"else {DEFAULT_DB_URL}, the store `harness run` writes)")
    p.add_argument("--device", default=None,
                   help="the stored device whose throughput to use: its name as recorded, or a part of it "
                        "(default: the device with the most stored runs; not with --pilot)")
    p.add_argument("--pilot", action="store_true",
                   help="measure instead: train a few steps of one cell per distinct (model, method, task) on this "
                        "machine, in a temporary folder (nothing recorded), and extrapolate")
    p.add_argument("--pilot-steps", type=step_count, default=PILOT_STEPS,
                   help="optimizer steps per pilot, at most one epoch of its data (default: %(default)s)")
    add_num_processes(p, "; only runs on as many processes price its cells")
    p.add_argument("--json", action="store_true", help="print JSON (per cell, total) instead of text")
    add_data_dir(p)
    add_max_cells(p)


def run(args) -> int:
    from harness.plan.preflight import check_data_dir, check_training
    from harness.plan.suite import load_suite
    from harness.report import progress
    from harness.store.db import Store
    from harness.store.engine import default_db_url

    # a pilot trains in this one process, and one process's runs price no N-process cell (throughput.rate_for):
    # refused before it trains
    if args.pilot and args.num_processes > 1:
        raise InputError(f"--num-processes: a pilot trains in this one process, which says nothing exact about "
                         f"{args.num_processes}-process cells; estimate them from stored {args.num_processes}-"
                         f"process runs (--from-store) instead")
    if args.pilot and args.device is not None:   # a pilot's runs are this machine's: nothing for --device to pick
        raise InputError("--device: picks the stored device whose runs price the cells; a --pilot measures this "
                         "machine instead (give one of the two)")
    suite = load_suite(args.suite, args.max_cells)
    if args.pilot:   # a pilot trains here: what it lacks (a model not cached offline, the data) refused, as by `run`
        from harness.train import peaks

        # and the variables its loop reads as a cell's do: a bad peak failed every pilot (exit 0), and a peaks file
        # of the user's was written over with the pilot's matmul rates
        peaks.check_variables()
        check_training(suite, args.data_dir, suite.locate())
    cells = suite.cells(num_processes=args.num_processes)
    # a --data-dir that is not there is refused, not read as "size unknown"; the suite's own data_dir or
    # $HARNESS_DATA_DIR may be another machine's (an estimate from a copied store): the stored sizes serve then
    data_dir = check_data_dir(suite, args.data_dir)[0] if args.data_dir else suite.data_dir(None)
    url = args.db or default_db_url()
    try:
        store = Store(url, read_only=True)
    except FileNotFoundError:
        if not args.pilot:
            raise InputError(f"{args.db_source}: no store at {url}; run `harness estimate --pilot` to measure "
                             f"instead") from None
        store = None
    if args.pilot:
        observations, source = pilot(suite, cells, data_dir, args.pilot_steps), "pilot"
    else:
        observations, source = progress.stored_observations(store), "store"
        if not observations:
            raise InputError(f"{args.db_source}: no completed run with a measured time in {url}; run `harness "
                             f"estimate --pilot` to measure instead")
    try:
        est = progress.estimate(cells, store, device=args.device, observations=observations,
                                sizes=progress.DataSizes(store, data_dir),
                                floor=PILOT_UNCERTAINTY if source == "pilot" else 0.0,
                                probe_floor=PILOT_PROBE_UNCERTAINTY if source == "pilot" else None)
    except ValueError as e:
        raise InputError(f"--device: {e}") from None
    if args.json:
        print(json.dumps({"suite": suite.name, "source": source, "num_processes": args.num_processes,
                          **est.as_dict()}, indent=1))
        return 0
    procs = args.num_processes
    what = (f"{est.observations} stored runs on {procs} process(es)" if source == "store"
            else f"pilots of up to {args.pilot_steps} steps on this machine")
    pooled = (f"; {est.pooled_threads} cell(s) priced by runs of {' and '.join(map(str, est.threads))} threads "
              f"pooled (a thread count's speed is not another's; `harness run --threads-per-worker`)"
              if est.pooled_threads else "")
    print(f"suite {suite.name}: {len(cells)} cells on {est.device}, from {what}{pooled}")
    for c in est.cells:
        if c.seconds is None:
            print(f"  {c.key}  {c.label}  ?  ({c.why})")
        else:
            once = f"; its frozen encoder's one pass {c.encoder_pass_s:.3g} s" if c.encoder_pass_s else ""
            threads = (f" of {' and '.join(map(str, c.threads))} threads" if c.threads and len(c.threads) > 1
                       else "")
            print(f"  {c.key}  {c.label}  {progress.hours(c.seconds, c.plus_minus)} h  ({c.level} match, "
                  f"{c.runs} run(s){threads}{once})")
    levels = ", ".join(f"{n} by {level}" for level, n in est.levels.items())
    # (a cell's line is its run's wall time; the total its device time, with the lines' sum beside it for K > 1)
    print(f"total: {progress.work_text(est.device_seconds, est.device_plus_minus, procs)} of training and evaluation "
          f"({levels or 'no cell matched'}); {est.missing} cell(s) without an estimate")
    return 0


def pilot(suite, cells, data_dir: str | None, steps: int) -> list:
    """One short run per distinct (model, method, task): the first cell of each, with a budget of `steps`
    optimizer steps over exactly the examples they take and PILOT_EVAL_EXAMPLES dev examples, trained through the
    real loop in a temporary folder and recorded nowhere. Its rates per example are then scaled by the padded
    tokens per example of that first cell's batches against the pilot's (to_cell_padding): a few batches pad more
    than a cell's many. The group's other cells get the same rates, whatever their own batch size, lengths or
    data caps. The rates still include the first step's warm-up, so a pilot errs a little high for long cells.
    A pilot never compiles (a cell's one compile is not a cost per example): a compiled cell's estimate leaves it
    out. Returns their observations (harness.report.throughput.Observation)."""
    import dataclasses
    import os
    import sys
    import tempfile

    from types import SimpleNamespace

    from harness.report.throughput import RATE_FIELDS, observation
    from harness.store.env import device_name
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    firsts = {}
    for cell in cells:
        firsts.setdefault((cell.model, cell.method, cell.task, cell.regime), cell)
    device, out = device_name(), []
    with tempfile.TemporaryDirectory(prefix="harness-pilot-") as tmp:
        ctx = RunContext(data_dir=data_dir, cache_dir=os.path.join(tmp, "cache"),
                         model_base_dir=os.path.dirname(os.path.abspath(suite.path)), show_progress=False)
        for i, cell in enumerate(firsts.values()):
            hp = cell.hparams
            per_step = hp["batch_size"] * hp["gradient_accumulation_steps"] * cell.num_processes
            budget = {"epochs": 1, "max_train_samples": steps * per_step,
                      "max_eval_samples": min(cell.budget.get("max_eval_samples") or PILOT_EVAL_EXAMPLES,
                                              PILOT_EVAL_EXAMPLES)}
            # eager: a compile is paid once per cell (tens of seconds on a CPU), and rates per example from a few
            # steps would charge it again for every few steps of the cell (a tiny model's 30-step cell: 0.4 h
            # predicted from a compiled 2-step pilot, 40 s measured)
            small = dataclasses.replace(cell, budget=budget, hparams={**hp, "eval_steps": None, "compile": False})
            print(f"pilot {i + 1}/{len(firsts)}: {cell.model} {cell.task} {cell.method_label}", file=sys.stderr,
                  flush=True)
            if hp.get("compile") is True:
                print(f"pilot {i + 1}: trained eager (compile: true): its cells' estimates leave out their compile "
                      f"(0.4-2 min once per cell where measured, docs/suites.md)", file=sys.stderr, flush=True)
            try:
                r = train_and_evaluate(small, ctx, output_dir=os.path.join(tmp, f"cell{i}"))
            except Exception as exc:   # one pilot failing leaves its cells without an estimate
                reason = str(exc).splitlines()[0][:200] if str(exc).strip() else ""
                print(f"pilot {i + 1}: failed ({type(exc).__name__}: {reason}); its cells get no estimate",
                      file=sys.stderr, flush=True)
                continue
            if r.steps is not None and r.steps < steps:   # its data ran out first: what it measured, said
                print(f"pilot {i + 1}: {r.steps} optimizer step(s), one epoch of its training data (not the "
                      f"{steps} of --pilot-steps)", file=sys.stderr, flush=True)
            # read as a stored run is (a linear probe's encoder pass apart from its head's epochs)
            obs = observation(SimpleNamespace(**{f: getattr(r, f) for f in RATE_FIELDS}, model=cell.model,
                                              method=cell.method, task=cell.task, regime=cell.regime,
                                              hparams=small.hparams,
                                              env={"device": device, "mixed_precision": r.mixed_precision},
                                              num_processes=1))   # the pilot's own
            if obs is not None:
                out.append(to_cell_padding(obs, small, cell, ctx, i))
    return out


def to_cell_padding(obs, small, cell, ctx, i: int):
    """The pilot's rates per example scaled by the cell's padded tokens per example over the pilot's, per role
    (harness/train/padding.py). Unscaled, with a line saying so: a linear probe (its head reads one vector per
    example; its encoder pass also builds the cached data set, work per example that the pass's tokens do not
    measure: scaled by them, SST-2's probe cells came out 0.64-0.76x, unscaled 1.08-1.28x, bench/RESULTS.md
    eleventh session), a cell of several tasks, and a cell whose padding cannot be worked out."""
    import dataclasses
    import sys

    import torch

    from harness.spec.models import ModelSpec
    from harness.train import padding
    from harness.train.models import load_tokenizer

    def say(text: str) -> None:
        print(f"pilot {i + 1}: {text}", file=sys.stderr, flush=True)

    if obs.features:
        say("a linear probe: its rates unscaled")
        return obs
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    try:   # the pilot and its cell share model and task: one tokenizer
        tokenizer = load_tokenizer(ModelSpec(cell.model, cell.trust_remote_code, ctx.model_base_dir))
        mine, theirs = (padding.per_example(c, ctx, device_type, tokenizer) for c in (small, cell))
    except Exception as exc:   # the pilot ran, so this is unexpected: keep its own rates
        say(f"padding not worked out ({type(exc).__name__}: {str(exc)[:200]}); its rates unscaled")
        return obs
    if mine is None or theirs is None:
        say("a cell of several tasks: its rates unscaled")
        return obs
    ratio = {role: theirs[role] / mine[role] if mine[role] else 1.0 for role in theirs}
    say(f"the cell's padded tokens per example against the pilot's: training {ratio['train']:.2f}x, dev "
        f"{ratio['eval']:.2f}x (its rates scaled)")
    evals = obs.eval_s_per_example
    return dataclasses.replace(obs, train_s_per_example=obs.train_s_per_example * ratio["train"],
                               eval_s_per_example=None if evals is None else evals * ratio["eval"])
