"""Harness vs the plain Hugging Face Trainer on one identical cell (model, task, method, hyperparameters).

Prints training examples/s for each, the ratios, and the dev metrics; appends a dated section to
bench/RESULTS.md with --write. Training time excludes evaluation on both sides.

  HARNESS_DATA_DIR=../shared/data/glue python bench/bench_trainer.py --task mrpc --methods full,pfeiffer --write
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

from harness.plan.cells import Cell  # noqa: E402
from harness.store.env import device_name, git_state  # noqa: E402
from harness.train.methods import get_method  # noqa: E402
from harness.tasks.metrics import compute_metrics, main_score, predictions_from_logits  # noqa: E402
from harness.train.models import ModelSpec, load_for_task  # noqa: E402
from harness.train.params import head_parameter_names  # noqa: E402
from harness.plan.suite import Hparams  # noqa: E402
from harness.tasks.registry import get_task  # noqa: E402
from harness.train.loop import RunContext, train_and_evaluate  # noqa: E402


def make_cell(args, method, lr, **hp_overrides) -> Cell:
    hp = {k: v[0] if isinstance(v, list) else v for k, v in Hparams().model_dump().items()}
    hp.update(learning_rate=lr, batch_size=args.batch_size, max_length=args.max_length,
              warmup_ratio=args.warmup_ratio, mixed_precision="no", **hp_overrides)
    m = get_method(method)
    params = m.resolve({"size": args.adapter_size} if "size" in m.params else {})
    budget = {"epochs": float(args.epochs)}
    if args.max_train_samples:
        budget["max_train_samples"] = args.max_train_samples
    return Cell(suite="bench", model=args.model, task=args.task, task_version=get_task(args.task).version,
                method=method, method_params=params, budget=budget, seed=args.seed, hparams=hp)


def run_harness(cell: Cell, ctx: RunContext) -> dict:
    r = train_and_evaluate(cell, ctx)
    return {"examples_per_s": r.train_examples_per_s, "train_s": r.train_time_s, "score": r.score,
            "metrics": r.metrics}


def run_trainer(cell: Cell, ctx: RunContext, padding: str, group_by_length: bool = False) -> dict:
    """The plain Trainer: same model, method setup, data, optimizer settings, schedule and seed."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator, set_seed

    set_seed(cell.seed)
    task, hp = get_task(cell.task), cell.hparams
    tokenizer, model, missing = load_for_task(ModelSpec(cell.model), task)
    head = head_parameter_names(model, missing)
    get_method(cell.method).setup(model, cell.method_params)
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
            group_by_length=group_by_length, dataloader_num_workers=0)
        collator = default_data_collator if padding == "max_length" else DataCollatorWithPadding(tokenizer)
        trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        pred = trainer.predict(dev)
    preds = predictions_from_logits(task, pred.predictions)
    metrics = compute_metrics(task, preds, np.asarray(dev["labels"]), split.suffix)
    return {"examples_per_s": len(train) * cell.budget["epochs"] / train_s, "train_s": train_s,
            "score": main_score(task, metrics), "metrics": metrics}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm")
    p.add_argument("--task", default="mrpc")
    p.add_argument("--methods", default="full,pfeiffer")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--lr-full", type=float, default=5e-5)
    p.add_argument("--lr-adapter", type=float, default=1e-3)
    p.add_argument("--adapter-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=None,
                   help="also run the harness with and without group_by_length over these seeds (noise check)")
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR"))
    p.add_argument("--write", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ctx = RunContext(data_dir=args.data_dir, cache_dir=tempfile.mkdtemp(prefix="bench-cache-"), show_progress=False)

    lines = []
    for method in args.methods.split(","):
        lr = args.lr_full if method == "full" else args.lr_adapter
        base = make_cell(args, method, lr)  # the harness's defaults: dynamic padding, group_by_length
        ungrouped = make_cell(args, method, lr, group_by_length=False)
        runs = {
            "Trainer, pad to max_length (run_glue default)": run_trainer(base, ctx, "max_length"),
            "Trainer, dynamic padding": run_trainer(base, ctx, "dynamic"),
            "harness (defaults: dynamic padding, group_by_length)": run_harness(base, ctx),
            "harness, group_by_length: false": run_harness(ungrouped, ctx),
            "Trainer, dynamic padding + group_by_length": run_trainer(base, ctx, "dynamic", group_by_length=True),
        }
        ref_max = runs["Trainer, pad to max_length (run_glue default)"]["examples_per_s"]
        ref_dyn = runs["Trainer, dynamic padding"]["examples_per_s"]
        lines.append(f"\n### {args.model} / {args.task} / {base.method_label}, lr {lr:g}, batch {args.batch_size}, "
                     f"{args.epochs:g} epoch(s), train examples {args.max_train_samples or 'all'}, seed {args.seed}\n")
        lines.append("| run | train examples/s | vs Trainer max_length | vs Trainer dynamic | train s | dev score | dev metrics |")
        lines.append("|---|---:|---:|---:|---:|---:|---|")
        for name, r in runs.items():
            metrics = ", ".join(f"{k} {v:.2f}" for k, v in r["metrics"].items())
            lines.append(f"| {name} | {r['examples_per_s']:.1f} | {r['examples_per_s'] / ref_max:.2f}x | "
                         f"{r['examples_per_s'] / ref_dyn:.2f}x | {r['train_s']:.0f} | {r['score']:.2f} | {metrics} |")
        print("\n".join(lines[-len(runs) - 3:]), flush=True)
        if args.seeds:  # dev-score noise: the harness with and without length grouping over several seeds
            scores = {False: [], True: []}
            for seed in args.seeds:
                for grouped in (False, True):
                    cell = make_cell(args, method, lr, group_by_length=grouped)
                    cell = Cell(**{**cell.__dict__, "seed": seed})
                    scores[grouped].append(run_harness(cell, ctx)["score"])
            for grouped, values in scores.items():
                lines.append(f"\nharness, group_by_length {str(grouped).lower()}, seeds {args.seeds}: dev score "
                             f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} ({', '.join(f'{v:.2f}' for v in values)})")
            print("\n".join(lines[-2:]), flush=True)

    header = (f"\n## {dt.date.today().isoformat()} — {device_name()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, commit {(git_state()['git_commit'] or 'n/a')[:10]}\n\n"
              f"`{' '.join(['python', 'bench/bench_trainer.py'] + sys.argv[1:])}`\n")
    if args.write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
        new = not os.path.exists(path)
        with open(path, "a") as f:
            if new:
                f.write("# Bench results\n\nLatest figures are appended at the end. Training time excludes "
                        "evaluation on both sides; examples/s counts training examples seen per second.\n")
            f.write(header + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
