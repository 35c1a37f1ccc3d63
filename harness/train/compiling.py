"""torch.compile behind the `compile` hparam: auto (the default), true or false.

Compiled, each task's model has its forward (and so its backward) run by inductor's generated kernels, fused,
without the Python overhead of each module and op: what a step at a small shape mostly is. It is compiled in
place (nn.Module.compile), so the module, its parameter names, the checkpoint and the saved adapter stay as
they are. `dynamic=True`: one graph serves every padded length and batch size (static graphs would be compiled
again for each new length, each compile as long as the first, up to torch's recompile limit, past which torch
silently runs eager); padded lengths are rounded up to a multiple of PAD_MULTIPLE, which keeps the shapes few
and aligned for GPU tensor cores. Compiling happens in the first training step (in train_time_s, as it should:
it is part of what training costs) and in the first evaluation (eval_time_s), in every cell anew (release()).
The FLOP count's batches run eager (harness/train/flops.py).

The record says whether it ran: extra.compiled.
"""

from __future__ import annotations

# Device types `auto` compiles on. Not CPUs: on this project's 2-core AVX512-BF16 CPU, compiling the embedded model
# took 24-82 s per cell (torch's on-disk cache shortens later compiles, not the first), longer than a demo cell
# trains, and the compiled step was no faster: 0.84-0.96x eager in bf16, 0.85-1.21x in fp32; on the 2-core
# AVX2-only one (fp32), 63-128 s and 0.76-1.03x (bench_step.py --modes compile; bench/RESULTS.md).
AUTO_DEVICES = ("cuda",)
# ... and there only for a cell that plans at least this many optimizer steps: compiling costs a minute or two per
# cell and pays back a little per step. On an H200 (bench/bench_gpu.py, 2026-12-04: BERT-base on MRPC, batch 32 x
# 128 tokens, bf16) compiling added 61 s (full fine-tuning) and 117 s (Houlsby) to a cell's training time, and the
# mean step went from 44.4 to 41.0 ms and from 58.9 to 39.2 ms: it paid after ~17,700 and ~5,900 steps. The
# host, not the GPU, set those steps' pace (GPU kernels ~11 ms of them). The threshold is where it paid for both:
# below it full fine-tuning loses time compiled. At 3 epochs in batches of 32: RTE, MRPC, STS-B, CoLA plan
# hundreds of steps, SST-2 6,315, QNLI 9,822 (eager), QQP 34,113, MNLI 36,816 (compiled); the demo's cells 126.
AUTO_MIN_STEPS = 18_000
# Padded lengths are rounded up to a multiple of this (when max_length is one, so no batch outgrows max_length):
# the Tensor Core tile of fp16/bf16 matmuls, and at most 7 padding tokens more per example.
PAD_MULTIPLE = 8


def chosen(setting, device_type: str, planned_steps: int, deepspeed: bool = False) -> bool:
    """Whether a cell compiles: `true` / `false` as set; `auto` on AUTO_DEVICES for a cell of at least
    AUTO_MIN_STEPS planned optimizer steps, not under DeepSpeed (ZeRO's parameter hooks break the graph into
    pieces)."""
    if setting == "auto":
        return device_type in AUTO_DEVICES and planned_steps >= AUTO_MIN_STEPS and not deepspeed
    return bool(setting)


def pad_multiple(hp: dict) -> int | None:
    """What the collator pads a compiled cell's batches to a multiple of (None: the batch's longest example)."""
    if hp["padding"] == "dynamic" and hp["max_length"] % PAD_MULTIPLE == 0:
        return PAD_MULTIPLE
    return None


def compile_models(models: list) -> None:
    """Each task's model compiled in place (a multi-task cell's members share the encoder: they are compiled
    one by one, each with its own head)."""
    for model in models:
        model.compile(dynamic=True)


def release() -> None:
    """After a compiled cell: forget its compiled code. Every cell then pays its own compile, whatever ran
    before it in the process, so train times compare between methods; and a long worker never reaches torch's
    recompile limit (8 variants of a function), past which it would silently run eager."""
    import torch

    torch._dynamo.reset()
