"""Evaluation: the model's outputs on a dev split (gathered over ranks) and a task's metrics and main score."""

from __future__ import annotations

import torch

from harness.tasks.kinds import KINDS, kind_of


def predict(model, loader, acc=None, forward=None, kind=None, hp=None):
    """The gathered outputs of one dev split as numpy arrays: "idx" (the feature index) and what the task kind
    takes from each batch (classification: logits and labels). Under DDP every feature is gathered exactly
    once (gather_for_metrics drops the padding of the last batch). The outputs stay on the device until the
    split is done and come to the host in one copy each: a copy per batch waits for the device every batch."""
    forward = forward or (lambda b: model(**b))
    kind = kind or KINDS["classification"]
    parts: dict[str, list] = {}
    for batch in loader:
        idx = batch.pop("idx")
        with torch.no_grad():
            outputs = kind.batch_outputs(forward(batch), batch, hp or {})
        outputs = {"idx": idx, **outputs}
        if acc is not None:
            outputs = acc.gather_for_metrics(outputs)
        for name, value in outputs.items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values).cpu().numpy() for name, values in parts.items()}


def evaluate_task(task, sets, predict_fn) -> tuple[dict, float, dict]:
    """Every dev split of one task: (metrics, main score, {split: predictions as the task kind keeps them})."""
    kind = kind_of(task)
    metrics, predictions = {}, {}
    for es in sets:
        split_metrics, predictions[es.split] = kind.score(task, es, predict_fn(es))
        metrics.update(split_metrics)
    return metrics, task.main_score(metrics), predictions
