"""Issue 20's GPU check: one prepared run, sized for a lent GPU's few minutes (on a CPU it runs too, tiny: a check
of the script, no figures).

1. The bf16 matmul peak measured in this process, at the cells' own matmul shape (batch x tokens rows x hidden x
   4*hidden) and at 8192^3, beside the datasheet figure the records' MFU divides by (harness/train/peaks.py).
2. BERT-base on MRPC, full fine-tuning / Houlsby / LoRA, bf16, batch 32 x 128 tokens (padding: max_length) and at
   the lengths the suites train with (padding: dynamic, length-grouped batches): per cell ms per step (the
   record's and the steady step after the first few), tokens/s, TFLOP/s as the records count FLOPs, MFU against
   the measured peak and the record's own MFU, peak GPU memory. Each eager (`compile: false`) and compiled
   (`compile: true`: its compile time is the cell's fixed time, what its training took beyond its steps).
3. `--parts profile` (not by default): the model's training step without the harness (one fixed batch on the
   GPU: eager, compiled, compiled with CUDA graphs), ms per step and the host's time to issue one; torch.profiler
   over 20 steps of harness cells (full and LoRA eager, full compiled): CPU and GPU time by op.
4. A 2-cell slice of suites/demo.yaml (SST-2, full and Houlsby, its budget and hparams) through `harness run` on a
   fresh store, as a user would run it (precision and compile `auto`), then `harness status` and `harness export`.

The weights are random (BertConfig's defaults are BERT-base's architecture; the demo slice uses the embedded
model's config.json): a machine lent for this reaches no hub, and the embedded model's 87 MB of weights are more
than such a call carries. A step's cost does not depend on the weights; the scores printed are a random model's.

  HARNESS_DATA_DIR=GLUE python bench/bench_gpu.py --tokenizer DIR --out DIR [--budget-s 420]

--tokenizer: a folder with a BERT uncased tokenizer and config.json (the embedded model's folder, or a copy of it
without its weights, as carried to a lent GPU). Writes --out/gpu.md (the tables) and --out/gpu.jsonl (one record per cell) as it goes; parts that
would start after --budget-s are skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import ROOT, STEADY_AFTER, cell, ms_per_step, timed_cell, tokens_per_step  # noqa: E402

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
METHODS = ("full", "houlsby", "lora")
MRPC_TRAIN = 3668   # MRPC's training pairs
DEMO_SLICE = """# two cells of suites/demo.yaml (its budget and hparams), on a random model of the embedded model's shape
name: gpu_demo_slice
models: [{model}]
tasks: [sst2]
methods:
  - {{name: full, learning_rate: 1e-4}}
  - {{name: houlsby, size: 64, learning_rate: 2e-3}}
budgets:
  - {{epochs: 2, max_train_samples: 1000, max_eval_samples: 600}}
seeds: [1]
hparams: {{batch_size: 16, max_length: 128, warmup_ratio: 0.1}}
"""


def random_model(folder: str, tokenizer: str, config=None) -> str:
    """A model folder: `config`'s architecture (default BERT-base's) with seeded random weights, and the tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    BertModel(config or BertConfig()).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if os.path.exists(os.path.join(tokenizer, name)):
            shutil.copy(os.path.join(tokenizer, name), folder)
    return folder


class Report:
    """The tables in --out/gpu.md and one JSON line per measured cell in --out/gpu.jsonl, written as they come."""

    def __init__(self, out: str):
        self.md, self.jsonl = os.path.join(out, "gpu.md"), os.path.join(out, "gpu.jsonl")

    def line(self, text: str) -> None:
        print(text, flush=True)
        with open(self.md, "a") as f:
            f.write(text + "\n")

    def record(self, row: dict) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")


def env_line() -> str:
    import torch

    from harness import cpuinfo

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{gpu}; {cpuinfo.describe()}; torch {torch.__version__}"


def measured_peaks(device: str, shapes: list[tuple[int, int, int]]) -> dict:
    """bf16 matmul FLOP/s at each shape (best of the timings: harness/train/peaks.py's own timer)."""
    from harness.train.peaks import time_matmul

    return {shape: time_matmul("bf16", shape, device=device) for shape in shapes}


def measure_cell(c, ctx, peak: float) -> dict:
    """Train one cell; its record's figures and the steady step (timed at each optimizer step after the first
    STEADY_AFTER) against `peak`."""
    r, clock, graphs = timed_cell(c, ctx)
    if r.steps is None or r.train_time_s is None:
        raise RuntimeError(f"{c.method}: the cell did not train")
    steady_ms = clock.mean_ms(STEADY_AFTER)
    median_ms = clock.median_ms(STEADY_AFTER)
    flops_per_step = (r.train_flops or 0.0) / max(r.steps, 1)
    return {
        "method": c.method, "padding": c.hparams["padding"], "compile": r.compiled,
        "precision": r.mixed_precision, "steps": r.steps, "ms_per_step": ms_per_step(r),
        "steady_ms": steady_ms, "median_ms": median_ms, "tokens_per_step": tokens_per_step(r),
        "tokens_per_s": r.train_tokens_per_s, "examples_per_s": r.train_examples_per_s,
        "tflops_record": (r.flops_per_s or 0) / 1e12, "tflops_steady": flops_per_step / (steady_ms / 1000) / 1e12,
        "mfu_measured_peak": flops_per_step / (steady_ms / 1000) / peak, "mfu_record": r.mfu,
        "record_peak": (r.device_peak or {}).get("flops_per_s"), "peak_memory_mb": r.peak_memory_mb,
        # what training took beyond its steps at the mean step (the mean: what the training time is made of)
        "fixed_s": r.train_time_s - r.steps * steady_ms / 1000, "graphs": graphs,
        "train_time_s": r.train_time_s, "eval_time_s": r.eval_time_s, "score": r.score, "trainable_pct": r.trainable_pct,
        "attention": r.attn_implementation,
    }


CELL_HEADER = ("| padding | compile | method | ms/step (record) | steady ms/step | real tokens/step | tokens/s | "
               "TFLOP/s (steady) | MFU vs measured peak | record's MFU (datasheet) | peak GPU MiB | fixed s (graphs) |\n"
               "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
# the order the lease's minutes go in: what the issue asks first (eager at 32 x 128, then compiled, then the
# suite through `harness run`), the rest after; a part that would start past --budget-s is skipped
PLAN = ([("cell", "max_length", False, m) for m in METHODS] + [("cell", "max_length", True, "full"), ("demo",)]
        + [("cell", "max_length", True, m) for m in METHODS[1:]] + [("cell", "dynamic", False, m) for m in METHODS])


def cell_row(args, ctx, model: str, peak: float, report: Report, padding: str, compiled: bool, method: str) -> None:
    try:
        row = measure_cell(cell("mrpc", method, args.batch, "bf16", args.steps, model=model, padding=padding,
                                max_length=args.tokens, compile=compiled), ctx, peak)
        if row["compile"] is not compiled:
            raise RuntimeError(f"asked compile={compiled}, the record says {row['compile']}")
    except Exception as e:   # one cell's failure must not cost the rest of the lease
        report.line(f"| {padding} | {compiled} | {method} | failed: {type(e).__name__}: {str(e)[:300]} |")
        return
    report.record({"part": "cells", **row})
    report.line(f"| {padding} | {compiled} | {method} | {row['ms_per_step']:.1f} | {row['steady_ms']:.1f} | "
                f"{row['tokens_per_step']:.0f} | {row['tokens_per_s']:,.0f} | {row['tflops_steady']:.1f} | "
                f"{100 * row['mfu_measured_peak']:.1f}% | {100 * (row['mfu_record'] or 0):.1f}% | "
                f"{row['peak_memory_mb']:,.0f} | {row['fixed_s']:.1f} "
                f"({row['graphs'] if row['graphs'] is not None else '-'}) |")


def demo_part(model: str, report: Report, work: str, timeout_s: float) -> None:
    suite = os.path.join(work, "demo_slice.yaml")
    with open(suite, "w") as f:
        f.write(DEMO_SLICE.format(model=model))
    db = f"sqlite:///{work}/demo.db"
    t0 = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, "-m", "harness", "run", suite, "--db", db, "--output-dir",
                              os.path.join(work, "demo_out"), "--no-progress"], cwd=ROOT, capture_output=True,
                             text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:   # what it had done still shows below, from the store
        text = [b.decode(errors="replace") if isinstance(b, bytes) else (b or "") for b in (e.stdout, e.stderr)]
        run = subprocess.CompletedProcess(e.cmd, f"timed out after {timeout_s:.0f} s", *text)
    wall = time.perf_counter() - t0
    report.line(f"`harness run` of the 2-cell slice: exit {run.returncode}, {wall:.0f} s wall")
    if run.returncode:
        report.line("```\n" + (run.stdout + run.stderr)[-3000:] + "\n```")
    for cmd in (["status", suite, "--db", db, "--all"],
                ["export", "--db", db, "--table", "runs", "--format", "markdown", "--suite", "gpu_demo_slice"]):
        shown = subprocess.run([sys.executable, "-m", "harness", *cmd], cwd=ROOT, capture_output=True, text=True)
        report.line(f"`harness {cmd[0]}` (exit {shown.returncode}):\n```\n{(shown.stdout + shown.stderr)[-2500:]}\n```")
    for record in sorted(_records(os.path.join(work, "demo_out"))):
        with open(record) as f:
            r = json.load(f)
        keep = {k: r.get(k) for k in ("method", "status", "score", "steps", "train_time_s", "eval_time_s",
                                      "train_tokens_per_s", "mfu", "peak_memory_mb")}
        extra = r.get("extra") or {}
        keep.update(mixed_precision=(r.get("env") or {}).get("mixed_precision"), compiled=extra.get("compiled"),
                    precision_reason=(extra.get("precision_choice") or {}).get("reason"))
        report.record({"part": "demo", **keep})
        report.line(f"- {json.dumps(keep, default=str)}")


def pure_step(model_dir: str, batch: int, tokens: int, compile_mode: str | None, device: str) -> dict:
    """The same model's training step without the harness: one fixed batch on the device, bf16 autocast, fused
    AdamW, clipping; ms per step (synchronized) and the host's time to issue a step (what bounds the step when
    the GPU waits for the host). compile_mode: None (eager) or torch.compile's mode."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2,
                                                               attn_implementation="sdpa").to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(1000, 30000, (batch, tokens), device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
              "labels": torch.randint(0, 2, (batch,), device=device)}
    run = torch.compile(model, dynamic=True, mode=compile_mode) if compile_mode else model
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = run(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    sync()
    warm = time.perf_counter() - t0
    n = 30
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    issued = time.perf_counter() - t0
    sync()
    wall = time.perf_counter() - t0
    return {"mode": compile_mode or "eager", "ms_per_step": 1000 * wall / n, "issue_ms_per_step": 1000 * issued / n,
            "first_3_steps_s": warm}


def profile_cell(args, ctx, model: str, method: str, compiled: bool, report: Report) -> None:
    """torch.profiler over 20 optimizer steps of a harness cell (after 15), CPU and GPU: where a step goes."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import ProfilerActivity, profile, schedule

    from harness.train.recipe import train_and_evaluate

    active = 20
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    c = cell("mrpc", method, args.batch, "bf16", 15 + active + 5, model=model, padding="max_length",
             max_length=args.tokens, compile=compiled)
    prof = profile(activities=acts, schedule=schedule(wait=10, warmup=5, active=active, repeat=1))
    stamps = []
    prof.start()
    # the time first: prof.step() at the last active step stops the trace (a synchronize and the events' collection)
    hook = register_optimizer_step_post_hook(lambda *_: (stamps.append(time.perf_counter()), prof.step()))
    try:
        train_and_evaluate(c, ctx)
    finally:
        hook.remove()
        prof.stop()
    # steps 16-35 are the active ones: from the end of step 15 to the end of step 35
    wall = 1000 * (stamps[14 + active] - stamps[14]) / active if len(stamps) > 14 + active else float("nan")
    events = prof.key_averages()
    # the kernels' own time; the profiler's step annotation spans the whole step on the GPU's timeline too
    gpu_us = sum(getattr(e, "self_device_time_total", 0) or 0 for e in events   # as the table's footer counts
                 if "CUDA" in str(getattr(e, "device_type", "")) and not getattr(e, "is_user_annotation", False))
    report.line(f"\n#### profile: {method}, compile {compiled}: {wall:.1f} ms per step (wall, steps 16-35); GPU "
                f"kernels {gpu_us / 1000 / active:.1f} ms per step\n")
    for key in ("self_cpu_time_total", "self_device_time_total" if acts[-1] != ProfilerActivity.CPU else None):
        if key:
            report.line("```\n" + events.table(sort_by=key, row_limit=22, max_name_column_width=60) + "\n```")


def profile_part(args, ctx, model: str, report: Report, start: float) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    todo = [("pure", None), ("profile", "full", False), ("profile", "lora", False), ("pure", "default"),
            ("profile", "full", True), ("pure", "reduce-overhead")]
    for item in todo:
        if time.monotonic() - start > args.budget_s:
            report.line(f"skipped {item}: past --budget-s {args.budget_s:.0f} s")
            continue
        try:
            if item[0] == "pure":
                row = pure_step(model, args.batch, args.tokens, item[1], device)
                report.record({"part": "pure", **row})
                report.line(f"- without the harness, {row['mode']}: {row['ms_per_step']:.1f} ms per step, the host "
                            f"issues one in {row['issue_ms_per_step']:.1f} ms (first 3 steps {row['first_3_steps_s']:.1f} s)")
            else:
                profile_cell(args, ctx, model, item[1], item[2], report)
        except Exception as e:   # one part's failure must not cost the rest of the lease
            report.line(f"{item} failed: {type(e).__name__}: {str(e)[:300]}")


def _records(folder: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f == "record.json"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True, help="folder with the tokenizer files and a BERT config.json")
    p.add_argument("--out", required=True, help="folder for gpu.md and gpu.jsonl")
    p.add_argument("--budget-s", type=float, default=420.0, help="no part starts after this many seconds")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per measured cell")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=128, help="max_length (padding: max_length pads every batch to it)")
    p.add_argument("--parts", nargs="+", choices=["cell", "demo", "profile"], default=["cell", "demo"],
                   help="profile: the model's step with and without the harness, and torch.profiler over cells")
    p.add_argument("--tiny", action="store_true", help="a 2-layer, hidden-128 BERT instead of BERT-base (a CPU check)")
    args = p.parse_args()
    if not os.path.isfile(os.path.join(args.tokenizer, "config.json")):
        p.error(f"--tokenizer: {args.tokenizer} has no config.json")
    if not any(os.path.isfile(os.path.join(args.tokenizer, f)) for f in ("vocab.txt", "tokenizer.json")):
        p.error(f"--tokenizer: {args.tokenizer} has no vocab.txt or tokenizer.json")
    if args.batch < 1:
        p.error("--batch: at least 1")
    if not 2 <= args.tokens <= 512:
        p.error("--tokens: 2 to 512 (BERT's positions)")
    if not args.budget_s > 0:
        p.error("--budget-s: a positive number of seconds")
    if args.steps * args.batch > MRPC_TRAIN:
        p.error(f"--steps x --batch: at most {MRPC_TRAIN} (MRPC's training pairs): a cell's steps stay within one "
                f"epoch, so no evaluation falls among the timed steps")
    if args.steps < 2 * STEADY_AFTER:
        p.error(f"--steps: at least {2 * STEADY_AFTER} (the steady step leaves out the first {STEADY_AFTER})")
    if not os.environ.get("HARNESS_DATA_DIR"):
        p.error("HARNESS_DATA_DIR: set it to the GLUE folder (the data are read offline)")
    start = time.monotonic()
    os.makedirs(args.out, exist_ok=True)
    report = Report(args.out)
    import torch
    from transformers import BertConfig

    from harness.train.context import RunContext
    from harness.train.peaks import GPU_PEAKS, model_shape

    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = tempfile.mkdtemp(prefix="bench-gpu-")
    report.line(f"## bench_gpu.py: {env_line()}\n")
    small = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512)
    bert = random_model(os.path.join(work, "bert-base"), args.tokenizer, BertConfig(**small) if args.tiny else None)
    hidden = 128 if args.tiny else 768
    shape = model_shape(args.batch, args.tokens, hidden)
    peaks = measured_peaks(device, [shape, (8192, 8192, 8192)] if device == "cuda" else [shape])
    table = next((v["bf16"] for k, v in GPU_PEAKS if k.lower() in env_line().lower()), None)
    report.line("bf16 matmul, measured here: " + "; ".join(f"{m}x{k}x{n}: {r / 1e12:.1f} TFLOP/s"
                                                          for (m, k, n), r in peaks.items())
                + (f"; datasheet (the records' MFU divides by it): {table / 1e12:.0f}" if table else "") + "\n")
    report.record({"part": "peaks", "device": env_line(), **{"x".join(map(str, s)): r for s, r in peaks.items()}})
    ctx = RunContext(os.environ["HARNESS_DATA_DIR"], os.path.join(work, "cache"), show_progress=False)
    report.line(f"### BERT-base{' (tiny)' if args.tiny else ''}, random weights, MRPC, bf16, batch {args.batch}, "
                f"{args.steps} steps per cell; MFU: the cell's FLOPs per step (as its record counts them) over the "
                f"steady step (after the first {STEADY_AFTER}), against the measured {shape[0]}x{shape[1]}x{shape[2]} "
                f"peak\n")
    if "profile" in args.parts:
        profile_part(args, ctx, bert, report, start)
    if "cell" in args.parts or "demo" in args.parts:
        report.line(CELL_HEADER)
    for item in PLAN:
        if item[0] not in args.parts:
            continue
        late = time.monotonic() - start > args.budget_s
        if item[0] == "cell":
            if late:
                report.line(f"| {item[1]} | {item[2]} | {item[3]} | skipped: past --budget-s {args.budget_s:.0f} s |")
            else:
                cell_row(args, ctx, bert, peaks[shape], report, *item[1:])
            continue
        report.line("\n### 2 cells of suites/demo.yaml (SST-2: full, Houlsby), `harness run`, precision and compile `auto`\n")
        if late:
            report.line(f"skipped: past --budget-s {args.budget_s:.0f} s")
        else:
            with open(os.path.join(args.tokenizer, "config.json")) as f:
                minilm = BertConfig(**{k: v for k, v in json.load(f).items() if not k.startswith("_")})
            demo_part(random_model(os.path.join(work, "minilm-random"), args.tokenizer, minilm), report, work,
                      timeout_s=args.budget_s + 150 - (time.monotonic() - start))
        report.line("\n(the cells, continued)\n\n" + CELL_HEADER)
    report.line(f"\n(whole run: {time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
