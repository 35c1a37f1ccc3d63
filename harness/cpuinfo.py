"""The CPU as Linux's /proc/cpuinfo describes it: its model name and its feature flags. One reader for the device
name every result carries (harness/store/env.py), the precision `auto` picks (harness/train/precision.py), the
peaks' cache key (harness/train/peaks.py) and the bench's headers. Where the file cannot be read: platform's
names and no flags."""

from __future__ import annotations

import functools
import os
import platform

# Instruction sets that decide which of torch's CPU kernels run and how fast, highest first. A VM may name two
# machines alike: this project's "AMD EPYC" was a Zen 4 with AVX512-BF16 on some draws and a Zen 1 with AVX2 only
# on others, 3.9x slower in the same precision (bench/RESULTS.md, 2026-12-04, sixth session), so results and
# estimates keep them apart by this level. x86 flags, then Arm's bf16 extension ("Features" line).
ISA_LEVELS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX512"), ("avx2", "AVX2"),
              ("bf16", "BF16"))
# The levels with bf16 dot-product instructions: x86 AMX-BF16 (Sapphire Rapids and later) or AVX512-BF16 (Cooper
# Lake, Zen 4 and later); Arm's BF16 extension (BFDOT / BFMMLA). Without them oneDNN emulates bf16, slower than
# fp32 (harness/train/precision.py)
BF16_LEVELS = ("AMX-BF16", "AVX512-BF16", "BF16")


@functools.lru_cache(maxsize=1)
def text() -> str:
    """This machine's /proc/cpuinfo ("" where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def flags(cpuinfo: str) -> set[str]:
    """The feature flags of /proc/cpuinfo's text ("flags" on x86, "Features" on Arm)."""
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            found.update(value.split())
    return found


def model_name(cpuinfo: str) -> str:
    """The first "model name" of /proc/cpuinfo's text, else platform's processor or machine name."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def isa(found: set[str]) -> str | None:
    """The highest of ISA_LEVELS these flags have (None: none of them)."""
    return next((label for flag, label in ISA_LEVELS if flag in found), None)


def has_bf16(found: set[str]) -> bool:
    """Whether these flags include bf16 dot-product instructions (BF16_LEVELS)."""
    return isa(found) in BF16_LEVELS


def processor(cpuinfo: str | None = None) -> str:
    """e.g. "AMD EPYC (AVX2)": model name and instruction-set level where known."""
    cpuinfo = text() if cpuinfo is None else cpuinfo
    level = isa(flags(cpuinfo))
    return f"{model_name(cpuinfo)}{f' ({level})' if level else ''}"


def describe(cpuinfo: str | None = None, cores: int | None = None) -> str:
    """e.g. "AMD EPYC (AVX2) x2": the processor and the cores (os.cpu_count)."""
    return f"{processor(cpuinfo)} x{cores or os.cpu_count()}"
