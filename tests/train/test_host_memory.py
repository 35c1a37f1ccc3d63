"""glibc's malloc in a CPU training process (harness/train/host_memory.py): the blocks a step frees are kept for
the next step (no page faults for full fine-tuning's 47 MB embedding gradient at every backward), and a cell's
peak RSS does not count the free blocks an earlier cell left in the heap. Each case runs in a fresh interpreter:
malloc's settings are the process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from harness.train import host_memory

pytestmark = pytest.mark.skipif(not host_memory.glibc_malloc(), reason="malloc is not glibc's")


def _thp_always() -> bool:
    """Transparent huge pages for every anonymous mapping: a fresh 47 MB mmap faults in 2 MiB pages, 24 faults."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


_RSS = """
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
"""


def _python(code: str) -> dict:
    # glibc's own defaults in the child: no MALLOC_*_ or GLIBC_TUNABLES inherited from the caller's shell
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kept", [False, True])
def test_a_steps_large_freed_block_is_reused_without_page_faults(kept):
    """What every step of full fine-tuning does: activations, then a zeroed 30,522 x 384 fp32 embedding
    gradient, used, freed. Unmapped at each free (glibc's default above 32 MiB), the gradient is faulted in
    again page by page at the next step; kept, the heap serves it again once it has settled (a few steps)."""
    out = _python(f"""
import json, resource, torch
from harness.train.host_memory import keep_freed_blocks
setting = keep_freed_blocks() if {kept} else None
def step():
    activations = [torch.ones(16, 56, 1536) for _ in range(6)]
    grad = torch.zeros(30522, 384)
    grad[7] += 1.0
    del activations
    loss = torch.ones(1000)
    del grad
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    step()
print(json.dumps({{"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "setting": setting}}))
""")
    grad_pages = 8 * 30522 * 384 * 4 // os.sysconf("SC_PAGE_SIZE")
    if kept:
        if out["setting"]["mmap_threshold"] is None:
            pytest.skip(f"{out['setting']['malloc']} refused a 256 MiB mmap threshold (the record says so)")
        assert out["setting"]["malloc"].startswith("glibc") and out["faults"] < grad_pages // 20, out
    else:   # the default faults in every page of every step's gradient: what the setting removes
        if _thp_always():
            pytest.skip("transparent huge pages always on: the default faults 2 MiB pages")
        assert out["faults"] >= grad_pages * 0.9, out


@pytest.mark.parametrize("kept", [False, True])
def test_a_cells_peak_rss_does_not_count_an_earlier_cells_freed_blocks(kept):
    """400 MB freed in the heap, held there by a block still in use above them (as an earlier cell's tensors
    leave the heap; with the blocks kept, also by the trim threshold): the next cell's peak starts without
    them."""
    out = _python(_RSS + f"""
import json, torch
from harness.train.host_memory import keep_freed_blocks
if {kept}:
    keep_freed_blocks()
first = torch.ones(2 * 2**20 // 4)   # a freed 2 MiB mmapped block raises glibc's dynamic threshold above 1 MiB
del first
start = rss_mb()
earlier = [torch.ones(2**20 // 4) for _ in range(400)]
above = torch.ones(2**20 // 4)
del earlier
freed = rss_mb()
from harness.train.measure import PeakMemory
memory = PeakMemory(torch.device("cpu"))
print(json.dumps({{"start": start, "freed": freed, "peak": memory.read_mb("cpu"), "kind": memory.kind}}))
""")
    if out["kind"] != "peak_rss_cell":
        pytest.skip("/proc/self/clear_refs cannot be written here: the peak is the process's")
    assert out["freed"] > out["start"] + 300, out   # the earlier blocks are still resident: the case is real
    assert out["peak"] < out["start"] + 50, out


def test_a_cells_record_says_the_rss_its_peak_counted_from():
    """What an earlier cell in the worker still holds (its datasets, caches: 300 MB in use) is in the next
    cell's peak RSS; the record gives the RSS the count started from, so the cell's own share (100 MB here)
    can be read off. Before 2026-12-04 the record had the peak alone."""
    out = _python(_RSS + """
import json, types, torch
from harness.train.measure import PeakMemory, cost_fields
before = rss_mb()
held = [torch.ones(2**20 // 4) for _ in range(300)]   # in use across the cell
memory = PeakMemory(torch.device("cpu"))
own = torch.ones(100 * 2**20 // 4)   # the cell's own, freed before the record
del own
acc = types.SimpleNamespace(num_processes=1, device=torch.device("cpu"))
cost = cost_fields(acc, memory, 10, 100, 1.0)
print(json.dumps({"kind": memory.kind, "before": before, "held_sum": sum(float(t.sum()) for t in held), **cost}))
""")
    if out["kind"] != "peak_rss_cell":
        pytest.skip("/proc/self/clear_refs cannot be written here: the peak is the process's")
    start, peak = out["rss_at_start_mb"], out["peak_memory_mb"]
    assert start > out["before"] + 290, out        # the held 300 MB are in the baseline
    assert 90 < peak - start < 130, out            # the cell's own 100 MB is the difference
