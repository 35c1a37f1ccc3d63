"""A cell's schedule: which tasks it trains, in which order. A single-task cell has none (its key and its row
are as before schedules existed); a sequence trains its tasks one after the other, handing the encoder on; a
multi-task cell trains one shared encoder on all its tasks at once.

`tasks` answers "which tasks, in which order" for every reader (data checks, prefetch, parameter accounting, the
loop); `as_key()` is the mapping the cell key hashes, exactly as stores written before this type hold it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.spec.status import Regime


@dataclass(frozen=True)
class Sequence:
    """Sequential adaptation: train on each task in turn; the cell's result is its last stage."""

    tasks: tuple[str, ...]
    versions: tuple[int, ...]
    adapter: Literal["continue", "new"] = "continue"   # adapters: keep training the same one, or stack a new one

    regime = Regime.SEQUENTIAL

    @property
    def stored_task(self) -> str:
        """The task a sequence is stored under: its last (so it lines up with that task's direct runs)."""
        return self.tasks[-1]

    @property
    def stored_version(self) -> int:
        return self.versions[-1]

    def as_key(self) -> dict:
        return {"sequence": list(self.tasks), "adapter": self.adapter, "versions": list(self.versions)}

    @property
    def suffix(self) -> str:
        extra = ", new adapter" if self.adapter == "new" else ""
        return f" [after {'>'.join(self.tasks[:-1])}{extra}]"


@dataclass(frozen=True)
class Multitask:
    """Multi-task fine-tuning: one shared encoder, one head per task, batches drawn from the tasks in turn."""

    tasks: tuple[str, ...]
    versions: tuple[int, ...]
    sampling: Literal["proportional", "uniform", "temperature"] = "proportional"
    temperature: float | None = None   # with sampling: temperature (p ~ n^(1/T))
    adapter_per_task: bool = False     # adapter methods: one adapter per task on the shared frozen base

    regime = Regime.MULTITASK
    stored_version = 1

    @property
    def stored_task(self) -> str:
        return "+".join(self.tasks)

    def as_key(self) -> dict:
        out = {"multitask": list(self.tasks), "sampling": self.sampling, "versions": list(self.versions)}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.adapter_per_task:
            out["adapter_per_task"] = True
        return out

    @property
    def suffix(self) -> str:
        how = self.sampling + (f" T={self.temperature:g}" if self.sampling == "temperature" else "")
        how += ", adapter per task" if self.adapter_per_task else ""
        return f" [multitask {'+'.join(self.tasks)}, {how}]"


Schedule = Sequence | Multitask


def from_key(mapping: dict | None) -> Schedule | None:
    """The schedule of a stored configuration (`as_key()`'s mapping), or None for a single-task cell."""
    if not mapping:
        return None
    if "sequence" in mapping:
        return Sequence(tuple(mapping["sequence"]), tuple(mapping.get("versions", ())), mapping.get("adapter", "continue"))
    return Multitask(tuple(mapping["multitask"]), tuple(mapping.get("versions", ())),
                     mapping.get("sampling", "proportional"), mapping.get("temperature"),
                     bool(mapping.get("adapter_per_task", False)))


def suffix(mapping: dict | None) -> str:
    """The label suffix of a stored schedule mapping ("" for a single-task cell)."""
    schedule = from_key(mapping)
    return schedule.suffix if schedule else ""
