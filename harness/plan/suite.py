"""Suite files: YAML -> validated typed objects -> the grid of cells.

Validation happens before anything is written. Every error names the file, the YAML line and the field
path ("suites/x.yaml:12: methods[2].size: ..."), and the CLI exits 2.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from harness.plan.cells import Cell
from harness.errors import InputError, did_you_mean
from harness.train.methods import METHODS, methods_with
from harness.train.models import ModelSpec
from harness.tasks.registry import get_task


def resolve_data_dir(cli_value: str | None) -> str | None:
    """--data-dir, else $HARNESS_DATA_DIR, else None (the hub)."""
    value = cli_value or os.environ.get("HARNESS_DATA_DIR")
    return os.path.abspath(os.path.expanduser(value)) if value else None


def _as_list(v):
    return v if isinstance(v, list) else [v]


def Grid(item_type, **constraints):
    """A hyperparameter that may be one value or a list of values (a list expands into the grid)."""
    return Annotated[list[Annotated[item_type, Field(**constraints)]], BeforeValidator(_as_list), Field(min_length=1)]


class Hparams(BaseModel):
    """Defaults for every cell; a method may override any of them."""

    model_config = ConfigDict(extra="forbid")
    learning_rate: Grid(float, gt=0) = [2e-5]
    batch_size: Grid(int, gt=0) = [32]
    eval_batch_size: Grid(int, gt=0) = [64]
    max_length: Grid(int, gt=1) = [128]
    warmup_ratio: Grid(float, ge=0, lt=1) = [0.0]
    weight_decay: Grid(float, ge=0) = [0.0]
    gradient_accumulation_steps: Grid(int, gt=0) = [1]
    max_grad_norm: Grid(float, gt=0) = [1.0]
    mixed_precision: Grid(Literal["auto", "no", "fp16", "bf16"]) = ["auto"]
    padding: Grid(Literal["dynamic", "max_length"]) = ["dynamic"]
    # batches of similar lengths, grouped within small random mega-batches: far less padding, so faster on
    # every device, with dev scores within seed noise of plain random batches (bench/RESULTS.md)
    group_by_length: Grid(bool) = [True]
    eval_steps: Grid(int, gt=0) | None = None   # None: evaluate after each epoch


HPARAM_NAMES = tuple(Hparams.model_fields)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, gt=0)
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)
    time_limit_min: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _needs_a_length(self):
        if self.epochs is None and self.max_steps is None:
            raise ValueError("a budget needs epochs or max_steps")
        return self

    def as_dict(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v is not None}


def _name_mapping(v):
    return {"name": v} if isinstance(v, str) else v


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    trust_remote_code: bool = False


class MethodEntry(BaseModel):
    # Parameters are method-specific: checked against the method registry after this pass.
    model_config = ConfigDict(extra="allow")
    name: str


class SequenceEntry(BaseModel):
    """Sequential adaptation: train on each task in turn, handing the encoder (not the head) on."""
    model_config = ConfigDict(extra="forbid")
    sequence: list[str] = Field(min_length=2)
    adapter: Literal["continue", "new"] = "continue"   # adapters: keep training the same one, or stack a new one


class MultitaskEntry(BaseModel):
    """Multi-task fine-tuning: one shared encoder, one head per task, batches drawn from the tasks in turn."""
    model_config = ConfigDict(extra="forbid")
    multitask: list[str] = Field(min_length=2)
    sampling: Literal["proportional", "uniform", "temperature"] = "proportional"
    temperature: float | None = Field(None, gt=0)
    adapter_per_task: bool = False   # adapter methods: one adapter per task on the shared frozen base

    @model_validator(mode="after")
    def _temperature_only_for_temperature(self):
        if (self.sampling == "temperature") != (self.temperature is not None):
            raise ValueError("temperature is needed with sampling: temperature, and only there")
        return self


class AblateEntry(BaseModel):
    """Which completed runs of the suite get an adapter ablation after the cells ran (empty field: any)."""
    model_config = ConfigDict(extra="forbid")
    task: str | None = None
    method: str | None = None   # a method with the ablatable flag (checked in parse_suite)
    # best: per task and method variant, the first seed of the setting that is best on dev (what a paper
    # ablates); all: every matching run
    runs: Literal["best", "all"] = "best"


class SuiteModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    data_dir: str | None = None
    models: list[Annotated[ModelEntry, BeforeValidator(_name_mapping)]] = Field(min_length=1)
    tasks: list[str | dict] = Field(min_length=1)  # a name, {sequence: [...]} or {multitask: [...]}
    methods: list[Annotated[MethodEntry, BeforeValidator(_name_mapping)]] = Field(min_length=1)
    budgets: list[Budget] = Field(default_factory=lambda: [Budget(epochs=1)], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [1], min_length=1)
    hparams: Hparams = Field(default_factory=Hparams)
    ablate: list[AblateEntry] = Field(default_factory=list)


# --- YAML with line numbers -------------------------------------------------------------------------------

def _line_map(node, path=(), out=None) -> dict[tuple, int]:
    """Map each field path (keys and list indexes) to its 1-based line in the YAML file."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out.setdefault(path + (k.value,), k.start_mark.line + 1)
            _line_map(v, path + (k.value,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out)
    return out


def format_path(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


class _Located:
    """Builds 'file:line: field: message' errors."""

    def __init__(self, file: str, lines: dict):
        self.file, self.lines = file, lines

    def line(self, path) -> int:
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path, msg) -> InputError:
        return InputError(f"{self.file}:{self.line(path)}: {format_path(path)}: {msg}")


def _pydantic_message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("value_error",) and "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return msg


def _unknown_field_hint(path, model_cls) -> str:
    fields = list(getattr(model_cls, "model_fields", {}))
    return did_you_mean(path[-1], fields) if fields else ""


# --- the suite ------------------------------------------------------------------------------------------


@dataclass
class Suite:
    model: SuiteModel
    path: str
    method_variants: list[tuple[str, dict, dict]]   # (method, method params, hparam overrides as lists)

    @property
    def name(self) -> str:
        return self.model.name

    def data_dir(self, cli_value: str | None = None) -> str | None:
        """--data-dir, else the suite's data_dir (relative to the suite file), else $HARNESS_DATA_DIR, else None (hub)."""
        if not cli_value and self.model.data_dir:
            return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(self.path)),
                                                 os.path.expanduser(self.model.data_dir)))
        return resolve_data_dir(cli_value)

    @property
    def task_slots(self) -> list[tuple[str, int, dict | None]]:
        """(task name as stored, task version, schedule) per entry of `tasks`. A sequence is stored under its last
        task (so it lines up with that task's direct runs), a multi-task cell under its members joined by +."""
        slots = []
        for entry in self.model.tasks:
            if isinstance(entry, str):
                task = get_task(entry)
                slots.append((task.name, task.version, None))
            elif isinstance(entry, SequenceEntry):
                names = [get_task(t).name for t in entry.sequence]
                slots.append((names[-1], get_task(names[-1]).version,
                              {"sequence": names, "adapter": entry.adapter,
                               "versions": [get_task(t).version for t in names]}))
            else:
                names = [get_task(t).name for t in entry.multitask]
                schedule = {"multitask": names, "sampling": entry.sampling,
                            "versions": [get_task(t).version for t in names]}
                if entry.temperature is not None:
                    schedule["temperature"] = entry.temperature
                if entry.adapter_per_task:
                    schedule["adapter_per_task"] = True
                slots.append(("+".join(names), 1, schedule))
        return slots

    def model_specs(self) -> list[ModelSpec]:
        base = os.path.dirname(os.path.abspath(self.path))
        return [ModelSpec(m.name, m.trust_remote_code, base) for m in self.model.models]

    def cells(self, num_processes: int = 1) -> list[Cell]:
        """The grid: model x task x method variant x hparams x budget x seed, in that nesting order."""
        out = []
        defaults = self.model.hparams.model_dump()
        for spec, (task_name, task_version, schedule) in itertools.product(self.model_specs(), self.task_slots):
            for method, mparams, overrides in self.method_variants:
                grid = {**defaults, **overrides}
                keys = [k for k, v in grid.items() if v is not None]
                for combo in itertools.product(*(grid[k] for k in keys)):
                    hp = {k: None for k in grid} | dict(zip(keys, combo))
                    for budget, seed in itertools.product(self.model.budgets, self.model.seeds):
                        out.append(Cell(suite=self.name, model=spec.name, trust_remote_code=spec.trust_remote_code,
                                        task=task_name, task_version=task_version, method=method,
                                        method_params=mparams, budget=budget.as_dict(), seed=seed, hparams=hp,
                                        num_processes=num_processes, schedule=schedule))
        return out


def _expand_method(entry: dict, index: int, loc: _Located) -> list[tuple[str, dict, dict]]:
    name = entry["name"]
    base = ("methods", index)
    if name not in METHODS:
        raise loc.error(base + ("name",), f'unknown method "{name}"{did_you_mean(name, METHODS)}; '
                                          f'known: {", ".join(METHODS)}')
    method = METHODS[name]
    params: dict[str, list] = {}
    overrides: dict[str, list] = {}
    for key, value in entry.items():
        if key == "name":
            continue
        path = base + (key,)
        if key in method.params:
            values = _as_list(value)
            if not values:
                raise loc.error(path, "empty list")
            coerced = []
            for i, v in enumerate(values):
                try:
                    coerced.append(method.params[key].coerce(v))
                except ValueError as e:
                    raise loc.error(path + ((i,) if isinstance(value, list) else ()), str(e)) from None
            params[key] = coerced
        elif key in HPARAM_NAMES:
            try:
                overrides[key] = getattr(Hparams.model_validate({key: value}), key)
            except ValidationError as e:
                err = e.errors()[0]
                raise loc.error(base + tuple(err["loc"]), _pydantic_message(err)) from None
        else:
            known = list(method.params) + list(HPARAM_NAMES)
            hint = did_you_mean(key, known)
            raise loc.error(path, f'unknown parameter for method "{name}"{hint}; '
                                  f'its parameters: {", ".join(method.params) or "none"} (or any hparam)')
    keys = list(params)
    variants = []
    for combo in itertools.product(*(params[k] for k in keys)):
        variants.append((name, method.resolve(dict(zip(keys, combo))), overrides))
    return variants


def _task_entry(entry, i: int, loc: _Located):
    """A task name, or a sequence / multitask mapping whose members are task names."""
    path = ("tasks", i)
    if isinstance(entry, str):
        try:
            return get_task(entry).name
        except InputError as e:
            raise loc.error(path, str(e)) from None
    kinds = [k for k in ("sequence", "multitask") if k in entry]
    if len(kinds) != 1:
        raise loc.error(path, "a task is a name, {sequence: [task, ...]} or {multitask: [task, ...]}")
    cls = SequenceEntry if kinds[0] == "sequence" else MultitaskEntry
    try:
        parsed = cls.model_validate(entry)
    except ValidationError as e:
        err = e.errors()[0]
        msg = _pydantic_message(err) + (_unknown_field_hint(tuple(err["loc"]), cls)
                                        if err["type"] == "extra_forbidden" else "")
        raise loc.error(path + tuple(err["loc"]), msg) from None
    members = getattr(parsed, kinds[0])
    for j, name in enumerate(members):
        try:
            members[j] = get_task(name).name
        except InputError as e:
            raise loc.error(path + (kinds[0], j), str(e)) from None
    if len(set(members)) != len(members) and kinds[0] == "multitask":
        raise loc.error(path + (kinds[0],), "a task appears twice")
    return parsed


def _check_schedules(model: SuiteModel, variants, loc: _Located) -> None:
    methods = {v[0] for v in variants}
    for i, entry in enumerate(model.tasks):
        if isinstance(entry, SequenceEntry) and entry.adapter == "new":
            odd = sorted(m for m in methods if METHODS[m].uses_adapters and not METHODS[m].stackable)
            if odd:
                raise loc.error(("tasks", i, "adapter"), f"adapter: new stacks a new bottleneck adapter on the "
                                                         f"previous one ({', '.join(methods_with('stackable'))}); "
                                                         f"not for {odd[0]}")
        if isinstance(entry, MultitaskEntry) and entry.adapter_per_task:
            odd = sorted(m for m in methods if not METHODS[m].uses_adapters)
            if odd:
                raise loc.error(("tasks", i, "adapter_per_task"), f"adapter_per_task needs adapter methods only "
                                                                  f"(the suite also has {odd[0]})")
        saved = sorted(m for m in methods if METHODS[m].loads_saved)
        if not isinstance(entry, str) and saved:
            raise loc.error(("tasks", i), f"{saved[0]} evaluates a saved single-task adapter: use a task name")


def parse_suite(text: str, path: str = "<suite>") -> Suite:
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = min(mark.line + 1, max(1, len(text.splitlines()))) if mark else 1
        raise InputError(f"{path}:{line}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}:1: a suite must be a YAML mapping with name, models, tasks, methods")
    loc = _Located(path, _line_map(node))

    try:
        model = SuiteModel.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        err_path = tuple(err["loc"])
        msg = _pydantic_message(err)
        if err["type"] == "extra_forbidden":
            parent = {(): SuiteModel, ("hparams",): Hparams}.get(err_path[:-1])
            if parent is None and len(err_path) >= 3 and err_path[0] == "budgets":
                parent = Budget
            if parent is None and len(err_path) >= 3 and err_path[0] == "models":
                parent = ModelEntry
            if parent is None and len(err_path) >= 3 and err_path[0] == "ablate":
                parent = AblateEntry
            msg += _unknown_field_hint(err_path, parent) if parent else ""
        raise loc.error(err_path, msg) from None

    model.tasks = [_task_entry(entry, i, loc) for i, entry in enumerate(model.tasks)]
    base = os.path.dirname(os.path.abspath(path))
    for i, m in enumerate(model.models):
        try:
            ModelSpec(m.name, m.trust_remote_code, base).check()
        except InputError as e:
            raise loc.error(("models", i), str(e)) from None

    variants, seen = [], {}
    for i, entry in enumerate(model.methods):
        for variant in _expand_method(entry.model_dump(), i, loc):
            signature = repr(variant)
            if signature in seen:
                raise loc.error(("methods", i), f"the same method variant as methods[{seen[signature]}]")
            seen[signature] = i
            variants.append(variant)
    _check_schedules(model, variants, loc)
    for i, entry in enumerate(model.ablate):
        ablatable = methods_with("ablatable")
        if entry.method is not None and entry.method not in ablatable:
            raise loc.error(("ablate", i, "method"), f'"{entry.method}" cannot be ablated'
                                                     f'{did_you_mean(entry.method, ablatable)}; ablatable: '
                                                     f'{", ".join(ablatable)}')
        if entry.task is not None:
            try:
                entry.task = get_task(entry.task).name
            except InputError as e:
                raise loc.error(("ablate", i, "task"), str(e)) from None
    for field_name in ("models", "tasks", "seeds"):
        values = [x.name if field_name == "models" else x if isinstance(x, (str, int)) else repr(x)
                  for x in getattr(model, field_name)]
        dup = next((v for v in values if values.count(v) > 1), None)
        if dup is not None:
            raise loc.error((field_name, len(values) - 1 - values[::-1].index(dup)), f"duplicate entry {dup!r}")
    return Suite(model=model, path=path, method_variants=variants)


def load_suite(path: str) -> Suite:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read suite file ({e.strerror})") from None
    return parse_suite(text, path)
