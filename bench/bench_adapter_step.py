"""Where an adapter cell's training step goes, next to full fine-tuning's (issue 10: adapters >= 1.4x).

One fixed batch (MRPC-like: batch 16 x 56 tokens) of the embedded model, bf16 autocast as the loop runs it
(fp32 master weights, head outside autocast, the encoder's frozen Linear weights stored in bf16 as the loop does:
harness/train/precision.py cast_frozen_linears), each forward in the loop's context (harness/train/models.py
training_forward: dropout masks drawn by harness/train/dropout.py, attention with dropout written out), fused
AdamW over the trainable parameters, clipping at 1.0. Each method is timed both ways, with and without that cast,
next to full fine-tuning, the three models' steps alternated one by one (the "vs full" column compares steps
taken at the same moments).
Times each phase of a step (median of --steps after --warmup): forward (with the loss), backward, clipping,
optimizer step + zero_grad. Also the plain model's forward with the `adapters` library initialised but no
adapter added, to separate the library's own per-layer cost from the adapter's.

With --dropout: instead, each method with the model's dropout, its masks drawn by torch and as the loop draws
them, against the same model with every dropout at 0, alternated: what drawing dropout's random masks costs a
step (torch's CPU generator is sequential; with dropout off, training attention also takes SDPA's fused kernel
instead of its math path).

  python bench/bench_adapter_step.py [--batch 16 --tokens 56 --steps 20 --precision bf16] [--dropout]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from harness.spec.tasks import get_task  # noqa: E402
from harness.spec.methods import get_method  # noqa: E402
from harness.train.methods import set_up  # noqa: E402
from harness.spec.models import ModelSpec  # noqa: E402
from harness.train.models import load_for_task, training_forward  # noqa: E402
from harness.train.params import head_parameter_names  # noqa: E402
from harness.train.precision import cast_frozen_linears, head_outside_autocast, remember_pretrained  # noqa: E402


def build(method: str, params: dict, cast_to=None):
    task = get_task("mrpc")
    _, model, missing = load_for_task(ModelSpec("minilm"), task)
    remember_pretrained(model)
    head = head_parameter_names(model, missing)
    m = get_method(method)
    set_up(model, method, m.resolve(params))
    for name, p in model.named_parameters():
        if name in head:
            p.requires_grad = True
    head_outside_autocast(model)
    if cast_to is not None:
        cast_frozen_linears(model, cast_to)
    return model.train()


def without_dropout(model):
    """The model with every dropout at 0: nn.Dropout modules, and the `dropout_prob` BERT's SDPA attention passes
    to the kernel."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "dropout_prob", None), float):
            module.dropout_prob = 0.0
    return model


def dropout_table(rows, batch, args, dtype, loop) -> None:
    print("| method | dropout | forward | backward | clip | optimizer | step | vs full as the loop |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    kinds = ["0.1, torch's masks (SDPA's math kernel draws them)", "0.1, as the loop (training_forward)",
             "off, torch's SDPA choice (flash)", "off, as the loop (training_forward)"]
    for label, method, params in rows:
        models = [build("full", {}, dtype)] if method != "full" else []
        models += [build(method, params, dtype), build(method, params, dtype),
                   without_dropout(build(method, params, dtype)), without_dropout(build(method, params, dtype))]
        contexts = ([loop] if method != "full" else []) + [None, loop, None, loop]
        times = step_times(models, batch, args.steps, args.warmup, dtype, contexts)
        names = (["full"] if method != "full" else []) + [label] * 4
        reference = times[0] if method != "full" else times[1]
        for name, kind, t in zip(names, (["0.1, as the loop"] if method != "full" else []) + kinds, times):
            print(f"| {name} | {kind} | {t['forward']:.0f} | {t['backward']:.0f} | {t['clip']:.1f} | "
                  f"{t['optimizer']:.1f} | {t['step']:.0f} | {reference['step'] / t['step']:.2f}x |", flush=True)


def step_times(models: list, batch, steps: int, warmup: int, dtype, contexts: list | None = None) -> list[dict]:
    """Median ms per phase of each model's steps, the models' steps alternated one by one so that all of them
    see the same moments of a shared machine (its speed drifts by 10-20% over a minute here). `contexts`: per
    model, a callable giving the context its forward pass runs in (None: none)."""
    runs = []
    for model, context in zip(models, contexts or [None] * len(models)):
        trainable = [p for p in model.parameters() if p.requires_grad]
        runs.append((model, trainable, torch.optim.AdamW(trainable, lr=1e-5, fused=True),
                     {"forward": [], "backward": [], "clip": [], "optimizer": []}, context or contextlib.nullcontext))
    for i in range(warmup + steps):
        for model, trainable, opt, phases, context in runs:
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None), context():
                loss = model(**batch).loss
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            t3 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t4 = time.perf_counter()
            if i >= warmup:
                for k, (a, b) in zip(phases, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                    phases[k].append(1000 * (b - a))
    out = []
    for *_, phases, _ in runs:
        med = {k: statistics.median(v) for k, v in phases.items()}
        med["step"] = sum(med.values())
        out.append(med)
    return out


def forward_only(model, batch, steps, warmup, dtype) -> float:
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            model(**batch)
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=56)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precision", choices=("bf16", "no"), default="bf16")
    ap.add_argument("--dropout", action="store_true", help="each method with its dropout against dropout off")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 30000, (args.batch, args.tokens)),
             "attention_mask": torch.ones(args.batch, args.tokens, dtype=torch.long),
             "token_type_ids": torch.zeros(args.batch, args.tokens, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch,))}
    rows = [("full", "full", {}), ("pfeiffer 64", "pfeiffer", {"size": 64}), ("houlsby 64", "houlsby", {"size": 64}),
            ("lora r8", "lora", {"rank": 8}), ("layernorm", "layernorm", {})]
    print(f"batch {args.batch} x {args.tokens} tokens, {args.precision}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median ms of {args.steps} steps after {args.warmup}")
    loop = functools.partial(training_forward, "cpu", args.precision)   # every step's forward as the loop's
    if args.dropout:
        dropout_table(rows, batch, args, dtype, loop)
        return 0
    print("| method | frozen weights | forward | backward | clip | optimizer | step | vs full |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    full = build("full", {})
    for label, method, params in rows[1:]:   # each method with and without the cast, next to full fine-tuning
        casts = (None, dtype) if dtype is not None else (None,)
        models = [full, *(build(method, params, c) for c in casts)]
        times = step_times(models, batch, args.steps, args.warmup, dtype, [loop] * len(models))
        for name, kept, t in zip(("full", label, label), ("none", "fp32, cast every forward", "bf16 (as the loop)"),
                                 times):
            print(f"| {name} | {kept} | {t['forward']:.0f} | {t['backward']:.0f} | {t['clip']:.1f} | "
                  f"{t['optimizer']:.1f} | {t['step']:.0f} | {times[0]['step'] / t['step']:.2f}x |", flush=True)
    plain = build("full", {}).eval()
    lib = build("layernorm", {}).eval()     # layernorm's setup does not touch the model's modules
    import adapters

    adapters.init(lib)
    pf = build("pfeiffer", {"size": 64}).eval()
    print(f"\nforward only (no_grad, eval): plain model {forward_only(plain, batch, args.steps, args.warmup, dtype):.0f} ms, "
          f"adapters.init without an adapter {forward_only(lib, batch, args.steps, args.warmup, dtype):.0f} ms, "
          f"with a Pfeiffer adapter {forward_only(pf, batch, args.steps, args.warmup, dtype):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
