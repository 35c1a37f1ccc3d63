"""A validated suite and its grid of cells: model x task x method variant x hparams x budget x seed.

`Suite` also answers where its data is read from (`locate_data`: one precedence for every command) and how many
cells it has before building them, so a huge grid costs nothing to reject (`check_size`, the max_cells cap).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import NamedTuple

from harness.plan.messages import Located
from harness.plan.schema import SequenceEntry, SuiteModel
from harness.spec.cell import Cell
from harness.spec.errors import InputError
from harness.spec.hparams import EVALUATION_BUDGET
from harness.spec.methods import METHODS
from harness.spec.models import ModelSpec
from harness.spec.schedule import Multitask, Schedule, Sequence
from harness.spec.status import DEFAULT_MAX_CELLS
from harness.spec.tasks import get_task


class DataDir(NamedTuple):
    path: str | None     # None: the Hugging Face hub
    source: str | None   # who said so: "--data-dir", "data_dir" (the suite's) or "$HARNESS_DATA_DIR"


def locate_data(cli_value: str | None, suite_value: str | None = None, suite_file: str | None = None) -> DataDir:
    """--data-dir, else the suite's data_dir (relative to the suite file), else $HARNESS_DATA_DIR, else None (hub)."""
    if cli_value:
        return DataDir(os.path.abspath(os.path.expanduser(cli_value)), "--data-dir")
    if suite_value:
        return DataDir(os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(suite_file)),
                                                     os.path.expanduser(suite_value))), "data_dir")
    env = os.environ.get("HARNESS_DATA_DIR")
    if env:
        return DataDir(os.path.abspath(os.path.expanduser(env)), "$HARNESS_DATA_DIR")
    return DataDir(None, None)


class TaskSlot(NamedTuple):
    """One entry of a suite's `tasks`: the task name as stored, its version, and its schedule (None: one task)."""

    task: str
    version: int
    schedule: Schedule | None

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.schedule.tasks if self.schedule else (self.task,)


@dataclass
class Suite:
    model: SuiteModel
    path: str
    method_variants: list[tuple[str, dict, dict]]   # (method, method params, hparam overrides as lists)
    variant_sources: list[int] = field(default_factory=list)   # the methods[] entry of each variant
    lines: dict = field(default_factory=dict, repr=False)      # field path -> YAML line
    built: dict = field(default_factory=dict, repr=False)      # num_processes -> cells (built once)

    @property
    def name(self) -> str:
        return self.model.name

    def locate(self) -> Located:
        return Located(self.path, self.lines)

    def data(self, cli_value: str | None = None) -> DataDir:
        return locate_data(cli_value, self.model.data_dir, self.path)

    def data_dir(self, cli_value: str | None = None) -> str | None:
        """--data-dir, else the suite's data_dir (relative to the suite file), else $HARNESS_DATA_DIR, else None (hub)."""
        return self.data(cli_value).path

    @property
    def task_slots(self) -> list[TaskSlot]:
        """One slot per entry of `tasks`: the task name as stored, its version and its schedule (None: one task)."""
        slots = []
        for entry in self.model.tasks:
            if isinstance(entry, str):
                task = get_task(entry)
                slots.append(TaskSlot(task.name, task.version, None))
                continue
            names = tuple(get_task(t).name for t in entry.members)
            versions = tuple(get_task(t).version for t in names)
            if isinstance(entry, SequenceEntry):
                schedule = Sequence(names, versions, entry.adapter)
            else:
                schedule = Multitask(names, versions, entry.sampling, entry.temperature, entry.adapter_per_task)
            slots.append(TaskSlot(schedule.stored_task, schedule.stored_version, schedule))
        return slots

    def model_specs(self) -> list[ModelSpec]:
        base = os.path.dirname(os.path.abspath(self.path))
        return [ModelSpec(m.name, m.trust_remote_code, base) for m in self.model.models]

    def _settings(self, variant_overrides: dict) -> int:
        grid = {**self.model.hparams.model_dump(), **variant_overrides}
        return math.prod(len(v) for v in grid.values() if v is not None)

    def crossings(self, method: str, params: dict) -> tuple[list[dict], list[int]]:
        """The budgets and seeds a method variant's cells are crossed with: all of them for a variant that trains.
        One that evaluates alike whatever its seed (MethodSpec.evaluates_alike: a saved adapter and head) gets the
        first seed and, of budgets that differ only in what it does not read (EVALUATION_BUDGET), the first: more
        cells would score the same predictions again, and the tables would read them as independent seeds with
        std 0. The cell kept has the key it always had (the first seed's, the first budget's)."""
        budgets = [b.as_dict() for b in self.model.budgets]
        if not METHODS[method].evaluates_alike(params):
            return budgets, list(self.model.seeds)
        first: dict[tuple, dict] = {}
        for budget in budgets:
            first.setdefault(tuple(budget.get(k) for k in EVALUATION_BUDGET), budget)
        return list(first.values()), self.model.seeds[:1]

    def size(self) -> int:
        """The number of cells, computed without building them (so a huge grid costs nothing to reject)."""
        m = self.model
        per_model_task = sum(self._settings(o) * math.prod(map(len, self.crossings(method, params)))
                             for method, params, o in self.method_variants)
        return len(m.models) * len(m.tasks) * per_model_task

    def breakdown(self, variants: bool = True) -> str:
        """How the cells multiply out, as validate and the size cap say it."""
        m = self.model
        settings = sum(self._settings(o) for _, _, o in self.method_variants)
        counted = f" ({len(self.method_variants)} method variant(s))" if variants else ""
        text = (f"{len(m.models)} model(s) x {len(m.tasks)} task(s) x {settings} method/hparam setting(s){counted} x "
                f"{len(m.budgets)} budget(s) x {len(m.seeds)} seed(s)")
        if any(METHODS[method].evaluates_alike(params) for method, params, _ in self.method_variants):
            text += " (an evaluation-only variant: the first seed, one budget per dev-set size)"
        return text

    def check_size(self, max_cells: int = DEFAULT_MAX_CELLS) -> None:
        n = self.size()
        if n > max_cells:
            raise InputError(f"{self.path}:1: (grid): {n:,} cells = {self.breakdown(variants=False)}, more than the "
                             f"cap of {max_cells:,}; a list is probably longer than meant (--max-cells {n} allows it)")

    def cells(self, num_processes: int = 1) -> list[Cell]:
        """The grid: model x task x method variant x hparams x budget x seed, in that nesting order."""
        if num_processes not in self.built:
            self.built[num_processes] = [cell for cell, _ in self.cells_with_sources(num_processes)]
        return list(self.built[num_processes])

    def cells_with_sources(self, num_processes: int):
        """(cell, the methods[] entry it comes from), in the grid's order."""
        defaults = self.model.hparams.model_dump()
        sources = self.variant_sources or [None] * len(self.method_variants)
        for spec, slot in itertools.product(self.model_specs(), self.task_slots):
            task_defaults = {}
            for t in slot.tasks:   # a task kind's own defaults where the suite left them unset (SQuAD's windows)
                task_defaults.update(get_task(t).hparam_defaults)
            for (method, mparams, overrides), source in zip(self.method_variants, sources):
                grid = {**defaults, **overrides}
                for name, value in task_defaults.items():
                    if name not in self.model.hparams.model_fields_set and name not in overrides:
                        grid[name] = [value]
                keys = [k for k, v in grid.items() if v is not None]
                budgets, seeds = self.crossings(method, mparams)
                for combo in itertools.product(*(grid[k] for k in keys)):
                    hp = {k: None for k in grid} | dict(zip(keys, combo))
                    for budget, seed in itertools.product(budgets, seeds):
                        yield (Cell(suite=self.name, model=spec.name, trust_remote_code=spec.trust_remote_code,
                                    task=slot.task, task_version=slot.version, method=method,
                                    method_params=mparams, budget=budget, seed=seed, hparams=hp,
                                    num_processes=num_processes, schedule=slot.schedule), source)
