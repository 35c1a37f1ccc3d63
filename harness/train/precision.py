"""Which mixed precision a cell runs in: `auto` picks bf16 where it is really faster.

GPUs: bf16 where supported, else fp16. CPUs: bf16 only when the CPU has bf16 dot-product instructions in its
own feature flags (oneDNN also runs bf16 on plain AVX-512 by emulation -- torch.ops.mkldnn._is_mkldnn_bf16_supported()
says yes there -- which is slower than fp32) AND bf16 is measured at least BF16_MARGIN times as fast: a training
step of the cell's model architecture timed in both (model_step), else a matmul at the model's own shape. The flag says the instruction exists, not that the kernels use it well: on a
2-core Xeon with AVX512-BF16, bf16 matmuls ran at half the fp32 rate and a training step 1.2-1.8x slower
(issue 20). The timings come from harness/train/peaks.py (cached per host, thread count and shape in the
cache folder: the step and the matmul rates this choice reads are timed once per host, so the choice stays) and
go into the record (`extra.precision_choice`). fp16 asked on a CPU is chosen as fp32: Accelerate autocasts fp16
on GPUs only. Master weights stay fp32 in every case (Accelerate autocasts the forward pass).
"""

from __future__ import annotations

import functools
import hashlib
import json

def cpu_has_native_bf16() -> bool:
    """True when this machine's CPU has bf16 dot-product instructions (Linux; elsewhere False: fp32)."""
    from harness import cpuinfo

    return cpuinfo.has_bf16(cpuinfo.flags(cpuinfo.text()))


BF16_MARGIN = 1.10   # bf16 must be this much faster than fp32: within the timing noise, fp32 (exact) wins
PRECISIONS = ("fp32", "bf16")   # what `auto` on a CPU measures, fp32 first


def choose_precision(requested: str, cuda: bool | None = None, cache_dir: str | None = None,
                     shape: tuple[int, int, int] | None = None, step: dict | None = None) -> dict:
    """{"requested", "chosen", "reason"} and, where `auto` measured on a CPU, "rates" (FLOP/s of the fp32 and
    bf16 matmul at `shape`, (rows x hidden x 4*hidden), default 2048^3) and "shape". `step` (model_step()):
    a training step of the cell's model, timed in fp32 and under bf16 autocast; where it gives times, they
    decide ("step_s"), else the matmul does. `cache_dir`: where the measurements are cached
    (harness/train/peaks.py); without one they are kept for this process only."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if requested == "fp16" and not cuda:
        # Accelerate autocasts fp16 on GPUs only: asked on a CPU, the cell trains in fp32, and its record says so
        # (mixed_precision "no"; the request stays in the cell's hparams and in this choice)
        return {"requested": "fp16", "chosen": "no", "reason": "fp16 autocast runs on GPUs only (Accelerate): "
                                                                 "on a CPU the cell trains in fp32"}
    if requested != "auto":
        return {"requested": requested, "chosen": requested, "reason": "requested"}
    if cuda:
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return {"requested": "auto", "chosen": chosen, "reason": "gpu"}
    if not cpu_has_native_bf16():
        return {"requested": "auto", "chosen": "no", "reason": "no bf16 instructions in the CPU flags"}
    from harness.train import peaks

    shape = tuple(shape) if shape else peaks.REFERENCE_SHAPE
    # read as cached, not timed again (resample=False): MFU's peaks settle over a host's first minutes, and a
    # choice that followed them could change between the cells of one suite
    rates = {dtype: peaks.matmul_rate(dtype, shape, cache_dir, resample=False) for dtype in PRECISIONS}
    ratio = rates["bf16"]["flops_per_s"] / rates["fp32"]["flops_per_s"]
    out = {"requested": "auto", "shape": list(shape),
           "rates": {dtype: r["flops_per_s"] for dtype, r in rates.items()},
           "cached": all(r["cached"] for r in rates.values())}
    decided_by = f"bf16 matmul {ratio:.2f}x fp32"
    if step is not None:   # a training step of the model decides where it was timed: it is what a cell runs
        timed = peaks.cached_value(step_cache_key(step["key"]), step["time"], cache_dir)
        times = timed["value"]   # None: a step too slow to time (that answer is cached too)
        if isinstance(times, dict) and all(isinstance(times.get(p), (int, float)) and times[p] > 0
                                           for p in PRECISIONS):   # else (a damaged cache file) the matmul decides
            ratio = times["fp32"] / times["bf16"]
            decided_by = f"bf16 training step {ratio:.2f}x as fast as fp32 ({decided_by})"
            out["step_s"] = {p: times[p] for p in PRECISIONS}
            out["step"] = step["key"]
            out["cached"] = out["cached"] and timed["cached"]
    out["chosen"] = "bf16" if ratio >= BF16_MARGIN else "no"
    out["reason"] = f"{decided_by} (bf16 needs >= {BF16_MARGIN:.2f}x)"
    return out


def resolve_precision(requested: str, cuda: bool | None = None, cache_dir: str | None = None,
                      shape: tuple[int, int, int] | None = None) -> str:
    """`auto`: bf16 on GPUs that support it, else fp16 on GPUs; on CPUs bf16 only where measured faster
    (choose_precision), else no."""
    return choose_precision(requested, cuda, cache_dir, shape)["chosen"]


STEP_TIME_CAP_S = 5.0   # a model whose warm-up step takes longer is not timed: the matmul decides
STEP_ROUNDS = 3         # timed steps per precision, after one warm-up step each, at least ...
STEP_WINDOW_S = 1.0     # ... and more until the timed steps add up to this long (a small model's steps: ms) ...
STEP_MOST_ROUNDS = 200  # ... but no more rounds than this


def alternated(timers: dict, rounds: int, window_s: float = 0.0, most: int = STEP_MOST_ROUNDS) -> dict:
    """The best of `rounds` timings of each timer, the timers run in turn (fp32, bf16, fp32, bf16, ...): a shared
    machine's speed drifts by 10-20% within a minute, and timing one precision after the other let a slow spell
    fall on one of them only (a 2-core EPYC chose fp32 once, its bf16 steps timed 0.93x fp32's, and bf16 the
    next time at 1.19x). In turn, both see the same spells. More rounds (up to `most`) until the timings add up
    to `window_s`: three rounds of a tiny model's 5-15 ms steps last 50 ms, shorter than a burst of another
    process (a sibling starting up: the test suite's second worker), and a burst over them decided for the
    whole host (a cached choice: bf16 at fp32 0.23 s / bf16 0.027 s, where the steps take 0.014 / 0.017 s
    alone, and the cells then trained 2.4x slower than in fp32); the best of a longer window sees past it."""
    if rounds < 1:
        raise ValueError(f"rounds: at least 1, got {rounds}")
    best = {name: float("inf") for name in timers}
    done, spent = 0, 0.0
    while done < rounds or (spent < window_s and done < most):
        for name, timer in timers.items():
            seconds = timer()
            best[name] = min(best[name], seconds)
            spent += seconds
        done += 1
    return best


def step_cache_key(key: str) -> str:
    """Where a timed step is cached: the precisions timed in turn, the bf16 step's attention as the loop trains it
    (models.training_forward; timings cached before either, or over a shorter window, are not read: measured again)."""
    return f"step {key} alternated over {STEP_WINDOW_S:g} s, training attention"


def model_step(cell, model_base_dir: str = ".") -> dict | None:
    """A training step of the cell's model architecture for choose_precision: {"key", "time": f() ->
    {"fp32": s, "bf16": s} or None}. The encoder is built from its config (random weights, under a forked RNG,
    so the cell's own seeded draws are untouched) and times forward + backward of batch_size x max_length random
    tokens, in eval mode (no dropout: no RNG), with the attention kernels the loop trains with
    (models.training_forward: on a CPU in bf16, SDPA's math kernel; timed with the flash kernel's slow
    backward, bf16 would look slower than it trains). fp32 keeps torch's choice, the flash kernel, where a model
    with attention dropout trains with its attention written out (train/dropout.py): in fp32 the math kernel
    and the flash kernel are about as fast (RESULTS, 2026-12-03 night). One warm-up step per precision, then
    the best of STEP_ROUNDS steps each or more, over STEP_WINDOW_S, the precisions in turn (alternated); None (not timed) where a warm-up step
    took longer than STEP_TIME_CAP_S. model_step itself is None where the config cannot be read."""
    try:
        from transformers import AutoConfig

        from harness.spec.models import ModelSpec

        spec = ModelSpec(cell.model, cell.trust_remote_code, model_base_dir)
        source = spec.source()
        cfg = AutoConfig.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
    except Exception:
        return None
    batch, tokens = int(cell.hparams["batch_size"]), int(cell.hparams["max_length"])
    tokens = min(tokens, getattr(cfg, "max_position_embeddings", tokens) or tokens)

    def time_step() -> dict | None:
        import time

        import torch
        from transformers import AutoModel

        from harness.train.models import training_forward, with_attention

        with torch.random.fork_rng(devices=[]):   # the attention the cell's model will run
            model = with_attention(lambda attention: AutoModel.from_config(
                cfg, trust_remote_code=spec.trust_remote_code, attn_implementation=attention))
        model.eval()
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, getattr(cfg, "vocab_size", 1000), (batch, tokens), generator=gen)

        def once(dtype: str) -> float:
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"), \
                    training_forward("cpu", "bf16" if dtype == "bf16" else "no"):
                out = model(input_ids=ids).last_hidden_state
            out.float().mean().backward()
            model.zero_grad(set_to_none=True)
            return time.perf_counter() - t0

        for dtype in PRECISIONS:   # warm-up; fp32 first: a step too slow to time there is not timed in bf16
            if once(dtype) > STEP_TIME_CAP_S:
                return None
        return alternated({dtype: functools.partial(once, dtype) for dtype in PRECISIONS}, STEP_ROUNDS,
                          window_s=STEP_WINDOW_S)

    # the architecture decides a step's time, not the weights or where they came from
    arch = {k: v for k, v in sorted(cfg.to_dict().items()) if not k.startswith("_") and k != "transformers_version"}
    digest = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return {"key": f"{cfg.model_type}:{digest} {batch}x{tokens}", "time": time_step}


def cell_shape(cell, model_base_dir: str = ".") -> tuple[int, int, int] | None:
    """The model's own matmul shape for a cell: (batch_size x max_length) x hidden x 4*hidden, from the model's
    config (no weights loaded); None when the config cannot be read or names no hidden size."""
    try:
        from transformers import AutoConfig

        from harness.spec.models import ModelSpec
        from harness.train.peaks import model_shape

        spec = ModelSpec(cell.model, cell.trust_remote_code, model_base_dir)
        cfg = AutoConfig.from_pretrained(spec.source(), trust_remote_code=spec.trust_remote_code)
        hidden = next((getattr(cfg, a) for a in ("hidden_size", "dim", "d_model") if getattr(cfg, a, None)), None)
        if not hidden:
            return None
        return model_shape(int(cell.hparams["batch_size"]), int(cell.hparams["max_length"]), int(hidden))
    except Exception:   # the shape only tunes a measurement: loading the model reports the real error
        return None


def head_outside_autocast(model) -> list[str]:
    """Run the task head (the model's modules outside its pretrained encoder: BERT's classifier, RoBERTa's
    classification head, a QA model's qa_outputs) at its weights' precision, outside autocast.

    Under bf16 autocast a Linear returns bf16, whose 8-bit mantissa rounds a regression output near 2.5 to
    steps of 1/64: measured on STS-B (all-MiniLM-L6-v2, Pfeiffer adapter), the dev predictions of a half-trained
    model collapsed to one or two values and Pearson read 0.00. Class and span logits lose ties and resolution
    the same way. The head is a few thousand multiply-adds per example, so fp32 costs nothing; the encoder
    stays in bf16. Under DeepSpeed bf16 (weights in bf16) the head simply stays bf16. A model without a child
    named by its base_model_prefix is left alone (nothing tells its head from its encoder). Returns the names
    of the modules run this way."""
    import types

    from torch import nn

    prefix = getattr(model, "base_model_prefix", None)
    if not prefix or not isinstance(getattr(model, prefix, None), nn.Module):
        return []
    wrapped = []
    for name, module in model.named_children():
        if name == prefix or next(module.parameters(), None) is None or getattr(module, "_harness_full_precision", False):
            continue
        # bound to the module, so a deep copy runs the copy's weights; dtype and device are read at call time
        module.forward = types.MethodType(_forward_outside_autocast, module)
        module._harness_full_precision = True
        wrapped.append(name)
    return wrapped


def heads_in_full_precision(model) -> list[str]:
    """The head modules head_outside_autocast wrapped whose weights are fp32 (under DeepSpeed bf16 they are
    bf16, and the head computed in bf16 after all)."""
    import torch

    return [name for name, child in model.named_children() if getattr(child, "_harness_full_precision", False)
            and next(child.parameters()).dtype == torch.float32]


def _forward_outside_autocast(self, *args, **kwargs):
    import torch
    from torch.utils._pytree import tree_map

    weight = next(self.parameters())

    def cast(value):
        if torch.is_tensor(value) and value.is_floating_point() and value.dtype != weight.dtype:
            return value.to(weight.dtype)
        return value

    with torch.autocast(weight.device.type, enabled=False):
        return type(self).forward(self, *tree_map(cast, args), **tree_map(cast, kwargs))


PRETRAINED_NAMES = "_harness_pretrained_names"   # set by build_model before the method changes the model


def remember_pretrained(model) -> None:
    """Mark the model's own parameters (before a method adds adapters): only these may be stored in bf16 by
    cast_frozen_linears, never an adapter's weights (a saved adapter keeps its precision)."""
    setattr(model, PRETRAINED_NAMES, frozenset(n for n, _ in model.named_parameters()))


def cast_frozen_linears(model, dtype) -> int:
    """Store the frozen pretrained weights and biases of the encoder's Linear layers in the autocast dtype;
    returns how many numbers now take half the memory.

    Autocast keeps the bf16 copy of a weight for the rest of the forward only when the weight trains (its cache
    takes leaves that require grad): a frozen weight is cast again at every call, in training and in every
    evaluation batch -- a pass over 10.8 M fp32 numbers per forward for an adapter on MiniLM. Stored in bf16
    they are what autocast would have made of them (fp32 -> bf16 rounds the same way), so every output is
    bit-for-bit the same (tests/train/test_frozen_cast.py). Only Linear layers, which run under autocast:
    embeddings and LayerNorm compute in fp32 under autocast and keep their weights; the head runs outside
    autocast (head_outside_autocast) and is not in the encoder."""
    import torch
    from torch import nn

    names = getattr(model, PRETRAINED_NAMES, None)
    prefix = getattr(model, "base_model_prefix", None)
    encoder = getattr(model, prefix, None) if prefix else None
    if names is None or not isinstance(encoder, nn.Module):
        return 0
    # a weight tied to an embedding or a norm (one Parameter, two modules) is read outside autocast there too
    elsewhere = {id(p) for m in model.modules() if not isinstance(m, nn.Linear) for p in m.parameters(recurse=False)}
    cast = 0
    for mod_name, module in encoder.named_modules(prefix=prefix):
        if not isinstance(module, nn.Linear):
            continue
        for p_name, p in module.named_parameters(recurse=False):
            if (f"{mod_name}.{p_name}" in names and not p.requires_grad and p.dtype == torch.float32
                    and id(p) not in elsewhere):
                p.data = p.data.to(dtype)
                cast += p.numel()
    return cast


def cast_frozen_weights(members: list, mixed_precision: str, autocast: bool, deepspeed: bool,
                        weights_leave_cell: bool) -> dict | None:
    """A cell's models under bf16/fp16 autocast: their frozen Linear weights stored in that dtype
    (cast_frozen_linears); {"dtype", "params"} for the record, None where nothing was cast. Only where autocast
    really runs (`autocast`: Accelerate's native_amp; fp16 on a CPU runs in fp32 without it), not under DeepSpeed
    (it owns the weights' dtype), and not where the encoder's weights leave the cell (a sequential stage hands
    them over and its checksum reads them)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    if dtype is None or not autocast or deepspeed or weights_leave_cell:
        return None
    cast = sum(cast_frozen_linears(m, dtype) for m in members)
    return {"dtype": mixed_precision, "params": cast} if cast else None
