"""Fingerprints of weights: what a sequential stage starts from and ends with and which encoder a linear probe's
cached features came from (by value), what a later stage's checkpoint was trained on (the hand-over, bit for bit)."""

from __future__ import annotations

import torch


def hash_tensors(h, tensors: dict, values: bool = False) -> None:
    """Feed `tensors` (name -> tensor) into the hash `h`, sorted by name: each one's name, dtype, shape and raw
    bytes (a bf16 tensor's own bits: two dtypes of the same values hash apart). `values`: each one's name and
    values as float32 instead, whatever dtype holds them: the encoder's checksums, which DeepSpeed's bf16 engine
    reads in bf16 at a stage's end and the next stage, handed those values, in fp32 at its start."""
    for name, tensor in sorted(tensors.items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        if values:
            h.update(name.encode())
            h.update(flat.float().numpy().tobytes())
            continue
        h.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
