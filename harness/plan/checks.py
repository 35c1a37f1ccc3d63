"""The checks a suite passes after its entries are read, each raising a located InputError: no value twice in a
list and no two cells with one key, paths that stay where they say, schedules that suit the methods, SQuAD
windows that leave room for context, ablate entries that name an ablatable method and a known task.
"""

from __future__ import annotations

import contextlib
import os

from pydantic import BaseModel

from harness.plan.grid import Suite
from harness.plan.messages import Located, format_path
from harness.plan.schema import ModelEntry, MultitaskEntry, SequenceEntry, SuiteModel
from harness.spec.cell import Cell
from harness.spec.errors import InputError, did_you_mean
from harness.spec.hparams import HPARAM_NAMES, MAX_SPECIAL_TOKENS, min_length
from harness.spec.methods import METHODS, methods_with, variant_problem
from harness.spec.models import ModelSpec
from harness.spec.tasks import KIND_ONLY_HPARAMS, get_task
from harness.spec.trackers import RESERVED, TRACKERS


def canonical(value) -> str:
    """A value as the cell key sees it: 1 and 1.0, 1e-3 and 0.001 are one value."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(float(value) + 0.0)   # + 0.0: -0.0 is 0.0
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{canonical(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    return repr(value)


def _no_duplicates(values, path: tuple, loc: Located, same=canonical) -> None:
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


def no_duplicate_values(model: SuiteModel, base: str, loc: Located) -> None:
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


def no_duplicate_variants(variants_per_entry, loc: Located) -> tuple[list, list[int]]:
    """Each methods[] entry's variants (an iterable, read lazily: the first error in file order wins) -> all
    variants and the entry of each; no variant twice."""
    variants, sources, seen = [], [], {}
    for i, entry_variants in enumerate(variants_per_entry):
        for variant in entry_variants:
            signature = canonical(variant)
            if signature in seen:
                raise loc.error(("methods", i), f"the same method variant as methods[{seen[signature]}]")
            seen[signature] = i
            variants.append(variant)
            sources.append(i)
    return variants, sources


def no_duplicate_cells(suite: Suite, loc: Located) -> list[Cell]:
    """Two cells with one key would train the same thing twice (e.g. a method that writes out an hparam's
    default next to one that leaves it, or settings that differ only in what the key ignores). So would two
    cells whose keys differ only in settings neither reads (Cell.unread: a doc_stride list crossed with GLUE
    tasks, a bottleneck_size list on a flat prefix, a learning-rate list on an evaluation-only entry): refused,
    not dropped from the key, so the keys of stored cells stand."""
    seen: dict[str, tuple[Cell, int | None]] = {}
    read: dict[str, tuple[Cell, int | None]] = {}
    cells = []
    for cell, source in suite.cells_with_sources(1):
        key = cell.key
        if key in seen:
            first, first_source = seen[key]
            raise loc.error(("methods", source), f'cell "{cell.label}" is the same cell (key {key}) as one of '
                                                 f"methods[{first_source}]; it would run twice")
        read_key = cell.read_key if any(cell.unread) else key   # (most cells read all they set: no second hash)
        if read_key in read:
            _unread_twice(suite, cell, source, read[read_key], loc)
        seen[key] = read[read_key] = (cell, source)
        cells.append(cell)
    suite.built[1] = cells
    return cells


def unread_param_notes(suite: Suite, loc: Located) -> list[str]:
    """A method parameter written on an entry whose variant never reads it (a flat prefix's bottleneck_size): keyed,
    never shown in a label, and ignored. Said (`harness validate`), not refused: a suite that wrote one has stored
    results under its keys, which leaving it out would change (a list of them is refused: no_duplicate_cells)."""
    notes = []
    for (method, params, _), source in zip(suite.method_variants, suite.variant_sources):
        written = suite.model.methods[source].model_extra or {}
        spec = METHODS[method]
        for name in spec.unread(params):
            if name in written:
                flag = spec.params[name].unused_when
                said = loc.error(("methods", source, name), f"{method} with {flag}: true does not read {name}: it "
                                                           f"only keys these cells (kept, so results stored under it "
                                                           f"stand; a new suite leaves it out)")
                notes.append(f"note: {said}")
    return list(dict.fromkeys(notes))


def _unread_twice(suite: Suite, cell: Cell, source: int | None, first: tuple[Cell, int | None], loc: Located):
    """The error for two cells that differ only in settings they never read, at the entry that sets the one they
    differ in (either cell may be the one that sets it: the other can leave it unset)."""
    other, other_source = first
    unread = [(part, k) for part, names in zip(("hparams", "method_params"), zip(cell.unread, other.unread))
              for k in dict.fromkeys(names[0] + names[1])]
    part, name = next((part, k) for part, k in unread
                      if getattr(cell, part).get(k) != getattr(other, part).get(k))
    mine, theirs = getattr(cell, part).get(name), getattr(other, part).get(name)
    given = [i for i in (source, other_source) if i is not None and name in (suite.model.methods[i].model_extra or {})]
    path = ("methods", given[0], name) if given else ("hparams", name) if part == "hparams" else ("methods", source)
    method = METHODS[cell.method]
    if part == "method_params":
        does, why = "trains", (f"{cell.method} with {method.params[name].unused_when}: true does not read {name}; it "
                               f"would run twice (give the {method.params[name].unused_when} variant an entry of its "
                               f"own, without {name})")
    elif name in KIND_ONLY_HPARAMS:
        does, why = "trains", (f"{cell.task} cells do not read {name}; it would run twice (sweep {name} in a suite "
                               f"of the tasks that read it)")
    else:
        does, why = "evaluates", (f"{cell.method} with {method.trains_when}: false evaluates only and reads no {name}; "
                                  f"it would run twice (give methods[{(given or [source])[0]}] one {name})")
    said = lambda v: f"without {name}" if v is None else f"with {name}={v}"   # noqa: E731
    raise loc.error(path, f'cell "{cell.label}" {said(mine)} {does} the same as the one of methods[{other_source}] '
                          f"{said(theirs)}: {why}")


def check_suite_path(value: str, what: str) -> None:
    """A path written in a suite: plain text, and a relative one stays inside the suite's folder, so a shared suite
    cannot point the harness at ../../../etc (an absolute path says where it goes, for every reader to see)."""
    if any(ord(ch) < 32 for ch in value):
        raise InputError(f"{what} contains a control character")
    expanded = os.path.expanduser(value)
    if not os.path.isabs(expanded) and ".." in expanded.replace("\\", "/").split("/"):
        raise InputError(f'{what} "{value}" leaves the suite\'s folder with ".."; a relative path stays inside '
                         f"it: write an absolute path for a directory elsewhere")


def check_paths(model: SuiteModel, base: str, loc: Located) -> None:
    """The suite's data_dir and model paths: see check_suite_path; a model name must also resolve."""
    if model.data_dir is not None:
        with loc.at(("data_dir",)):
            check_suite_path(model.data_dir, "data_dir")
    for i, m in enumerate(model.models):
        with loc.at(("models", i)):
            spec = ModelSpec(m.name, m.trust_remote_code, base)
            if spec.looks_like_path():
                check_suite_path(m.name, "a model path")
            spec.check()


def check_schedules(model: SuiteModel, variants, loc: Located) -> None:
    methods = {v[0] for v in variants}
    for i, entry in enumerate(model.tasks):
        if isinstance(entry, SequenceEntry) and entry.adapter == "new":
            odd = sorted(m for m in methods if not METHODS[m].stackable)
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


def check_ablate(model: SuiteModel, variants, loc: Located) -> None:
    """An ablate entry names an ablatable method and a known task (stored under its canonical name), both of
    them in this suite: an entry that can match no run of the suite would silently ablate nothing."""
    methods = list(dict.fromkeys(v[0] for v in variants))
    tasks = [t if isinstance(t, str) else None for t in model.tasks]
    for i, entry in enumerate(model.ablate):
        ablatable = methods_with("ablatable")
        if entry.method is not None and entry.method not in ablatable:
            raise loc.error(("ablate", i, "method"), f'"{entry.method}" cannot be ablated'
                                                     f'{did_you_mean(entry.method, ablatable)}; ablatable: '
                                                     f'{", ".join(ablatable)}')
        if entry.method is not None and entry.method not in methods:
            raise loc.error(("ablate", i, "method"), f'"{entry.method}" is not one of this suite\'s methods '
                                                     f'({", ".join(methods)})')
        if entry.task is not None:
            with loc.at(("ablate", i, "task")):
                entry.task = get_task(entry.task).name
            if entry.task not in tasks:
                raise loc.error(("ablate", i, "task"), f'"{entry.task}" is not one of this suite\'s single tasks '
                                                       f'({", ".join(t for t in tasks if t) or "none"})')
        if not any(METHODS[m].ablatable for m in ([entry.method] if entry.method else methods)):
            raise loc.error(("ablate", i), f"no method of this suite can be ablated (ablatable: "
                                           f"{', '.join(ablatable)})")


def check_variants(suite: Suite, loc: Located) -> None:
    """Every method variant can run on every task entry it is crossed with (e.g. mean pooling needs single-task
    classification cells; Compacter's size must divide by phm_dim): spec.methods.variant_problem, the rule a
    cell would otherwise break only when it starts."""
    for (method, params, _), source in zip(suite.method_variants, suite.variant_sources):
        for slot in suite.task_slots:
            problem = variant_problem(method, params, tuple(get_task(t).kind for t in slot.tasks),
                                      slot.schedule is None)
            if problem:
                raise loc.error(("methods", source, problem[0]), f"{problem[1]}; task entry {slot.task}")


def check_squad_options(suite: Suite, loc: Located) -> None:
    """Options only SQuAD reads (doc_stride) in a suite without SQuAD would be keyed and stored, and do nothing."""
    qa_keys = {"doc_stride"}
    if any(get_task(t).kind == "span_extraction" for slot in suite.task_slots for t in slot.tasks):
        return
    for key in qa_keys & suite.model.hparams.model_fields_set:
        if getattr(suite.model.hparams, key) is not None:
            raise loc.error(("hparams", key), f"{key} applies to SQuAD tasks only, and this suite has none")
    for i, entry in enumerate(suite.model.methods):
        for key in qa_keys & set(entry.model_extra or {}):
            raise loc.error(("methods", i, key), f"{key} applies to SQuAD tasks only, and this suite has none")


def check_windows(suite: Suite, loc: Located) -> None:
    """SQuAD windows overlap by doc_stride tokens: the stride must leave room for new context in each window."""
    for cell in suite.cells():
        stride, length = cell.hparams.get("doc_stride"), cell.hparams["max_length"]
        if stride is not None and stride >= length // 2 and any(get_task(t).kind == "span_extraction"
                                                                 for t in cell.tasks):
            raise loc.error(("hparams", "doc_stride"), f"doc_stride {stride} must be below half of max_length "
                                                       f"{length} (SQuAD windows)")


def check_lengths(suite: Suite, loc: Located) -> None:
    """Every max_length written (hparams, or a method entry's own) leaves a token of each text of every task it is
    crossed with after the special tokens (spec/hparams.py min_length)."""
    texts, task = max((len(get_task(t).text_columns), get_task(t).name)
                      for slot in suite.task_slots for t in slot.tasks)
    need = min_length(texts)
    written = [(("hparams", "max_length"), suite.model.hparams.max_length)] + [
        (("methods", i, "max_length"), entry.model_extra["max_length"])
        for i, entry in enumerate(suite.model.methods) if "max_length" in (entry.model_extra or {})]
    for path, value in written:
        for sub, v in ([((j,), x) for j, x in enumerate(value)] if isinstance(value, list) else [((), value)]):
            if v < need:
                what = "a pair of texts, and a token of each" if texts == 2 else "one text, and a token of it"
                raise loc.error(path + sub, f"{v} leaves no room for text in {task}'s cells: at least {need} (up to "
                                            f"{MAX_SPECIAL_TOKENS[texts]} special tokens around {what})")


def tracker_settings(model: SuiteModel, loc: Located | None = None) -> dict[str, dict]:
    """The suite's `log_with` as tracker name -> settings: a known tracker of accelerate, no name twice, no
    setting the harness sets itself for each cell (harness/train/tracking.py)."""
    given = model.log_with
    if given is None:
        return {}
    items = [(("log_with", i), n, None) for i, n in enumerate(given)] if isinstance(given, list) else \
        [(("log_with", n), n, v) for n, v in given.items()]
    out: dict[str, dict] = {}

    def error(p, msg):
        return loc.error(p, msg) if loc is not None else InputError(f"{format_path(p)}: {msg}")

    for path, name, settings in items:
        if name not in TRACKERS:
            raise error(path, f'unknown tracker "{name}"{did_you_mean(name, TRACKERS)}; one of: {", ".join(TRACKERS)}')
        if name in out:
            raise error(path, f'tracker "{name}" is named twice')
        for key in settings or {}:
            if key in RESERVED.get(name, ()):
                raise error(path + (key,), "set by the harness for each cell (one run per cell, named by suite "
                                           "and cell key); leave it out")
        if name == "tensorboard" and (settings or {}).get("logging_dir") is not None:
            value = settings["logging_dir"]
            if not isinstance(value, str) or not value:
                raise error(path + ("logging_dir",), "a folder path (text)")
            with (loc.at(path + ("logging_dir",)) if loc is not None else contextlib.nullcontext()):
                check_suite_path(value, "logging_dir")
        if name == "mlflow" and (settings or {}).get("tracking_uri") is not None \
                and not isinstance(settings["tracking_uri"], str):
            raise error(path + ("tracking_uri",), "a tracking URI (text), e.g. sqlite:///results/mlflow.db")
        out[name] = dict(settings or {})
    return out
