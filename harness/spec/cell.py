"""A cell: one (model, task, method + params, budget, seed, hparams) point of a suite's grid.

Its key is a hash of everything that can change the result and nothing that cannot (database, output
directory, suite file name, key order). Fields whose value is None are left out of the hash, so an option
added later with a None default keeps every existing key, and with it every stored result, valid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from harness.spec.hparams import COMPILE_DEFAULT, DEFAULTS, TRAINING_ONLY
from harness.spec.methods import METHODS
from harness.spec.schedule import Schedule, from_key
from harness.spec.status import Regime
from harness.spec.tasks import KIND_ONLY_HPARAMS, TASKS, get_task

KEY_LENGTH = 16
# Stored with the run but not hashed: they cannot change what a run learns or scores.
NOT_IN_KEY = {"eval_batch_size"}
# Options added after keys were first handed out: hashed only when set away from their default, so adding
# an option never changes the key of a run that did not use it.
HASHED_ONLY_WHEN_SET = {"group_by_length": True, "compile": COMPILE_DEFAULT}


def _drop_none(obj):
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_drop_none(v) for v in obj]
    if isinstance(obj, float) and obj == 0.0:
        return 0.0   # -0.0 trains exactly as 0.0: one key for both
    return obj


def canonical_json(obj) -> str:
    return json.dumps(_drop_none(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_key(config: dict, without=()) -> str:
    """The key of a resolved configuration (Cell.config(), or the one a store row or record.json keeps): the
    hash of everything in it that can change the result. `without`: top-level fields left out."""
    config = {k: v for k, v in config.items() if k not in without}
    config["hparams"] = {k: v for k, v in (config.get("hparams") or {}).items() if k not in NOT_IN_KEY
                         and not (k in HASHED_ONLY_WHEN_SET and v == HASHED_ONLY_WHEN_SET[k])}
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:KEY_LENGTH]


def method_label(method: str, params: dict) -> str:
    """e.g. houlsby(size=64,non_linearity=swish); options left at None (off) are not shown."""
    shown = [f"{k}={v}" for k, v in params.items() if v is not None]
    return f"{method}({','.join(shown)})" if shown else method


def budget_text(budget: dict | None) -> str:
    """A budget as the tables and the board print it: "epochs=3,max_train_samples=1000", keys sorted ("" for the
    default)."""
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted((budget or {}).items()))


def base_label(row_label: str) -> str:
    """The method variant of a row label without its schedule suffix: "full [after mrpc]" -> "full"."""
    return row_label.split(" [", 1)[0]


@dataclass(frozen=True)
class Cell:
    suite: str
    model: str
    task: str
    task_version: int
    method: str
    method_params: dict
    budget: dict
    seed: int
    hparams: dict
    num_processes: int = 1
    trust_remote_code: bool = False
    # several tasks in one cell (harness/spec/schedule.py); None for a single-task cell (and then not in the key:
    # single-task keys are unchanged)
    schedule: Schedule | None = None

    @classmethod
    def from_config(cls, suite: str, config: dict) -> Cell:
        """The cell whose resolved configuration (`config()`) a store row or record.json keeps: its key is the
        row's cell_key. For what reads a store without the suite's YAML (the board)."""
        return cls(suite=suite, model=config["model"], trust_remote_code=bool(config.get("trust_remote_code")),
                   task=config["task"], task_version=config["task_version"], method=config["method"],
                   method_params=dict(config.get("method_params") or {}), budget=dict(config.get("budget") or {}),
                   seed=config["seed"], hparams=dict(config.get("hparams") or {}),
                   num_processes=config.get("num_processes") or 1, schedule=from_key(config.get("schedule")))

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this cell trains, in order: the one place that answers it."""
        return self.schedule.tasks if self.schedule else (self.task,)

    @property
    def effective_batch_size(self) -> int:
        return self.hparams["batch_size"] * self.hparams["gradient_accumulation_steps"] * self.num_processes

    def config(self) -> dict:
        """The resolved configuration: what the key hashes and what the store keeps."""
        return {
            "model": self.model,
            "trust_remote_code": self.trust_remote_code or None,
            "task": self.task,
            "task_version": self.task_version,
            "method": self.method,
            "method_params": dict(self.method_params),
            "budget": dict(self.budget),
            "seed": self.seed,
            "hparams": dict(self.hparams),
            "num_processes": self.num_processes,
            "effective_batch_size": self.effective_batch_size,
            "schedule": self.schedule.as_key() if self.schedule else None,
        }

    def columns(self) -> dict:
        """The store columns that follow from the configuration (besides it and its keys): what the cell's
        queued row holds, and what a record of the cell must say (harness.store.ingest refuses one that
        differs: these columns decide where a run counts in the tables)."""
        return {"model": self.model, "task": self.task, "task_version": self.task_version, "method": self.method,
                "method_params": dict(self.method_params), "method_label": self.row_label,
                "regime": self.regime.value if self.regime else None, "budget": dict(self.budget),
                "seed": self.seed, "hparams": dict(self.hparams), "learning_rate": self.hparams.get("learning_rate"),
                "num_processes": self.num_processes}

    @property
    def key(self) -> str:
        return config_key(self.config())

    @property
    def unread(self) -> tuple[list[str], list[str]]:
        """(hparams, method parameters) set on this cell that it never reads (doc_stride on a cell of no SQuAD
        task, a flat prefix's bottleneck_size, an evaluation-only cell's learning rate). They stay in its key
        (stored keys stand); two cells that differ only in them would run the same thing twice
        (plan/checks.py no_duplicate_cells refuses that)."""
        # a row's cell may name a task or method this release does not know (the board rebuilds cells from rows):
        # nothing is known to be unread there, and its label must still print
        if not all(t in TASKS for t in self.tasks):
            return [], []
        kinds = {get_task(t).kind for t in self.tasks}
        hparams = [k for k, only in KIND_ONLY_HPARAMS.items()
                   if self.hparams.get(k) is not None and not kinds & set(only)]
        spec = METHODS.get(self.method) if self.method in METHODS else None
        # (a row stored before a method parameter existed lacks it: its default is what that cell ran)
        if spec and not spec.trains(spec.resolve(self.method_params)):
            hparams += [k for k in TRAINING_ONLY if self.hparams.get(k) is not None]
        return hparams, spec.unread(self.method_params) if spec else []

    @property
    def read_key(self) -> str:
        """The key without the settings the cell never reads (`unread`): equal for cells that train alike."""
        hparams, params = self.unread
        config = self.config()
        config["hparams"] = {k: v for k, v in config["hparams"].items() if k not in hparams}
        config["method_params"] = {k: v for k, v in config["method_params"].items() if k not in params}
        return config_key(config)

    @property
    def setting_key(self) -> str:
        """The key without the seed: the runs that seeds average over."""
        return config_key(self.config(), without=("seed",))

    @property
    def method_label(self) -> str:
        """e.g. houlsby(size=64) -- the method variant as tables show it."""
        return method_label(self.method, self.method_params)

    @property
    def regime(self) -> Regime | None:
        return self.schedule.regime if self.schedule else None

    @property
    def _suffix(self) -> str:
        return self.schedule.suffix if self.schedule else ""

    @property
    def row_label(self) -> str:
        """The method label tables group by: a sequential or multi-task cell is a variant of its own."""
        return self.method_label + self._suffix

    @property
    def label(self) -> str:
        """Model, task, method, learning rate, every other hparam off its default (cells of a batch-size sweep
        printed the same label) that the cell reads (a GLUE cell beside SQuAD ones showed their doc_stride),
        budget and seed."""
        text = lambda v: f"{v:g}" if isinstance(v, float) else str(v)   # noqa: E731
        budget = ",".join(f"{k}={text(v)}" for k, v in self.budget.items())
        unread, unread_params = self.unread
        others = "".join(f" {k}={text(v)}" for k, v in sorted(self.hparams.items())
                         if k != "learning_rate" and k in DEFAULTS and v != DEFAULTS[k] and k not in unread)
        # (the stored method_label keeps every parameter: ingest checks a record's against it)
        shown = method_label(self.method, {k: v for k, v in self.method_params.items() if k not in unread_params})
        return (f"{self.model} {self.task}{self._suffix} {shown} lr={self.hparams['learning_rate']:g}"
                f"{others} [{budget}] seed={self.seed}")
