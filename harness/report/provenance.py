"""What data a table's runs read, from each record's `extra.data_sources` (harness/tasks/data.py file_source):
a file by its sha256, the hub by its fingerprint. Two uses:

- a task's note about unofficial data (the offline SQuAD folder is a split of the v1.1 dev set under the official
  file names) is shown unless every run shown with a score read the official files (the entry's
  `official_sha256`) or the hub; where some recorded no data (records from before), it says that is not known;
- a task whose runs read different bytes for one split (a data dir changed between runs: same task version,
  other files) gets a line saying so: the table pools their scores as one task.

- a task whose runs shown of one model name trained from different model files (`extra.model_source`,
  harness/train/models.py: a local folder edited between runs, a hub id at two commits) gets a line saying so,
  with each one's variants and runs: the table pools their scores as one model.

- a task some of whose runs shown skipped malformed rows of their data files (`extra.data_skipped`,
  harness/tasks/data.py) gets a line saying how many runs and rows: their scores are over fewer examples than
  the files hold.

Caps (`[:n]`, max_train_samples / max_eval_samples) and paths are left out: a cap is part of a run's setting,
which the tables show, and the same bytes in another folder are the same data."""

from __future__ import annotations

import json
import re
from collections import Counter

import pandas as pd

from harness.spec.status import Status

_FILE = re.compile(r"file:.*:(sha256:[0-9a-f]{64})$")
_DIR = re.compile(r"dir:.*:(sha256:[0-9a-f]{64})$")   # a model folder (harness/train/models.py dir_source)
_CAP = re.compile(r"\[:\d+\]$")
_SYNTHETIC = re.compile(r"(synthetic-v2:[^:]*:[^:]*:)(.*)$")


def content_key(source: str) -> str:
    """A split's source without its path and cap: `sha256:DIGEST`, `hub:ID/split:FINGERPRINT`, a synthetic
    split as its recipe and the content it was built from."""
    source = _CAP.sub("", str(source))
    synthetic = _SYNTHETIC.match(source)
    if synthetic:
        return synthetic.group(1) + content_key(synthetic.group(2))
    file = _FILE.match(source)
    return file.group(1) if file else source


def run_data(data_sources, task: str) -> str | None:
    """One run's data for `task` as a JSON object {split: content key} (a table column), None where the record
    has none (a run from before data sources were recorded)."""
    of_task = (data_sources or {}).get(task) if isinstance(data_sources, dict) else None
    if not isinstance(of_task, dict) or not of_task:
        return None
    return json.dumps({split: content_key(s) for split, s in sorted(of_task.items())}, sort_keys=True)


def model_files(source) -> str | None:
    """A run's model files (its record's extra.model_source) by content: `sha256:DIGEST` for a folder (its path
    left out: the same files elsewhere are the same model), `hub:ID@COMMIT` for a hub snapshot; None where the
    record does not say (older runs) or the commit is not known."""
    if not isinstance(source, str) or source.endswith("@unknown"):
        return None
    folder = _DIR.match(source)
    return folder.group(1) if folder else source


# in a data_by_task value: the model name, variant and model files of a run that recorded them (no split is so named)
MODEL = "@model"


def data_by_task(runs: pd.DataFrame) -> dict[str, list]:
    """{task: [each run's data]} of the runs a table shows with a score (a failed run scored nothing, and records
    no data): a JSON text {split: content key} (runs_frame's `data` column) with, where the run recorded its model
    files (the `model_files` column), MODEL: [model, variant, files]; None where it recorded neither."""
    out: dict[str, list] = {}
    for task, data, model, label, files in _completed(runs, "task", "data", "model", "method_label", "model_files"):
        if isinstance(files, str):
            data = json.dumps({**(json.loads(data) if isinstance(data, str) else {}), MODEL: [model, label, files]},
                              sort_keys=True)
        out.setdefault(task, []).append(data if isinstance(data, str) else None)
    return out


def _completed(runs: pd.DataFrame, *columns: str):
    """(task, *columns) of each completed run of the runs a table shows (None for a column it lacks)."""
    if runs.empty or "task" not in runs:
        return []
    if "status" in runs:
        runs = runs[runs["status"] == Status.COMPLETED]
    values = [runs[c] if c in runs else [None] * len(runs) for c in columns]
    return [row for row in zip(*values) if isinstance(row[0], str)]


def _by_task(runs: pd.DataFrame, column: str) -> dict[str, list]:
    """{task: [each completed run's `column` (a JSON text; None: not recorded)]} of the runs a table shows."""
    out: dict[str, list] = {}
    for task, value in _completed(runs, "task", column):
        out.setdefault(task, []).append(value if isinstance(value, str) else None)
    return out


def recorded_splits(value: str | None) -> dict | None:
    """A data_by_task value's splits {split: content key}; None where the run recorded no data."""
    splits = {k: v for k, v in json.loads(value).items() if k != MODEL} if value is not None else {}
    return splits or None


def run_skipped(data_skipped, task: str) -> str | None:
    """One run's rows skipped as malformed for `task`, as a JSON object {split: rows} (a table column); None where
    it skipped none, or its record does not say (records from before the count was kept)."""
    of_task = (data_skipped or {}).get(task) if isinstance(data_skipped, dict) else None
    if not isinstance(of_task, dict):
        return None
    rows = {split: s.get("rows") for split, s in sorted(of_task.items()) if isinstance(s, dict)}
    rows = {split: n for split, n in rows.items() if isinstance(n, int) and n > 0}
    return json.dumps(rows, sort_keys=True) if rows else None


def skipped_by_task(runs: pd.DataFrame) -> dict[str, list]:
    """{task: each shown run's rows skipped (None: none)} of the runs a table shows with a score (as
    data_by_task, from runs_frame's `rows_skipped` column)."""
    return _by_task(runs, "rows_skipped")


def skipped_text(values: list) -> str | None:
    """What to say of one task some of whose runs shown skipped rows of their files; None where none did."""
    known = [json.loads(v) for v in values if v is not None]
    if not known:
        return None
    each = []
    for split in sorted({s for d in known for s in d}):
        counts = sorted({d[split] for d in known if split in d})
        n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        each.append(f"{split} {n} row{'s' * (counts[-1] > 1)}")
    runs = f"{len(known)} of the {len(values)} runs shown" if len(known) < len(values) else (
        "the run shown" if len(values) == 1 else f"all {len(values)} runs shown")
    return (f"{runs} skipped malformed rows of the data files ({'; '.join(each)}), so trained or were scored on "
            f"fewer examples than the files hold (each record's extra.data_skipped names the rows)")


OFFICIAL = "the official files"


def _official_key(task, key: str) -> bool:
    """A split read from the hub, or from a file with one of the entry's official digests."""
    return bool(task is not None and task.official_sha256) and (
        key.startswith("hub:") or key.removeprefix("sha256:") in task.official_sha256)


def is_official(task, data: str | None) -> bool:
    """Whether a run read the task's official data: every split from the hub or a file with an official digest."""
    splits = recorded_splits(data)
    if splits is None or not task.official_sha256:
        return False
    return all(_official_key(task, k) for k in splits.values())


def note_applies(task, runs_data: list | None) -> str | None:
    """How a task's note applies to the runs shown: "yes" (some run read other files, or the entry names no
    official files), "unknown" (every run that recorded its data read the official files, but some recorded
    none), None (every run read the official files or the hub)."""
    if not task.official_sha256 or runs_data is None or not runs_data:
        return "yes"
    known = [d for d in runs_data if recorded_splits(d) is not None]
    if not all(is_official(task, d) for d in known):
        return "yes"
    return "unknown" if len(known) < len(runs_data) else None


def mixed_data_text(values: list, task=None) -> str | None:
    """What to say of one task whose runs shown read different bytes for one of its splits (known data only; the
    official files and the hub count as one); None where they agree."""
    known = [d for d in map(recorded_splits, values) if d is not None]
    parts = []
    for split in sorted({s for d in known for s in d}):
        seen = Counter(OFFICIAL if _official_key(task, d[split]) else d[split] for d in known if split in d)
        if len(seen) > 1:
            each = ", ".join(f"{_short(k)} ({n} run{'s' * (n > 1)})" for k, n in seen.most_common())
            parts.append(f"{len(seen)} different {split} sets: {each}")
    if not parts:
        return None
    return ("the runs shown read different data under one task version (" + "; ".join(parts)
            + "), and their scores are pooled as one task")


def mixed_model_text(values: list) -> str | None:
    """What to say of one task whose runs shown of one model name trained from different model files, per model
    each files' runs by variant (data_by_task's values; runs that did not record theirs are not counted); None
    where they agree."""
    files: dict[str, dict[str, Counter]] = {}   # {model: {files: {variant: runs}}}
    for value in values:
        entry = json.loads(value).get(MODEL) if value is not None else None
        if entry:
            model, label, key = entry
            files.setdefault(model, {}).setdefault(key, Counter())[label] += 1
    parts = []
    for model, of_model in sorted(files.items()):
        if len(of_model) > 1:   # most runs first, then by name: the same line whatever order the rows came in
            each = ", ".join(f"{_short(key)} ({', '.join(f'{label} {_runs(n)}' for label, n in sorted(runs.items()))})"
                             for key, runs in sorted(of_model.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])))
            parts.append(f"{model}: {len(of_model)} different model files: {each}")
    if not parts:
        return None
    return ("the runs shown trained one model name from different files (" + "; ".join(parts)
            + "), and their scores are pooled as one model")


def _runs(n: int) -> str:
    return f"{n} run{'s' * (n > 1)}"


def _short(key: str) -> str:
    key = re.sub(r"(@[0-9a-f]{12})[0-9a-f]{28}$", r"\1…", key)   # a hub commit
    return re.sub(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}", r"\1…", key)
