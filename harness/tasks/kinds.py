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

import numpy as np

from harness import atomic
from harness.tasks.registry import Task


class TaskKind:
    name: str = ""
    auto_model: str = ""            # the transformers Auto class that puts this kind's head on an encoder
    hidden_columns: tuple = ()      # feature columns kept on the host (never fed to the model)

    def config_kwargs(self, task: Task) -> dict:
        """Keyword arguments for the model config (number of labels, problem type...)."""
        return {}

    def load(self, task: Task, data_dir: str | None) -> dict:
        """{'train': split, <eval split name>: split}; a split has len() and head(n) (n examples)."""
        raise NotImplementedError

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

    def main_score(self, task: Task, metrics: dict) -> float | None:
        """The task's leaderboard score: the mean of its main metrics (GLUE averages pairs; SQuAD: F1)."""
        names = task.main_metric_names()
        if not all(n in metrics for n in names):
            return None
        return sum(metrics[n] for n in names) / len(names)

    def save_predictions(self, task: Task, out_dir: str, predictions: dict) -> None:
        """Write {split: predictions} into the run's output directory."""
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

    def features(self, task: Task, split, tokenizer, hp: dict, cache, training: bool):
        return cache.get(task, split, tokenizer, hp["max_length"], hp["padding"])

    def batch_outputs(self, output, batch: dict, hp: dict) -> dict:
        return {"logits": output.logits.float(), "labels": batch["labels"]}

    def score(self, task: Task, eval_set, arrays: dict):
        from harness.tasks.metrics import compute_metrics, predictions_from_logits

        preds = predictions_from_logits(task, arrays["logits"])
        metrics = compute_metrics(task, preds, arrays["labels"], eval_set.suffix)
        return metrics, (arrays["idx"], preds, arrays["labels"])

    def save_predictions(self, task: Task, out_dir: str, predictions: dict) -> None:
        arrays = {f"{split}_{part}": arr for split, arrs in predictions.items()
                  for part, arr in zip(("idx", "pred", "label"), arrs)}

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:   # a file object: numpy would append .npz to the temporary name
                np.savez_compressed(f, **arrays)

        atomic.write_file(os.path.join(out_dir, "predictions.npz"), write)


KINDS: dict[str, TaskKind] = {k.name: k for k in [Classification()]}


def kind_of(task: Task) -> TaskKind:
    return KINDS[task.kind]
