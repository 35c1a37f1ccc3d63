"""Trivial baselines: what a model that learned nothing from the inputs scores on the same dev examples a run is
scored on, with the task's own metric code, in the task's main score (points, x100).

A cell whose score is not clearly above these has not left the trivial solution (the `trivial` flag of the
tables). Each task kind has one function here, which its `TaskKind.trivial_baselines` hook calls; the training
loop calls the hook once per (cell, task), before training (no model is involved, so a failure costs nothing),
and stores the result as RunResult.trivial_scores ({baseline name: main score}).

Every baseline is fitted on the TRAIN examples the run trains on (after max_train_samples), never on dev: a
majority class or a mean taken from dev would be a (slightly) informed predictor.

- classification, `majority`: predict the most frequent train label for every dev example (a tie goes to the
  lowest label index). Accuracy is the dev share of that class; F1 (MRPC, QQP) is that of always predicting it,
  so always "equivalent" scores a high F1; MCC (CoLA) of a constant prediction is 0 (sklearn defines it so).
- regression (STS-B), `constant_mean`: predict the mean train target for every dev example. Pearson and
  Spearman correlations of a constant are undefined (0/0); the baseline's score is defined as 0, the value the
  metric code (harness/tasks/metrics.py) gives a collapsed regressor, and a NaN from the metric is mapped to 0.
- span extraction (SQuAD), with the official metric code (harness/tasks/squad_metrics.py):
  `empty`: the empty answer for every question. v1.1 scores 0; v2.0 scores the share of unanswerable
  questions (an empty answer is right there), which is the number a v2.0 model must beat.
  `first_span`: the first k whitespace words of the context, k = the mean length in words of the train
  split's first gold answers, rounded (at least 1; SQuAD v1.1's train split gives 3): an answer of the usual
  length from the one position that needs no reading of the question.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from harness.spec.tasks import Task

# a train split without answers (or none at all) still gets a first-span baseline of this many words
DEFAULT_SPAN_WORDS = 3


def _main(task: Task, metrics: dict) -> float:
    score = task.main_score(metrics)
    return 0.0 if score is None or math.isnan(score) else float(score)


def classification_baselines(task: Task, train, dev: list[tuple[str, object]]) -> dict[str, float]:
    """`train`: the RawSplit trained on (labels); `dev`: (metric suffix, RawSplit) per dev split."""
    from harness.tasks.metrics import compute_metrics

    labels = list(train.labels)
    if not labels:
        return {}
    metrics: dict[str, float] = {}
    if task.is_regression:
        name, constant = "constant_mean", float(np.mean(labels))
    else:
        counts = Counter(labels)
        # the most frequent class; ties broken towards the lowest label index, so the choice is reproducible
        name, constant = "majority", min(counts, key=lambda c: (-counts[c], c))
    for suffix, split in dev:
        gold = np.asarray(split.labels, dtype=np.float64 if task.is_regression else np.int64)
        preds = np.full(len(gold), constant, dtype=gold.dtype)
        # correlations of a constant are undefined: compute_metrics reports 0 for them (and for any NaN)
        metrics.update(compute_metrics(task, preds, gold, suffix))
    return {name: _main(task, metrics)}


def first_span_words(train) -> int:
    """k of the first-span baseline: the mean word count of the train split's first gold answers, rounded."""
    lengths = [len(texts[0].split()) for texts in train.answer_texts if texts and texts[0].split()]
    if not lengths:
        return DEFAULT_SPAN_WORDS
    return max(1, int(math.floor(float(np.mean(lengths)) + 0.5)))


def span_baselines(task: Task, train, dev: list[tuple[str, object]]) -> dict[str, float]:
    """`train`: the QASplit trained on; `dev`: (metric suffix, QASplit) per dev split."""
    from harness.tasks.squad_metrics import squad_metrics

    version = 2 if task.unanswerable else 1
    k = first_span_words(train)
    empty, first = {}, {}
    for suffix, split in dev:
        golds = split.golds()
        answers = {
            "empty": {q: "" for q in split.ids},
            "first_span": {q: " ".join(c.split()[:k]) for q, c in zip(split.ids, split.contexts)},
        }
        for name, out in (("empty", empty), ("first_span", first)):
            metrics, _, _ = squad_metrics(golds, answers[name], version)
            out.update({m + suffix: v for m, v in metrics.items()})
    return {"empty": _main(task, empty), "first_span": _main(task, first)}


def strongest(trivial_scores: dict | None) -> float | None:
    """The bar a run must clear: the highest of its stored trivial baselines (None when none were stored, e.g.
    rows written before the column)."""
    values = [float(v) for v in (trivial_scores or {}).values() if v is not None and not math.isnan(float(v))]
    return max(values) if values else None
