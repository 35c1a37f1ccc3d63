"""Fingerprints of weights, bit for bit: what a sequential stage starts from and ends with, what a later stage's
checkpoint was trained on (the hand-over), and which encoder a linear probe's cached features came from."""

from __future__ import annotations

import torch


def hash_tensors(h, tensors: dict) -> None:
    """Feed `tensors` (name -> tensor) into the hash `h`, sorted by name: each one's name, dtype, shape and raw
    bytes (a bf16 tensor's own bits; two dtypes of the same values hash apart, as they compute apart)."""
    for name, tensor in sorted(tensors.items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
