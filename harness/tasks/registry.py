"""GLUE tasks as small declarative registry entries.

Each entry says where the data lives (hub config, local file layout), which columns hold text and label,
which metrics are official and which of them make up the task's main (leaderboard) score. Bump `version`
whenever anything here changes what a result means; the version goes into every cell key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import InputError, did_you_mean


@dataclass(frozen=True)
class EvalSplit:
    hub_split: str      # split name in nyu-mll/glue
    local_file: str     # file name in the classic download_glue_data.py layout
    suffix: str = ""    # appended to metric names when a task has several dev sets (MNLI)


@dataclass(frozen=True)
class Task:
    name: str
    local_dir: str                      # directory under the GLUE data dir, e.g. "RTE"
    text_columns: tuple[str, ...]       # hub column names; local files are mapped onto them
    label_names: tuple[str, ...]        # empty for regression
    metrics: tuple[str, ...]
    main: tuple[str, ...]               # GLUE averages these into the task's score
    local_columns: tuple                # header names (or 0-based indexes when there is no header): texts..., label
    local_header: bool = True
    eval_splits: tuple[EvalSplit, ...] = (EvalSplit("validation", "dev.tsv"),)
    hub_id: str = "nyu-mll/glue"
    hub_config: str = ""
    version: int = 1
    description: str = ""
    kind: str = "classification"        # harness/tasks/kinds.py: how data, head, predictions and metrics work
    benchmark: str = "glue"             # which average a task belongs to (the GLUE average is GLUE tasks only)

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    def metric_names(self) -> list[str]:
        return [m + s.suffix for s in self.eval_splits for m in self.metrics]

    def main_metric_names(self) -> list[str]:
        return [m + s.suffix for s in self.eval_splits for m in self.main]


_TASKS = [
    Task("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), ("mcc",), ("mcc",),
         local_columns=(3, 1), local_header=False,
         description="Corpus of Linguistic Acceptability (Matthews corr.)"),
    Task("sst2", "SST-2", ("sentence",), ("negative", "positive"), ("accuracy",), ("accuracy",),
         local_columns=("sentence", "label"), description="Stanford Sentiment Treebank, binary"),
    Task("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
         ("f1", "accuracy"), ("f1", "accuracy"),
         local_columns=("#1 String", "#2 String", "Quality"), description="Microsoft Research Paraphrase Corpus"),
    Task("stsb", "STS-B", ("sentence1", "sentence2"), (), ("pearson", "spearman"), ("pearson", "spearman"),
         local_columns=("sentence1", "sentence2", "score"), description="Semantic Textual Similarity (regression)"),
    Task("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"),
         ("f1", "accuracy"), ("f1", "accuracy"),
         local_columns=("question1", "question2", "is_duplicate"), description="Quora Question Pairs"),
    Task("mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
         ("accuracy",), ("accuracy",),
         local_columns=("sentence1", "sentence2", "gold_label"),
         eval_splits=(EvalSplit("validation_matched", "dev_matched.tsv", "_matched"),
                      EvalSplit("validation_mismatched", "dev_mismatched.tsv", "_mismatched")),
         description="Multi-Genre NLI (matched and mismatched dev)"),
    Task("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",), ("accuracy",),
         local_columns=("question", "sentence", "label"), description="Question NLI (from SQuAD)"),
    Task("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",), ("accuracy",),
         local_columns=("sentence1", "sentence2", "label"), description="Recognizing Textual Entailment"),
    Task("wnli", "WNLI", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",), ("accuracy",),
         local_columns=("sentence1", "sentence2", "label"), description="Winograd NLI"),
]

TASKS: dict[str, Task] = {}
for _t in _TASKS:
    TASKS[_t.name] = Task(**{**_t.__dict__, "hub_config": _t.hub_config or _t.name})

# Names people commonly write for the same task.
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "sts": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli"}

GLUE_TASKS = tuple(TASKS)


def get_task(name: str) -> Task:
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in TASKS:
        raise InputError(f'unknown task "{name}"{did_you_mean(key, TASKS)}; known: {", ".join(TASKS)}')
    return TASKS[key]
