"""SQuAD data, features and post-processing for extractive question answering (the span-extraction kind).

Data: local files in the official JSON format (`<data_dir>/SQuAD/train-v1.1.json`, `dev-v1.1.json`,
`train-v2.0.json`, `dev-v2.0.json`) or the hub (`rajpurkar/squad`, `rajpurkar/squad_v2`); squad_v2_synth builds
v2.0-style splits from the v1.1 ones at load time (harness/tasks/squad_synth.py).

Features follow the reference `run_qa` recipe: question and context through a fast tokenizer, the context
truncated into overlapping windows (max_length, doc_stride) with offset mappings; a training window whose
context holds the (first) gold answer points at its first and last token, any other window at the CLS token.
Evaluation windows keep, per token, its character span in the context ([-1, -1] outside the context) and the
example it came from, so post-processing can map the best start/end pair back to text.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from harness.spec.errors import DataNotFoundError
from harness.tasks.data import file_source

N_BEST = 20              # start and end candidates per window
MAX_ANSWER_LENGTH = 30   # tokens
NO_CONTEXT = (-1, -1)    # the offset of a token outside the context (question, special tokens)
NO_SPAN_ODDS = 1e9       # null odds of a question without any valid span (JSON has no infinity)
CLS = "cls"              # the evaluation features' column of each window's CLS position (cls_position)

HOW_TO_POINT = ("point the harness at local files in the official SQuAD JSON format (<data_dir>/SQuAD/"
                "train-v1.1.json, dev-v1.1.json, train-v2.0.json, dev-v2.0.json) with --data-dir DIR, the suite's "
                "data_dir, or HARNESS_DATA_DIR=DIR")


@dataclass
class QASplit:
    """Questions of one split: ids, questions, contexts, and gold answers (texts and character starts; empty
    for an unanswerable v2.0 question)."""

    ids: list[str]
    questions: list[str]
    contexts: list[str]
    answer_texts: list[list[str]]
    answer_starts: list[list[int]]
    source: str
    skipped: tuple = ()    # (a RawSplit's malformed rows: the official JSON has none to skip)

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int | None) -> "QASplit":
        """The first n questions (budgets count questions, not windows)."""
        if n is None or n >= len(self):
            return self
        return QASplit(self.ids[:n], self.questions[:n], self.contexts[:n], self.answer_texts[:n],
                       self.answer_starts[:n], f"{self.source}[:{n}]")

    def golds(self) -> dict[str, list[str]]:
        return dict(zip(self.ids, self.answer_texts))


def read_squad_json(task, path: str) -> QASplit:
    """One split from a file in the official JSON format; a synthetic task's split is built from it first."""
    if not os.path.isfile(path):
        raise DataNotFoundError(f"task {task.name}: {path} not found; {HOW_TO_POINT}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    # JSON lines, a hub export, not text at all; nested past the decoder's recursion limit
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DataNotFoundError(f"task {task.name}: {path} is not one JSON document ({e}); expected the official "
                                f"SQuAD format") from None
    return _questions(task, data, file_source(path), path)


def _questions(task, data: dict, source: str, where: str) -> QASplit:
    """The questions of one split's JSON (`where`: its file or hub split, for messages)."""
    out = _walk(task, data, source, where)   # first: refuses a file in another layout, naming where
    if task.synthetic:
        from harness.tasks.squad_synth import synthesize_v2

        try:
            data = synthesize_v2(data, task.synthetic_unanswerable, task.synthetic_seed)
        except ValueError as e:
            raise DataNotFoundError(f"task {task.name}: {where}: {e}") from None
        # the cache key: another seed or share is other data from the same file
        out = _walk(task, data, f"synthetic-v2:{task.synthetic_unanswerable}:{task.synthetic_seed}:{source}", where)
    if not out.ids:
        raise DataNotFoundError(f"task {task.name}: {where} holds no questions; expected the official SQuAD format")
    return out


def _walk(task, data, source: str, where: str) -> QASplit:
    """Every question of a JSON in the official layout; one line naming the first entry that is not."""
    out = QASplit([], [], [], [], [], source)
    at = "the file"
    try:
        if not isinstance(data, dict) or not isinstance(data.get("data", []), list):
            raise TypeError('no "data" list of articles at the top')
        for a, article in enumerate(data.get("data", [])):
            at = f"article {a}"
            for p, paragraph in enumerate(article["paragraphs"]):
                at = f"article {a} paragraph {p}"
                for q, qa in enumerate(paragraph["qas"]):
                    at = f"article {a} paragraph {p} question {q}"
                    answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                    if not isinstance(answers, list):
                        raise TypeError('"answers" is not a list of {"text", "answer_start"}')
                    texts = [answer["text"] for answer in answers]
                    starts = [int(answer["answer_start"]) for answer in answers]
                    out.ids.append(qa["id"])
                    out.questions.append(qa["question"])
                    out.contexts.append(paragraph["context"])
                    out.answer_texts.append(texts)
                    out.answer_starts.append(starts)
    except (KeyError, TypeError, AttributeError, ValueError) as e:   # e.g. a hub export's answers as one dict
        why = f"no {e.args[0]!r} field" if isinstance(e, KeyError) else str(e)
        raise DataNotFoundError(f"task {task.name}: {where}: {at}: {why}; expected the official SQuAD format"
                                ) from None
    return out


def answered(task, split: QASplit, where: str) -> QASplit:
    """A dev split whose every question is scored once, by its id, against its answers. Refused: a question id
    that repeats (gold answers and predictions are keyed by id: a dev file with an article twice, 2,092 questions,
    was scored over its 1,988 ids while the run counted 2,092), and, for a task without unanswerable questions,
    a question without an answer (v1.1: the cell crashed scoring it, after training)."""
    seen = set()
    for qid in split.ids:
        if qid in seen:
            raise DataNotFoundError(f"task {task.name}: {where}: question id {qid} appears more than once; every "
                                    f"dev question is scored once, by its id")
        seen.add(qid)
    if not task.unanswerable:
        missing = next((q for q, texts in zip(split.ids, split.answer_texts) if not texts), None)
        if missing is not None:
            raise DataNotFoundError(f"task {task.name}: {where}: question {missing} has no answer; {task.name} "
                                    f"scores every dev question against its answers (unanswerable questions are "
                                    f"SQuAD v2.0's)")
    return split


def load_squad(task, data_dir: str | None) -> dict[str, QASplit]:
    if data_dir:
        if not os.path.isdir(data_dir):
            raise DataNotFoundError(f"data directory {data_dir} does not exist; {HOW_TO_POINT}")
        folder = os.path.join(data_dir, task.local_dir)
        out = {"train": read_squad_json(task, os.path.join(folder, task.local_train))}
        for split in task.eval_splits:
            path = os.path.join(folder, split.local_file)
            out[split.hub_split] = answered(task, read_squad_json(task, path), path)
        return out
    from harness.tasks.data import load_hub_dataset

    dd = load_hub_dataset(task.name, HOW_TO_POINT, task.hub_id)
    out = {}
    for split in ["train"] + [s.hub_split for s in task.eval_splits]:
        ds = dd[split]
        source = f"hub:{task.hub_id}/{split}:{ds._fingerprint}"
        if task.synthetic:   # built from the split's articles, as from a file
            from harness.tasks.squad_synth import hub_to_json

            out[split] = _questions(task, hub_to_json(ds), source, f"{task.hub_id}/{split}")
            continue
        answers = list(ds["answers"])
        out[split] = QASplit(list(ds["id"]), list(ds["question"]), list(ds["context"]),
                             [list(a["text"]) for a in answers], [list(a["answer_start"]) for a in answers],
                             source)
        if split != "train":
            answered(task, out[split], f"{task.hub_id}/{split}")
    return out


def tokenize_windows(split: QASplit, tokenizer, max_length: int, doc_stride: int, padding: str, training: bool
                     ) -> dict:
    """Features of a split as columns. Every window: input ids (etc.), "length", "idx" (window index).
    Training: start_positions / end_positions (a window without the answer: its CLS token's). Evaluation:
    "example" (question index), "offsets" and CLS, the token whose logits score "no answer" (cls_position)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("span extraction needs a fast tokenizer (offset mappings)")
    if doc_stride >= max_length // 2:
        raise ValueError(f"doc_stride {doc_stride} must be below half of max_length {max_length}")
    questions = [q.lstrip() for q in split.questions]
    check_context_room(split, questions, tokenizer, max_length, doc_stride)
    enc = tokenizer(questions, split.contexts, truncation="only_second",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True,
                    padding="max_length" if window_padding(tokenizer, padding) == "max_length" else False)
    example_of = enc["overflow_to_sample_mapping"]
    cols = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
    cols["length"] = [len(ids) for ids in enc["input_ids"]]
    cols["idx"] = list(range(len(example_of)))
    starts, ends, offsets, classes = [], [], [], []
    for i, window_offsets in enumerate(enc["offset_mapping"]):
        sequence = enc.sequence_ids(i)
        in_context = [s == 1 for s in sequence]
        cls = cls_position(enc["input_ids"][i], tokenizer)
        if not training:
            offsets.append([list(o) if c else list(NO_CONTEXT) for o, c in zip(window_offsets, in_context)])
            classes.append(cls)
            continue
        e = example_of[i]
        span = answer_tokens(split.answer_starts[e], split.answer_texts[e], window_offsets, in_context)
        starts.append(cls if span is None else span[0])
        ends.append(cls if span is None else span[1])
    if training:
        cols["start_positions"], cols["end_positions"] = starts, ends
    else:
        cols["example"], cols["offsets"], cols[CLS] = list(example_of), offsets, classes
    return cols


def window_padding(tokenizer, padding: str) -> str:
    """How windows are padded: as the cell says, but to max_length for a tokenizer that pads at the left (XLNet's),
    whatever it says. The collator would pad a short window at the left, shifting its tokens away from the answer
    and CLS positions and the offsets tokenize_windows computed on it: training pointed at other tokens, scoring
    read other logits. Padded when tokenized, a batch of windows pads none."""
    return "max_length" if getattr(tokenizer, "padding_side", "right") == "left" else padding


def cls_position(ids: list[int], tokenizer) -> int:
    """Where a window's CLS token is: what training points a window without the answer at, and whose start + end
    logits are its null score. Not always first: XLNet's tokenizer puts it last (and pads at the left); a
    tokenizer without one: the first token, as run_qa does."""
    return ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0


def check_context_room(split: QASplit, questions: list[str], tokenizer, max_length: int, doc_stride: int) -> None:
    """A window holds its question whole and max_length - special tokens - question tokens of context. Where a
    context is cut into windows, that room must exceed doc_stride: the tokenizers library otherwise panics (a
    BaseException, pyo3_runtime.PanicException, whose message names neither the question nor a setting). The first
    question it is not for is refused in one line: the cell fails, and the suite goes on."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    for e, ids in enumerate(tokenizer(questions, add_special_tokens=False)["input_ids"]):
        room = max_length - specials - len(ids)
        if room > doc_stride:
            continue
        context = tokenizer(split.contexts[e], add_special_tokens=False, truncation=True, max_length=max(room, 0) + 1)
        if len(context["input_ids"]) <= room:
            continue   # the context fits whole beside it: never cut
        raise ValueError(f"question {split.ids[e]} is {len(ids)} tokens: a window of max_length {max_length} "
                         f"leaves {room} for its context, which must be more than doc_stride {doc_stride}; "
                         f"raise max_length or lower doc_stride")


def answer_tokens(answer_starts: list[int], answer_texts: list[str], offsets, in_context) -> tuple[int, int] | None:
    """The first and last token of the first gold answer in this window, or None when the question has no
    answer or the window's context does not hold all of it."""
    if not answer_starts:
        return None
    char_start = answer_starts[0]
    char_end = char_start + len(answer_texts[0])
    context = [i for i, c in enumerate(in_context) if c]
    if not context:
        return None
    first, last = context[0], context[-1]
    if not (offsets[first][0] <= char_start and offsets[last][1] >= char_end):
        return None
    start = first
    while start <= last and offsets[start][0] <= char_start:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= char_end:
        end -= 1
    return start - 1, end + 1


def postprocess(split: QASplit, example_of, offsets, cls, start_logits: np.ndarray, end_logits: np.ndarray,
                version: int = 1, null_threshold: float = 0.0, n_best: int = N_BEST,
                max_answer_length: int = MAX_ANSWER_LENGTH) -> tuple[dict, dict]:
    """Answers from window logits: per window the n_best start and end candidates, pairs outside the context,
    inverted, or longer than max_answer_length dropped; the best pair over all windows of a question is its
    answer. v2: the null score is the minimum over the question's windows of the CLS start + end logits (`cls`:
    each window's CLS position, tokenize_windows' column); the null odds (null score minus the best span's
    score) above the threshold predict "no answer" ("").
    Returns ({id: answer text}, {id: null odds}) for every question that has a window."""
    windows: dict[int, list[int]] = {}
    for w, e in enumerate(example_of):
        windows.setdefault(int(e), []).append(w)
    predictions, null_odds = {}, {}
    for e, ws in windows.items():
        best_score, best_span, null_score = -np.inf, None, np.inf
        for w in ws:
            off = offsets[w]
            n = len(off)
            s, en = start_logits[w][:n], end_logits[w][:n]
            null_score = min(null_score, float(s[cls[w]] + en[cls[w]]))
            top_ends = np.argsort(en)[::-1][:n_best]
            for i in np.argsort(s)[::-1][:n_best]:
                if off[i][0] < 0:
                    continue
                for j in top_ends:
                    if off[j][0] < 0 or j < i or j - i + 1 > max_answer_length:
                        continue
                    score = float(s[i] + en[j])
                    if score > best_score:
                        best_score, best_span = score, (off[i][0], off[j][1])
        qid = split.ids[e]
        text = split.contexts[e][best_span[0]:best_span[1]] if best_span else ""
        odds = null_score - best_score if best_span else NO_SPAN_ODDS
        if version == 2 and odds > null_threshold:
            text = ""
        predictions[qid], null_odds[qid] = text, odds
    return predictions, null_odds
