"""Synthetic SQuAD v2.0 from v1.1 files (task squad_v2_synth): no v2.0 file is offline, so this puts the v2.0
path (null score, no-answer threshold, HasAns / NoAns figures) on real text.

A share of a split's questions (the task's `synthetic_unanswerable`) becomes unanswerable: the real question,
with its id, paired with a paragraph of a *different* article of the same split, no answers, `is_impossible`
true. Another article, because another paragraph of the same article may well hold the answer; the same split,
so a split by article (the offline train / dev) stays article-disjoint. Every other question is its v1.1 entry
unchanged (plus `is_impossible` false, as v2.0 writes it). Real v2.0 unanswerable questions were written
against their paragraph and have plausible distractors; these are off-topic, so they are easier to spot:
scores on this set do not stand for SQuAD v2.0 scores (the task's `note` says so wherever it is listed).

Deterministic: which questions and which paragraphs come from SHA-256 of (seed, question id), not from a random
generator, so the same files and seed give the same set with any Python or platform, and the set is rebuilt at
load time (under a second for the offline split) instead of being written anywhere. Each unanswerable question
goes in a one-question paragraph right after its own paragraph, so the first N questions (a question budget)
hold unanswerable ones in about the same share as the whole split.
"""

from __future__ import annotations

import hashlib


def _draw(seed: int, what: str, qid: str) -> int:
    """A 64-bit number fixed by (seed, what, question id)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{what}|{qid}".encode()).digest()[:8], "big")


def synthesize_v2(data: dict, share: float, seed: int) -> dict:
    """The v2.0-format JSON ({"version": "v2.0", "data": [...]}) of one split from its v1.1 JSON."""
    articles = data.get("data", [])
    if len(articles) < 2:
        raise ValueError("a synthetic v2.0 split needs at least two articles (unanswerable questions borrow "
                         "another article's paragraph)")
    # every paragraph of the split in order; article a's are contexts[first[a]:first[a + 1]]
    contexts, first = [], []
    for article in articles:
        first.append(len(contexts))
        contexts.extend(p["context"] for p in article["paragraphs"])
    first.append(len(contexts))
    ids = [qa["id"] for article in articles for p in article["paragraphs"] for qa in p["qas"]]
    chosen = set(sorted(ids, key=lambda q: _draw(seed, "unanswerable", q))[:round(len(ids) * share)])

    def borrowed(a: int, qid: str) -> str:
        """A paragraph of any article but a, uniform over those paragraphs."""
        k = _draw(seed, "paragraph", qid) % (len(contexts) - (first[a + 1] - first[a]))
        return contexts[k if k < first[a] else k + first[a + 1] - first[a]]

    out = []
    for a, article in enumerate(articles):
        paragraphs = []
        for p in article["paragraphs"]:
            kept = [{**qa, "is_impossible": False} for qa in p["qas"] if qa["id"] not in chosen]
            if kept:
                paragraphs.append({**p, "qas": kept})
            paragraphs.extend({"context": borrowed(a, qa["id"]), "qas": [
                {"id": qa["id"], "question": qa["question"], "answers": [], "is_impossible": True}]}
                for qa in p["qas"] if qa["id"] in chosen)
        out.append({**article, "paragraphs": paragraphs})
    return {"version": "v2.0", "data": out}


def hub_to_json(ds) -> dict:
    """A hub split of rajpurkar/squad (rows: id, title, context, question, answers) as v1.1 JSON: articles by
    title and paragraphs by context, in the order they first appear."""
    articles: dict[str, dict[str, list]] = {}
    for row in ds:
        answers = [{"text": t, "answer_start": s} for t, s in zip(row["answers"]["text"],
                                                                  row["answers"]["answer_start"])]
        qas = articles.setdefault(row["title"], {}).setdefault(row["context"], [])
        qas.append({"id": row["id"], "question": row["question"], "answers": answers})
    return {"version": "1.1", "data": [{"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in ps.items()]}
                                       for t, ps in articles.items()]}
