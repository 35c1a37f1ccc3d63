"""Suite files: YAML -> validated typed objects -> the grid of cells.

Validation happens before anything is written. Every error names the file, the YAML line and the field
path ("suites/x.yaml:12: methods[2].size: ..."), and the CLI exits 2. Types are strict (no text->number or
bool->int coercion), numbers finite and in ranges that say why, no value twice in a list, no two cells with one
key, and the grid is capped (max_cells). What needs the model's config or the disk (max_length against the
model's positions, adapter sizes against its width, data and adapter files) is checked by plan/preflight.py,
still before anything trains.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from harness.plan.cells import Cell
from harness.errors import InputError, did_you_mean
from harness.plan import strict_yaml
from harness.train.methods import METHODS, methods_with
from harness.train.models import ModelSpec
from harness.tasks.kinds import SpanExtraction, kind_of
from harness.tasks.registry import get_task


def resolve_data_dir(cli_value: str | None) -> str | None:
    """--data-dir, else $HARNESS_DATA_DIR, else None (the hub)."""
    value = cli_value or os.environ.get("HARNESS_DATA_DIR")
    return os.path.abspath(os.path.expanduser(value)) if value else None


def format_path(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


DEFAULT_MAX_CELLS = 10_000   # a bigger grid is almost always a typo in a list; --max-cells N allows it


def _as_list(v):
    return v if isinstance(v, list) else [v]


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e12 else f"{x:g}"


def _interval(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    return f"{'<' if hi_open else '<='} {_num(hi)}"


def Range(lo=None, hi=None, *, lo_open=False, hi_open=False, why=""):
    """A bound whose message gives the allowed interval and the reason (pydantic's own message has neither)."""
    def check(v):
        if v is not None and ((lo is not None and (v <= lo if lo_open else v < lo))
                              or (hi is not None and (v >= hi if hi_open else v > hi))):
            raise ValueError(f"{v!r} is out of range: must be {_interval(lo, hi, lo_open, hi_open)}"
                             + (f" ({why})" if why else ""))
        return v
    return AfterValidator(check)


def Grid(item_type, *checks):
    """A hyperparameter that may be one value or a list of values (a list expands into the grid)."""
    item = Annotated[(item_type, *checks)] if checks else item_type
    return Annotated[list[item], BeforeValidator(_as_list), Field(min_length=1)]


# no text->number, number->text or bool->int coercion; finite numbers only
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Hparams(BaseModel):
    """Defaults for every cell; a method may override any of them."""

    model_config = STRICT
    learning_rate: Grid(float, Range(0, 1, lo_open=True, why="a positive step size; AdamW diverges above 1")) = [2e-5]
    batch_size: Grid(int, Range(1, 65536, why="examples per process and step")) = [32]
    eval_batch_size: Grid(int, Range(1, 65536, why="examples per process and evaluation step")) = [64]
    # and at most the model's maximum positions: checked against its config before training (plan/preflight.py)
    max_length: Grid(int, Range(2, 65536, why="tokens per example, special tokens included")) = [128]
    warmup_ratio: Grid(float, Range(0, 1, hi_open=True, why="a fraction of the training steps")) = [0.0]
    weight_decay: Grid(float, Range(0, 1, why="AdamW's decoupled decay, a fraction of each weight")) = [0.0]
    gradient_accumulation_steps: Grid(int, Range(1, 10_000, why="batches per optimizer step")) = [1]
    max_grad_norm: Grid(float, Range(0, 1e6, lo_open=True, why="the gradient clipping norm")) = [1.0]
    mixed_precision: Grid(Literal["auto", "no", "fp16", "bf16"]) = ["auto"]
    padding: Grid(Literal["dynamic", "max_length"]) = ["dynamic"]
    # batches of similar lengths, grouped within small random mega-batches: far less padding, so faster on
    # every device, with dev scores within seed noise of plain random batches (bench/RESULTS.md)
    group_by_length: Grid(bool) = [True]
    eval_steps: Grid(int, Range(1, 10 ** 9, why="optimizer steps between evaluations")) | None = None   # None: each epoch
    # span extraction (SQuAD): the stride between context windows; None: 128 for cells with a QA task
    doc_stride: Grid(int, Range(1, 10 ** 6, why="tokens shared by consecutive SQuAD context windows")) | None = None


HPARAM_NAMES = tuple(Hparams.model_fields)


class Budget(BaseModel):
    model_config = STRICT
    epochs: Annotated[float, Range(0, 1000, lo_open=True, why="passes over the training data")] | None = None
    max_steps: Annotated[int, Range(1, 10 ** 8, why="optimizer steps")] | None = None
    max_train_samples: Annotated[int, Range(1, 10 ** 9, why="training examples used")] | None = None
    max_eval_samples: Annotated[int, Range(1, 10 ** 9, why="dev examples scored")] | None = None
    time_limit_min: Annotated[float, Range(0, 525_600, lo_open=True, why="minutes; 525,600 is a year")] | None = None

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
    model_config = STRICT
    name: str = Field(min_length=1, max_length=500)
    trust_remote_code: bool = False   # from here or the command line only, never from a store


class MethodEntry(BaseModel):
    # Parameters are method-specific: checked against the method registry after this pass.
    model_config = ConfigDict(extra="allow", strict=True)
    name: str


class SequenceEntry(BaseModel):
    """Sequential adaptation: train on each task in turn, handing the encoder (not the head) on."""
    model_config = STRICT
    sequence: list[str] = Field(min_length=2, max_length=20)
    adapter: Literal["continue", "new"] = "continue"   # adapters: keep training the same one, or stack a new one


class MultitaskEntry(BaseModel):
    """Multi-task fine-tuning: one shared encoder, one head per task, batches drawn from the tasks in turn."""
    model_config = STRICT
    multitask: list[str] = Field(min_length=2, max_length=20)
    sampling: Literal["proportional", "uniform", "temperature"] = "proportional"
    temperature: Annotated[float, Range(0, 1000, lo_open=True, why="T in p ~ n^(1/T)")] | None = None
    adapter_per_task: bool = False   # adapter methods: one adapter per task on the shared frozen base

    @model_validator(mode="after")
    def _temperature_only_for_temperature(self):
        if (self.sampling == "temperature") != (self.temperature is not None):
            raise ValueError("temperature is needed with sampling: temperature, and only there")
        return self


class AblateEntry(BaseModel):
    """Which completed runs of the suite get an adapter ablation after the cells ran (empty field: any)."""
    model_config = STRICT
    task: str | None = None
    method: str | None = None   # a method with the ablatable flag (checked in parse_suite)
    # best: per task and method variant, the first seed of the setting that is best on dev (what a paper
    # ablates); all: every matching run
    runs: Literal["best", "all"] = "best"


Seed = Annotated[int, Range(0, 2 ** 32, hi_open=True, why="numpy and torch take 32-bit seeds")]


class SuiteModel(BaseModel):
    model_config = STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=100)
    description: str | None = None
    data_dir: str | None = Field(None, min_length=1)
    models: list[Annotated[ModelEntry, BeforeValidator(_name_mapping)]] = Field(min_length=1)
    tasks: list[Any] = Field(min_length=1)  # a name, {sequence: [...]} or {multitask: [...]}: see _task_entry
    methods: list[Annotated[MethodEntry, BeforeValidator(_name_mapping)]] = Field(min_length=1)
    budgets: list[Budget] = Field(default_factory=lambda: [Budget(epochs=1)], min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [1], min_length=1)
    hparams: Hparams = Field(default_factory=Hparams)
    ablate: list[AblateEntry] = Field(default_factory=list)


# --- errors with file, line and field -------------------------------------------------------------------------


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
        path = tuple(path)
        # one value that a list type wrapped: name the field, not a [0] the file does not have
        while path and path[-1] == 0 and path not in self.lines and path[:-1] in self.lines:
            path = path[:-1]
        return InputError(f"{self.file}:{self.line(path)}: {format_path(path)}: {msg}")


_TYPE_NAMES = {"float_type": "a number", "int_type": "an integer", "bool_type": "true or false",
               "string_type": "text", "list_type": "a list", "dict_type": "a mapping",
               "model_type": "a mapping", "model_attributes_type": "a mapping", "literal_error": None}


def _looks_numeric(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _pydantic_message(err: dict) -> str:
    kind, given = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind.endswith("_type"):
        msg = f"must be {_TYPE_NAMES.get(kind) or kind.removesuffix('_type')} (got {given!r})"
        if isinstance(given, str) and kind in ("float_type", "int_type") and _looks_numeric(given):
            msg += "; write the number without quotes"
        elif isinstance(given, str) and kind == "bool_type":
            msg += "; write true or false, without quotes"
        elif isinstance(given, float) and kind == "int_type":
            msg += "; write a whole number"
        return msg
    if kind == "finite_number":
        return f"must be a finite number (got {given!r})"
    msg = err["msg"].removeprefix("Value error, ")
    if kind != "value_error" and given is not None and not isinstance(given, (dict, list)):
        msg += f" (got {given!r})"
    return msg


def _unknown_field_hint(path, model_cls) -> str:
    fields = list(getattr(model_cls, "model_fields", {}))
    return did_you_mean(path[-1], fields) if fields else ""


def _canonical(value) -> str:
    """A value as the cell key sees it: 1 and 1.0, 1e-3 and 0.001 are one value."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(float(value))
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{_canonical(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    return repr(value)


def _no_duplicates(values, path: tuple, loc: _Located, same=_canonical) -> None:
    """Reject a list that holds one value twice (each of its cells would run twice). Linear: a dict, no scan."""
    first: dict[str, int] = {}
    for i, v in enumerate(values):
        c = same(v)
        if c in first:
            shown = (v.name if isinstance(v, ModelEntry) else v.model_dump(exclude_none=True)
                     if isinstance(v, BaseModel) else v)
            raise loc.error(path + (i,), f"the same as {format_path(path + (first[c],))} ({shown!r}): its cells "
                                         f"would run twice")
        first[c] = i


def check_suite_path(value: str, what: str) -> None:
    """A path written in a suite: plain text, and a relative one stays inside the suite's folder, so a shared suite
    cannot point the harness at ../../../etc (an absolute path says where it goes, for every reader to see)."""
    if any(ord(ch) < 32 for ch in value):
        raise InputError(f"{what} contains a control character")
    expanded = os.path.expanduser(value)
    if not os.path.isabs(expanded) and ".." in expanded.replace("\\", "/").split("/"):
        raise InputError(f'{what} "{value}" leaves the suite\'s folder with ".."; a relative path stays inside '
                         f"it: write an absolute path for a directory elsewhere")


# --- the suite ------------------------------------------------------------------------------------------


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

    def locate(self) -> _Located:
        return _Located(self.path, self.lines)

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

    def _settings(self, variant_overrides: dict) -> int:
        grid = {**self.model.hparams.model_dump(), **variant_overrides}
        return math.prod(len(v) for v in grid.values() if v is not None)

    def size(self) -> int:
        """The number of cells, computed without building them (so a huge grid costs nothing to reject)."""
        m = self.model
        per_model_task = sum(self._settings(o) for _, _, o in self.method_variants)
        return len(m.models) * len(m.tasks) * per_model_task * len(m.budgets) * len(m.seeds)

    def cells(self, num_processes: int = 1) -> list[Cell]:
        """The grid: model x task x method variant x hparams x budget x seed, in that nesting order."""
        if num_processes not in self.built:
            self.built[num_processes] = [cell for cell, _ in self._cells(num_processes)]
        return list(self.built[num_processes])

    def _cells(self, num_processes: int):
        defaults = self.model.hparams.model_dump()
        budgets = [b.as_dict() for b in self.model.budgets]
        sources = self.variant_sources or [None] * len(self.method_variants)
        for spec, (task_name, task_version, schedule) in itertools.product(self.model_specs(), self.task_slots):
            members = (schedule or {}).get("sequence") or (schedule or {}).get("multitask") or [task_name]
            span = any(kind_of(get_task(t)).name == "span_extraction" for t in members)
            for (method, mparams, overrides), source in zip(self.method_variants, sources):
                grid = {**defaults, **overrides}
                if span:  # QA's own defaults where the suite left them unset (GLUE cells keep their keys)
                    if "max_length" not in self.model.hparams.model_fields_set and "max_length" not in overrides:
                        grid["max_length"] = [SpanExtraction.DEFAULT_MAX_LENGTH]
                    if grid.get("doc_stride") is None:
                        grid["doc_stride"] = [SpanExtraction.DEFAULT_DOC_STRIDE]
                keys = [k for k, v in grid.items() if v is not None]
                for combo in itertools.product(*(grid[k] for k in keys)):
                    hp = {k: None for k in grid} | dict(zip(keys, combo))
                    for budget, seed in itertools.product(budgets, self.model.seeds):
                        yield (Cell(suite=self.name, model=spec.name, trust_remote_code=spec.trust_remote_code,
                                    task=task_name, task_version=task_version, method=method,
                                    method_params=mparams, budget=budget, seed=seed, hparams=hp,
                                    num_processes=num_processes, schedule=schedule), source)


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
    if not isinstance(entry, dict):
        raise loc.error(path, f"a task is a name, {{sequence: [task, ...]}} or {{multitask: [task, ...]}} "
                              f"(got {entry!r})")
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


def _parse_model(raw: dict, loc: _Located) -> SuiteModel:
    try:
        return SuiteModel.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        err_path = tuple(err["loc"])
        msg = _pydantic_message(err)
        if err["type"] == "extra_forbidden":
            parent = {(): SuiteModel, ("hparams",): Hparams}.get(err_path[:-1])
            if parent is None and len(err_path) >= 3:
                parent = {"budgets": Budget, "models": ModelEntry, "ablate": AblateEntry}.get(err_path[0])
            msg += _unknown_field_hint(err_path, parent) if parent else ""
        raise loc.error(err_path, msg) from None


def _no_duplicate_values(model: SuiteModel, base: str, loc: _Located) -> None:
    """No list of the suite holds one value twice (1 and 1.0, 1e-3 and 0.001 are one value)."""
    _no_duplicates(model.models, ("models",), loc,
                   same=lambda m: ModelSpec(m.name, False, base).local_path() or m.name)
    _no_duplicates(model.tasks, ("tasks",), loc)
    _no_duplicates(model.budgets, ("budgets",), loc)
    _no_duplicates(model.seeds, ("seeds",), loc)
    _no_duplicates(model.ablate, ("ablate",), loc)
    for name in HPARAM_NAMES:
        values = getattr(model.hparams, name)
        if isinstance(values, list):
            _no_duplicates(values, ("hparams", name), loc)
    for i, entry in enumerate(model.methods):
        for key, value in (entry.model_extra or {}).items():
            if isinstance(value, list):
                _no_duplicates(value, ("methods", i, key), loc)


def _no_duplicate_cells(suite: Suite, loc: _Located) -> list[Cell]:
    """Two cells with one key would train the same thing twice (e.g. a method that writes out an hparam's
    default next to one that leaves it, or settings that differ only in what the key ignores)."""
    seen: dict[str, tuple[Cell, int | None]] = {}
    cells = []
    for cell, source in suite._cells(1):
        key = cell.key
        if key in seen:
            first, first_source = seen[key]
            raise loc.error(("methods", source), f'cell "{cell.label}" is the same cell (key {key}) as one of '
                                                 f"methods[{first_source}]; it would run twice")
        seen[key] = (cell, source)
        cells.append(cell)
    suite.built[1] = cells
    return cells


def parse_suite(text: str, path: str = "<suite>", max_cells: int = DEFAULT_MAX_CELLS) -> Suite:
    try:
        raw, lines = strict_yaml.load(text)
    except strict_yaml.YAMLInputError as e:
        where = f" {format_path(e.path)}:" if e.path else ""
        raise InputError(f"{path}:{e.line}:{where} {e.message}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}:1: a suite must be a YAML mapping with name, models, tasks, methods")
    loc = _Located(path, lines)
    model = _parse_model(raw, loc)

    base = os.path.dirname(os.path.abspath(path))
    model.tasks = [_task_entry(entry, i, loc) for i, entry in enumerate(model.tasks)]
    if model.data_dir is not None:
        try:
            check_suite_path(model.data_dir, "data_dir")
        except InputError as e:
            raise loc.error(("data_dir",), str(e)) from None
    for i, m in enumerate(model.models):
        try:
            spec = ModelSpec(m.name, m.trust_remote_code, base)
            if spec.looks_like_path():
                check_suite_path(m.name, "a model path")
            spec.check()
        except InputError as e:
            raise loc.error(("models", i), str(e)) from None

    _no_duplicate_values(model, base, loc)
    variants, sources, seen = [], [], {}
    for i, entry in enumerate(model.methods):
        for variant in _expand_method(entry.model_dump(), i, loc):
            signature = _canonical(variant)
            if signature in seen:
                raise loc.error(("methods", i), f"the same method variant as methods[{seen[signature]}]")
            seen[signature] = i
            variants.append(variant)
            sources.append(i)
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

    suite = Suite(model=model, path=path, method_variants=variants, variant_sources=sources, lines=lines)
    n = suite.size()
    if n > max_cells:
        raise InputError(f"{path}:1: (grid): {n:,} cells = {len(model.models)} model(s) x {len(model.tasks)} "
                         f"task(s) x {n // (len(model.models) * len(model.tasks) * len(model.budgets) * len(model.seeds))}"
                         f" method/hparam setting(s) x {len(model.budgets)} budget(s) x {len(model.seeds)} seed(s), "
                         f"more than the cap of {max_cells:,}; a list is probably longer than meant "
                         f"(--max-cells {n} allows it)")
    _no_duplicate_cells(suite, loc)
    _check_windows(suite, loc)
    return suite


def _check_windows(suite: Suite, loc: _Located) -> None:
    """SQuAD windows overlap by doc_stride tokens: the stride must leave room for new context in each window."""
    for cell in suite.cells():
        stride, length = cell.hparams.get("doc_stride"), cell.hparams["max_length"]
        if stride is not None and stride >= length // 2 and any(
                kind_of(get_task(t)).name == "span_extraction"
                for t in (cell.schedule or {}).get("sequence") or (cell.schedule or {}).get("multitask") or [cell.task]):
            raise loc.error(("hparams", "doc_stride"), f"doc_stride {stride} must be below half of max_length "
                                                       f"{length} (SQuAD windows)")


def load_suite(path: str, max_cells: int = DEFAULT_MAX_CELLS) -> Suite:
    try:
        with open(path, "rb") as f:
            data = f.read(strict_yaml.MAX_BYTES + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read suite file ({e.strerror})") from None
    try:
        text = strict_yaml.decode(data)
    except strict_yaml.YAMLInputError as e:
        raise InputError(f"{path}:{e.line}: {e.message}") from None
    try:
        return parse_suite(text, path, max_cells)
    except RecursionError:   # a guard: strict_yaml caps nesting long before Python's own limit
        raise InputError(f"{path}:1: nested too deeply to read") from None
