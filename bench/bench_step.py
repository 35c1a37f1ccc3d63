"""Where a training step's time goes, per method, in the harness's own loop (issue 20), on the machine at hand.

Modes (one process, side by side; the CPU model is printed with every table):
- `step`: ms per optimizer step, examples/s, achieved FLOP/s and MFU per method at the demo's shape (SST-2,
  its batch size from suites/demo.yaml, ~14 tokens) and at the bench's MRPC shape (batch 16, ~56 tokens), in fp32 and bf16, against the
  matmul peak of the same precision measured in this process at the model's own FFN shape
  (harness/train/peaks.py). The cells are real (`train_and_evaluate`, the embedded model, real data), so the
  numbers are the loop's: FLOPs as the records count them (FlopCounterMode), time as they measure it; and
  the steady step beside them (the mean after the first few steps, which weigh more the shorter the cell).
  Against full fine-tuning of the same shape and precision: each method's examples/s ratio, and its FLOP bound,
  full fine-tuning's FLOPs per example over the method's (the ratio it would reach at full fine-tuning's MFU: a
  method whose FLOPs are near full fine-tuning's backward-without-weight-gradients cannot pass it by trimming
  overheads, only by running its own small matrices faster than the model's large ones).
- `ab`: the step mode's cells under two settings, alternated in child processes (median of --repeats):
  another checkout (an earlier commit) against this one, or this tree with an environment variable against it.
- `methods`: the step mode's cells, each method's in a child process of its own, the methods alternated --repeats
  times (median ms per step): each method's examples/s against full fine-tuning's with no cell run after another
  in one process and the machine's drift shared (a process's cells in sequence read 1.15-1.44x for one method
  depending on their order and the minute).
- `batch`: the demo's cells (SST-2) at several batch sizes (--batches), one cell of each size after the other,
  --repeats rounds, median ms per step: what an epoch costs per batch size where a step's fixed costs dominate.
- `profile`: torch.profiler over one cell's training per method at each of --shapes: the ops that take the time.
- `lengths`: a step's time against its batch's padded length (SST-2's sentences span 4-54 tokens): per method
  a line through the median step at each length, its fixed part (what does not grow with the tokens: the
  optimizer, clipping, per-op overhead) and its part per token; and whether a length's first batch costs more.
- `compile`: each method's cell eager and then with `compile: true` (inductor, harness/train/compiling.py), at each
  of --shapes and --precisions: the median step after the first ones (timed at each optimizer step), the
  compile's cost in the cell's training time, and after how many steps compiling pays. The run starts on an empty
  inductor cache (a new user's first compile); a later cell whose graph the run has compiled already reuses it.
- `workers`: the same small suite (8 cells) run by `harness run` as 1 worker x 2 threads and as 2 workers x 1
  thread, each into a fresh store: wall time and cells per minute.
- `demo`: `harness estimate` of suites/demo.yaml, then the README's command on a fresh store, timed: the
  predicted and the measured wall time (the store is kept with --keep for the README's table).

  HARNESS_DATA_DIR=/path/to/glue python bench/bench_step.py --modes step workers [--steps 80] [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ab mode runs its children on another checkout's harness package (the cells are built here in both)
_TREE = sys.argv[sys.argv.index("--harness-tree") + 1] if "--harness-tree" in sys.argv else ROOT
sys.path.insert(0, _TREE)

METHODS = {"full": {}, "houlsby": {"size": 64}, "pfeiffer": {"size": 64}, "lora": {"rank": 8, "alpha": 16},
           "bitfit": {}, "layernorm": {}}
LR = {"full": 1e-4}   # the rest: 1e-3 (one of the demo's adapter rates); the rate does not change a step's cost


def demo_batch() -> int:
    """The demo suite's batch size, as the suite loader resolves it for its cells (suites/demo.yaml, else the
    hparam default): the step, profile and workers modes measure the demo's own shape (batches of 8 until
    2026-12-03, 16 since; --modes batch compares sizes)."""
    from harness.plan.suite import load_suite

    return int(load_suite(os.path.join(ROOT, "suites", "demo.yaml")).cells()[0].hparams["batch_size"])


DEMO_BATCH = demo_batch()
SHAPES = {f"demo (SST-2, batch {DEMO_BATCH})": ("sst2", DEMO_BATCH), "MRPC bench cell (batch 16)": ("mrpc", 16),
          "SQuAD (offline split, batch 8 x 384-token windows)": ("squad", 8)}
DEFAULT_SHAPES = ["sst2", "mrpc"]   # SQuAD on request (--shapes squad): seconds per step on a 2-core CPU


def cell(task: str, method: str, batch: int, precision: str, steps: int, seed: int = 1, model: str = "minilm",
         **hparams):
    from harness.spec.cell import Cell
    from harness.spec.hparams import Hparams
    from harness.spec.methods import get_method
    from harness.spec.tasks import get_task

    hp = {k: v[0] if isinstance(v, list) else v for k, v in Hparams().model_dump().items()}
    hp.update(learning_rate=LR.get(method, 1e-3), batch_size=batch, max_length=128, warmup_ratio=0.1,
              mixed_precision=precision)
    hp.update(get_task(task).hparam_defaults)   # SQuAD: 384-token windows, stride 128
    hp.update(hparams)   # a mode's own setting (the compile mode's `compile`)
    return Cell(suite="bench_step", model=model, task=task, task_version=get_task(task).version, method=method,
                method_params=get_method(method).resolve(METHODS[method]),
                budget={"max_steps": steps, "max_train_samples": steps * batch, "max_eval_samples": 32},
                seed=seed, hparams=hp)


STEADY_AFTER = 5   # steps the step mode's steady columns leave out: the FLOP-counted first, the first allocations


def ms_per_step(r) -> float:
    """A measured cell's training time per optimizer step, in ms (its first steps' warm-up and FLOP count
    included, as the records count them)."""
    return 1000 * r.train_time_s / max(r.steps, 1)


def tokens_per_step(r) -> float:
    """A measured cell's real (non-padding) tokens per optimizer step, from its record's throughput."""
    return r.train_tokens_per_s * r.train_time_s / max(r.steps, 1)


def flops_per_example(r) -> float:
    """A measured cell's training FLOPs per example (as its record counts them; 0 where it counted none)."""
    examples = r.train_examples_per_s * r.train_time_s
    return (r.train_flops or 0.0) / examples if examples else 0.0


def cpu_line() -> str:
    import torch

    from harness import cpuinfo

    return f"{cpuinfo.describe()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def mode_step(args, ctx) -> str:
    """The table is written once every cell has run: each cell's peak is timed right after it (next to the work
    it divides) and every row divides by the best timing of its shape in the run, so a slow spell during one
    timing does not lower a peak (and raise an MFU); the slowest timing is shown beside it. ms/step and MFU are
    the cell's as its record has them (training time over steps: the first steps' FLOP count and first
    allocations included, which weigh more the shorter the cell); the steady columns are the mean step after
    the first STEADY_AFTER steps (timed at each optimizer step) and the cell's FLOPs per step over it."""
    from harness.train import peaks
    from harness.train.recipe import train_and_evaluate

    rows = ["| shape | method | precision | ms/step | examples/s | tokens/step | GFLOP/s | matmul peak at the model's "
            "shape (GFLOP/s; best of n timings, slowest) | MFU | steady ms/step | steady MFU | examples/s vs full | "
            "FLOP bound vs full |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    measured, peak_at = [], {}
    for label, (task, batch) in SHAPES.items():
        if task not in args.shapes:
            continue
        for precision in args.precisions:
            for method in args.methods:
                with StepClock() as clock:
                    r = train_and_evaluate(cell(task, method, batch, precision, args.steps), ctx)
                ms = ms_per_step(r)
                if args.json:   # for mode_ab, which runs this mode in child processes
                    print("ROW " + json.dumps({"task": task, "method": method, "precision": precision, "ms": ms,
                                               "rss_mb": r.peak_memory_mb}), flush=True)
                tokens = tokens_per_step(r)
                shape = peaks.model_shape(batch, round(tokens / batch), 384)
                # the latest answer holds the best of all the run's timings at this shape (kept in memory)
                peak_at[(precision, shape)] = peaks.matmul_rate(peaks.DTYPE_OF[precision], shape, fresh=True)
                measured.append((label, method, precision, batch, ms, r, tokens, shape, clock.mean_ms(STEADY_AFTER)))
                print(f"  {label} {method} {precision}: {ms:.0f} ms/step", flush=True)
    full = {(m[0], m[2]): m[5] for m in measured if m[1] == "full"}   # (shape, precision) -> full's record
    for label, method, precision, batch, ms, r, tokens, shape, steady in measured:
        peak = peak_at[(precision, shape)]
        best, achieved = peak["flops_per_s"], (r.flops_per_s or 0.0)
        steady_rate = (r.train_flops or 0.0) / max(r.steps, 1) / (steady / 1000)
        ref = full.get((label, precision))
        vs = (f"{r.train_examples_per_s / ref.train_examples_per_s:.2f}x | "
              f"{flops_per_example(ref) / flops_per_example(r):.2f}x" if ref and flops_per_example(r) else "– | –")
        rows.append(f"| {label}, {tokens / batch:.0f} tokens | {method} | {precision} | {ms:.0f} | "
                    f"{r.train_examples_per_s:.1f} | {tokens:.0f} | {achieved / 1e9:.1f} | {best / 1e9:.0f} (at "
                    f"{shape[0]}x{shape[1]}x{shape[2]}; {peak['samples']}, {peak['lowest'] / 1e9:.0f}) | "
                    f"{100 * achieved / best:.0f}% | {steady:.0f} | {100 * steady_rate / best:.0f}% | {vs} |")
    print("\n".join(rows), flush=True)
    return "\n".join(rows)


def mode_batch(args, ctx) -> str:
    """ms per step and per training example of the demo's SST-2 cells at each of --batches, the sizes' cells run
    one after the other in each of --repeats rounds (so that every size sees the same drift); the median."""
    import statistics

    from harness.train.recipe import train_and_evaluate

    ms: dict[tuple, list] = {}
    for _ in range(args.repeats):
        for precision in args.precisions:
            for method in args.methods:
                for batch in args.batches:
                    r = train_and_evaluate(cell("sst2", method, batch, precision, args.steps), ctx)
                    ms.setdefault((method, precision, batch), []).append(ms_per_step(r))
    first = args.batches[0]
    rows = ["| method | precision | batch | ms/step | ms per example | an epoch's time vs batch "
            f"{first} |", "|---|---|---:|---:|---:|---:|"]
    for (method, precision, batch), v in ms.items():
        step = statistics.median(v)
        base = statistics.median(ms[(method, precision, first)]) / first
        rows.append(f"| {method} | {precision} | {batch} | {step:.0f} | {step / batch:.1f} | "
                    f"{step / batch / base:.2f}x |")
        print(rows[-1], flush=True)
    return (f"SST-2 cells of {args.steps} steps, {args.repeats} rounds, median:\n\n" + "\n".join(rows))


def mode_profile(args, ctx) -> str:
    import torch.profiler

    from harness.train import recipe

    out = []
    fit = recipe.CellRun.fit

    def profiled_fit(self):   # only the training loop, not model loading or tokenization
        faults = minor_faults()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fit(self)
        self._profile, self._faults = prof, minor_faults() - faults

    recipe.CellRun.fit = profiled_fit
    captured = {}
    run_record = recipe.CellRun.record

    def keep(self):
        captured["prof"], captured["faults"] = self._profile, self._faults
        return run_record(self)

    recipe.CellRun.record = keep
    shares = ["| shape | method | profiled s | " + " | ".join(SHARES) + " | page faults per step |",
              "|---|---|---:|" + "---:|" * (len(SHARES) + 1)]
    try:
        for label, (task, batch) in SHAPES.items():
            if task not in args.shapes:
                continue
            for method in args.methods:
                recipe.train_and_evaluate(cell(task, method, batch, args.precision, args.profile_steps), ctx)
                events = captured["prof"].key_averages()
                table = events.table(sort_by="self_cpu_time_total", row_limit=args.rows)
                out.append(f"### {method} ({args.precision}, {label}, {args.profile_steps} steps incl. the final "
                           f"evaluation)\n\n```\n{table}\n```")
                print(out[-1], flush=True)
                total, parts = time_shares(events)
                shares.append(f"| {label} | {method} | {total:.1f} | "
                              + " | ".join(f"{100 * parts[k] / total:.1f}%" for k in SHARES)
                              + f" | {captured['faults'] / args.profile_steps:,.0f} |")
    finally:
        recipe.CellRun.fit, recipe.CellRun.record = fit, run_record
    print("\n".join(shares) + "\n\n" + PROFILED_FILL, flush=True)
    return (f"Self CPU time per kind of op, {args.precision}, {args.profile_steps} steps and the final evaluation "
            f"per cell:\n\n" + "\n".join(shares) + "\n\n" + PROFILED_FILL + "\n\n" + "\n\n".join(out))


def minor_faults() -> int:
    """The process's minor page faults so far (pages the kernel mapped in on first touch)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# what a profiled cell's self CPU time is spent on (time_shares): the first kind whose test an op name passes
SHARES = {
    "matmul": lambda n: n in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm") or "attention" in n,
    "dropout masks": lambda n: n == "aten::bernoulli_",   # drawn serially from one generator (public wheels)
    "optimizer + clipping": lambda n: "adam" in n or "_foreach_" in n or n == "aten::linalg_vector_norm",
    "FLOP count": lambda n: n == "PythonDispatchMode",   # its own Python time, on the counted batches
    # mostly the word embeddings' gradient (30,522 x 384 for minilm), allocated and zero-filled by every full
    # fine-tuning backward: a kind apart because the profiler inflates it (PROFILED_FILL)
    "zero fills": lambda n: n in ("aten::fill_", "aten::zero_"),
    "other": lambda n: True,
}
PROFILED_FILL = ("Read the zero fills column of full fine-tuning as an upper bound: under torch.profiler its word "
                 "embeddings' gradient costs more than in the loop. The profiler's own allocations split the freed "
                 "block that harness/train/host_memory.py keeps for the next step, so the gradient's pages fault in "
                 "again, and the profiler counts more still: 43 ms per fill against 1.0-1.8 ms in the loop without "
                 "it (backward hooks, AVX512 EPYC, bench/RESULTS.md 2026-12-05). Page faults per step: the whole "
                 "profiled fit's (its first step's allocations and final evaluation included) over its steps.")


def time_shares(events) -> tuple[float, dict[str, float]]:
    """(seconds of self CPU time in all, {kind: seconds}) of a profiler's key_averages()."""
    parts = dict.fromkeys(SHARES, 0.0)
    for e in events:
        parts[next(k for k, test in SHARES.items() if test(e.key))] += e.self_cpu_time_total / 1e6
    return sum(parts.values()), parts


class StepClock:
    """The time of every optimizer step in the process (torch's global step hook; accelerate's wrapper calls the
    torch optimizer's own step), for the steady step of a cell whose first steps are not like the rest."""

    def __enter__(self):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.stamps: list[float] = []
        self._hook = register_optimizer_step_post_hook(lambda *_: self.stamps.append(time.perf_counter()))
        return self

    def __exit__(self, *exc):
        self._hook.remove()

    def gaps_ms(self) -> list[float]:
        """Each step's time from the end of the one before: steps 2, 3, ..."""
        return [1000 * (b - a) for a, b in zip(self.stamps, self.stamps[1:])]

    def mean_ms(self, skip: int) -> float:
        """The mean step after the first `skip` (over batches of every length the cell drew)."""
        return 1000 * (self.stamps[-1] - self.stamps[skip]) / (len(self.stamps) - 1 - skip)

    def median_ms(self, skip: int) -> float:
        import statistics

        return statistics.median(self.gaps_ms()[skip:])


def timed_cell(c, ctx):
    """Train one cell, timing each optimizer step (StepClock) and counting the graphs torch.compile made for it
    (dynamo's count, read as the cell forgets its compiled code: compiling.release). Returns (result, clock,
    graphs: None for an eager cell)."""
    from torch._dynamo.utils import counters

    from harness.train import compiling
    from harness.train.recipe import train_and_evaluate

    graphs = {}
    release = compiling.release

    def counted_release():
        graphs["n"] = counters["stats"]["unique_graphs"]
        release()

    compiling.release = counted_release
    counters.clear()
    try:
        with StepClock() as clock:
            r = train_and_evaluate(c, ctx)
    finally:
        compiling.release = release
    return r, clock, graphs.get("n")


def mode_lengths(args, ctx) -> str:
    """The demo's cells (SST-2, its batch size) per method and precision, each step timed and matched with its
    batch's padded length (the loop's length-grouped batches cover every length the data has); a least-squares
    line through the median step time at each length. The first step (FLOP-counted, eager) is left out."""
    import statistics

    import numpy as np

    from harness.train import recipe

    lengths: list[int] = []
    forward = recipe.CellRun.forward

    def recording(self, t, batch):   # training batches only (evaluation runs the model in eval mode)
        if self.model.training:
            lengths.append(int(batch["input_ids"].shape[1]))
        return forward(self, t, batch)

    recipe.CellRun.forward = recording
    rows = [f"| method | precision | fixed ms | ms per token (batch of {DEMO_BATCH}) | step at 13 tokens (fixed share) | "
            "step at 53 tokens (fixed share) | lengths (steps) | a length's first batch vs its later ones (ms) |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    try:
        for precision in args.precisions:
            for method in args.methods:
                lengths.clear()
                with StepClock() as clock:
                    recipe.train_and_evaluate(cell("sst2", method, DEMO_BATCH, precision, args.steps), ctx)
                gaps = clock.gaps_ms()
                by_length: dict[int, list[float]] = {}
                for length, gap in zip(lengths[1:], gaps):
                    by_length.setdefault(length, []).append(gap)
                xs = sorted(by_length)
                per_token, fixed = np.polyfit(xs, [statistics.median(by_length[x]) for x in xs], 1)
                first = [by_length[x][0] - statistics.median(by_length[x][1:]) for x in xs if len(by_length[x]) > 1]
                at = {n: fixed + n * per_token for n in (13, 53)}
                rows.append(f"| {method} | {precision} | {fixed:.0f} | {per_token:.2f} | {at[13]:.0f} "
                            f"({fixed / at[13]:.0%}) | {at[53]:.0f} ({fixed / at[53]:.0%}) | {len(xs)} ({len(gaps)}) | "
                            f"{statistics.mean(first):+.0f} (over {len(first)} lengths) |")
                print(rows[-1], flush=True)
    finally:
        recipe.CellRun.forward = forward
    return (f"SST-2 cells of {args.steps} steps in batches of {DEMO_BATCH}; a line through the median step at each "
            "padded length:\n\n" + "\n".join(rows))


def mode_compile(args, ctx) -> str:
    """Eager against compiled, cell by cell. `fixed` is the cell's training time less its steps at the median
    step: for a compiled cell mostly compiling (dynamo's trace, inductor's code generation and C++ builds), for an
    eager one the first steps' warm-up and FLOP count. Compiling pays after (compiled fixed - eager fixed) /
    (eager step - compiled step) steps, where the compiled step is the shorter."""
    skip = STEADY_AFTER   # the FLOP-counted batch (eager), the compile, the allocator's first growth
    rows = ["| shape | method | precision | eager: ms/step | compiled: ms/step | step speed-up | eager: fixed s | "
            "compiled: fixed s (graphs) | compiling pays after |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for label, (task, batch) in SHAPES.items():
        if task not in args.shapes:
            continue
        for precision in args.precisions:
            for method in args.methods:
                got = {}
                for compiled in (False, True):
                    r, clock, graphs = timed_cell(cell(task, method, batch, precision, args.steps, compile=compiled),
                                                  ctx)
                    if r.compiled is not compiled:
                        raise SystemExit(f"{method} {task}: asked compile={compiled}, the record says {r.compiled}")
                    step = clock.median_ms(skip)
                    got[compiled] = (step, r.train_time_s - r.steps * step / 1000)
                    print(f"  {label} {method} {precision} compile={compiled}: {step:.0f} ms/step, "
                          f"train {r.train_time_s:.1f} s", flush=True)
                (eager, eager_fixed), (comp, comp_fixed) = got[False], got[True]
                pays = (f"{(comp_fixed - eager_fixed) / (eager - comp) * 1000:,.0f} steps" if comp < eager
                        else "never (slower steps)")
                rows.append(f"| {label} | {method} | {precision} | {eager:.0f} | {comp:.0f} | {eager / comp:.2f}x | "
                            f"{eager_fixed:.1f} | {comp_fixed:.1f} ({graphs if graphs is not None else '?'}) | {pays} |")
                print(rows[-1], flush=True)
    return (f"Cells of {args.steps} steps; median step after the first {skip}; inductor's cache empty at the run's "
            f"start:\n\n" + "\n".join(rows))


WORKERS_SUITE = """
name: {name}
models: [minilm]
tasks: [sst2]
methods:
  - {{name: full, learning_rate: 1e-4}}
  - {{name: houlsby, size: 64, learning_rate: 1e-3}}
  - {{name: lora, rank: 8, alpha: 16, learning_rate: 1e-3}}
  - {{name: layernorm, learning_rate: 1e-3}}
budgets:
  - {{max_steps: {steps}, max_train_samples: {samples}, max_eval_samples: 200}}
seeds: [1, 2]
hparams: {{batch_size: {batch}, max_length: 128, warmup_ratio: 0.1}}
"""


def harness_run(suite: str, work: str, *extra: str) -> float:
    cmd = [sys.executable, "-m", "harness", "run", suite, "--db", f"sqlite:///{work}/h.db", "--output-dir",
           f"{work}/out", "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def mode_workers(args, ctx) -> str:
    rows = ["| setting | wall time (s) | cells/min | vs 1 x 2 |", "|---|---:|---:|---:|"]
    base = None
    for workers, threads in ((1, 2), (2, 1)):
        with tempfile.TemporaryDirectory() as work:
            suite = os.path.join(work, "w.yaml")
            with open(suite, "w") as f:
                f.write(WORKERS_SUITE.format(name="workers", steps=args.steps, samples=args.steps * DEMO_BATCH,
                                            batch=DEMO_BATCH))
            wall = harness_run(suite, work, "--workers", str(workers), "--threads-per-worker", str(threads))
        base = base or wall
        rows.append(f"| {workers} worker(s) x {threads} thread(s) | {wall:.0f} | {8 * 60 / wall:.2f} | "
                    f"{base / wall:.2f}x |")
        print(rows[-1], flush=True)
    return (f"8 cells (SST-2; full, Houlsby, LoRA, LayerNorm x 2 seeds; {args.steps} steps each, batch {DEMO_BATCH}, "
            f"200 dev examples), `harness run --workers W --threads-per-worker T`:\n\n" + "\n".join(rows))


def mode_demo(args, ctx) -> str:
    """`harness estimate --pilot` (or from --estimate-db), then the README's command on a fresh store: the
    predicted device-seconds against the recorded train + eval seconds of the cells, and the wall time."""
    from harness.store.db import Store

    work = args.keep or tempfile.mkdtemp(prefix="demo-")
    os.makedirs(work, exist_ok=True)
    db = f"sqlite:///{work}/h.db"
    source = ["--from-store", args.estimate_db] if args.estimate_db else ["--pilot"]
    est = subprocess.run([sys.executable, "-m", "harness", "estimate", "suites/demo.yaml", *source, "--json"],
                         cwd=ROOT, capture_output=True, text=True)
    if est.returncode != 0:
        raise SystemExit(f"harness estimate failed:\n{est.stderr[-2000:]}")
    predicted = json.loads(est.stdout)
    extra = ["--workers", str(args.demo_workers)] if args.demo_workers else []
    wall = harness_run("suites/demo.yaml", work, *extra)
    rows = [r for r in Store(db).records("demo") if r.parent_id is None]
    actual = sum((r.train_time_s or 0) + (r.eval_time_s or 0) for r in rows)
    line = (f"`harness run suites/demo.yaml {' '.join(extra)}` on a fresh store: {wall / 60:.1f} min wall, "
            f"{len(rows)} cells, {sum(str(r.status) == 'completed' for r in rows)} completed (store: {work}/h.db). "
            f"`harness estimate {' '.join(source)}` beforehand: {predicted['seconds'] / 60:.1f} ± "
            f"{(predicted.get('plus_minus') or 0) / 60:.1f} min of training and evaluation; the cells recorded "
            f"{actual / 60:.1f} min ({predicted['seconds'] / actual - 1:+.0%}).")
    print(line, flush=True)
    return line


def mode_ab(args, ctx) -> str:
    """ms per step of the step mode's cells under two settings, each in its own child process, alternated
    --repeats times so that both see the same drift of a shared machine; the median per setting.
    `--against DIR`: the harness package of another checkout (a worktree of an earlier commit) against this one,
    the cells built by this script in both. `--against VAR=VALUE`: this tree with that environment variable set
    (e.g. THP_MEM_ALLOC_ENABLE=1, torch's transparent huge pages for large CPU tensors) against this tree
    without it."""
    import statistics

    if "=" in args.against and not os.path.isdir(args.against):
        var, value = args.against.split("=", 1)
        settings = [(args.against, [], {var: value}), ("this tree", [], {})]
    else:
        tree = os.path.abspath(args.against)
        settings = [(f"tree {tree}", ["--harness-tree", tree], {}), ("this tree", [], {})]
    runs: dict[tuple, dict[str, list]] = {}
    for _ in range(args.repeats):
        for label, flags, env in settings:
            cmd = [sys.executable, os.path.abspath(__file__), "--modes", "step", "--json", "--steps", str(args.steps),
                   "--methods", *args.methods, "--shapes", *args.shapes, "--precisions", *args.precisions, *flags]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env})
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            for line in proc.stdout.splitlines():
                if line.startswith("ROW "):
                    row = json.loads(line[4:])
                    key = (row["task"], row["method"], row["precision"])
                    runs.setdefault(key, {}).setdefault(label, []).append(row)
    (a, *_), (b, *_) = settings
    rows = [f"| shape | method | precision | ms/step: {a} | ms/step: {b} | speed-up | peak RSS (MB) |",
            "|---|---|---|---:|---:|---:|---:|"]
    for (task, method, precision), by in runs.items():
        med = {k: statistics.median(r["ms"] for r in v) for k, v in by.items()}
        rss = {k: max(r["rss_mb"] or 0 for r in v) for k, v in by.items()}
        rows.append(f"| {task}, batch {dict(SHAPES.values())[task]} | {method} | {precision} | {med[a]:.0f} | "
                    f"{med[b]:.0f} | {med[a] / med[b]:.2f}x | {rss[a]:.0f} / {rss[b]:.0f} |")
        print(rows[-1], flush=True)
    return (f"{args.repeats} alternating child processes per setting, {args.steps} steps per cell; median:\n\n"
            + "\n".join(rows))


def mode_methods(args, ctx) -> str:
    """Each method's cell (at each of --shapes and --precisions) in a child process of its own, the methods in
    turn, --repeats rounds; the median ms per step of each, and its ratio to full fine-tuning's (the same
    examples per step: the inverse of the ratio of times)."""
    import statistics

    runs: dict[tuple, list[float]] = {}
    for _ in range(args.repeats):
        for method in args.methods:
            cmd = [sys.executable, os.path.abspath(__file__), "--modes", "step", "--json", "--steps", str(args.steps),
                   "--methods", method, "--shapes", *args.shapes, "--precisions", *args.precisions]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            for line in proc.stdout.splitlines():
                if line.startswith("ROW "):
                    row = json.loads(line[4:])
                    runs.setdefault((row["task"], row["precision"], row["method"]), []).append(row["ms"])
    rows = ["| shape | precision | method | ms/step (median; each child's) | examples/s vs full |",
            "|---|---|---|---:|---:|"]
    for (task, precision, method), ms in runs.items():
        full = runs.get((task, precision, "full"))
        ratio = f"{statistics.median(full) / statistics.median(ms):.2f}x" if full else "–"
        rows.append(f"| {task}, batch {dict(SHAPES.values())[task]} | {precision} | {method} | "
                    f"{statistics.median(ms):.0f} ({', '.join(f'{m:.0f}' for m in ms)}) | {ratio} |")
        print(rows[-1], flush=True)
    return (f"{args.repeats} rounds, each method's cell in its own child process, {args.steps} steps per cell:\n\n"
            + "\n".join(rows))


MODES = {"step": mode_step, "ab": mode_ab, "methods": mode_methods, "batch": mode_batch, "profile": mode_profile, "lengths": mode_lengths,
         "compile": mode_compile, "workers": mode_workers, "demo": mode_demo}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=["step"])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--steps", type=int, default=80, help="optimizer steps per measured cell")
    p.add_argument("--shapes", nargs="+", choices=[t for t, _ in SHAPES.values()],
                   default=DEFAULT_SHAPES, help="step, ab, methods, profile and compile modes: which shapes")
    p.add_argument("--precisions", nargs="+", choices=["no", "bf16"], default=["no", "bf16"],
                   help="step, ab, methods, batch, lengths and compile modes: which precisions")
    p.add_argument("--repeats", type=int, default=3, help="ab mode: child processes per setting; batch and methods "
                   "modes: rounds")
    p.add_argument("--batches", nargs="+", type=int, default=[8, 16], help="batch mode: the batch sizes")
    p.add_argument("--against", default=None, help="ab mode: the folder of another checkout to compare this one "
                                                   "with, or VAR=VALUE: this tree with that environment variable")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--harness-tree", default=None, help=argparse.SUPPRESS)   # ab mode's children
    p.add_argument("--profile-steps", type=int, default=30)
    p.add_argument("--precision", default="no", choices=["no", "bf16"], help="profile mode's precision")
    p.add_argument("--rows", type=int, default=12, help="profile mode: ops per table")
    p.add_argument("--demo-workers", type=int, default=None, help="demo mode: --workers for harness run")
    p.add_argument("--keep", default=None, help="demo mode: the folder to keep its store and outputs in")
    p.add_argument("--estimate-db", default=None, help="demo mode: the store `harness estimate` reads throughput "
                                                       "from (default: the fresh one: no history)")
    p.add_argument("--write", action="store_true", help="append the tables to bench/RESULTS.md")
    args = p.parse_args()
    if "ab" in args.modes and not args.against:
        p.error("--against: the ab mode compares this tree with another checkout's folder or with VAR=VALUE")
    if min(args.batches) < 1:
        p.error("--batches: batch sizes are positive integers")
    if args.steps < 2 * STEADY_AFTER and {"step", "ab", "methods", "lengths", "compile"} & set(args.modes):
        p.error(f"--steps: at least {2 * STEADY_AFTER} (the steady step leaves out the first {STEADY_AFTER})")
    from harness.store.env import git_state
    from harness.train.context import RunContext

    if not os.environ.get("HARNESS_DATA_DIR"):
        raise SystemExit("HARNESS_DATA_DIR: set it to the GLUE folder (the data are read offline)")
    cache = tempfile.mkdtemp(prefix="bench-step-")
    if "compile" in args.modes:   # a new user's first compile, not this machine's earlier ones
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache, "inductor")
    ctx = RunContext(os.environ["HARNESS_DATA_DIR"], cache, show_progress=False)
    header = (f"## {dt.date.today()} — bench_step.py --modes {' '.join(args.modes)} — {cpu_line()}, "
              f"commit {(git_state().get('git_commit') or '?')[:10]}")
    print(header, flush=True)
    parts = [header, f"`{' '.join(['python', 'bench/bench_step.py', *sys.argv[1:]])}`"]
    for mode in args.modes:
        parts.append(f"### {mode}\n\n" + MODES[mode](args, ctx))
    if args.write:
        with open(os.path.join(ROOT, "bench", "RESULTS.md"), "a") as f:
            f.write("\n\n" + "\n\n".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
