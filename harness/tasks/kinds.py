"""Task kinds: what differs between families of tasks, in one place (lm-evaluation-harness's `output_type`).

A kind owns loading a task's data, turning examples into model features, which transformers head goes on the
encoder, what a batch's model output contributes to the predictions, how predictions become the official
metrics and the main score, and what is saved for later re-scoring and paired comparisons. The training loop,
the runner and the store are the same for every kind: the loop only calls these hooks.

- classification: GLUE sentence(-pair) classification and regression (one label or score per example).
- span extraction (harness/tasks/squad.py): SQuAD-style extractive question answering.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from harness import atomic
from harness.spec import layout
from harness.spec.registry import Registry
from harness.spec.tasks import Task


class TaskKind:
    name: str = ""
    auto_model: str = ""            # the transformers Auto class that puts this kind's head on an encoder
    hidden_columns: tuple = ()      # feature columns kept on the host (never fed to the model)
    # whether only example_ids tell two runs' examples apart (predictions.npz's labels cannot): a run without its
    # ids is then never paired with another
    paired_by_ids: bool = False

    def config_kwargs(self, task: Task) -> dict:
        """Keyword arguments for the model config (number of labels, problem type...)."""
        return {}

    def load(self, task: Task, data_dir: str | None) -> dict:
        """{'train': split, <eval split name>: split}; a split has len(), head(n) (n examples), `source` (what was
        read) and `skipped` (rows of the file read as no example, harness/tasks/data.py)."""
        raise NotImplementedError

    def regression_targets(self, task: Task, train) -> list | None:
        """The targets of the `train` split where the task's head outputs one score (its bias starts at their
        mean: harness/train/heads.py); None for a head of any other kind."""
        return None

    def features(self, task: Task, split, tokenizer, hp: dict, cache, training: bool):
        """The split as a tokenized datasets.Dataset with an "idx" column (the feature's index, unique in the
        split) and "length"; for training also what the model's loss needs."""
        raise NotImplementedError

    def batch_outputs(self, output, batch: dict, hp: dict) -> dict:
        """Tensors of one evaluation batch to gather across processes, every one with the batch as first
        dimension and the same shape on every rank."""
        raise NotImplementedError

    def score(self, task: Task, eval_set, arrays: dict) -> tuple[dict, object]:
        """(metrics, predictions) of one dev split from the gathered arrays ("idx" plus batch_outputs)."""
        raise NotImplementedError

    def save_predictions(self, task: Task, out_dir: str, predictions: dict) -> None:
        """Write {split: predictions} into the run's output directory, including predictions.npz with
        {split}_idx / _pred / _label arrays that `harness compare` pairs by example."""
        raise NotImplementedError

    def example_ids(self, task: Task, out_dir: str, split: str) -> list | None:
        """The ids of a saved run's dev examples of `split`, in the order of its predictions.npz idx, where the
        kind keeps them (None: not kept, or not on this machine). Paired comparisons check them: a position in
        the split names the same example in two runs only where both read the same data."""
        return None

    def sample_score(self, task: Task, preds: np.ndarray, labels: np.ndarray) -> float:
        """The main score of a (resampled) set of saved per-example predictions (the paired bootstrap)."""
        raise NotImplementedError

    def trivial_baselines(self, task: Task, train, dev: list[tuple[str, object]]) -> dict[str, float]:
        """{baseline name: main score} of the kind's trivial predictors (harness/tasks/baselines.py), fitted on
        the `train` split the run trains on and scored on the run's dev splits, given as (metric suffix, split)
        pairs: the same examples and the same main score (mean over dev splits) as the run's own score."""
        raise NotImplementedError


class Classification(TaskKind):
    """One label (or one score, regression) per example; predictions.npz holds idx, prediction and gold label
    per dev split, which `harness compare` pairs by example."""

    name = "classification"
    auto_model = "AutoModelForSequenceClassification"

    def config_kwargs(self, task: Task) -> dict:
        if task.is_regression:
            return {"num_labels": 1, "problem_type": "regression"}
        return {"num_labels": task.num_labels, "id2label": dict(enumerate(task.label_names)),
                "label2id": {n: i for i, n in enumerate(task.label_names)},
                "problem_type": "single_label_classification"}

    def load(self, task: Task, data_dir: str | None) -> dict:
        from harness.tasks.data import load_task_data

        return load_task_data(task, data_dir)

    def regression_targets(self, task: Task, train) -> list | None:
        return list(train.labels) if task.is_regression else None

    def features(self, task: Task, split, tokenizer, hp: dict, cache, training: bool):
        return cache.get(task, split, tokenizer, hp["max_length"], hp["padding"])

    def batch_outputs(self, output, batch: dict, hp: dict) -> dict:
        return {"logits": output.logits.float(), "labels": batch["labels"]}

    def score(self, task: Task, eval_set, arrays: dict):
        from harness.tasks.metrics import compute_metrics, predictions_from_logits

        preds = predictions_from_logits(task, arrays["logits"])
        metrics = compute_metrics(task, preds, arrays["labels"], eval_set.suffix)
        return metrics, (arrays["idx"], preds, arrays["labels"])

    def sample_score(self, task: Task, preds, labels) -> float:
        from harness.tasks.metrics import compute_metrics

        if task.metrics == ("accuracy",):  # fast path: the common case, and the bootstrap calls this often
            return 100.0 * float(np.mean(preds == labels))
        return task.main_score(compute_metrics(task, preds, labels))

    def trivial_baselines(self, task: Task, train, dev: list[tuple[str, object]]) -> dict[str, float]:
        from harness.tasks.baselines import classification_baselines

        return classification_baselines(task, train, dev)   # majority class; regression: constant mean

    def save_predictions(self, task: Task, out_dir: str, predictions: dict) -> None:
        atomic.write_npz(os.path.join(out_dir, layout.PREDICTIONS),
                         {f"{split}_{part}": arr for split, arrs in predictions.items()
                          for part, arr in zip(("idx", "pred", "label"), arrs)})


@dataclass
class SpanPredictions:
    """One dev split of a QA run: answer text and null odds per question id, and per-question EM and F1 (0-1)
    in the split's question order."""

    ids: list
    answers: dict
    null_odds: dict
    exact: np.ndarray
    f1: np.ndarray


class SpanExtraction(TaskKind):
    """Extractive QA (SQuAD): a start and an end logit per token from a QA head; windows over long contexts;
    post-processing picks the best span per question (harness/tasks/squad.py); official EM / F1
    (harness/tasks/squad_metrics.py). Writes predictions.json (id -> answer, the official format) and, for v2.0,
    null_odds.json, which the official evaluation script re-scores; predictions.npz holds per-question F1
    (pred) and EM (label) so the paired bootstrap pairs two runs per question on F1."""

    name = "span_extraction"
    auto_model = "AutoModelForQuestionAnswering"
    hidden_columns = ("example", "offsets", "cls")   # "cls": squad.CLS
    paired_by_ids = True   # predictions.npz holds positions and EM; the question ids are in predictions.json
    NULL_THRESHOLD = 0.0   # v2.0: null odds above it predict "no answer" (run_qa's default)

    def load(self, task: Task, data_dir: str | None) -> dict:
        from harness.tasks.squad import load_squad

        return load_squad(task, data_dir)

    def features(self, task: Task, split, tokenizer, hp: dict, cache, training: bool):
        import datasets

        from harness.tasks.data import tokenizer_fingerprint
        from harness.tasks.squad import CLS, tokenize_windows, window_padding

        max_length, stride = hp["max_length"], hp.get("doc_stride") or task.hparam_defaults["doc_stride"]
        # (CLS in the key: evaluation features cached before the column was kept are built again, once; the
        # padding the windows get, not the cell's: a left-padding tokenizer's windows cached unpadded likewise)
        parts = [tokenizer_fingerprint(tokenizer), task.name, str(task.version), self.name, str(max_length),
                 str(stride), window_padding(tokenizer, hp["padding"]), "train" if training else f"eval|{CLS}",
                 split.source]
        return cache.get_or_build(parts, lambda: datasets.Dataset.from_dict(
            tokenize_windows(split, tokenizer, max_length, stride, hp["padding"], training)),
            hidden=self.hidden_columns)

    def batch_outputs(self, output, batch: dict, hp: dict) -> dict:
        import torch.nn.functional as F

        # windows are padded per batch: pad the logits to max_length so every rank gathers one shape
        pad = hp["max_length"] - output.start_logits.shape[1]
        return {name: F.pad(getattr(output, name).float(), (0, pad), value=-1e9)
                for name in ("start_logits", "end_logits")}

    def score(self, task: Task, eval_set, arrays: dict):
        from harness.tasks.squad import CLS, postprocess
        from harness.tasks.squad_metrics import squad_metrics

        table, order = eval_set.dataset.data, arrays["idx"]
        example_of, offsets, cls = (table.column(c).to_pylist() for c in ("example", "offsets", CLS))
        version = 2 if task.unanswerable else 1
        answers, odds = postprocess(eval_set.raw, [example_of[i] for i in order], [offsets[i] for i in order],
                                    [cls[i] for i in order], arrays["start_logits"], arrays["end_logits"], version,
                                    self.NULL_THRESHOLD)
        metrics, em, f1 = squad_metrics(eval_set.raw.golds(), answers, version, odds if version == 2 else None)
        ids = eval_set.raw.ids
        predictions = SpanPredictions(ids, {q: answers.get(q, "") for q in ids}, odds,
                                      np.array([em[q] for q in ids]), np.array([f1[q] for q in ids]))
        return {k + eval_set.suffix: v for k, v in metrics.items()}, predictions

    def sample_score(self, task: Task, preds, labels) -> float:
        return 100.0 * float(np.mean(preds))   # F1 is the mean of the per-question F1

    def example_ids(self, task: Task, out_dir: str, split: str) -> list | None:
        # predictions.npz's idx is the question's position in the split and its label column holds EM, not a
        # gold answer: the question ids of predictions.json are what tell two runs' questions apart
        # one that is not there, or not the object save_predictions writes (not JSON, nested past the decoder's
        # recursion limit, a list): without ids, as a run without the file (compare and export failed with a
        # traceback on 100,000 '[')
        answers = atomic.read_json_object(os.path.join(out_dir, f"predictions{self.file_suffix(task, split)}.json")) \
            if out_dir else None
        return None if answers is None else list(answers)

    def trivial_baselines(self, task: Task, train, dev: list[tuple[str, object]]) -> dict[str, float]:
        from harness.tasks.baselines import span_baselines

        return span_baselines(task, train, dev)   # always-empty answer; the context's first k words

    @staticmethod
    def file_suffix(task: Task, split: str) -> str:
        """predictions.json and null_odds.json are the first dev split's; any other's carry _{split}."""
        return "" if split == task.eval_splits[0].hub_split else f"_{split}"

    def save_predictions(self, task: Task, out_dir: str, predictions: dict) -> None:
        for split, p in predictions.items():
            suffix = self.file_suffix(task, split)
            # question id -> answer in the split's question order: also what example_ids reads back
            atomic.write_json(os.path.join(out_dir, f"predictions{suffix}.json"), p.answers,
                              indent=0, ensure_ascii=False)
            if task.unanswerable:
                atomic.write_json(os.path.join(out_dir, f"null_odds{suffix}.json"),
                                  {q: p.null_odds.get(q, 0.0) for q in p.ids}, indent=0, ensure_ascii=False)
        atomic.write_npz(os.path.join(out_dir, layout.PREDICTIONS),
                         {f"{split}_{part}": arr for split, p in predictions.items()
                          for part, arr in (("idx", np.arange(len(p.ids))), ("pred", p.f1), ("label", p.exact))})


KINDS: Registry[TaskKind] = Registry("task kind", {k.name: k for k in [Classification(), SpanExtraction()]})


def kind_of(task: Task) -> TaskKind:
    return KINDS.get(task.kind)
