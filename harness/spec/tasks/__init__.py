"""Tasks as declarative entries, one short YAML file each (as lm-evaluation-harness keeps its task configs):
the nine GLUE tasks, SQuAD v1.1 / v2.0, and a synthetic v2.0 built from the v1.1 files (squad_v2_synth).

An entry says where the data lives (hub config, local file layout), which columns hold text and label, which
metrics are official and which make up the task's main (leaderboard) score, and its kind (how data, head,
predictions and metrics work: harness/tasks/kinds.py). Bump `version` whenever anything in an entry changes
what a result means; the version goes into every cell key. Adding a task: docs/adding-a-task.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

import yaml

from harness.spec.registry import Registry

HERE = os.path.dirname(os.path.abspath(__file__))

# What a task kind sets where the suite leaves it unset (span extraction: the reference run_qa recipe's windows);
# GLUE cells keep the global defaults, and so their keys.
KIND_HPARAM_DEFAULTS = {"span_extraction": {"max_length": 384, "doc_stride": 128}}
# Hparams only cells of these task kinds read: a cell of no such task trains the same whatever their value (its
# key still holds a value set, so stored keys stand; validate refuses a grid they would multiply: plan/checks.py).
KIND_ONLY_HPARAMS = {"doc_stride": ("span_extraction",)}


@dataclass(frozen=True)
class EvalSplit:
    hub_split: str      # split name on the hub (nyu-mll/glue: validation, validation_matched, ...)
    local_file: str     # file name in the classic download_glue_data.py layout
    suffix: str = ""    # appended to metric names when a task has several dev sets (MNLI)


@dataclass(frozen=True)
class Task:
    name: str
    local_dir: str                      # directory under the data dir, e.g. "RTE"
    text_columns: tuple[str, ...]       # hub column names; local files are mapped onto them
    metrics: tuple[str, ...]
    main: tuple[str, ...]               # the task's score is the mean of these (GLUE averages pairs; SQuAD: F1)
    label_names: tuple[str, ...] = ()   # empty for regression and span extraction
    local_columns: tuple = ()           # header names (or 0-based indexes without a header): texts..., label
    local_header: bool = True
    eval_splits: tuple[EvalSplit, ...] = (EvalSplit("validation", "dev.tsv"),)
    hub_id: str = "nyu-mll/glue"
    hub_config: str = ""
    version: int = 1
    description: str = ""
    kind: str = "classification"        # harness/tasks/kinds.py
    benchmark: str = "glue"             # which average a task belongs to (the GLUE average is GLUE tasks only)
    local_train: str = "train.tsv"      # the training file in local_dir
    unanswerable: bool = False          # span extraction: some questions have no answer (SQuAD v2.0)
    # span extraction: > 0 builds v2.0-style data from the v1.1 files at load time, this share of each split's
    # questions made unanswerable (harness/tasks/squad_synth.py), drawn with synthetic_seed; 0: the files as read
    synthetic_unanswerable: float = 0.0
    synthetic_seed: int = 0
    note: str = ""                      # what a reader must know before trusting a score (`harness ls` prints it)
    # sha256 of the official data files: a table shows the note only where some run shown read other files
    # (harness/report/provenance.py); empty: the note always applies
    official_sha256: tuple[str, ...] = ()
    aliases: tuple[str, ...] = field(default=(), compare=False)   # other spellings people write

    @property
    def synthetic(self) -> bool:
        return self.synthetic_unanswerable > 0

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def hparam_defaults(self) -> dict:
        """Hparams this task's kind sets where a suite leaves them unset."""
        return KIND_HPARAM_DEFAULTS.get(self.kind, {})

    def metric_names(self) -> list[str]:
        return [m + s.suffix for s in self.eval_splits for m in self.metrics]

    def main_metric_names(self) -> list[str]:
        return [m + s.suffix for s in self.eval_splits for m in self.main]

    def main_score(self, metrics: dict[str, float]) -> float | None:
        """The task's leaderboard score: the mean of its main metrics over its dev splits; None if one is missing."""
        names = self.main_metric_names()
        if not all(n in metrics for n in names):
            return None
        return sum(metrics[n] for n in names) / len(names)


def _entry(path: str, benchmark: str) -> Task:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    known = {f.name for f in fields(Task)}
    unknown = set(data) - known
    if unknown:   # a packaging mistake, not user input: fail loudly at import
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}")
    data.setdefault("hub_config", data["name"])
    data.setdefault("benchmark", benchmark)
    if data["benchmark"] != benchmark:
        raise ValueError(f"{path}: benchmark {data['benchmark']!r} but listed under {benchmark!r}")
    data["eval_splits"] = tuple(EvalSplit(**s) for s in data.get("eval_splits", [{"hub_split": "validation",
                                                                                  "local_file": "dev.tsv"}]))
    task = Task(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    if task.synthetic and not (task.kind == "span_extraction" and task.unanswerable and task.synthetic_unanswerable < 1):
        raise ValueError(f"{path}: synthetic_unanswerable is a share below 1 of a span_extraction task's questions, "
                         f"and the task needs unanswerable: true")
    return task


def _load() -> Registry[Task]:
    with open(os.path.join(HERE, "benchmarks.yaml"), encoding="utf-8") as f:
        benchmarks = yaml.safe_load(f)
    tasks = [_entry(os.path.join(HERE, f"{name}.yaml"), bench) for bench, names in benchmarks.items()
             for name in names]
    listed = {f"{t.name}.yaml" for t in tasks}
    stray = sorted(f for f in os.listdir(HERE) if f.endswith(".yaml") and f != "benchmarks.yaml" and f not in listed)
    if stray:
        raise ValueError(f"task file(s) {stray} are not listed in {os.path.join(HERE, 'benchmarks.yaml')}")
    return Registry("task", {t.name: t for t in tasks}, {a: t.name for t in tasks for a in t.aliases},
                    case_insensitive=True)


TASKS: Registry[Task] = _load()
GLUE_TASKS = tuple(name for name, t in TASKS.items() if t.benchmark == "glue")


def get_task(name: str) -> Task:
    return TASKS.get(name)
