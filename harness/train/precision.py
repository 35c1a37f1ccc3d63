"""Which mixed precision a cell runs in: `auto` picks bf16 where the hardware computes it natively.

On CPU that is read from the CPU's own feature flags, not guessed from the vendor or the torch build: oneDNN
also runs bf16 on plain AVX-512 by emulation (torch.ops.mkldnn._is_mkldnn_bf16_supported() says yes there),
which is slower than fp32. Master weights stay fp32 in every case (Accelerate autocasts the forward pass).
"""

from __future__ import annotations

import functools

# x86: AVX512-BF16 (Cooper Lake, Zen 4 and later) or AMX-BF16 (Sapphire Rapids and later) dot products;
# Arm: the BF16 extension (BFDOT / BFMMLA), listed as "bf16" in /proc/cpuinfo's Features line.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of /proc/cpuinfo's text ("flags" on x86, "Features" on Arm)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def bf16_in_flags(flags: set[str]) -> bool:
    return any(f in flags for f in X86_BF16_FLAGS + ARM_BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this machine's CPU has bf16 dot-product instructions (Linux; elsewhere False: fp32)."""
    try:
        with open("/proc/cpuinfo") as f:
            return bf16_in_flags(cpu_flags(f.read()))
    except OSError:
        return False


def resolve_precision(requested: str, cuda: bool | None = None) -> str:
    """`auto`: bf16 on GPUs that support it, else fp16 on GPUs; bf16 on CPUs with native bf16, else no."""
    if requested != "auto":
        return requested
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


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
