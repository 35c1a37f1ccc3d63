"""`mixed_precision: auto` on CPUs by measurement (harness/train/precision.py) and the device peaks it shares with
MFU (harness/train/peaks.py): the cached rates decide, a cached rate is not measured again, the record says what
was measured and chosen."""

from __future__ import annotations

import datetime
import json
import os
import socket

import pytest
import torch

from harness.train import peaks, precision

SHAPE = (256, 32, 128)


@pytest.fixture(autouse=True)
def cache_per_test(monkeypatch):
    """These tests write and read the cache folder they are given: not the session's one file (conftest.py)."""
    monkeypatch.delenv(peaks.FILE_ENV, raising=False)


def write_rates(cache_dir, fp32: float, bf16: float, shape=SHAPE, step: tuple[str, float, float] | None = None) -> str:
    """A cache file as previous measurements on this host would have left it: settled matmul rates at `shape`
    (the best of peaks.SAMPLES timings) and, with `step` = (key, fp32 s, bf16 s), a timed training step."""
    path = peaks.cache_path(str(cache_dir))
    os.makedirs(cache_dir, exist_ok=True)
    host = peaks.host_key()
    at = "2026-01-01T00:00:00+00:00"
    entries = {peaks.shape_key("fp32", shape): {"flops_per_s": fp32, "measured_at": at, "samples": peaks.SAMPLES},
               peaks.shape_key("bf16", shape): {"flops_per_s": bf16, "measured_at": at, "samples": peaks.SAMPLES}}
    if step:
        key, fp32_s, bf16_s = step
        entries[precision.step_cache_key(key)] = {"value": {"fp32": fp32_s, "bf16": bf16_s}, "measured_at": at}
    with open(path, "w") as f:
        json.dump({"version": peaks.CACHE_VERSION, "hosts": {host: entries}}, f)
    return path


@pytest.fixture()
def native_bf16(monkeypatch):
    """A CPU whose flags list bf16 dot products: the case where `auto` measures (without them it is fp32)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)


def test_auto_picks_fp32_where_bf16_measured_slower(tmp_path, native_bf16):
    write_rates(tmp_path, fp32=260e9, bf16=140e9)    # the Xeon of issue 20: bf16 at half the fp32 rate
    choice = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE)
    assert choice["chosen"] == "no" and choice["rates"] == {"fp32": 260e9, "bf16": 140e9} and choice["cached"]
    assert precision.resolve_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE) == "no"


def test_auto_picks_bf16_where_measured_faster_by_the_margin(tmp_path, native_bf16):
    write_rates(tmp_path, fp32=213e9, bf16=917e9)    # the EPYC
    assert precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE)["chosen"] == "bf16"
    write_rates(tmp_path, fp32=213e9, bf16=1.05 * 213e9)   # within the margin: fp32 (exact) wins
    assert precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE)["chosen"] == "no"


def test_no_bf16_instructions_means_fp32_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    before = peaks.measurements
    choice = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE)
    assert choice["chosen"] == "no" and "rates" not in choice and peaks.measurements == before
    for explicit in ("no", "bf16"):
        assert precision.resolve_precision(explicit, cuda=False, cache_dir=str(tmp_path)) == explicit
    # fp16 asked on a CPU trains in fp32 (Accelerate autocasts fp16 on GPUs only): chosen "no", said why
    fp16 = precision.choose_precision("fp16", cuda=False)
    assert fp16["requested"] == "fp16" and fp16["chosen"] == "no" and "GPUs only" in fp16["reason"]
    assert precision.resolve_precision("fp16", cuda=True) == "fp16"


def test_a_measurement_is_cached_and_reused(tmp_path, native_bf16):
    before = peaks.measurements
    first = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE)
    assert peaks.measurements == before + 2 and not first["cached"]       # fp32 and bf16, timed once each
    path = peaks.cache_path(str(tmp_path))
    data = json.loads(open(path).read())
    host = data["hosts"][peaks.host_key()]
    assert host[peaks.shape_key("fp32", SHAPE)]["flops_per_s"] == first["rates"]["fp32"] > 0
    assert socket.gethostname() in peaks.host_key() and f"threads={torch.get_num_threads()}" in peaks.host_key()
    mtime = os.stat(path).st_mtime_ns
    again = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE)
    assert peaks.measurements == before + 2 and again["cached"] and again["rates"] == first["rates"]
    assert again["chosen"] == first["chosen"] and os.stat(path).st_mtime_ns == mtime
    # another thread count is another process type: measured anew, beside the first
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE)
    finally:
        torch.set_num_threads(threads)
    assert peaks.measurements == before + 4 and len(json.loads(open(path).read())["hosts"]) == 2


@pytest.mark.parametrize("text", ["not a cache\n", "[" * 100_000], ids=["not_json", "nested_100000_deep"])
def test_a_cache_file_that_does_not_parse_is_measured_anew(tmp_path, text):
    """A cache file that is not one JSON document is measured anew and written over: one nested past the JSON
    decoder's recursion limit failed the cell that read it (`harness run`: "FAILED after 2s: RecursionError")."""
    path = peaks.cache_path(str(tmp_path))
    with open(path, "w") as f:
        f.write(text)
    before = peaks.measurements
    rate = peaks.matmul_rate("fp32", SHAPE, str(tmp_path))
    assert peaks.measurements == before + 1 and rate["flops_per_s"] > 0 and not rate["cached"]
    entry = json.loads(open(path).read())["hosts"][peaks.host_key()][peaks.shape_key("fp32", SHAPE)]
    assert entry["flops_per_s"] == rate["flops_per_s"]


def test_peak_sources_in_order(tmp_path, monkeypatch):
    write_rates(tmp_path, fp32=200e9, bf16=900e9, shape=peaks.REFERENCE_SHAPE)
    before = peaks.measurements
    measured = peaks.device_peak("bf16", "cpu", str(tmp_path))
    assert measured["source"] == "measured" and measured["flops_per_s"] == 900e9 and peaks.measurements == before
    monkeypatch.setenv("HARNESS_PEAK_FLOPS", "3.5e11")
    assert peaks.device_peak("no", "cpu", str(tmp_path)) == {"flops_per_s": 3.5e11, "source": "env", "precision": "no"}
    monkeypatch.setenv("HARNESS_PEAK_FLOPS", "bf16=1e12")     # names bf16 only: fp32 falls through to measured
    assert peaks.device_peak("bf16", "cpu", str(tmp_path))["flops_per_s"] == 1e12
    assert peaks.device_peak("no", "cpu", str(tmp_path))["source"] == "measured"
    for bad in ("fast", "-1", "bf16=x"):
        monkeypatch.setenv("HARNESS_PEAK_FLOPS", bad)
        with pytest.raises(ValueError, match=r"^\$HARNESS_PEAK_FLOPS: "):
            peaks.device_peak("bf16", "cpu", str(tmp_path))


def _entry(path, dtype="bf16", shape=SHAPE) -> dict:
    return json.loads(open(path).read())["hosts"][peaks.host_key()][peaks.shape_key(dtype, shape)]


def test_a_peak_is_the_best_of_timings_minutes_apart(tmp_path, monkeypatch):
    """A rate timed once is timed again when looked up RESAMPLE_S later, until SAMPLES timings are behind it; the
    best stays, a slower timing (a slow spell of the machine) never lowers it, and a fast one raises a rate that
    was timed in a slow spell."""
    clock = [peaks._now()]
    monkeypatch.setattr(peaks, "_now", lambda: clock[0])
    path = write_rates(tmp_path, fp32=1.0, bf16=1e18)
    data = json.loads(open(path).read())
    for entry in data["hosts"][peaks.host_key()].values():
        entry["samples"] = 1                      # a cache of a single timing each (as earlier versions wrote)
    with open(path, "w") as f:
        json.dump(data, f)
    before = peaks.measurements
    high = peaks.matmul_rate("bf16", SHAPE, str(tmp_path))
    assert peaks.measurements == before + 1 and not high["cached"]
    assert high["flops_per_s"] == 1e18 and high["samples"] == 2 and high["lowest"] < 1e18   # the best stays
    clock[0] += datetime.timedelta(seconds=peaks.RESAMPLE_S - 1)
    again = peaks.matmul_rate("bf16", SHAPE, str(tmp_path))      # timed less than RESAMPLE_S ago: not yet
    assert peaks.measurements == before + 1 and again["cached"] and _entry(path)["samples"] == 2
    low = peaks.matmul_rate("fp32", SHAPE, str(tmp_path))        # 1 FLOP/s: a slow spell's timing, raised
    assert low["flops_per_s"] > 1e6 and low["lowest"] == 1.0 and _entry(path, "fp32")["flops_per_s"] > 1e6
    # the count reaches SAMPLES, RESAMPLE_S apart each: then the rate is settled and never timed again
    for n in range(3, peaks.SAMPLES + 1):
        clock[0] += datetime.timedelta(seconds=peaks.RESAMPLE_S)
        assert peaks.matmul_rate("bf16", SHAPE, str(tmp_path))["samples"] == n == _entry(path)["samples"]
    settled = peaks.measurements
    clock[0] += datetime.timedelta(days=30)
    assert peaks.matmul_rate("bf16", SHAPE, str(tmp_path))["cached"] and peaks.measurements == settled
    # fresh: timed now whatever the cache holds (the bench's peak next to its work), merged the same way
    fresh = peaks.matmul_rate("bf16", SHAPE, str(tmp_path), fresh=True)
    assert not fresh["cached"] and fresh["samples"] == peaks.SAMPLES + 1 and fresh["flops_per_s"] == 1e18


def _put(path, key: str, entry: dict | None) -> None:
    """One entry of this host in the cache file, as another worker (or an earlier version) would write it."""
    data = json.loads(open(path).read()) if os.path.exists(path) else {"version": peaks.CACHE_VERSION, "hosts": {}}
    data["hosts"].setdefault(peaks.host_key(), {})[key] = entry
    with open(path, "w") as f:
        json.dump(data, f)


def test_two_workers_timing_a_rate_at_once_keep_the_better(tmp_path, monkeypatch):
    """This worker reads the rate, times it (in a slow spell), and meanwhile another worker writes a better
    timing: the file keeps the better one, not the last writer's."""
    path = peaks.cache_path(str(tmp_path))
    key = peaks.shape_key("bf16", SHAPE)
    _put(path, key, {"flops_per_s": 300e9, "samples": 1, "lowest": 300e9, "measured_at": "2026-01-01T00:00:00+00:00"})

    def slow_spell_while_another_worker_writes(*args, **kwargs):
        _put(path, key, {"flops_per_s": 400e9, "samples": 2, "lowest": 300e9, "measured_at": peaks._now().isoformat()})
        return 150e9

    monkeypatch.setattr(peaks, "time_matmul", slow_spell_while_another_worker_writes)
    mine = peaks.matmul_rate("bf16", SHAPE, str(tmp_path))
    assert mine["flops_per_s"] == 300e9 and mine["lowest"] == 150e9 and mine["samples"] == 2
    on_disk = _entry(path)
    assert on_disk["flops_per_s"] == 400e9 and on_disk["lowest"] == 150e9 and on_disk["samples"] == 2


def test_old_damaged_and_unwritable_cache_entries(tmp_path, monkeypatch):
    timings = []
    monkeypatch.setattr(peaks, "time_matmul", lambda *a, **k: timings.append(1) or 250e9)
    path = peaks.cache_path(str(tmp_path))
    key = peaks.shape_key("fp32", SHAPE)
    # an entry of an earlier cache version (no count, no slowest), timed a moment ago: served as one timing
    _put(path, key, {"flops_per_s": 200e9, "measured_at": peaks._now().isoformat()})
    old = peaks.matmul_rate("fp32", SHAPE, str(tmp_path))
    assert old["cached"] and old["samples"] == 1 and old["lowest"] == 200e9 and not timings
    # damaged entries are timed anew (each in a new process: nothing of this one's in memory), never fail a cell
    for damaged in ({"flops_per_s": 200e9, "samples": "many"}, {"flops_per_s": "fast"}, {"flops_per_s": -1.0},
                    ["not", "an", "entry"]):
        _put(path, key, damaged)
        monkeypatch.setattr(peaks, "_memo", {})
        assert peaks.matmul_rate("fp32", SHAPE, str(tmp_path))["flops_per_s"] == 250e9
    assert len(timings) == 4
    _put(path, key, {"flops_per_s": 200e9, "samples": 1, "measured_at": "last Tuesday"})   # an unreadable time
    monkeypatch.setattr(peaks, "_memo", {})
    assert peaks.matmul_rate("fp32", SHAPE, str(tmp_path))["samples"] == 2 and len(timings) == 5
    # a cache folder that cannot be written: this process's newer answer counts, not the file's old one, so the
    # rate is not timed again at every lookup
    _put(path, key, {"flops_per_s": 200e9, "samples": 1, "measured_at": "2026-01-01T00:00:00+00:00"})
    monkeypatch.setattr(peaks, "_memo", {})
    from harness import atomic

    def read_only(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(atomic, "write_json", read_only)
    assert peaks.matmul_rate("fp32", SHAPE, str(tmp_path))["samples"] == 2 and len(timings) == 6
    again = peaks.matmul_rate("fp32", SHAPE, str(tmp_path))
    assert again["cached"] and again["samples"] == 2 and len(timings) == 6
    # without a cache folder (this process only) a rate becomes due the same way
    peaks.matmul_rate("bf16", SHAPE)
    memo_key = (None, peaks.host_key(), peaks.shape_key("bf16", SHAPE))
    before = len(timings)
    assert peaks.matmul_rate("bf16", SHAPE)["cached"] and len(timings) == before
    peaks._memo[memo_key] = {**peaks._memo[memo_key], "measured_at": "2026-01-01T00:00:00+00:00", "samples": 1}
    assert not peaks.matmul_rate("bf16", SHAPE)["cached"] and len(timings) == before + 1


def test_auto_reads_its_rates_without_timing_them_again(tmp_path, native_bf16):
    """The choice is made once per host: rates of one timing, due again for MFU, are read as they are."""
    path = write_rates(tmp_path, fp32=213e9, bf16=917e9)
    data = json.loads(open(path).read())
    for entry in data["hosts"][peaks.host_key()].values():
        entry["samples"] = 1
    with open(path, "w") as f:
        json.dump(data, f)
    before = peaks.measurements
    choice = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE)
    assert choice["chosen"] == "bf16" and choice["cached"] and peaks.measurements == before


def test_a_measured_peak_says_how_many_timings_it_is_the_best_of(tmp_path):
    write_rates(tmp_path, fp32=200e9, bf16=900e9, shape=peaks.REFERENCE_SHAPE)
    peak = peaks.device_peak("bf16", "cpu", str(tmp_path))
    assert peak["samples"] == {peaks.shape_key("bf16", peaks.REFERENCE_SHAPE): peaks.SAMPLES}
    first = peaks.device_peak("bf16", "cpu", str(tmp_path), shape=SHAPE)     # a shape not in the cache
    assert first["samples"][peaks.shape_key("bf16", SHAPE)] == 1 and first["flops_per_s"] == 900e9


def test_one_peaks_file_serves_every_output_folder(tmp_path, monkeypatch):
    """HARNESS_PEAKS_FILE: a rate timed for one output folder's cells is read, not timed again, for another's and
    in another process (the rates are the host's); without it each cache folder has its own file."""
    shared = tmp_path / "host" / "peaks.json"
    monkeypatch.setenv(peaks.FILE_ENV, str(shared))
    before = peaks.measurements
    first = peaks.matmul_rate("fp32", SHAPE, str(tmp_path / "a"))
    peaks._memo.clear()   # what another process starts with: only the file
    second = peaks.matmul_rate("fp32", SHAPE, str(tmp_path / "b"))
    assert not first["cached"] and second["cached"] and peaks.measurements == before + 1
    assert second["flops_per_s"] == first["flops_per_s"] and shared.exists()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    monkeypatch.delenv(peaks.FILE_ENV)
    for folder in ("c", "d"):
        assert not peaks.matmul_rate("fp32", SHAPE, str(tmp_path / folder))["cached"]
    assert peaks.measurements == before + 3 and (tmp_path / "d" / peaks.CACHE_FILE).exists()


def test_a_slow_matmul_is_timed_in_bounded_time(monkeypatch):
    """A dtype the CPU only emulates (bf16 without bf16 instructions: two minutes per 2048^3 call on a 2-core AVX2
    EPYC) is timed in about MAX_TIMED_S: on the first rows whose call fits in it (the rate per FLOP of the whole
    shape where time grows with the rows), by one call where a single row takes that long, by fewer timings where
    each is long; a fast one still gets all its timings at the whole shape."""
    calls, real_mm, clock = [], torch.mm, [0.0]

    def mm_taking(seconds_per_row):
        def mm(a, b):
            calls.append(len(a))
            clock[0] += seconds_per_row * len(a)
            return real_mm(a, b)
        return mm

    monkeypatch.setattr(peaks.time, "perf_counter", lambda: clock[0])
    budget = peaks.MAX_TIMED_S
    monkeypatch.setattr(torch, "mm", mm_taking(0.05 * budget))   # the whole 8 rows: 0.4 of the budget
    assert peaks.time_matmul("fp32", (8, 8, 8)) == pytest.approx(2 * 8 ** 3 / (0.4 * budget))
    # setup, warm-ups on 1, 4 and 8 rows, the sizing call (0.4), two timings (0.8, 1.2): past MAX_TIMED_S
    assert calls == [1, 1, 4, 8, 8, 8, 8]
    calls.clear()
    clock[0] = 0.0
    monkeypatch.setattr(torch, "mm", mm_taking(0.1 * budget))    # 64 rows would take 6.4 budgets: 4 rows timed
    assert peaks.time_matmul("fp32", (64, 8, 8)) == pytest.approx(2 * 64 * 8 * 8 / (6.4 * budget))
    assert calls == [1, 1, 4, 4, 4, 4] and clock[0] == pytest.approx(1.8 * budget)   # 0.2 of it untimed setup
    calls.clear()
    monkeypatch.setattr(torch, "mm", mm_taking(2 * budget))      # one row alone is past the budget: one timing
    assert peaks.time_matmul("fp32", (8, 8, 8)) == pytest.approx(2 * 8 * 8 / (2 * budget))
    assert calls == [1, 1]
    calls.clear()
    monkeypatch.setattr(peaks, "MIN_TIMED_S", 1 / 64)
    monkeypatch.setattr(torch, "mm", mm_taking(1 / 1024))        # fast: each timing loops 2 calls of 8 rows
    peaks.time_matmul("fp32", (8, 8, 8))
    assert calls == [1, 1, 4, 8, 8] + [8, 8] * peaks.REPEATS


def test_gpu_table():
    assert peaks.gpu_table_peak("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peaks.gpu_table_peak("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peaks.gpu_table_peak("NVIDIA H200", "bf16") == 989e12
    assert peaks.gpu_table_peak("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert peaks.gpu_table_peak("NVIDIA A100-SXM4-80GB", "no") == 19.5e12
    assert peaks.gpu_table_peak("Tesla T4", "bf16") is None     # not in the table: measured


def test_a_cell_records_what_auto_measured_and_chose(tiny_bert, small_glue, tmp_path, native_bf16):
    """Through the loop: the cache file decides (bf16 slower here), and the record says so."""
    from harness.spec.cell import Cell
    from harness.spec.methods import get_method
    from harness.spec.tasks import get_task
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    hp = dict(learning_rate=1e-3, batch_size=8, eval_batch_size=16, max_length=32, warmup_ratio=0.0,
              weight_decay=0.0, gradient_accumulation_steps=1, max_grad_norm=1.0, mixed_precision="auto",
              padding="dynamic", group_by_length=True, eval_steps=None)
    cell = Cell(suite="t", model=str(tiny_bert), task="rte", task_version=get_task("rte").version, method="full",
                method_params=get_method("full").resolve({}), budget={"max_steps": 2}, seed=1, hparams=hp)
    shape = peaks.model_shape(8, 32, 32)          # batch 8 x max_length 32 rows, hidden 32 (the tiny BERT)
    assert precision.cell_shape(cell) == shape
    step = precision.model_step(cell)
    assert step["key"].endswith(" 8x32")
    # the matmul says bf16 is 2x faster, a step of the model says it is slower: the step decides
    write_rates(tmp_path / "cache", fp32=50e9, bf16=100e9, shape=shape, step=(step["key"], 0.010, 0.013))
    before = peaks.measurements
    result = train_and_evaluate(cell, RunContext(str(small_glue), str(tmp_path / "cache"), show_progress=False))
    assert result.mixed_precision == "no"
    choice = result.precision_choice
    assert choice["chosen"] == "no" and choice["rates"] == {"fp32": 50e9, "bf16": 100e9}
    assert choice["step_s"] == {"fp32": 0.010, "bf16": 0.013} and "training step" in choice["reason"]
    assert result.device_peak["source"] == "measured" and result.mfu > 0
    assert peaks.measurements == before + 1    # only MFU's 2048^3 fp32 peak was not in the cache


def test_a_timed_step_of_the_model(tiny_bert, native_bf16, tmp_path, monkeypatch):
    """The step is really timed (both precisions in turn, cached like the rates), and runs without touching the
    global RNG (the cell's seeded draws come after it)."""
    from harness.spec.cell import Cell

    cell = Cell(suite="t", model=str(tiny_bert), task="rte", task_version=1, method="full", method_params={},
                budget={"max_steps": 1}, seed=1, hparams={"batch_size": 4, "max_length": 16})
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    before = peaks.measurements
    calls = []
    alternated = precision.alternated
    monkeypatch.setattr(precision, "alternated",
                        lambda timers, rounds, **kw: calls.append((tuple(timers), rounds, kw))
                        or alternated(timers, rounds, **kw))
    choice = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE,
                                        step=precision.model_step(cell))
    assert torch.equal(torch.rand(3), expected)
    # the steps were timed in turn, over a window longer than three tiny steps
    assert calls == [(("fp32", "bf16"), precision.STEP_ROUNDS, {"window_s": precision.STEP_WINDOW_S})]
    # the two matmul rates and one alternated timing of the step
    assert choice["step_s"]["fp32"] > 0 and choice["step_s"]["bf16"] > 0 and peaks.measurements == before + 3
    assert not choice["cached"]
    again = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE,
                                       step=precision.model_step(cell))
    assert peaks.measurements == before + 3 and len(calls) == 1
    assert again["cached"] and again["step_s"] == choice["step_s"]   # the pair read back from the cache file


def test_a_warm_up_step_over_the_cap_is_not_timed(tiny_bert, monkeypatch):
    from harness.spec.cell import Cell

    cell = Cell(suite="t", model=str(tiny_bert), task="rte", task_version=1, method="full", method_params={},
                budget={"max_steps": 1}, seed=1, hparams={"batch_size": 4, "max_length": 16})
    step = precision.model_step(cell)
    monkeypatch.setattr(precision, "alternated", lambda *a, **kw: pytest.fail("timed after a slow warm-up"))
    monkeypatch.setattr(precision, "STEP_TIME_CAP_S", 0.0)
    assert step["time"]() is None


def test_a_damaged_step_entry_leaves_the_matmul_to_decide(tmp_path, native_bf16):
    """A cache file edited by hand (a precision missing, a zero time) is not divided by: the matmul decides."""
    for damaged in ({"fp32": 0.01}, {"fp32": 0.0, "bf16": 0.01}, [0.01, 0.02]):
        path = write_rates(tmp_path, fp32=100e9, bf16=300e9)
        with open(path) as f:
            data = json.load(f)
        key = precision.step_cache_key("bert:0 8x128")
        data["hosts"][peaks.host_key()][key] = {"value": damaged, "measured_at": "x"}
        with open(path, "w") as f:
            json.dump(data, f)
        step = {"key": "bert:0 8x128", "time": lambda: pytest.fail("measured although cached")}
        choice = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE, step=step)
        assert choice["chosen"] == "bf16" and "step_s" not in choice and "matmul" in choice["reason"]


def test_a_step_too_slow_to_time_leaves_the_matmul_to_decide(tmp_path, native_bf16, monkeypatch):
    calls = []

    def slow():
        calls.append("timed")
        return None            # a warm-up step took longer than STEP_TIME_CAP_S

    write_rates(tmp_path, fp32=100e9, bf16=300e9)
    step = {"key": "bert:0 8x128", "time": slow}
    first = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE, step=step)
    assert first["chosen"] == "bf16" and "step_s" not in first and calls == ["timed"]
    again = precision.choose_precision("auto", cuda=False, cache_dir=str(tmp_path), shape=SHAPE, step=step)
    assert again["chosen"] == "bf16" and calls == ["timed"]     # the "too slow" answer is cached too


def test_the_precisions_are_timed_in_turn_so_a_slow_spell_falls_on_both():
    """bf16 1.2x as fast as fp32 while the machine runs at half speed for a while (the second half of the six
    timings). Timed one precision after the other, the slow spell fell on bf16 alone and fp32 looked faster;
    in turn, each precision has timings outside the spell."""
    clock = {"tick": 0}

    def timer(seconds):
        def run():
            slow = 2.0 if clock["tick"] >= 3 else 1.0
            clock["tick"] += 1
            return seconds * slow
        return run

    best = precision.alternated({"fp32": timer(1.2), "bf16": timer(1.0)}, rounds=3)
    assert clock["tick"] == 6
    assert best == {"fp32": 1.2, "bf16": 1.0}     # fp32 / bf16 = 1.2: bf16 (>= BF16_MARGIN)
    with pytest.raises(ValueError, match="rounds"):
        precision.alternated({"fp32": timer(1.0)}, rounds=0)


def test_a_burst_over_a_small_model_s_three_rounds_does_not_decide():
    """A tiny model's steps (fp32 14 ms, bf16 17 ms alone) timed while another process's burst fell on the fp32
    ones (0.23 s each, as a pytest session cached it): three rounds chose bf16 for the host; timed on over a
    window of a second, each precision has timings after the burst."""
    clock = {"tick": 0}

    def timer(seconds, burst=None):
        def run():
            clock["tick"] += 1
            return burst if burst is not None and clock["tick"] <= 6 else seconds
        return run

    def timers():
        clock["tick"] = 0
        return {"fp32": timer(0.014, burst=0.23), "bf16": timer(0.017)}

    short = precision.alternated(timers(), rounds=3)
    assert short["fp32"] / short["bf16"] >= precision.BF16_MARGIN      # the burst decided: bf16
    best = precision.alternated(timers(), rounds=3, window_s=1.0)
    assert best == {"fp32": 0.014, "bf16": 0.017} and best["fp32"] / best["bf16"] < precision.BF16_MARGIN
    assert 3 < clock["tick"] / 2 <= precision.STEP_MOST_ROUNDS
    precision.alternated(timers(), rounds=3, window_s=1e9, most=5)     # bounded: a window no timing fills
    assert clock["tick"] == 10
