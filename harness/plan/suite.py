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
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from harness.plan import strict_yaml
from harness.spec.cell import Cell
from harness.spec.errors import InputError, did_you_mean
from harness.spec.hparams import HPARAM_NAMES, STRICT, Budget, Hparams, Range, Seed
from harness.spec.methods import METHODS, methods_with
from harness.spec.models import ModelSpec
from harness.spec.schedule import Multitask, Schedule, Sequence
from harness.spec.tasks import get_task


class TaskSlot(NamedTuple):
    """One entry of a suite's `tasks`: the task name as stored, its version, and its schedule (None: one task)."""

    task: str
    version: int
    schedule: Schedule | None

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.schedule.tasks if self.schedule else (self.task,)


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
    def task_slots(self) -> list[TaskSlot]:
        """One slot per entry of `tasks`: the task name as stored, its version and its schedule (None: one task)."""
        slots = []
        for entry in self.model.tasks:
            if isinstance(entry, str):
                task = get_task(entry)
                slots.append(TaskSlot(task.name, task.version, None))
                continue
            names = tuple(get_task(t).name for t in getattr(entry, "sequence", None) or entry.multitask)
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
                for combo in itertools.product(*(grid[k] for k in keys)):
                    hp = {k: None for k in grid} | dict(zip(keys, combo))
                    for budget, seed in itertools.product(budgets, self.model.seeds):
                        yield (Cell(suite=self.name, model=spec.name, trust_remote_code=spec.trust_remote_code,
                                    task=slot.task, task_version=slot.version, method=method,
                                    method_params=mparams, budget=budget, seed=seed, hparams=hp,
                                    num_processes=num_processes, schedule=slot.schedule), source)


def _expand_method(entry: dict, index: int, loc: _Located) -> list[tuple[str, dict, dict]]:
    """A methods[] entry -> its variants (method, resolved parameters, hparam overrides as lists). Parameters
    are validated by the method's pydantic model and overrides by Hparams': one system, one set of messages."""
    name = entry["name"]
    base = ("methods", index)
    try:
        method = METHODS.get(name)
    except InputError as e:
        raise loc.error(base + ("name",), str(e)) from None
    given = {k: v for k, v in entry.items() if k != "name"}
    unknown = [k for k in given if k not in method.params and k not in HPARAM_NAMES]
    if unknown:
        known = list(method.params) + list(HPARAM_NAMES)
        raise loc.error(base + (unknown[0],), f'unknown parameter for method "{name}"{did_you_mean(unknown[0], known)}; '
                                              f'its parameters: {", ".join(method.params) or "none"} (or any hparam)')
    for model_cls, part in ((method.params_model, {k: v for k, v in given.items() if k in method.params}),
                            (Hparams, {k: v for k, v in given.items() if k not in method.params})):
        try:
            validated = model_cls.model_validate(part)
        except ValidationError as e:
            err = e.errors()[0]
            raise loc.error(base + tuple(err["loc"]), _pydantic_message(err)) from None
        if model_cls is Hparams:
            overrides = {k: getattr(validated, k) for k in part}
        else:
            params = {k: getattr(validated, k) for k in part}
    keys = list(params)
    return [(name, method.resolve(dict(zip(keys, combo))), overrides)
            for combo in itertools.product(*(params[k] for k in keys))]


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
        if stride is not None and stride >= length // 2 and any(get_task(t).kind == "span_extraction"
                                                                 for t in cell.tasks):
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
