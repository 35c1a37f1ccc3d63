"""Harness vs the plain Hugging Face Trainer on one identical cell (model, task, method, hyperparameters).

Prints training examples/s and tokens/s for each, the model FLOP utilisation estimate, the ratios, and the dev
metrics; appends a dated section to bench/RESULTS.md with --write. Training time excludes evaluation on both
sides. `full` runs against the Trainer (run_glue default: fp32, padding to max_length; dynamic padding in fp32;
dynamic padding with bf16=True); every other method runs in the harness only, in bf16 and fp32, against the
harness's own full fine-tuning rows of the same run; `linear_probe` runs --probe-epochs epochs on cached
frozen features computed from a cold cache.

  HARNESS_DATA_DIR=/path/to/glue python bench/bench_trainer.py --task mrpc --methods full,pfeiffer,linear_probe
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from harness.spec.cell import Cell  # noqa: E402
from harness.store.env import device_name, git_state  # noqa: E402
from harness.spec.methods import get_method  # noqa: E402
from harness.train.methods import set_up  # noqa: E402
from harness.tasks.metrics import compute_metrics, predictions_from_logits  # noqa: E402
from harness.spec.models import ModelSpec  # noqa: E402
from harness.train.models import load_for_task
from harness.train.params import head_parameter_names  # noqa: E402
from harness.spec.hparams import Hparams  # noqa: E402
from harness.spec.tasks import get_task  # noqa: E402
from harness.train.context import RunContext  # noqa: E402
from harness.train.recipe import train_and_evaluate  # noqa: E402


def make_cell(args, method, lr, **hp_overrides) -> Cell:
    hp = {k: v[0] if isinstance(v, list) else v for k, v in Hparams().model_dump().items()}
    hp.update(learning_rate=lr, batch_size=args.batch_size, max_length=args.max_length,
              warmup_ratio=args.warmup_ratio, **hp_overrides)
    m = get_method(method)
    params = m.resolve({"size": args.adapter_size} if "size" in m.params else
                       {"pooling": args.probe_pooling} if "pooling" in m.params else {})
    budget = {"epochs": float(args.probe_epochs if method == "linear_probe" else args.epochs)}
    if args.max_train_samples:
        budget["max_train_samples"] = args.max_train_samples
    return Cell(suite="bench", model=args.model, task=args.task, task_version=get_task(args.task).version,
                method=method, method_params=params, budget=budget, seed=args.seed, hparams=hp)


def run_harness(cell: Cell, ctx: RunContext) -> dict:
    r = train_and_evaluate(cell, ctx)
    return {"examples_per_s": r.train_examples_per_s, "tokens_per_s": r.train_tokens_per_s,
            "train_s": r.train_time_s, "score": r.score, "metrics": r.metrics,
            "precision": r.mixed_precision, "frozen_features": r.frozen_features, "mfu_counted": r.mfu}


def measured_peaks(cell: Cell, cache_dir: str, fresh: bool = False) -> dict:
    """{precision: {"gflops", "rates", "samples"}}: this machine's matmul peak in this process
    (harness/train/peaks.py, the function the records' MFU uses): the best of the model's own FFN shape and
    2048^3, for fp32 and bf16, each the best of its timings so far. `fresh`: time every rate once more now (next
    to the runs it divides) and keep the best: a slow spell of the machine never lowers a peak. The cache folder
    is the cells' own, so these timings, seconds apart, also count towards the records' peaks settling."""
    from harness.train.peaks import device_peak
    from harness.train.precision import cell_shape

    shape = cell_shape(cell)
    out = {}
    for precision in ("no", "bf16"):
        peak = device_peak(precision, "cpu", cache_dir, shape, fresh=fresh)
        out[precision] = {"gflops": peak["flops_per_s"] / 1e9, "source": peak["source"],
                          "rates": {k: v / 1e9 for k, v in peak.get("rates", {}).items()},
                          "samples": peak.get("samples", {})}
    return out


def non_embedding_params(model_name: str, task) -> int:
    """The encoder's weights outside its embedding tables (pooler included): the N of 6 x N x tokens."""
    from harness.train.params import breakdown

    _, model, _ = load_for_task(ModelSpec(model_name), task)
    return breakdown(model)["encoder_params"]


def run_trainer(cell: Cell, ctx: RunContext, padding: str, group_by_length: bool = False, bf16: bool = False) -> dict:
    """The plain Trainer: same model, method setup, data, optimizer settings, schedule and seed."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator, set_seed

    set_seed(cell.seed)
    task, hp = get_task(cell.task), cell.hparams
    tokenizer, model, missing = load_for_task(ModelSpec(cell.model), task)
    head = head_parameter_names(model, missing)
    set_up(model, cell.method, cell.method_params)
    for name, p in model.named_parameters():
        if name in head:
            p.requires_grad = True
    raw = ctx.raw_data(task)
    train = ctx.tokenized.get(task, raw["train"].head(cell.budget.get("max_train_samples")), tokenizer,
                              hp["max_length"], padding)
    split = task.eval_splits[0]
    dev = ctx.tokenized.get(task, raw[split.hub_split], tokenizer, hp["max_length"], padding)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, learning_rate=hp["learning_rate"], per_device_train_batch_size=hp["batch_size"],
            per_device_eval_batch_size=hp["eval_batch_size"], num_train_epochs=cell.budget["epochs"],
            warmup_ratio=hp["warmup_ratio"], weight_decay=hp["weight_decay"], max_grad_norm=hp["max_grad_norm"],
            lr_scheduler_type="linear", seed=cell.seed, eval_strategy="no", save_strategy="no", report_to=[],
            logging_strategy="no", disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
            group_by_length=group_by_length, dataloader_num_workers=0, bf16=bf16)
        collator = default_data_collator if padding == "max_length" else DataCollatorWithPadding(tokenizer)
        trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        pred = trainer.predict(dev)
    preds = predictions_from_logits(task, pred.predictions)
    metrics = compute_metrics(task, preds, np.asarray(dev["labels"]), split.suffix)
    # tokens the model really reads (padding excluded, as the harness counts them)
    real_tokens = sum(len(ids) for ids in ctx.tokenized.get(
        task, raw["train"].head(cell.budget.get("max_train_samples")), tokenizer, hp["max_length"], "dynamic")["input_ids"])
    return {"examples_per_s": len(train) * cell.budget["epochs"] / train_s,
            "tokens_per_s": real_tokens * cell.budget["epochs"] / train_s, "train_s": train_s,
            "score": task.main_score(metrics), "metrics": metrics, "precision": "bf16" if bf16 else "no"}


FLOPS_PER_TOKEN = {"full": 6}   # forward 2N, backward 4N (activation and weight gradients)
FROZEN_BASE_FLOPS_PER_TOKEN = 4  # frozen base weights: forward 2N and activation gradients 2N, no weight gradients


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm")
    p.add_argument("--task", default="mrpc")
    p.add_argument("--methods", default="full,pfeiffer,linear_probe")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--probe-epochs", type=float, default=3.0, help="epochs of the linear_probe rows")
    p.add_argument("--probe-pooling", default=None, choices=(None, "cls", "mean"))
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--lr-full", type=float, default=5e-5)
    p.add_argument("--lr-adapter", type=float, default=1e-3)
    p.add_argument("--lr-probe", type=float, default=3e-3)
    p.add_argument("--adapter-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=None,
                   help="also run the harness's full fine-tuning cell in bf16 and fp32 over these seeds (noise check)")
    p.add_argument("--seeds-only", action="store_true",
                   help="only the bf16 against fp32 seed check of the full fine-tuning cell (with --seeds)")
    p.add_argument("--no-trainer", action="store_true", help="harness rows only (the Trainer's are the slow ones)")
    p.add_argument("--trainer-group-by-length", action="store_true", help="add the Trainer's own length grouping")
    p.add_argument("--peak-fp32", type=float, default=None, help="GFLOP/s; default: measured in this run")
    p.add_argument("--peak-bf16", type=float, default=None, help="GFLOP/s; default: measured in this run")
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR"))
    p.add_argument("--write", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()
    from harness.train.host_memory import keep_freed_blocks

    keep_freed_blocks()   # the harness's cells set it; the Trainer's rows run in the same process, so theirs too
    torch.set_num_threads(torch.get_num_threads())
    ctx = RunContext(data_dir=args.data_dir, cache_dir=tempfile.mkdtemp(prefix="bench-cache-"), show_progress=False)
    n_params = non_embedding_params(args.model, get_task(args.task))
    # the peaks are measured in this process (a fresh cache folder: nothing from another run or machine), at the
    # model's own shape and at 2048^3, unless given; HARNESS_PEAK_FLOPS overrides as it does for the records
    peak_cell = make_cell(args, "full", args.lr_full)
    peaks = {}

    def peak_line(fresh: bool) -> str:
        """Times the peaks (again: `fresh`) and says what each table divides by: the best timing so far."""
        measured = measured_peaks(peak_cell, ctx.cache_dir, fresh)
        peaks.update({"no": args.peak_fp32 or measured["no"]["gflops"],
                      "bf16": args.peak_bf16 or measured["bf16"]["gflops"]})
        rates = "; ".join(f"{k} {v:.0f} (best of {m['samples'].get(k, 1)})"
                          for m in measured.values() for k, v in m["rates"].items())
        given = ", given" if args.peak_fp32 or args.peak_bf16 else ""
        return (f"matmul peak fp32 {peaks['no']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s{given} (measured in this "
                f"run, timed before the runs and again before each table, the best kept; GFLOP/s: {rates})")

    lines = [f"\nNon-embedding parameters N = {n_params:,}; MFU = flops/token x N x tokens/s over the "
             f"{peak_line(False)}. flops/token: full 6N; frozen base weights (adapters) 4N; the probe's one forward "
             f"pass is not a training rate (n/a). Counted MFU: the record's own (FLOPs counted with FlopCounterMode "
             f"over the same peak source when the cell ran, harness/train/flops.py)."]
    print(lines[-1], flush=True)

    def lr_of(method):
        return args.lr_full if method == "full" else args.lr_probe if method == "linear_probe" else args.lr_adapter

    def table(title, runs, refs):
        out = [f"\n### {title}\n", f"MFU over the {peak_line(True)}.\n",
               "| run | precision | train examples/s | tokens/s | model GFLOP/s | MFU | counted MFU | "
               + " | ".join(f"vs {r}" for r in refs) + " | train s | dev score | dev metrics |",
               "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(refs) + "---:|---:|---|"]
        for name, (method, r) in runs.items():
            per_token = None if method == "linear_probe" else FLOPS_PER_TOKEN.get(method, FROZEN_BASE_FLOPS_PER_TOKEN)
            gflops = per_token * n_params * r["tokens_per_s"] / 1e9 if per_token else None
            mfu = f"{100 * gflops / peaks[r['precision']]:.0f}%" if gflops else "n/a"
            counted = f"{100 * r['mfu_counted']:.0f}%" if r.get("mfu_counted") else "n/a"
            ratios = " | ".join(f"{r['examples_per_s'] / all_runs[ref][1]['examples_per_s']:.2f}x" for ref in refs)
            metrics = ", ".join(f"{k} {v:.2f}" for k, v in r["metrics"].items())
            out.append(f"| {name} | {r['precision']} | {r['examples_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
                       f"{f'{gflops:.0f}' if gflops else 'n/a'} | {mfu} | {counted} | {ratios} | {r['train_s']:.1f} | "
                       f"{r['score']:.2f} | {metrics} |")
        return out

    all_runs = {}
    for method in args.methods.split(","):
        lr = lr_of(method)
        base = make_cell(args, method, lr)  # the harness's defaults: auto precision, dynamic padding, group_by_length
        fp32 = make_cell(args, method, lr, mixed_precision="no")
        label = f"harness {method}"
        default_row, fp32_row = f"{label} (defaults: auto precision, dynamic padding, group_by_length)", \
            f"{label}, mixed_precision: no"
        runs, shown = {}, []
        if not args.seeds_only:
            if method == "full" and not args.no_trainer:
                runs["Trainer, pad to max_length (run_glue default)"] = (method, run_trainer(fp32, ctx, "max_length"))
                runs["Trainer, dynamic padding"] = (method, run_trainer(fp32, ctx, "dynamic"))
                runs["Trainer, dynamic padding, bf16=True"] = (method, run_trainer(fp32, ctx, "dynamic", bf16=True))
                if args.trainer_group_by_length:
                    runs["Trainer, dynamic padding + group_by_length"] = (
                        method, run_trainer(fp32, ctx, "dynamic", True))
            runs[default_row] = (method, run_harness(base, ctx))
            runs[fp32_row] = (method, run_harness(fp32, ctx))
            if method == "full":
                runs[f"{label}, group_by_length: false (like for like with the Trainer)"] = (
                    method, run_harness(make_cell(args, method, lr, group_by_length=False), ctx))
            all_runs.update(runs)
            if method == "full":
                refs = [r for r in ("Trainer, pad to max_length (run_glue default)", "Trainer, dynamic padding",
                                    "Trainer, dynamic padding, bf16=True") if r in all_runs]
            else:
                refs = [r for r in ("harness full (defaults: auto precision, dynamic padding, group_by_length)",
                                    "harness full, mixed_precision: no") if r in all_runs]
            title = (f"{args.model} / {args.task} / {base.method_label}, lr {lr:g}, batch {args.batch_size}, "
                     f"{base.budget['epochs']:g} epoch(s), train examples {args.max_train_samples or 'all'}, "
                     f"seed {args.seed}")
            shown = table(title, runs, refs)
            if method == "linear_probe":
                shown.append(f"\nlinear_probe cached features (cold cache): {runs[default_row][1]['frozen_features']}")
            print("\n".join(shown), flush=True)
        if args.seeds and method == "full":  # bf16 against fp32 dev scores over seeds, harness defaults otherwise
            shown.append(f"\n{args.model} / {args.task} / full, lr {lr:g}, batch {args.batch_size}, "
                         f"{args.epochs:g} epoch(s), train examples {args.max_train_samples or 'all'}: harness "
                         f"defaults in bf16 and in fp32 over seeds {args.seeds}")
            scores = {"bf16": [], "no": []}
            for seed in args.seeds:
                for prec, row in (("bf16", default_row), ("no", fp32_row)):
                    if seed == args.seed and row in runs and runs[row][1]["precision"] == prec:
                        scores[prec].append(runs[row][1]["score"])   # the table's run
                        continue
                    cell = Cell(**{**make_cell(args, method, lr, mixed_precision=prec).__dict__, "seed": seed})
                    scores[prec].append(run_harness(cell, ctx)["score"])
            for prec, values in scores.items():
                shown.append(f"- mixed_precision {prec}: dev score {np.mean(values):.2f} ± "
                             f"{np.std(values, ddof=1):.2f} ({', '.join(f'{v:.2f}' for v in values)})")
            print("\n".join(shown[-3:]), flush=True)
        lines += shown

    header = (f"\n## {dt.date.today().isoformat()} — {device_name()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, commit {(git_state()['git_commit'] or 'n/a')[:10]}\n\n"
              f"`{' '.join(['python', 'bench/bench_trainer.py'] + sys.argv[1:])}`\n")
    if args.write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
        with open(path, "a") as f:
            f.write(header + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
