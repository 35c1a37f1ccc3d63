"""`harness prefetch SUITE [--check]`: everything a suite's cells load from the Hugging Face hub, fetched into the
HF cache on a machine with internet (a login node), so compute nodes run with HF_HUB_OFFLINE=1.

What a suite needs: each model's config, tokenizer and weights (aliases such as `minilm` are embedded in an
installed package, local directories are read in place) and each task's data (a local GLUE directory, or the
dataset on the hub). `--check` works offline: it lists what the cache lacks and exits 1 if anything is missing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from harness.plan.grid import Suite
from harness.plan.preflight import truthy
from harness.spec.errors import EXIT_FAILED, InputError
from harness.spec.methods import adapter_dir
from harness.spec.tasks import get_task
from harness.spec.models import ALIASES, ModelSpec, in_folder, weight_files

# What a model's download takes: a superset of the files loading reads (spec/models.py loaded_files: config,
# weights, tokenizer, remote code), so a name it does not list costs bytes, not a failed cell. .bin weights only
# where a repository has no others (fetch): many hold both, and loading prefers safetensors.
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "tokenizer*", "*.py"]


@dataclass
class Need:
    kind: str       # model / data / adapter
    name: str
    where: str      # embedded / local / hub
    source: str     # path or hub id
    trust_remote_code: bool = False
    model: ModelSpec | None = None   # a model's, as the suite names it


def needs(suite: Suite, data_dir: str | None) -> list[Need]:
    out: dict[tuple, Need] = {}
    base = os.path.dirname(os.path.abspath(suite.path))
    folder = suite.data_dir(data_dir)
    for cell in suite.cells():
        spec = ModelSpec(cell.model, cell.trust_remote_code, base)
        if cell.model in ALIASES:
            need = Need("model", cell.model, "embedded", spec.source(), model=spec)
        elif spec.local_path():
            need = Need("model", cell.model, "local", spec.local_path(), model=spec)
        else:
            need = Need("model", cell.model, "hub", cell.model, cell.trust_remote_code, model=spec)
        out.setdefault(("model", cell.model), need)
        path = cell.method_params.get("path") if cell.method == "pretrained_adapter" else None
        if path:   # a saved adapter a cell stitches in: a directory, or an AdapterHub id that loads online only
            local = adapter_dir(path, base)
            out.setdefault(("adapter", path), Need("adapter", path, "local" if local else "hub", local or path))
        for name in cell.tasks:
            task = get_task(name)
            if folder:
                need = Need("data", task.name, "local", os.path.join(folder, task.local_dir))
            else:
                need = Need("data", task.name, "hub", "/".join(filter(None, [task.hub_id, task.hub_config])))
            out.setdefault(("data", task.name), need)
    return list(out.values())


def _local_data_present(task_name: str, folder: str) -> str | None:
    task = get_task(task_name)
    files = [task.local_train] + [s.local_file for s in task.eval_splits]
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    return f"missing {', '.join(missing)} in {folder}" if missing else None


def _hub_data_cached(need: Need) -> str | None:
    import datasets

    task = get_task(need.name)
    # a check never goes online; restored after, or the download that follows a failed check would be refused as
    # offline too (datasets reads the flag at every call)
    online, datasets.config.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE, True
    try:
        datasets.load_dataset(task.hub_id, task.hub_config)
    except Exception as exc:
        return f"not in the datasets cache ({type(exc).__name__})"
    finally:
        datasets.config.HF_HUB_OFFLINE = online
    return None


def check(need: Need) -> str | None:
    """None when present, else why not."""
    if need.kind == "model":   # the files loading reads, as validate and run check them offline
        return need.model.missing_files()
    if need.kind == "adapter":
        if need.where == "hub":
            return ("an AdapterHub id loads only while online (refused under HF_HUB_OFFLINE): save the adapter to a "
                    "directory and give its path")
        return None if os.path.isfile(os.path.join(need.source, "adapter_config.json")) else (
            f"no adapter_config.json in {need.source}")
    if need.where == "local":
        return _local_data_present(need.name, need.source)
    return _hub_data_cached(need)


def downloads(need: Need) -> bool:
    """Whether fetch downloads this item: a hub model or data set (not an adapter: nothing a compute node could
    load)."""
    return need.where == "hub" and need.kind != "adapter"


def offline_variable(need: Need) -> str | None:
    """The variable set that forbids downloading `need`: the hub's for every download, datasets' own for data
    sets too (as the two libraries read them)."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if need.kind == "data" else ("HF_HUB_OFFLINE",)
    return next((name for name in names if truthy(name)), None)


def fetch(need: Need) -> None:
    if not downloads(need):
        return
    if need.kind == "model":
        from huggingface_hub import snapshot_download

        path = snapshot_download(need.source, allow_patterns=HUB_PATTERNS)
        # an older repo, .bin only: its pytorch_model.bin.index.json came with *.json, its shards did not
        if weight_files(in_folder(path)) is None:
            snapshot_download(need.source, allow_patterns=["*.bin", "*.bin.index.json"])
    else:
        import datasets

        task = get_task(need.name)
        datasets.load_dataset(task.hub_id, task.hub_config)


def cache_folders(items: list[Need]) -> str:
    """The folders the hub's items are read from and downloaded to, as the libraries resolve them: HF_HUB_CACHE
    and HF_DATASETS_CACHE can put them outside $HF_HOME (a cluster's shared cache), so $HF_HOME is not the folder
    to copy. "" where nothing comes from the hub."""
    folders = []
    if any(need.kind == "model" and need.where == "hub" for need in items):
        from huggingface_hub import constants

        folders.append(f"models from {constants.HF_HUB_CACHE}")
    if any(need.kind == "data" and need.where == "hub" for need in items):
        import datasets

        folders.append(f"data sets from {datasets.config.HF_DATASETS_CACHE}")
    return f" ({', '.join(folders)})" if folders else ""


def prefetch(suite: Suite, data_dir: str | None = None, check_only: bool = False) -> int:
    if check_only:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    items = needs(suite, data_dir)
    problems = [check(need) for need in items]
    # offline mode on (a compute node's environment) and something to download: one line saying so, before
    # anything is printed, not a download failure per item
    blocked = [(need, offline_variable(need)) for need, problem in zip(items, problems)
               if problem and not check_only and downloads(need) and offline_variable(need)]
    if blocked:
        name = blocked[0][1]
        shown = ", ".join(f"{need.kind} {need.name}" for need, _ in blocked[:3]) + (", ..." if len(blocked) > 3 else "")
        raise InputError(f"${name}: offline mode is on ({name}={os.environ[name]}), so the {len(blocked)} item(s) "
                         f"the cache lacks cannot be downloaded ({shown}); unset it on a machine with internet, or "
                         f"give --check to list what is missing")
    missing = 0
    for need, problem in zip(items, problems):
        if problem and not check_only:
            try:
                fetch(need)
                problem = check(need)
            except Exception as exc:
                problem = f"download failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        label = f"{need.kind} {need.name} ({need.where}{': ' + need.source if need.where != 'embedded' else ''})"
        if problem:
            missing += 1
            print(f"MISSING  {label}: {problem}")
        else:
            print(f"present  {label}")
    where = cache_folders(items)
    if missing:
        print(f"suite {suite.name}: {missing} of {len(items)} needed item(s) missing"
              + ("" if check_only else " after download") + where, file=sys.stderr)
        return EXIT_FAILED
    print(f"suite {suite.name}: all {len(items)} needed item(s) present; compute nodes can run with "
          f"HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1{where}", file=sys.stderr)
    return 0
