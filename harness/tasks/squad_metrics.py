"""The official SQuAD metrics (v1.1 and v2.0 evaluation scripts' definitions), computed here because
`evaluate` loads its metrics from the hub. Scores are in points (x100).

Normalisation: lower-case, remove punctuation, remove the articles a/an/the, collapse whitespace. EM and F1
take the maximum over the gold answers. v2.0: a question without an answer has the gold [""]; F1 is 1 when
both prediction and gold are empty, 0 when only one is; gold answers that normalise to nothing are dropped.
"""

from __future__ import annotations

import collections
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(gold: str, prediction: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(prediction))


def f1(gold: str, prediction: str, version: int = 1) -> float:
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if version == 2 and (not gold_tokens or not pred_tokens):
        return float(gold_tokens == pred_tokens)   # v2.0: no-answer agrees with no-answer only
    same = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def question_scores(golds: list[str], prediction: str, version: int = 1) -> tuple[float, float]:
    """(EM, F1) of one question, each the maximum over its gold answers (0-1)."""
    if version == 2:
        golds = [g for g in golds if normalize_answer(g)] or [""]
    return (max(exact_match(g, prediction) for g in golds), max(f1(g, prediction, version) for g in golds))


def best_threshold(predictions: dict, scores: dict, null_odds: dict, has_answer: dict) -> tuple[float, float]:
    """The v2.0 script's search: predict "no answer" for every question whose null odds exceed the threshold;
    returns (the best score, in points, and its threshold) over the thresholds the odds themselves give."""
    current = best = sum(1 for q in has_answer if not has_answer[q])
    threshold = 0.0
    for qid in sorted(null_odds, key=lambda q: null_odds[q]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, threshold = current, null_odds[qid]
    return 100.0 * best / len(scores), threshold


def squad_metrics(golds: dict, predictions: dict, version: int = 1, null_odds: dict | None = None
                  ) -> tuple[dict, dict, dict]:
    """Official metrics over the questions of `golds` ({id: [gold texts]}; a question missing from
    `predictions` scores 0). Returns (metrics, {id: EM}, {id: F1}) with per-question values 0-1.
    v1: exact, f1. v2: also HasAns_/NoAns_ exact and f1 and, given null odds, best_exact/_thresh and
    best_f1/_thresh."""
    em, f = {}, {}
    for qid, gold in golds.items():
        em[qid], f[qid] = question_scores(gold, predictions.get(qid, ""), version)
    n = len(golds)
    metrics = {"exact": 100.0 * sum(em.values()) / n, "f1": 100.0 * sum(f.values()) / n}
    if version == 2:
        has_answer = {q: bool(gold) for q, gold in golds.items()}   # as the script: any gold answer listed
        for name, part in (("HasAns", [q for q in golds if has_answer[q]]),
                           ("NoAns", [q for q in golds if not has_answer[q]])):
            if part:
                metrics[f"{name}_exact"] = 100.0 * sum(em[q] for q in part) / len(part)
                metrics[f"{name}_f1"] = 100.0 * sum(f[q] for q in part) / len(part)
        if null_odds is not None:
            preds = {q: predictions.get(q, "") for q in golds}
            metrics["best_exact"], metrics["best_exact_thresh"] = best_threshold(preds, em, null_odds, has_answer)
            metrics["best_f1"], metrics["best_f1_thresh"] = best_threshold(preds, f, null_odds, has_answer)
    return metrics, em, f
