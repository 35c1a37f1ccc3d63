"""Tasks as small declarative registry entries: the nine GLUE tasks and SQuAD v1.1 / v2.0.

Each entry says where the data lives (hub config, local file layout), which columns hold text and label,
which metrics are official and which of them make up the task's main (leaderboard) score, and its kind
(harness/tasks/kinds.py: classification/regression or span extraction). Bump `version` whenever anything here
changes what a result means; the version goes into every cell key.
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
    local_train: str = "train.tsv"      # the training file in local_dir
    unanswerable: bool = False          # span extraction: some questions have no answer (SQuAD v2.0)

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

# Extractive QA. Official metrics in points; v2.0 also the answerable / unanswerable halves and the best
# no-answer threshold found on dev (best_*_thresh, in null-odds units, not points). Main score: F1.
_V2_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact",
               "best_exact_thresh", "best_f1", "best_f1_thresh")
_TASKS += [
    Task("squad", "SQuAD", ("question", "context"), (), ("exact", "f1"), ("f1",), local_columns=(),
         eval_splits=(EvalSplit("validation", "dev-v1.1.json"),), hub_id="rajpurkar/squad", hub_config="plain_text",
         kind="span_extraction", benchmark="squad", local_train="train-v1.1.json",
         description="SQuAD v1.1 extractive QA (EM, F1)"),
    Task("squad_v2", "SQuAD", ("question", "context"), (), _V2_METRICS, ("f1",), local_columns=(),
         eval_splits=(EvalSplit("validation", "dev-v2.0.json"),), hub_id="rajpurkar/squad_v2",
         hub_config="squad_v2", kind="span_extraction", benchmark="squad", local_train="train-v2.0.json",
         unanswerable=True, description="SQuAD v2.0 extractive QA with unanswerable questions (EM, F1)"),
]

TASKS: dict[str, Task] = {}
for _t in _TASKS:
    TASKS[_t.name] = Task(**{**_t.__dict__, "hub_config": _t.hub_config or _t.name})

# Names people commonly write for the same task.
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "sts": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli",
           "squad1": "squad", "squad_v1": "squad", "squad-v1.1": "squad", "squad2": "squad_v2",
           "squadv2": "squad_v2", "squad-v2": "squad_v2", "squad-v2.0": "squad_v2"}

GLUE_TASKS = tuple(name for name, t in TASKS.items() if t.benchmark == "glue")


def get_task(name: str) -> Task:
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in TASKS:
        raise InputError(f'unknown task "{name}"{did_you_mean(key, TASKS)}; known: {", ".join(TASKS)}')
    return TASKS[key]
