"""A cell's mid-training checkpoint: written when a stop signal arrives (harness.train.preempt), read by whoever
claims the cell next, so a preempted or time-limited Slurm task loses at most one optimizer step.

It lives in the cell's output directory (`checkpoint.pt`; a sequential cell's earlier stages have their own stage
folders) and holds the trainable weights (frozen ones are rebuilt identically from the model and the seed), the
optimizer, the scheduler, every rank's RNG states, the loop's counters (step, epoch, position in the epoch, time
already spent), every rank's own tallies (its examples, tokens, loss and FLOPs: the record sums them over ranks),
the evaluation history and the cell's experiment-tracker run ids (a resumed cell continues the same MLflow / W&B
run: harness/train/tracking.py). It is written whole or not at all (temporary name, fsync, rename) and deleted
once the cell is recorded (runner), unless it failed because another rank's process ended (a retry resumes it:
harness/launch/broken_group.py).

Data position: the loaders' samplers and the task mixture are replayed from the cell's seed up to the batch the
run stopped after (batches are collated and dropped, no forward pass), then the RNG states are restored. This is
exact for every sampler, length grouping, multi-task mixtures and DDP sharding, at the price of reading the
batches already trained once more (about a second per few thousand batches; with the loading, the record's
extra.resume_s, outside train_time_s). So a resumed cell ends with the same weights and dev metric as an
uninterrupted one (tests/train/test_preempt.py).

Under DeepSpeed the engine's partitioned weights and optimizer states are written by every rank through
accelerate's save_state into a folder named after the step (`checkpoint/step-N`), and `checkpoint.pt`, written
last, names that folder: it is the manifest. A kill between the two leaves the previous manifest pointing at the
previous folder (kept until the new manifest is in place), so engine state and counters always come from one step.

The file holds tensors and plain data only and is read with `torch.load(weights_only=True)`: a checkpoint in a
shared folder cannot run code. Its identity (format, cell key, processes, total steps, DeepSpeed, the precision
that actually ran, the device (a GPU's model; a CPU's model and kernel level) and a fingerprint of the harness's
code) must match the resuming run, else the cell starts over from step 0 and the record says why
(`extra.checkpoint_refused`). So must what the run started from beyond the model and the seed (`start`): a later
stage of a sequential cell is resumed after the stages before it trained again, and its checkpoint holds only its
own trainable weights, trained on the hand-over of the first time (a frozen earlier adapter, the encoder); where
the rerun hands over other bits (GPU kernels that are not deterministic, `auto` choosing another precision on the
node of a requeue), resuming would join two trainings in one record, so the stage starts over. Rank 0 decides and
tells the other ranks, so all of them resume or none does.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import shutil
import sys
from typing import Callable

import numpy as np
import torch

from harness import atomic
from harness.spec import layout
from harness.train.zero import under_deepspeed

FILE = layout.CHECKPOINT
DEEPSPEED_DIR = layout.CHECKPOINT_DIR
VERSION = 5   # 2: plain data (weights_only), code fingerprint, precision, device, GradScaler, DeepSpeed manifest;
# 3: every rank's own tallies (`ranks`; 2 held rank 0's alone, which every rank took as its own);
# 4: the tracker's loss window (its sum and micro-batch count) and both loss sums over all ranks;
# 5: no accelerate step counter (the loop decides where a step ends from the micro-batch: optim.closes_step)


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the harness's own source files: a checkpoint written by other code is not resumed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith((".py", ".yaml"))):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def device_name(device) -> str:
    """The kind of device a run trained on: resuming on another kind changes the numbers. A GPU's model name; a
    CPU's model, instruction-set level and the level of torch's own kernels (ATEN_CPU_CAPABILITY can hold them
    lower), and its thread count: the same step differs in its last bits between AVX2 and AVX-512 kernels, and
    nodes of one cluster, or VMs of one name, differ in them (harness/cpuinfo.py); CPU kernels split their sums
    over the threads, so a requeue with another --cpus-per-task differs too."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if kind == "cpu":
        from harness import cpuinfo

        return (f"CPU: {cpuinfo.processor()}, torch kernels {torch.backends.cpu.get_cpu_capability()}, "
                f"{torch.get_num_threads()} threads")
    return kind


paths_under = layout.checkpoint_paths   # every checkpoint file and folder under a cell's output folder


def held(folder: str | None) -> bool:
    """Whether a cell's (or a stage's) folder holds a checkpoint that a run there would read (its manifest)."""
    return bool(folder) and os.path.isfile(os.path.join(folder, FILE))


def any_held(folder: str) -> bool:
    """Whether a cell's folder holds a checkpoint of the cell or of one of its stages."""
    return any(os.path.basename(path) == FILE for path in paths_under(folder))


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()   # plain data: weights_only loads it
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Replayable:
    """The task mixture, whose first iteration after a resume continues where the stopped run was."""

    def __init__(self, mixture):
        self.mixture, self._pending = mixture, None

    def __len__(self):
        return len(self.mixture)

    def __iter__(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        return iter(self.mixture)

    def fast_forward(self, epochs: int, micro: int) -> None:
        for _ in range(epochs):   # the loop ran each finished epoch as one whole pass
            for _ in self.mixture:
                pass
        pending = iter(self.mixture)
        for _ in range(micro):
            next(pending, None)
        self._pending = pending


class CellCheckpoint:
    """Saving and resuming one training run (a cell, or one stage of a sequential cell)."""

    def __init__(self, output_dir: str | None, key: str, acc, model, optimizer, scheduler, total_steps: int,
                 start: Callable[[], str] | None = None):
        """`start`: gives the fingerprint of what the run started from (None: the model and the seed alone);
        called only where a checkpoint is saved or read, not at every stage's start (a large encoder's hash)."""
        self.output_dir, self.key, self.acc, self._start = output_dir, key, acc, start
        self.model, self.optimizer, self.scheduler, self.total_steps = model, optimizer, scheduler, total_steps
        self.deepspeed = under_deepspeed(acc)
        self.path = os.path.join(output_dir, FILE) if output_dir else None   # (held() looks for it)
        self.mixture = None
        self.resumed_from = None
        self.refused: str | None = None   # why a checkpoint found here was not resumed (goes into the record)

    def wrap(self, mixture) -> _Replayable:
        self.mixture = _Replayable(mixture)
        return self.mixture

    def _meta(self) -> dict:
        return {"version": VERSION, "key": self.key, "num_processes": self.acc.num_processes,
                "total_steps": self.total_steps, "deepspeed": self.deepspeed,
                "mixed_precision": str(self.acc.mixed_precision), "device": device_name(self.acc.device),
                "code": code_fingerprint(), "start": self.start}

    @functools.cached_property
    def start(self) -> str | None:
        return self._start() if self._start else None

    def _trainable(self) -> dict:
        unwrapped = self.acc.unwrap_model(self.model)
        return {n: p.detach().cpu().clone() for n, p in unwrapped.named_parameters() if p.requires_grad}

    # --- save ---------------------------------------------------------------------------------------------------

    def save(self, counters: dict, own: dict | None = None) -> None:
        """Every rank calls this at the same optimizer step (the loop reduced the stop flag). `counters`: the
        loop's, rank 0's written; `own`: what this rank counted itself, each rank's written and given back to it."""
        from accelerate.utils import gather_object

        if self.path is None:
            return
        gather = gather_object if self.acc.num_processes > 1 else lambda mine: mine
        rng, ranks = gather([_rng_state()]), gather([own or {}])
        counters = {**counters, "per_task": [{**t, "predictions": {}} for t in counters.get("per_task", [])]}
        scaler = getattr(self.acc, "scaler", None)   # fp16: the loss scale and its growth tracker
        state = {"meta": self._meta(), "counters": counters, "ranks": ranks, "rng": rng,
                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                 "scaler": scaler.state_dict() if scaler is not None else None}
        if self.deepspeed:
            state["deepspeed_dir"] = self._save_deepspeed(counters["step"])
        else:
            state["weights"] = self._trainable()
            state["optimizer"] = self.optimizer.state_dict() if self.optimizer is not None else None
        if self.acc.is_main_process:
            atomic.write_file(self.path, lambda tmp: torch.save(state, tmp))   # the manifest: written last
            if self.deepspeed:   # only now is the previous engine state unreferenced
                root = os.path.join(self.output_dir, DEEPSPEED_DIR)
                for name in os.listdir(root):
                    if name != state["deepspeed_dir"]:
                        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        self.acc.wait_for_everyone()

    def _save_deepspeed(self, step: int) -> str:
        """Every rank writes its partition of weights and optimizer states into a folder of this step; returns
        its name (relative to checkpoint/), which the manifest records."""
        name = f"step-{step}"
        final = os.path.join(self.output_dir, DEEPSPEED_DIR, name)
        partial = final + ".partial"
        if self.acc.is_main_process and os.path.isdir(partial):
            shutil.rmtree(partial)
        self.acc.wait_for_everyone()
        self.acc.save_state(partial)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(partial, final)
        return name

    # --- resume -------------------------------------------------------------------------------------------------

    def _decide(self) -> tuple[bool, str | None]:
        """(resume?, why a checkpoint that is there was refused)."""
        if not os.path.isfile(self.path):
            return False, None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:   # unreadable, or not plain data (an older format, or something planted)
            return False, f"not a checkpoint this harness can load safely ({type(exc).__name__})"
        meta, here = state.get("meta") if isinstance(state, dict) else None, self._meta()
        if meta != here:
            differ = sorted(k for k in set(here) | set(meta or {}) if (meta or {}).get(k) != here.get(k))
            return False, ("written by a different setup (" + ", ".join(
                f"{k}: {(meta or {}).get(k)!r} there, {here.get(k)!r} here" for k in differ) + ")")
        return True, None

    def resume(self) -> dict | None:
        """Loads the checkpoint if this run has one: weights, optimizer, scheduler and RNG states restored, the
        mixture positioned. Returns the loop's counters with this rank's own, or None to start from step 0."""
        if self.path is None:
            return None
        # rank 0 decides, every rank follows: a file a rank cannot see, or reads differently, must not split them
        decision = [self._decide() if self.acc.is_main_process else None]
        if self.acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(decision)
        resume, self.refused = decision[0]
        if self.refused and self.acc.is_main_process:
            print(f"warning: {self.path}: {self.refused}; starting the cell over", file=sys.stderr, flush=True)
        if not resume:
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        counters = {**state["counters"], **state["ranks"][self.acc.process_index]}
        if self.deepspeed:
            self.acc.load_state(os.path.join(self.output_dir, DEEPSPEED_DIR, state["deepspeed_dir"]))
        else:
            unwrapped = self.acc.unwrap_model(self.model)
            params = dict(unwrapped.named_parameters())
            missing = [n for n, p in params.items() if p.requires_grad and n not in state["weights"]]
            if missing:
                raise RuntimeError(f"{self.path}: no saved weights for trainable parameters {missing[:3]}")
            with torch.no_grad():
                for name, value in state["weights"].items():
                    params[name].copy_(value.to(params[name].device))
            if self.optimizer is not None:
                self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        scaler = getattr(self.acc, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        self.mixture.fast_forward(counters["epoch_idx"], counters["micro"])
        _set_rng_state(state["rng"][self.acc.process_index])   # last: replaying the data drew from the RNGs
        self.resumed_from = counters["step"]
        if self.acc.is_main_process:
            print(f"harness: resumed from its checkpoint at step {counters['step']}/{self.total_steps} "
                  f"(epoch {counters['epoch_idx']}, batch {counters['micro']} of {len(self.mixture)})",
                  file=sys.stderr, flush=True)
        return counters
