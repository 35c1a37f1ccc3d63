"""The entries a suite file holds, as pydantic models, and how each is read: a task entry into canonical task
names, a methods[] entry into its variants. Hparams and budgets are spec/hparams.py's; method parameters are
validated by each method's own pydantic model (spec/methods.py): one system, one set of messages.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from harness.plan.messages import Located, validated
from harness.spec.errors import did_you_mean
from harness.spec.hparams import HPARAM_NAMES, STRICT, Budget, Hparams, Range, Seed
from harness.spec.layout import SUITE_NAME_MAX, SUITE_NAME_PATTERN
from harness.spec.methods import METHODS
from harness.spec.tasks import get_task
from harness.spec.trackers import DEFAULT_LOG_EVERY


def _name_mapping(v):
    return {"name": v} if isinstance(v, str) else v


def _tracker_entries(v):
    """`log_with`: one name, a list of names, or a mapping name -> settings (a mapping, or nothing)."""
    if v is None or isinstance(v, list) and all(isinstance(n, str) for n in v):
        return v
    if isinstance(v, str):
        return [v]
    if isinstance(v, dict) and all(isinstance(k, str) and (s is None or isinstance(s, dict)) for k, s in v.items()):
        return v
    raise ValueError(f"a tracker name, a list of names or a mapping name -> settings (got {v!r})")


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

    @property
    def members(self) -> list[str]:
        return self.sequence


class MultitaskEntry(BaseModel):
    """Multi-task fine-tuning: one shared encoder, one head per task, batches drawn from the tasks in turn."""
    model_config = STRICT
    multitask: list[str] = Field(min_length=2, max_length=20)
    sampling: Literal["proportional", "uniform", "temperature"] = "proportional"
    temperature: Annotated[float, Range(0, 1000, lo_open=True, why="T in p ~ n^(1/T)")] | None = None
    adapter_per_task: bool = False   # adapter methods: one adapter per task on the shared frozen base

    @property
    def members(self) -> list[str]:
        return self.multitask

    @model_validator(mode="after")
    def _temperature_only_for_temperature(self):
        if (self.sampling == "temperature") != (self.temperature is not None):
            raise ValueError("temperature is needed with sampling: temperature, and only there")
        return self


class AblateEntry(BaseModel):
    """Which completed runs of the suite get an adapter ablation after the cells ran (empty field: any)."""
    model_config = STRICT
    task: str | None = None
    method: str | None = None   # a method with the ablatable flag (checked in plan/checks.py)
    # best: per task and method variant, the first seed of the setting that is best on dev (what a paper
    # ablates); all: every matching run
    runs: Literal["best", "all"] = "best"


class SuiteModel(BaseModel):
    model_config = STRICT
    name: str = Field(pattern=SUITE_NAME_PATTERN, max_length=SUITE_NAME_MAX)
    description: str | None = None
    data_dir: str | None = Field(None, min_length=1)
    models: list[Annotated[ModelEntry, BeforeValidator(_name_mapping)]] = Field(min_length=1)
    tasks: list[Any] = Field(min_length=1)  # a name, {sequence: [...]} or {multitask: [...]}: see read_task_entry
    methods: list[Annotated[MethodEntry, BeforeValidator(_name_mapping)]] = Field(min_length=1)
    budgets: list[Budget] = Field(default_factory=lambda: [Budget(epochs=1)], min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [1], min_length=1)
    hparams: Hparams = Field(default_factory=Hparams)
    ablate: list[AblateEntry] = Field(default_factory=list)
    # experiment trackers (harness/train/tracking.py): names, or name -> that tracker's settings; checked in
    # plan/checks.py (names, settings), installed packages by plan/preflight.py
    log_with: Annotated[Any, BeforeValidator(_tracker_entries)] = None
    log_every: Annotated[int, Range(1, 10 ** 9, why="optimizer steps between train-loss points")] = DEFAULT_LOG_EVERY


def _fields_of(path: tuple):
    """The model whose fields an unknown field of the suite is compared with for a "did you mean"."""
    parent = {(): SuiteModel, ("hparams",): Hparams}.get(path[:-1])
    if parent is None and len(path) >= 3:
        parent = {"budgets": Budget, "models": ModelEntry, "ablate": AblateEntry}.get(path[0])
    return parent


def read_model(raw: dict, loc: Located) -> SuiteModel:
    return validated(SuiteModel, raw, loc, fields_of=_fields_of)


def read_task_entry(entry, i: int, loc: Located):
    """A task name, or a sequence / multitask mapping whose members are task names."""
    path = ("tasks", i)
    if isinstance(entry, str):
        with loc.at(path):
            return get_task(entry).name
    if not isinstance(entry, dict):
        raise loc.error(path, f"a task is a name, {{sequence: [task, ...]}} or {{multitask: [task, ...]}} "
                              f"(got {entry!r})")
    kinds = [k for k in ("sequence", "multitask") if k in entry]
    if len(kinds) != 1:
        raise loc.error(path, "a task is a name, {sequence: [task, ...]} or {multitask: [task, ...]}")
    cls = SequenceEntry if kinds[0] == "sequence" else MultitaskEntry
    parsed = validated(cls, entry, loc, path, fields_of=lambda _: cls)
    members = parsed.members
    for j, name in enumerate(members):
        with loc.at(path + (kinds[0], j)):
            members[j] = get_task(name).name
    # one task twice collides in either kind: a multi-task cell's member rows and folders are named by their
    # task, a sequence's stages log their dev metrics under theirs (dev/<task>/...: two stages, one series)
    if len(set(members)) != len(members):
        raise loc.error(path + (kinds[0],), "a task appears twice")
    return parsed


def expand_method(entry: dict, index: int, loc: Located) -> list[tuple[str, dict, dict]]:
    """A methods[] entry -> its variants (method, resolved parameters, hparam overrides as lists). Parameters
    are validated by the method's pydantic model and overrides by Hparams': one system, one set of messages."""
    name = entry["name"]
    base = ("methods", index)
    with loc.at(base + ("name",)):
        method = METHODS.get(name)
    given = {k: v for k, v in entry.items() if k != "name"}
    unknown = [k for k in given if k not in method.params and k not in HPARAM_NAMES]
    if unknown:
        known = list(method.params) + list(HPARAM_NAMES)
        raise loc.error(base + (unknown[0],), f'unknown parameter for method "{name}"{did_you_mean(unknown[0], known)}; '
                                              f'its parameters: {", ".join(method.params) or "none"} (or any hparam)')
    param_part = {k: v for k, v in given.items() if k in method.params}
    hparam_part = {k: v for k, v in given.items() if k not in method.params}
    params = validated(method.params_model, param_part, loc, base)
    params = {k: getattr(params, k) for k in param_part}
    overrides = validated(Hparams, hparam_part, loc, base)
    overrides = {k: getattr(overrides, k) for k in hparam_part}
    keys = list(params)
    return [(name, method.resolve(dict(zip(keys, combo))), overrides)
            for combo in itertools.product(*(params[k] for k in keys))]
