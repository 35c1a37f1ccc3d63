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
