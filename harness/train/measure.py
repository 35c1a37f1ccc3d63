"""What a run costs: peak memory (CUDA or the process's RSS) and throughput (examples and tokens per second of
training: the split's examples, not the ones DDP repeats, real_rows), reduced over ranks."""

from __future__ import annotations

import resource

import torch

from harness.train.host_memory import give_back_freed_blocks, keep_freed_blocks


class PeakMemory:
    """CUDA max allocated on GPUs; on CPU the process's peak RSS since the cell started (VmHWM, reset through
    /proc/self/clear_refs where the kernel allows it, else the process-lifetime ru_maxrss). On CPU the heap's free
    blocks are given back first, so an earlier cell's freed memory does not count as this cell's, and malloc is
    set to keep what a step frees for the next (harness/train/host_memory.py; `host_allocator` says what was set).
    What the process already held when the count started (an earlier cell's datasets and caches in the same
    worker, the libraries) is in the peak too: `start_mb` gives it, so a reader can tell a cell's own share."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.kind = "cuda_max_allocated" if self.cuda else "peak_rss"
        self.host_allocator = None
        self.start_mb = None   # RSS when the count started (CPU, VmHWM reset: the peak counts from there)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        else:
            give_back_freed_blocks()
            kept = keep_freed_blocks()   # also set at the cell's start (recipe.py), before `auto` times its steps
            self.host_allocator = dict(kept) if kept else None
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.kind = "peak_rss_cell"
                self.start_mb = self._status_mb("VmRSS:")
            except OSError:
                self.kind = "peak_rss_process"

    def read_mb(self, device) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(device) / 2**20
        hwm = self._status_mb("VmHWM:")
        return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @staticmethod
    def _status_mb(key: str) -> float | None:
        """A memory line of /proc/self/status (kB) in MB; None where there is none."""
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None


def real_rows(loader, rows: int, rank: int, processes: int) -> int:
    """How many of the `rows` of the batch `loader` just gave are examples of its split, the first ones. Under
    DDP accelerate evens out each pass's last round of batches (even_batches): the last partial batch is filled
    up, and a rank left without a batch gets a whole one, with the pass's first examples again. Those rows run,
    but they are no further examples: of the last round's rows, in rank order, the first `remainder` are the
    split's (the rule gather_for_metrics drops the repeated predictions by)."""
    remainder = getattr(loader, "remainder", -1)
    if processes == 1 or not getattr(loader, "end_of_dataloader", False) or remainder is None or remainder <= 0:
        return rows
    per_rank = loader.total_batch_size // processes
    return max(0, min(rows, remainder - rank * per_rank))


def batch_counts(batch: dict, n_tokens, rows: int | None = None) -> tuple[int, object]:
    """(examples, tokens) of one training batch, of its first `rows` rows where given (real_rows: not the
    examples accelerate repeats). `n_tokens`: for cached features, the tokens the encoder read for them;
    otherwise the non-padding tokens of the batch. The token count is a 0-dim tensor where it is a sum on the
    device: the loop adds it there and reads it at its next host sync (harness/train/sync.py)."""
    examples = batch["labels"].shape[0] if n_tokens is not None else batch["input_ids"].shape[0]
    n = examples if rows is None else min(rows, examples)
    tokens = (n_tokens[:n].sum() if n_tokens is not None
              else batch["attention_mask"][:n].sum() if "attention_mask" in batch
              else batch["input_ids"][:n].numel())
    return n, tokens


def cost_fields(acc, memory: PeakMemory, examples: int, tokens: int, train_time: float) -> dict:
    """The run record's cost fields: throughput summed over ranks, memory the maximum over ranks (every rank
    must call this: it reduces and gathers)."""
    totals = torch.tensor([examples, tokens], dtype=torch.float64, device=acc.device)
    # the peak and the RSS it counted from, of the rank with the highest peak
    peak = torch.tensor([[memory.read_mb(acc.device), memory.start_mb if memory.start_mb is not None else -1.0]],
                        dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        totals = acc.reduce(totals, reduction="sum")
        peak = acc.gather(peak)
    top = peak[int(peak[:, 0].argmax())]
    measured = train_time > 0 and examples
    return {"peak_memory_mb": float(top[0]), "peak_memory_kind": memory.kind,
            "rss_at_start_mb": float(top[1]) if top[1] >= 0 else None,
            "train_examples_per_s": float(totals[0]) / train_time if measured else None,
            "train_tokens_per_s": float(totals[1]) / train_time if measured else None}
