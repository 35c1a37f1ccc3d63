"""The device's matmul peak: the denominator of MFU, and on CPUs the measurement `mixed_precision: auto` decides by.

Where a peak comes from, first match wins (the record names the source):

1. `HARNESS_PEAK_FLOPS` (FLOP/s of one process): one number for every precision ("3.1e11"), or per precision
   ("no=2.1e11,bf16=9.2e11": Accelerate's names no, bf16, fp16; a precision it does not name falls through to the
   next rule). For a machine whose
   peak you know better than the harness measures it (a shared machine, a GPU not in the table).
2. GPUs in GPU_PEAKS (the vendors' dense figures, no sparsity; fp32 = without TF32, torch's default for matmul).
3. Measured: the best of a few timed square-ish matmuls in this process, at the model's own shape
   ((batch x tokens) x hidden x 4*hidden, the FFN's) and at 2048 x 2048 x 2048, in fp32 and bf16 (a shape whose
   call would take over MAX_TIMED_S, as a dtype the device only emulates, on as many of its rows as fit). The
   peak is the higher of the two; both rates are recorded.

Measurements are cached per host in the harness cache folder (`OUTPUT_DIR/cache/device_peaks.json`), or in the
one file `HARNESS_PEAKS_FILE` names (the rates are the host's, not an output folder's: one file serves every
suite's outputs, and a new output folder does not time them anew), keyed by host name, CPU (or GPU) model, torch
version and thread count (a 1-thread worker has another peak than a 2-thread one), then by dtype and shape.

A peak is the best rate this host has shown, timed more than once and minutes apart: a shared machine has slow
spells lasting minutes (bench/RESULTS.md, 2026-12-03: the bf16 peak at one shape timed 201 GFLOP/s in one spell,
360 an hour before), and a peak timed in one would be too low for every MFU divided by it afterwards, so every
cell's MFU too high. A slow spell can only lower a timing, never raise it, so the cache keeps the highest rate and
how many timings it is the best of; a rate timed fewer than SAMPLES times is timed again when it is looked up at
least RESAMPLE_S after its last timing (at a cell's end, for its MFU), its timings MAX_TIMED_S at most each time. Two
workers writing a rate at once keep the better of theirs (the cache file's entry is merged, not replaced).
`auto`'s choice reads its matmul rates as cached, without timing them again: it stays for the host. An MFU
recorded before the rate settled may be higher than a later cell's peak would make it; the record carries the
number of timings behind its peak (`device_peak.samples`). Delete the file to measure anew.
"""

from __future__ import annotations

import datetime
import math
import os
import socket
import time

from harness import cpuinfo

CACHE_FILE = "device_peaks.json"
CACHE_VERSION = 1
ENV_OVERRIDE = "HARNESS_PEAK_FLOPS"
FILE_ENV = "HARNESS_PEAKS_FILE"   # the cache file for every output folder (else each folder's cache has its own)
# A cache holds a few rates per host and precision (kilobytes). A larger file named by HARNESS_PEAKS_FILE is
# another's, refused unread: the check read it whole (870 MB of memory for a 400 MB file, 51 MB for a small one)
MAX_CACHE_BYTES = 16 << 20
REFERENCE_SHAPE = (2048, 2048, 2048)
REPEATS = 5              # timings of a rate, each looped to MIN_TIMED_S, after a warm-up call and a sizing one
MIN_TIMED_S = 0.02       # a timing of a small shape loops the matmul until it lasts this long (timer resolution)
MAX_TIMED_S = 1.0        # a rate's timings stop once they have taken this long, and a shape whose call takes longer
                         # is timed on fewer rows: a slow dtype costs about a second, not minutes (bf16 on a CPU
                         # without bf16 instructions, emulated: on a 2-core AVX2 AMD EPYC 1.2 GFLOP/s at the FFN's
                         # shapes, 0.14 at 2048^3, 123 s a call, at every bf16 cell's end until four timings)
MAX_ROWS = 8192          # the model's shape: batch x tokens rows, capped (the rate has saturated long before)
SAMPLES = 4              # a rate is settled once it is the best of this many timings ...
RESAMPLE_S = 180.0       # ... taken at least this many seconds apart (the demo's 15 minutes see all four)

# dense peaks in FLOP/s per device: (name fragment, {precision: peak}); the first fragment found in
# torch.cuda.get_device_name() wins, so the more specific names come first
GPU_PEAKS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bf16": 989e12, "fp16": 989e12, "no": 67e12}),
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "no": 51e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "no": 67e12}),   # SXM
    ("A100", {"bf16": 312e12, "fp16": 312e12, "no": 19.5e12}),
]

# precision (Accelerate's name) -> the dtype whose matmul rate is its peak
DTYPE_OF = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}

measurements = 0   # timings actually run in this process (tests check that a cached rate is not measured again)


def cache_path(cache_dir: str | None) -> str | None:
    """The cache file: HARNESS_PEAKS_FILE where set, else the cache folder's; None: no file (this process's
    memo only)."""
    shared = os.environ.get(FILE_ENV, "").strip()
    if shared:
        return os.path.abspath(os.path.expanduser(shared))
    return os.path.join(cache_dir, CACHE_FILE) if cache_dir else None


def host_key(device: str = "cpu") -> str:
    """What a measured rate depends on: host, processor, torch version and (CPU) thread count."""
    import torch

    if device.startswith("cuda"):
        proc = torch.cuda.get_device_name(torch.device(device))
        threads = ""
    else:
        proc = cpuinfo.model_name(cpuinfo.text())
        threads = f"|threads={torch.get_num_threads()}"
    return f"{socket.gethostname()}|{proc}|torch={torch.__version__}{threads}"


def shape_key(dtype: str, shape: tuple[int, int, int]) -> str:
    return f"{dtype} {shape[0]}x{shape[1]}x{shape[2]}"


def model_shape(batch_size: int, tokens: int, hidden: int) -> tuple[int, int, int]:
    """The FFN's first matmul of one training batch: (batch x tokens) x hidden x 4*hidden."""
    return (max(1, min(MAX_ROWS, batch_size * tokens)), hidden, 4 * hidden)


def _load(path: str | None) -> dict:
    from harness import atomic

    # not one JSON object, or nested past the decoder's recursion limit: measured anew and written over (a cell
    # failed on 100,000 '[' with a RecursionError)
    data = (atomic.read_json_object(path) if path else None) or {}
    return data if data.get("version") == CACHE_VERSION else {}


def _store(path: str | None, host: str, key: str, entry: dict, merge=None) -> None:
    """Read-modify-write under an atomic rename. `merge(on_disk, entry)`: what to write where the file already
    holds the key (a rate: the best of both, so two workers timing at once cannot lower it); without it, two
    workers writing at once lose at most one entry, which is measured again next time."""
    if not path:
        return
    from harness import atomic

    data = _load(path) or {"version": CACHE_VERSION, "hosts": {}}
    entries = data.setdefault("hosts", {}).setdefault(host, {})
    entries[key] = merge(entries.get(key), entry) if merge else entry
    try:
        atomic.write_json(path, data)
    except OSError:
        pass   # a read-only cache folder: this process keeps its own (_memo), never fail a run for it


_memo: dict[tuple, dict] = {}   # per process and cache file (None: callers without a cache folder)


def _on_disk(path: str | None, host: str, key: str):
    """This host's entry under `key` in the cache file, or None."""
    return _load(path).get("hosts", {}).get(host, {}).get(key)


def time_matmul(dtype: str, shape: tuple[int, int, int], device: str = "cpu", repeats: int = REPEATS) -> float:
    """FLOP/s of the best of up to `repeats` timings of an (m x k) @ (k x n) matmul in `dtype` on `device`, after
    warm-up calls; the timings stop once they have taken MAX_TIMED_S (at least one is taken). A shape whose call
    would take longer is timed on the first rows whose call does not (at least one row), and a warm-up call that
    alone takes MAX_TIMED_S is the one timing."""
    import torch

    global measurements
    measurements += 1
    m, k, n = shape
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    gen = torch.Generator(device="cpu").manual_seed(0)   # never the global RNG: training's seed stays untouched
    a = torch.randn(m, k, generator=gen).to(device=device, dtype=dt)
    b = torch.randn(k, n, generator=gen).to(device=device, dtype=dt)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a[:1], b)   # the libraries' one-time setup (a GPU's handles, a CPU's thread pool), on one row
    sync()
    # warm-up: one row, then four times as many rows up to the whole shape while the next call is predicted (by
    # the last one) to take under MAX_TIMED_S; a slower shape (an emulated dtype: MAX_TIMED_S's comment) is timed
    # on the rows that fit, with the same kernel and inner dimensions
    rows, first = 0, 0.0
    while rows < m:
        more = min(m, max(1, 4 * rows))
        if rows and first * more / rows >= MAX_TIMED_S:
            break
        t0 = time.perf_counter()
        torch.mm(a[:more], b)
        sync()
        rows, first = more, time.perf_counter() - t0
    a = a[:rows]
    if first >= MAX_TIMED_S:   # a call this slow is its own timing: the shape's setup is noise next to it
        return 2.0 * rows * k * n / first
    t0 = time.perf_counter()
    torch.mm(a, b)
    sync()
    best = spent = time.perf_counter() - t0   # a timing like the others (after the warm-up)
    loops = max(1, int(MIN_TIMED_S / max(best, 1e-9)))
    for _ in range(repeats):
        if spent >= MAX_TIMED_S:
            break
        t0 = time.perf_counter()
        for _ in range(loops):
            torch.mm(a, b)
        sync()
        took = time.perf_counter() - t0
        best, spent = min(best, took / loops), spent + took
    return 2.0 * rows * k * n / best


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _when(entry: dict) -> datetime.datetime | None:
    try:
        at = datetime.datetime.fromisoformat(entry["measured_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=datetime.timezone.utc)


def _rate(entry) -> dict | None:
    """A cached rate in today's form ({"flops_per_s", "samples", "lowest", "measured_at"}), or None where there
    is none or it is damaged (then it is timed anew). An entry of an earlier cache, without the count, is one
    timing."""
    try:
        best = float(entry["flops_per_s"])
        samples = max(1, int(entry.get("samples", 1)))
        lowest = min(float(entry.get("lowest", best)), best)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return {"flops_per_s": best, "samples": samples, "lowest": lowest,
            "measured_at": entry.get("measured_at")} if best > 0 else None


def _merged(a, b) -> dict | None:
    """Two versions of one rate (the cache file's and this process's; the file's now and the one about to be
    written by this worker): the best rate of both, the slowest timing, the larger count, the later time."""
    a, b = _rate(a), _rate(b)
    if a is None or b is None:
        return a or b
    later = max((a, b), key=lambda e: _when(e) or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc))
    return {"flops_per_s": max(a["flops_per_s"], b["flops_per_s"]), "samples": max(a["samples"], b["samples"]),
            "lowest": min(a["lowest"], b["lowest"]), "measured_at": later["measured_at"]}


def _due(entry: dict) -> bool:
    """Whether a cached rate is to be timed once more: fewer than SAMPLES timings behind it, the last one at
    least RESAMPLE_S ago (or at an unreadable time)."""
    if entry["samples"] >= SAMPLES:
        return False
    last = _when(entry)
    return last is None or (_now() - last).total_seconds() >= RESAMPLE_S


def matmul_rate(dtype: str, shape: tuple[int, int, int], cache_dir: str | None = None, device: str = "cpu",
                fresh: bool = False, resample: bool = True) -> dict:
    """{"flops_per_s", "samples", "lowest", "measured_at", "cached"} for one dtype and shape on this host: the
    best of its timings so far ("samples" of them, the slowest "lowest"). From the cache when it holds a settled
    rate (or one timed less than RESAMPLE_S ago), else timed now and merged: the best stays. `fresh`: time it now
    whatever the cache holds (bench/: a peak measured next to the work it divides). `resample=False`: any cached
    rate as it is (`auto`'s choice: made once, it stays for the host)."""
    host, key = host_key(device), shape_key(dtype, tuple(shape))
    path = cache_path(cache_dir)
    entry = _merged(_on_disk(path, host, key), _memo.get((path, host, key)))
    if entry and not fresh and not (resample and _due(entry)):
        return {**entry, "cached": True}
    rate = time_matmul(dtype, tuple(shape), device)
    entry = _merged(entry, {"flops_per_s": rate, "samples": (entry or {}).get("samples", 0) + 1, "lowest": rate,
                            "measured_at": _now().isoformat(timespec="seconds")})
    _memo[(path, host, key)] = entry
    _store(path, host, key, entry, merge=_merged)
    return {**entry, "cached": False}


def cached_value(key: str, measure, cache_dir: str | None = None, device: str = "cpu") -> dict:
    """{"value", "measured_at", "cached"} for any measurement of this host under `key`: from the cache when it has
    it, else `measure()` now (and cached)."""
    host = host_key(device)
    path = cache_path(cache_dir)
    entry = _on_disk(path, host, key) or _memo.get((path, host, key))
    if entry and "value" in entry:   # None too: "could not be measured" is an answer worth keeping
        return {**entry, "cached": True}
    global measurements
    measurements += 1
    entry = {"value": measure(), "measured_at": _now().isoformat(timespec="seconds")}
    _memo[(path, host, key)] = entry
    _store(path, host, key, entry)
    return {**entry, "cached": False}


def override(precision: str) -> float | None:
    """HARNESS_PEAK_FLOPS for this precision, or None. Raises ValueError on a value anywhere in it that is not a
    positive, finite number or names no precision (one line naming the variable): read whole, so that a cell
    refuses it at its start whatever precision it runs in."""
    text = os.environ.get(ENV_OVERRIDE, "").strip()
    if not text:
        return None
    try:
        if "=" not in text:
            peaks = {None: float(text)}   # every precision
        else:
            peaks = {name: float(value) for name, value in (p.split("=", 1) for p in text.replace(" ", "").split(",")
                                                             if p)}
    except ValueError:
        raise ValueError(f"${ENV_OVERRIDE}: not FLOP/s: {text!r}; give a number (3.1e11) or one per precision "
                         f"(no=2.1e11,bf16=9.2e11)") from None
    unknown = [name for name in peaks if name is not None and name not in DTYPE_OF]
    if unknown:   # fp32=... was never read: the peak measured instead, as if the variable were unset
        raise ValueError(f"${ENV_OVERRIDE}: no precision {unknown[0]!r} in {text!r} (the precisions: "
                         f"{', '.join(DTYPE_OF)})")
    if not all(value > 0 and math.isfinite(value) for value in peaks.values()):   # inf: every MFU 0
        raise ValueError(f"${ENV_OVERRIDE}: the peak must be a positive number of FLOP/s, not {text!r}")
    return peaks.get(precision, peaks.get(None))


def check_variables() -> None:
    """HARNESS_PEAK_FLOPS and HARNESS_PEAKS_FILE, checked as `harness run` starts (bad input: an InputError). Each
    cell read the first at its start, so a bad value failed every cell in turn, the store created; the second,
    a folder or a path under a file, was never written, and silently: every process timed the rates again
    (seconds per cell end) and made `auto`'s choice anew; another file (no JSON) was replaced by the cache."""
    from harness.atomic import file_in_the_way
    from harness.spec.errors import InputError
    from harness.spec.variables import env_text

    env_text(ENV_OVERRIDE), env_text(FILE_ENV)   # set but blank: refused, as every variable's
    try:
        override("no")
    except ValueError as e:
        raise InputError(str(e)) from None
    path = cache_path(None)
    if path and os.path.isdir(path):
        raise InputError(f"${FILE_ENV}: {path} is a folder, not a file")
    blocking = path and file_in_the_way(os.path.dirname(path))
    if blocking:
        raise InputError(f"${FILE_ENV}: {blocking} is a file, not a folder")
    if path and os.path.isfile(path) and os.path.getsize(path) and not _is_a_cache(path):
        # a file of the user's (a typo, another program's, its JSON too): the first cell's end replaced it
        raise InputError(f"${FILE_ENV}: {path} is not a peaks cache (a JSON file): name a new file")


def _is_a_cache(path: str) -> bool:
    """A JSON object that is empty or has a "version" (every cache written has one, older versions too: _load
    starts those anew), of at most MAX_CACHE_BYTES."""
    from harness import atomic

    if os.path.getsize(path) > MAX_CACHE_BYTES:
        return False
    data = atomic.read_json_object(path)   # None: no JSON object (nested past the decoder's limit too, as _load)
    return data is not None and (not data or "version" in data)


def gpu_table_peak(name: str, precision: str) -> float | None:
    for fragment, peaks in GPU_PEAKS:
        if fragment.lower() in name.lower():
            return peaks.get(precision)
    return None


def device_peak(precision: str, device: str = "cpu", cache_dir: str | None = None,
                shape: tuple[int, int, int] | None = None, fresh: bool = False) -> dict:
    """The peak FLOP/s of one process of this device for `precision` ("no", "bf16", "fp16"):
    {"flops_per_s", "source" ("env" | "gpu_table" | "measured"), "precision", ...}; a measured peak carries the
    rate at each shape timed ("rates") and how many timings each is the best of ("samples"). `fresh`: every
    rate timed once more now (matmul_rate)."""
    value = override(precision)
    if value is not None:
        return {"flops_per_s": value, "source": "env", "precision": precision}
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
        value = gpu_table_peak(name, precision)
        if value is not None:
            return {"flops_per_s": value, "source": "gpu_table", "precision": precision, "device": name}
    dtype = DTYPE_OF.get(precision, "fp32")
    shapes = [REFERENCE_SHAPE] + ([tuple(shape)] if shape and tuple(shape) != REFERENCE_SHAPE else [])
    timed = {shape_key(dtype, s): matmul_rate(dtype, s, cache_dir, device, fresh=fresh) for s in shapes}
    rates = {k: t["flops_per_s"] for k, t in timed.items()}
    return {"flops_per_s": max(rates.values()), "source": "measured", "precision": precision,
            "host": host_key(device), "rates": rates, "samples": {k: t["samples"] for k, t in timed.items()}}
