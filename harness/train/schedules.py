"""What a cell's schedule (harness/spec/schedule.py) asks of training beyond one task.

Multi-task: one shared encoder with one head per task (MultiTaskModel), optionally one adapter per task, and
the order in which the tasks give batches (TaskMixture). Sequential: the encoder handed from one stage to the
next (handover_state, apply_handover) and its fingerprint (encoder_checksum). A single-task cell is the
one-task case of the mixture.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from harness.spec.schedule import Multitask
from harness.train.digest import hash_tensors
from harness.train.methods import ADAPTER_NAME


class MultiTaskModel(torch.nn.Module):
    """One shared encoder, one head per task: each member is a task's sequence-classification model whose base
    model is the same module object, so the encoder (and any adapter in it) is stored and counted once."""

    def __init__(self, models: list, task_adapters: list[str] | None = None):
        super().__init__()
        self.members = torch.nn.ModuleList(models)
        self.task_adapters = task_adapters   # one adapter per task: switched on for that task's batches

    def forward(self, task_index: int, **batch):
        if self.task_adapters:
            self.members[0].set_active_adapters(self.task_adapters[task_index])
        return self.members[task_index](**batch)


def share_encoder(models: list) -> None:
    """Every member uses one encoder object. A classification head reads the pooler, which a QA model's encoder
    lacks: when the kinds are mixed, the shared encoder is one that has it (the QA head ignores it)."""
    prefix = models[0].base_model_prefix
    shared = next((getattr(m, prefix) for m in models if getattr(getattr(m, prefix), "pooler", None) is not None),
                  getattr(models[0], prefix))
    for m in models:
        setattr(m, prefix, shared)


def add_task_adapters(model, tasks: list) -> list[str]:
    """Multi-task with adapter_per_task: the method's adapter is replaced by one adapter per task (same config),
    all of them training, each on its own task's batches. Returns their names, in task order."""
    config = model.adapters_config.get(ADAPTER_NAME)
    model.delete_adapter(ADAPTER_NAME)
    task_adapters = [f"{ADAPTER_NAME}_{t.name}" for t in tasks]
    from adapters.composition import Stack

    for name in task_adapters:
        model.add_adapter(name, config=config)
    # every one trains (the forward activates its task's alone); Stack is what adapters made of a list, which
    # it warns about as deprecated
    model.train_adapter(Stack(*task_adapters))
    return task_adapters


class TaskMixture:
    """The order in which tasks give the next training batch. Proportional: every batch of every task once
    per epoch, in a random interleaving (a single-task cell is its one-task case). Uniform / temperature:
    each step draws a task with probability proportional to n_t^(1/T) (T=1 proportional, T->inf uniform);
    a task whose batches run out starts its next pass. Seeded alike on every rank, so DDP ranks agree."""

    def __init__(self, loaders: list, sampling: str, temperature: float, seed: int):
        self.loaders, self.sampling, self.temperature = loaders, sampling, temperature
        self.rng = np.random.default_rng(seed)
        self.iters = [None] * len(loaders)

    @classmethod
    def for_cell(cls, cell, loaders: list) -> "TaskMixture":
        """The cell's mixture: its multi-task sampling (temperature 2 unless set), else proportional."""
        mix = cell.schedule if isinstance(cell.schedule, Multitask) else None
        return cls(loaders, mix.sampling if mix else "proportional",
                   mix.temperature if mix and mix.temperature else 2.0, cell.seed)

    def __len__(self):
        return sum(len(dl) for dl in self.loaders)

    def _order(self) -> list[int]:
        sizes = np.array([len(dl) for dl in self.loaders], dtype=float)
        if self.sampling == "proportional":
            order = np.repeat(np.arange(len(sizes)), sizes.astype(int))
            self.rng.shuffle(order)
            return order.tolist()
        power = 0.0 if self.sampling == "uniform" else 1.0 / self.temperature
        # p ~ n^(1/T), in log space: a small T (a large power) must not overflow to inf / nan
        logits = power * np.log(sizes)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        return self.rng.choice(len(sizes), size=int(sizes.sum()), p=probs).tolist()

    def _next(self, t: int):
        if self.iters[t] is None:
            self.iters[t] = iter(self.loaders[t])
        try:
            return next(self.iters[t])
        except StopIteration:
            self.iters[t] = iter(self.loaders[t])
            return next(self.iters[t])

    def __iter__(self):
        if self.sampling == "proportional":
            self.iters = [iter(dl) for dl in self.loaders]  # an epoch is exactly one pass over each task
        for t in self._order():
            yield t, self._next(t)


def is_pooler(name: str) -> bool:
    return name.startswith("pooler.")


def encoder_checksum(model) -> str:
    """A fingerprint of the pretrained encoder weights (adapter modules excluded): sequential stages record it
    at their start and end, so the store shows that stage k+1 started from what stage k ended with."""
    base = getattr(model, model.base_model_prefix)
    h = hashlib.sha256()
    # the pooler belongs to the classification head's path
    hash_tensors(h, {name: t for name, t in base.state_dict().items()
                     if ADAPTER_NAME not in name and not is_pooler(name)}, values=True)
    return h.hexdigest()[:16]


def handover_checksum(handover: dict) -> str:
    """A fingerprint of everything a hand-over gives the next stage (its mode and every tensor, bit for bit,
    adapters included): a later stage's checkpoint is resumed only on the hand-over it was trained on
    (harness.train.checkpoint)."""
    h = hashlib.sha256(str(handover["mode"]).encode())
    hash_tensors(h, handover["state"])
    return h.hexdigest()[:16]


def handover_state(model) -> dict:
    """The encoder state a sequential stage hands to the next one (a CPU copy)."""
    base = getattr(model, model.base_model_prefix)
    return {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}


def stage_adapter(stage: int) -> str:
    """The name under which hand-over mode "new" keeps stage `stage`'s adapter (0 = the sequence's first),
    frozen, below the fresh ADAPTER_NAME, which is the one every stage trains and saves."""
    return f"{ADAPTER_NAME}_stage{stage}"


def apply_handover(model, handover: dict) -> None:
    """Load the previous stage's encoder. mode "continue": everything, adapters included; "new": every earlier
    stage's adapter stays in the model, frozen, stacked in stage order, and the fresh one is stacked on top
    (bottleneck adapters only)."""
    base = getattr(model, model.base_model_prefix)
    state, mode = handover["state"], handover["mode"]
    if mode == "new" and any(f".{ADAPTER_NAME}." in k for k in state):
        from adapters.composition import Stack

        # the previous stage's model holds the stages before it under their stage names and its own trained
        # adapter as ADAPTER_NAME: that one takes the next stage name, so no two adapters share a name (one
        # fixed name for "the previous" would map two stages' weights onto one key and silently drop one)
        earlier = 0
        while any(f".{stage_adapter(earlier)}." in k for k in state):
            earlier += 1
        below = [stage_adapter(i) for i in range(earlier + 1)]
        config = model.adapters_config.get(ADAPTER_NAME)
        for name in below:
            model.add_adapter(name, config=config)
        state = {k.replace(f".{ADAPTER_NAME}.", f".{below[-1]}."): v for k, v in state.items()}
        model.train_adapter(ADAPTER_NAME)
        model.set_active_adapters(Stack(*below, ADAPTER_NAME))
    missing, unexpected = base.load_state_dict(state, strict=False)
    if mode == "new":  # the fresh adapter is meant to start fresh
        missing = [k for k in missing if f".{ADAPTER_NAME}." not in k]
    # a QA model's encoder has no pooler (its head reads token states): between a QA stage and a classification
    # stage the pooler is not handed over, the classification model keeps its checkpoint's pooler
    missing = [k for k in missing if not is_pooler(k)]
    unexpected = [k for k in unexpected if not is_pooler(k)]
    if unexpected or missing:
        raise RuntimeError(f"sequential hand-over: the next stage's encoder does not match the previous one "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
