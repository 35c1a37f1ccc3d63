"""What a suite needs from the machine, checked before anything trains (`harness validate`, and `harness run`
before its first cell): every model resolvable, its config's sizes against the suite's (max_length against its
positions, adapter sizes and LoRA ranks against its width, top_k against its depth), data present for every task,
and every pretrained adapter on disk. Reads config.json files and directory listings only: no weights, no
network, no transformers import. `harness validate` alone also reads the local data files (data_rows: the rows
a run would skip as malformed).

Errors are InputErrors naming the file, the YAML line and the field, like the schema's.
"""

from __future__ import annotations

import contextlib
import logging
import os

from harness.spec.errors import InputError, did_you_mean
from harness.plan.checks import check_suite_path, unread_param_notes
from harness.plan.grid import Suite
from harness.spec.tasks import get_task
from harness.spec.methods import HUB_HEAD, METHODS, adapter_dir, variant_problem
from harness.spec.models import ALIASES, ModelSpec
from harness.spec.trackers import TRACKERS, install_line, missing, parse_option


# how a machine without internet gets what the hub would have sent: said by every refusal of a missing download
PREFETCH_HINT = "`harness prefetch SUITE` on a machine with internet fills the cache"


def truthy(name: str) -> bool:
    """Whether an environment flag is on (1, true, yes, on), as huggingface_hub and datasets read theirs."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def model_sizes(config: dict) -> dict[str, int]:
    """positions (usable sequence length), hidden and layers, as far as the config says."""
    out = {}
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if isinstance(positions, int):
        # RoBERTa-style position ids start after the padding index: 514 embeddings hold 512 tokens
        if "roberta" in str(config.get("model_type", "")) or config.get("model_type") in ("camembert", "longformer"):
            positions -= int(config.get("pad_token_id") or 1) + 1
        out["positions"] = positions
    for key, names in (("hidden", ("hidden_size", "dim", "d_model")), ("layers", ("num_hidden_layers", "n_layers"))):
        value = next((config[n] for n in names if isinstance(config.get(n), int)), None)
        if value is not None:
            out[key] = value
    return out


def _values(value) -> list[tuple[tuple, object]]:
    """(index path, value) of one value or of each value of a list."""
    return [((i,), v) for i, v in enumerate(value)] if isinstance(value, list) else [((), value)]


def _check_model_sizes(suite: Suite, i: int, spec: ModelSpec, sizes: dict, loc) -> None:
    what = {"positions": "maximum positions", "hidden": "hidden size", "layers": "number of layers"}
    limit_of = {"positions": sizes.get("positions"), "hidden": sizes.get("hidden"), "layers": sizes.get("layers")}

    def check(path, value, dim):
        limit = limit_of.get(dim)
        if limit is not None and isinstance(value, int) and value > limit:
            raise loc.error(path, f"{value} is more than the {what[dim]} of model {spec.name} ({limit}, from its "
                                  f"config), models[{i}]")

    for j, v in enumerate(suite.model.hparams.max_length):
        check(("hparams", "max_length", j), v, "positions")
    for k, entry in enumerate(suite.model.methods):
        extra = entry.model_extra or {}
        method = METHODS[entry.name]
        for key, value in extra.items():
            dim = "positions" if key == "max_length" else getattr(method.params.get(key), "at_most", None)
            if dim:
                for sub, v in _values(value):
                    check(("methods", k, key) + sub, v, dim)
    for (method, params, _), source in zip(suite.method_variants, suite.variant_sources):
        problem = variant_problem(method, params, sizes=sizes)
        if problem:
            raise loc.error(("methods", source, problem[0]), f"{problem[1]} (model {spec.name}, models[{i}])")
    # a length the suite did not write: a task's own default (SQuAD's 384) on a model with fewer positions
    positions = sizes.get("positions")
    for t, slot in enumerate(suite.task_slots):
        for cell in suite.cells():
            if (positions is not None and cell.model == spec.name and cell.task == slot.task
                    and cell.hparams["max_length"] > positions):
                raise loc.error(("tasks", t), f"max_length {cell.hparams['max_length']} (the default of "
                                              f"{slot.task}'s cells) is more than the maximum positions of model "
                                              f"{spec.name} ({positions}, from its config), models[{i}]: set "
                                              f"hparams.max_length")


def check_models(suite: Suite, loc, known=None) -> list[str]:
    """`known(spec)`: a config the caller has for a model that is not on this machine (params' published configs
    of classic checkpoints), or None."""
    notes = []
    offline = truthy("HF_HUB_OFFLINE")
    for i, spec in enumerate(suite.model_specs()):
        config = spec.config_dict() or (known(spec) if known else None)
        if config is None:
            if spec.name in ALIASES or spec.local_path() is not None:
                raise loc.error(("models", i), f'model "{spec.name}": its config.json cannot be read')
            if offline:
                raise loc.error(("models", i), f'model "{spec.name}" is not in the Hugging Face cache and '
                                               f"HF_HUB_OFFLINE is set, so it cannot be downloaded ({PREFETCH_HINT})")
            notes.append(f'model "{spec.name}": not cached, downloaded at the first cell; its sizes '
                         f"(max_length, adapter sizes) are checked then")
            continue
        _check_model_sizes(suite, i, spec, model_sizes(config), loc)
    return notes


def check_model_files(suite: Suite, loc) -> None:
    """What a cell loads beside the config (weights, tokenizer), where it must be on this machine: an alias, a
    local directory, a hub id while HF_HUB_OFFLINE is set (a cache holding its config alone, a download cut short,
    failed every cell as it loaded, in a library's error). Not `harness params`: it counts from configs."""
    offline = truthy("HF_HUB_OFFLINE")
    for i, spec in enumerate(suite.model_specs()):
        if offline or spec.name in ALIASES or spec.local_path() is not None:
            problem = spec.missing_files()
            if problem:
                raise loc.error(("models", i), f'model "{spec.name}": {problem}'
                                + (f"; HF_HUB_OFFLINE is set, so it cannot be downloaded ({PREFETCH_HINT})"
                                   if "Hugging Face" in problem else ""))


def _datasets_cache() -> str:
    """The folder `datasets` reads the hub's data sets from, as it resolves it (HF_DATASETS_CACHE, HF_HOME,
    XDG_CACHE_HOME, ~): worked out here by hand, it missed XDG_CACHE_HOME and a "~" in HF_HOME, and validate
    refused data that runs would find (prefetch names the same folder: cache_folders)."""
    import datasets.config

    return str(datasets.config.HF_DATASETS_CACHE)


def check_data_dir(suite: Suite, cli_data_dir: str | None, loc=None) -> tuple[str | None, str]:
    """The suite's data folder (the option's, its data_dir, $HARNESS_DATA_DIR) and where it came from; refused
    where that folder is not one (a command that only reads the data's sizes checks this much)."""
    data_dir, source = suite.data(cli_data_dir)
    if data_dir is not None and not os.path.isdir(data_dir):
        msg = f"data directory {data_dir} {'is not a folder' if os.path.exists(data_dir) else 'does not exist'}"
        if source == "data_dir":
            raise (loc or suite.locate()).error(("data_dir",), msg)
        raise InputError(f"{source}: {msg}")
    return data_dir, source


def check_data(suite: Suite, cli_data_dir: str | None, loc) -> list[str]:
    data_dir, source = check_data_dir(suite, cli_data_dir, loc)
    for i, slot in enumerate(suite.task_slots):
        for name in slot.tasks:
            task = get_task(name)
            if data_dir is not None:
                folder = os.path.join(data_dir, task.local_dir)
                for file in [task.local_train] + [s.local_file for s in task.eval_splits]:
                    if not os.path.isfile(os.path.join(folder, file)):
                        raise loc.error(("tasks", i), f"no data for {task.name}: {os.path.join(folder, file)} does "
                                                      f"not exist (data directory from {source})")
            elif truthy("HF_DATASETS_OFFLINE") or truthy("HF_HUB_OFFLINE"):
                cached = os.path.join(_datasets_cache(), task.hub_id.replace("/", "___"), task.hub_config or "default")
                if not os.path.isdir(cached):
                    raise loc.error(("tasks", i), f"no data for {task.name}: no --data-dir, data_dir or "
                                                  f"$HARNESS_DATA_DIR, and {task.hub_id} is not cached while the hub "
                                                  f"is offline ({PREFETCH_HINT}, or give the local files)")
    return [f"data: {data_dir} (from {source})" if data_dir else "data: the Hugging Face hub"]


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def data_rows(suite: Suite, cli_data_dir: str | None) -> list[str]:
    """A line per local data file holding rows that are no example (too short or too long, no valid label): a run
    skips them and its record counts them (harness/tasks/data.py), so `harness validate` says so before anything
    trains.
    Reads the files (seconds for MNLI's or QQP's), which is why only validate asks; the hub's data is not read."""
    from harness.spec.errors import DataNotFoundError
    from harness.tasks.data import SKIPPED_SHOWN
    from harness.tasks.data import log as data_log
    from harness.tasks.kinds import kind_of

    data_dir, _ = suite.data(cli_data_dir)
    if data_dir is None:
        return []
    loc, lines = suite.locate(), []
    for i, slot in enumerate(suite.task_slots):
        for name in slot.tasks:
            task = get_task(name)
            try:
                with _quiet(data_log):   # the loader's warning says what the line below says, less precisely
                    splits = kind_of(task).load(task, data_dir)
            except DataNotFoundError as e:   # (a file without the task's columns)
                raise loc.error(("tasks", i), str(e)) from None
            files = {"train": task.local_train, **{s.hub_split: s.local_file for s in task.eval_splits}}
            for split, raw in splits.items():
                if not raw.skipped:
                    continue
                first = "; ".join([f"line {r.line}: {r.why}" for r in raw.skipped[:SKIPPED_SHOWN]]
                                  + ["..."] * (len(raw.skipped) > SKIPPED_SHOWN))
                lines.append(f"{task.name}: {os.path.join(data_dir, task.local_dir, files[split])}: "
                             f"{len(raw.skipped)} malformed row(s) skipped ({first}): its runs train or score on "
                             f"the other rows, and their records count those skipped")
    return list(dict.fromkeys(lines))   # (a task in two slots: one line)


def check_adapters(suite: Suite, loc) -> None:
    base = os.path.dirname(os.path.abspath(suite.path))
    offline = truthy("HF_HUB_OFFLINE")
    for k, entry in enumerate(suite.model.methods):
        if entry.name != "pretrained_adapter":
            continue
        value = (entry.model_extra or {}).get("path", "")
        loads_head = any(v is not False for _, v in _values((entry.model_extra or {}).get("load_head", True)))
        for sub, path in _values(value):
            where = ("methods", k, "path") + sub
            if not path:
                raise loc.error(where, "required: a directory written by an adapter run (OUTPUT/SUITE/KEY/adapter)")
            with loc.at(where):
                check_suite_path(path, "the adapter path")
            full = os.path.normpath(os.path.join(base, os.path.expanduser(path)))
            if adapter_dir(path, base) is None:   # an AdapterHub id: only online
                if offline:
                    raise loc.error(where, f'no adapter directory "{path}" (looked at {full}), and as a hub id it '
                                           f"cannot be downloaded while HF_HUB_OFFLINE is set")
                if loads_head:
                    raise loc.error(("methods", k, "load_head"), f'path "{path}": {HUB_HEAD}')
                continue
            if not os.path.isdir(full):
                raise loc.error(where, f'adapter directory "{path}" does not exist (looked at {full})')
            if not os.path.isfile(os.path.join(full, "adapter_config.json")):
                raise loc.error(where, f'"{path}" holds no adapter (no adapter_config.json in {full}); give the '
                                       f"adapter/ folder of an adapter run")


def tracker_settings(suite: Suite, option: str | None = None) -> dict[str, dict]:
    """The trackers a run logs to, name -> settings: --log-with's names (with the suite's settings for those it
    also names), else the suite's log_with. A relative tensorboard logging_dir is relative to the suite file."""
    from harness.plan.checks import tracker_settings as suite_trackers

    settings = suite_trackers(suite.model, suite.locate())
    if option is not None:
        names = parse_option(option)
        for name in names:
            if name not in TRACKERS:
                raise InputError(f'--log-with: unknown tracker "{name}"{did_you_mean(name, TRACKERS)}; one of: '
                                 f'{", ".join(TRACKERS)} (or none)')
        settings = {n: settings.get(n, {}) for n in dict.fromkeys(names)}
    tb = settings.get("tensorboard") or {}
    if tb.get("logging_dir"):
        tb["logging_dir"] = os.path.join(os.path.dirname(os.path.abspath(suite.path)),
                                         os.path.expanduser(tb["logging_dir"]))
    return settings


def check_trackers(suite: Suite, settings: dict, option: str | None, loc) -> None:
    """Every tracker's package is installed: accelerate would leave a missing one out without a word."""
    for name in missing(settings):
        fix = f"not installed; {install_line(name)}"
        if option is not None:
            raise InputError(f'--log-with: tracker "{name}" is {fix}')
        model_value = suite.model.log_with
        path = ("log_with", model_value.index(name)) if isinstance(model_value, list) else ("log_with", name)
        raise loc.error(path, f'tracker "{name}" is {fix}')


def check_configuration(suite: Suite, loc, known=None) -> list[str]:
    """The models, their sizes against the suite's lengths and methods, the pretrained adapters: all a suite asks
    of this machine but its data and trackers (`harness params`, which counts from configs alone, checks this
    much). `known`: as check_models'."""
    notes = check_models(suite, loc, known)
    check_adapters(suite, loc)
    return unread_param_notes(suite, loc) + notes


def check_training(suite: Suite, cli_data_dir: str | None, loc) -> list[str]:
    """What training a cell here needs: the models' files and sizes, the adapters, the data (all but the trackers:
    `harness estimate --pilot` trains untracked)."""
    notes = check_configuration(suite, loc)
    check_model_files(suite, loc)
    return notes + check_data(suite, cli_data_dir, loc)


def preflight(suite: Suite, cli_data_dir: str | None = None, log_with: str | None = None) -> list[str]:
    """Raise InputError for the first thing this machine lacks; return notes on what could not be checked.
    `log_with`: the --log-with option, where given."""
    loc = suite.locate()
    notes = check_training(suite, cli_data_dir, loc)
    check_trackers(suite, tracker_settings(suite, log_with), log_with, loc)
    return notes
