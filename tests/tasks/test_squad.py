"""Extractive QA: the official SQuAD metrics on hand-worked cases, windowing (answers recovered exactly from
their token spans across window boundaries), post-processing (n-best, max_answer_length, inverted spans,
v2 null handling), data loading, and one tiny random QA model through every method."""

import json

import numpy as np
import pytest

from harness.tasks.squad import QASplit, load_squad, postprocess, tokenize_windows
from harness.tasks.squad_metrics import best_threshold, f1, normalize_answer, question_scores, squad_metrics

# --- metrics ------------------------------------------------------------------------------------------------


def test_normalisation_removes_case_punctuation_articles_and_extra_space():
    assert normalize_answer("  The Cat,  sat on A mat!") == "cat sat on mat"
    assert normalize_answer("an apple's-core") == "applescore"   # punctuation is deleted, not a space
    assert normalize_answer("theory") == "theory"   # articles only as whole words


def test_exact_and_f1_take_the_best_gold_answer():
    golds = ["the United Nations", "United Nations Organization"]
    assert question_scores(golds, "United Nations.") == (1.0, 1.0)
    # "the Nations" vs "United Nations": 1 common token, precision 1/1, recall 1/2 -> F1 2/3 (the best gold)
    em, score = question_scores(golds, "the Nations")
    assert em == 0.0 and score == pytest.approx(2 / 3)
    # against the second gold: P 2/2, R 2/3 -> 0.8; the first gives 1.0 for "United Nations"
    assert question_scores(["United Nations Organization"], "United Nations") == (0.0, pytest.approx(0.8))
    assert question_scores(["Denver Broncos"], "Carolina Panthers") == (0.0, 0.0)


def test_v1_and_v2_differ_only_on_empty_answers():
    assert f1("the", "a", version=1) == 0.0        # v1.1: no common token, 0
    assert f1("the", "a", version=2) == 1.0        # v2.0: both empty after normalisation: they agree
    assert question_scores([], "", version=2) == (1.0, 1.0)          # unanswerable, predicted no answer
    assert question_scores([], "Paris", version=2) == (0.0, 0.0)     # unanswerable, answered
    assert question_scores(["Paris"], "", version=2) == (0.0, 0.0)   # answerable, not answered


def test_squad_v2_metrics_by_hand():
    golds = {"q1": ["Paris"], "q2": ["the Seine river", "Seine"], "q3": [], "q4": []}
    preds = {"q1": "Paris", "q2": "river Seine banks", "q3": "", "q4": "London"}
    odds = {"q1": -2.0, "q2": -1.0, "q3": 3.0, "q4": 1.0}
    metrics, em, f = squad_metrics(golds, preds, version=2, null_odds=odds)
    # q2: "river seine banks" vs "seine river": 2 common, P 2/3, R 1 -> 0.8; vs "seine": P 1/3, R 1 -> 0.5
    assert f["q2"] == pytest.approx(0.8) and em == {"q1": 1.0, "q2": 0.0, "q3": 1.0, "q4": 0.0}
    assert metrics["exact"] == pytest.approx(50.0)
    assert metrics["f1"] == pytest.approx(100 * (1 + 0.8 + 1 + 0) / 4)
    assert metrics["HasAns_exact"] == pytest.approx(50.0) and metrics["HasAns_f1"] == pytest.approx(90.0)
    assert metrics["NoAns_exact"] == pytest.approx(50.0) and metrics["NoAns_f1"] == pytest.approx(50.0)
    # thresholds, by the script's sweep over sorted odds: start at 2 (both unanswerable right if all predicted
    # empty); q1 (-2) +1 -> 3; q2 (-1) +0 (EM) / +0.8 (F1); q4 (1) -1; q3 (3) 0. Best EM 3/4 at -2, F1 3.8/4 at -1
    assert (metrics["best_exact"], metrics["best_exact_thresh"]) == (pytest.approx(75.0), -2.0)
    assert (metrics["best_f1"], metrics["best_f1_thresh"]) == (pytest.approx(95.0), -1.0)


def test_v1_metrics_and_missing_prediction():
    metrics, _, _ = squad_metrics({"a": ["x y"], "b": ["z"]}, {"a": "x y"}, version=1)
    assert metrics == {"exact": 50.0, "f1": 50.0}


def test_best_threshold_with_no_unanswerable_question():
    assert best_threshold({"a": "x"}, {"a": 1.0}, {"a": 0.5}, {"a": True}) == (100.0, 0.5)


# --- windows and post-processing ---------------------------------------------------------------------------

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def _split() -> QASplit:
    """A context of 78 words (several windows at max_length 40) and a question for every 3-word span in it (so
    some answers cross window boundaries), plus one unanswerable question."""
    words = WORDS * 3
    context = " ".join(words)
    texts, starts = [], []
    for i in range(len(words) - 2):
        start = len(" ".join(words[:i])) + (1 if i else 0)
        texts.append([" ".join(words[i:i + 3])])
        starts.append([start])
        assert context[start:start + len(texts[-1][0])] == texts[-1][0]
    texts.append([])
    starts.append([])
    n = len(texts)
    return QASplit([f"q{i}" for i in range(n)], ["which words?"] * n, [context] * n, texts, starts, "test")


def cls_last(tok):
    """`tok` with its CLS token at the end of every window, as XLNet's tokenizer puts it."""
    from tokenizers.processors import TemplateProcessing

    cls, sep = tok.cls_token, tok.sep_token
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"$A {sep} {cls}", pair=f"$A {sep} $B:1 {sep}:1 {cls}:1",
        special_tokens=[(cls, tok.cls_token_id), (sep, tok.sep_token_id)])
    return tok


@pytest.mark.parametrize("cls", ["first", "last"])
def test_answers_are_recovered_exactly_from_their_token_spans(tiny_bert, cls):
    """Also with CLS last (XLNet): the null score read the first token's logits, not the CLS token's that
    training points unanswerable windows at, and the unanswerable question got an answer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    tok = cls_last(tok) if cls == "last" else tok
    split = _split()
    unanswerable = len(split) - 1
    cols = tokenize_windows(split, tok, max_length=40, doc_stride=10, padding="dynamic", training=True)
    evals = tokenize_windows(split, tok, max_length=40, doc_stride=10, padding="dynamic", training=False)
    assert (np.bincount(evals["example"]) > 2).all()      # long context: several overlapping windows each
    assert max(cols["length"]) <= 40
    assert evals["cls"] == [0 if cls == "first" else n - 1 for n in evals["length"]]
    found, crossing = set(), 0
    for w, (s, e) in enumerate(zip(cols["start_positions"], cols["end_positions"])):
        q, off = evals["example"][w], evals["offsets"][w]
        if s == evals["cls"][w]:
            assert e == s   # CLS: the window does not hold the whole answer
            if split.answer_starts[q]:
                a, b = split.answer_starts[q][0], split.answer_starts[q][0] + len(split.answer_texts[q][0])
                inside = [o for o in off if o[0] >= 0]
                crossing += inside[0][0] <= a < inside[-1][1] < b or a < inside[0][0] < b <= inside[-1][1]
            continue
        assert split.contexts[q][off[s][0]:off[e][1]] == split.answer_texts[q][0]   # exact recovery
        found.add(q)
    assert crossing > 0                                    # answers cut by a window's edge point at CLS there...
    assert found == set(range(unanswerable))               # ...and are found whole in another window
    assert unanswerable not in found

    # perfect logits on the answer tokens: post-processing gives back every answer text
    n_tokens = max(evals["length"])
    start, end = np.zeros((len(cols["idx"]), n_tokens)), np.zeros((len(cols["idx"]), n_tokens))
    for w, (s, e) in enumerate(zip(cols["start_positions"], cols["end_positions"])):
        start[w, s] += 10.0
        end[w, e] += 10.0
    answers, odds = postprocess(split, evals["example"], evals["offsets"], evals["cls"], start, end, version=2)
    assert [answers[f"q{i}"] for i in range(unanswerable)] == [t[0] for t in split.answer_texts[:-1]]
    assert answers[f"q{unanswerable}"] == "" and odds[f"q{unanswerable}"] > 0   # only CLS scores: null wins


def test_a_tokenizer_that_pads_at_the_left_keeps_every_position_through_the_collator(tiny_bert):
    """XLNet's tokenizer pads at the left: the collator shifted a short window's tokens while its answer (or
    CLS) position, and its offsets, stayed those of the unpadded window; training pointed at another token
    (an answer's word instead of CLS). Such windows are padded when tokenized, so a batch pads none."""
    from transformers import AutoTokenizer, DataCollatorWithPadding

    tok = cls_last(AutoTokenizer.from_pretrained(tiny_bert))
    tok.padding_side = "left"
    cols = tokenize_windows(_split(), tok, max_length=40, doc_stride=10, padding="dynamic", training=True)
    evals = tokenize_windows(_split(), tok, max_length=40, doc_stride=10, padding="dynamic", training=False)
    names = ("input_ids", "attention_mask", "start_positions", "end_positions")
    batch = DataCollatorWithPadding(tok)([{k: cols[k][w] for k in names} for w in cols["idx"]])
    for w in cols["idx"]:
        for label in ("start_positions", "end_positions"):
            at = cols[label][w]
            assert batch["input_ids"][w][at] == cols["input_ids"][w][at], (w, label)
        assert batch["input_ids"][w][evals["cls"][w]] == tok.cls_token_id, w
        assert len(evals["offsets"][w]) == len(batch["input_ids"][w]), w


def _one_window(n_context: int = 60):
    """One window of tokens: 0 CLS, 1-3 question, 4.. context (token k covers characters [10k, 10k+5))."""
    offsets = [[-1, -1]] * 4 + [[10 * k, 10 * k + 5] for k in range(4, 4 + n_context)] + [[-1, -1]]
    context = "".join(f"{k:<10d}" for k in range(4 + n_context))
    split = QASplit(["q"], ["?"], [context], [["x"]], [[0]], "t")
    n = len(offsets)
    return split, offsets, np.full((1, n), -100.0), np.full((1, n), -100.0)


def test_max_answer_length_and_inverted_spans_are_dropped():
    split, off, s, e = _one_window()
    s[0, 10], e[0, 12] = 5.0, 5.0           # a valid pair, score 10
    s[0, 20], e[0, 50] = 9.0, 9.0           # score 18 but 31 tokens long
    s[0, 58], e[0, 54] = 8.0, 8.5           # score 16.5 but inverted (end before start)
    answers, _ = postprocess(split, [0], [off], [0], s, e, max_answer_length=30)
    assert answers["q"] == split.contexts[0][100:125]
    answers, _ = postprocess(split, [0], [off], [0], s, e, max_answer_length=31)
    assert answers["q"] == split.contexts[0][200:505]


def test_only_the_n_best_start_and_end_candidates_are_considered():
    split, off, s, e = _one_window()
    s[0, :4] = e[0, :4] = s[0, -1] = e[0, -1] = 100.0   # CLS, question and SEP: highest, but not context
    s[0, 35:55] = 50.0                       # 20 starts above the answer's, all after its end
    s[0, 30], e[0, 31] = 40.0, 40.0          # the answer: its start ranks 26th
    answers, _ = postprocess(split, [0], [off], [0], s, e, n_best=20)
    assert answers["q"] != split.contexts[0][300:315]
    answers, _ = postprocess(split, [0], [off], [0], s, e, n_best=26)
    assert answers["q"] == split.contexts[0][300:315]


def test_v2_null_score_is_the_minimum_over_windows():
    split, off, s, e = _one_window()
    two_s, two_e = np.vstack([s, s]), np.vstack([e, e])
    two_s[0, 0] = two_e[0, 0] = 5.0         # window 0: CLS 10
    two_s[1, 0] = two_e[1, 0] = 1.0         # window 1: CLS 2 -> the null score is 2
    two_s[1, 10], two_e[1, 11] = 1.5, 1.5   # best span 3: odds 2 - 3 = -1 -> answered
    answers, odds = postprocess(split, [0, 0], [off, off], [0, 0], two_s, two_e, version=2)
    assert odds["q"] == pytest.approx(-1.0) and answers["q"] == split.contexts[0][100:115]
    two_s[1, 10], two_e[1, 11] = 0.5, 0.5   # best span 1: odds 1 > 0 -> no answer
    answers, odds = postprocess(split, [0, 0], [off, off], [0, 0], two_s, two_e, version=2)
    assert odds["q"] == pytest.approx(1.0) and answers["q"] == ""
    answers, _ = postprocess(split, [0, 0], [off, off], [0, 0], two_s, two_e, version=2, null_threshold=1.5)
    assert answers["q"] == split.contexts[0][100:115]
    answers, _ = postprocess(split, [0, 0], [off, off], [0, 0], two_s, two_e, version=1)   # v1 always answers
    assert answers["q"] == split.contexts[0][100:115]


# --- data ---------------------------------------------------------------------------------------------------


def test_local_official_json_and_question_budgets(glue_dir, tmp_path):
    from harness.spec.errors import DataNotFoundError
    from harness.spec.tasks import get_task

    data = load_squad(get_task("squad"), str(glue_dir))
    assert len(data["train"]) == 8582 and len(data["validation"]) == 1988   # the shared split's MANIFEST
    assert len(set(data["validation"].ids)) == 1988
    assert len(data["train"].head(100)) == 100
    with pytest.raises(DataNotFoundError, match="train-v2.0.json not found"):
        load_squad(get_task("squad_v2"), str(glue_dir))
    v2 = tmp_path / "SQuAD"
    v2.mkdir()
    article = {"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "a", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}], "is_impossible": False},
        {"id": "b", "question": "Why?", "answers": [], "plausible_answers": [{"text": "Paris", "answer_start": 0}],
         "is_impossible": True}]}]}
    for name in ("train-v2.0.json", "dev-v2.0.json"):
        (v2 / name).write_text(json.dumps({"version": "v2.0", "data": [article]}))
    data = load_squad(get_task("squad_v2"), str(tmp_path))
    assert data["validation"].golds() == {"a": ["France"], "b": []}
    # a v1.1 dev question without an answer: v1.1 scores each question against its answers, so the cell crashed
    # scoring it after training; the file is refused when the cell reads it, naming the question
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        (v2 / name).write_text(json.dumps({"version": "1.1", "data": [article]}))
    with pytest.raises(DataNotFoundError, match=r"dev-v1.1.json: question b has no answer"):
        load_squad(get_task("squad"), str(tmp_path))



@pytest.mark.parametrize("dev, expect", [
    # the hub's rows written out as JSON lines
    ('{"id": "x", "question": "q", "context": "c", "answers": {"text": ["c"], "answer_start": [0]}}\n{"id": "y"}\n',
     "dev-v1.1.json is not one JSON document (Extra data: line 2 column 1 (char 94)); expected the official SQuAD "
     "format"),
    # the official layout with a hub row's answers (one dict of lists)
    ('{"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "q", '
     '"answers": {"text": ["c"], "answer_start": [0]}}]}]}]}',
     'dev-v1.1.json: article 0 paragraph 0 question 0: "answers" is not a list of {"text", "answer_start"}; '
     "expected the official SQuAD format"),
    ('{"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"question": "q", '
     '"answers": [{"text": "c", "answer_start": 0}]}]}]}]}',
     "dev-v1.1.json: article 0 paragraph 0 question 0: no 'id' field; expected the official SQuAD format"),
    ("[1, 2]", 'dev-v1.1.json: the file: no "data" list of articles at the top; expected the official SQuAD format'),
    # nested past the decoder's recursion limit: a RecursionError traceback
    pytest.param("[" * 100000, "dev-v1.1.json is not one JSON document (maximum recursion depth exceeded", id="deep"),
])
def test_a_squad_file_in_another_layout_is_refused_in_one_line(glue_dir, tmp_path, dev, expect):
    """`harness validate` ended in a JSONDecodeError / KeyError / TypeError traceback (exit 1) on a dev file that
    is not in the official layout; now one line names the file and the first entry that is not, exit 2. The
    synthetic v2.0 task reads the same files: the same line."""
    from tests.helpers import assert_refused, call_cli, write_suite

    (tmp_path / "SQuAD").mkdir()
    (tmp_path / "SQuAD" / "train-v1.1.json").write_bytes((glue_dir / "SQuAD" / "train-v1.1.json").read_bytes())
    (tmp_path / "SQuAD" / "dev-v1.1.json").write_text(dev, encoding="utf-8")
    for task in ("squad", "squad_v2_synth"):
        suite = write_suite(tmp_path / f"{task}.yaml", f"name: s\nmodels: [minilm]\ntasks: [{task}]\nmethods: [full]\n")
        line = assert_refused(call_cli("validate", suite, "--data-dir", tmp_path), expect, where=suite)
        assert f"task {task}: {tmp_path / 'SQuAD' / 'dev-v1.1.json'}" in line


def test_a_dev_question_id_that_repeats_is_refused(glue_dir, tmp_path):
    """The offline dev file with its first article twice (a merge of two exports): 2,092 questions were read and
    counted as the run's eval_examples, but gold answers and predictions are keyed by id, so EM and F1 were over
    its 1,988 ids. Refused, naming the id; a train file may repeat one (training reads positions, not ids)."""
    from harness.spec.errors import DataNotFoundError
    from harness.spec.tasks import get_task
    from tests.helpers import assert_refused, call_cli, write_suite

    dev = json.loads((glue_dir / "SQuAD" / "dev-v1.1.json").read_text(encoding="utf-8"))
    dev["data"].append(dev["data"][0])
    first = dev["data"][0]["paragraphs"][0]["qas"][0]["id"]
    (tmp_path / "SQuAD").mkdir()
    (tmp_path / "SQuAD" / "train-v1.1.json").write_text(json.dumps(dev), encoding="utf-8")
    (tmp_path / "SQuAD" / "dev-v1.1.json").write_text(json.dumps(dev), encoding="utf-8")
    with pytest.raises(DataNotFoundError, match=f"dev-v1.1.json: question id {first} appears more than once; "
                                                f"every dev question is scored once, by its id"):
        load_squad(get_task("squad"), str(tmp_path))
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmodels: [minilm]\ntasks: [squad]\nmethods: [full]\n")
    assert_refused(call_cli("validate", suite, "--data-dir", tmp_path), f"question id {first} appears", where=suite)
    dev["data"].pop()
    (tmp_path / "SQuAD" / "dev-v1.1.json").write_text(json.dumps(dev), encoding="utf-8")
    data = load_squad(get_task("squad"), str(tmp_path))
    assert len(data["validation"]) == len(data["validation"].golds()) == 1988 and len(data["train"]) == 2092

def test_a_question_that_leaves_no_room_past_the_stride_fails_its_cell_in_one_line(glue_dir, tiny_bert):
    """At max_length 56 and doc_stride 16 (valid: below half), the offline train split's question 465 (37 tokens)
    leaves 56 - 3 - 37 = 16 context tokens per window, not more than the stride: the tokenizers library panicked
    (a BaseException: the worker died past the runner's `except Exception`, its cell left running). Now a
    ValueError names the question; a question whose context fits beside it whole is never cut, so it is kept."""
    from transformers import AutoTokenizer

    from harness.spec.tasks import get_task

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    train = load_squad(get_task("squad"), str(glue_dir))["train"]
    assert len(tok(train.questions[465], add_special_tokens=False)["input_ids"]) == 37
    with pytest.raises(ValueError) as err:
        tokenize_windows(train.head(500), tok, max_length=56, doc_stride=16, padding="dynamic", training=True)
    assert str(err.value) == ("question 56bf53e73aeaaa14008c95ce is 37 tokens: a window of max_length 56 leaves 16 "
                              "for its context, which must be more than doc_stride 16; raise max_length or lower "
                              "doc_stride")
    # one token more of room: every question of the head is windowed, the long one too
    cols = tokenize_windows(train.head(500), tok, max_length=57, doc_stride=16, padding="dynamic", training=False)
    assert set(cols["example"]) == set(range(500)) and max(cols["length"]) <= 57
    # the same question beside a context of 16 tokens fits whole in one window: kept
    short = QASplit([train.ids[465]], [train.questions[465]], [" ".join(["word"] * 16)], [["word"]], [[0]], "t")
    cols = tokenize_windows(short, tok, max_length=56, doc_stride=16, padding="dynamic", training=True)
    # the answer is the context's first token: after CLS, the question and SEP
    assert cols["length"] == [56] and cols["start_positions"] == [1 + 37 + 1] == cols["end_positions"]


# --- tiny random QA model through the harness --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory, tiny_bert):
    from tests.helpers import write_small_glue, write_small_squad

    data = tmp_path_factory.mktemp("qa-data")
    write_small_glue(data)
    write_small_squad(data)
    return data


def _rescore(out_dir, dev_file, version):
    """The official way: predictions.json (and null_odds.json) against the dev file, read independently."""
    golds = {}
    for article in json.load(open(dev_file))["data"]:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                golds[qa["id"]] = [a["text"] for a in qa["answers"]]
    preds = json.load(open(out_dir / "predictions.json"))
    odds = json.load(open(out_dir / "null_odds.json")) if version == 2 else None
    return squad_metrics(golds, preds, version, odds)[0], set(preds) == set(golds)


def _run(tmp_path, model, data, name, tasks, methods):
    from tests.helpers import run_cli, write_suite

    suite = write_suite(tmp_path / f"{name}.yaml", f"""
name: {name}
models: ["{model}"]
tasks: {tasks}
methods:
{methods}
hparams: {{batch_size: 8, max_length: 64, doc_stride: 16, learning_rate: 1e-3}}
""")
    proc = run_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                   "--data-dir", data, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return suite


def test_every_method_trains_and_scores_squad(tmp_path, tiny_bert, tiny_qa):
    """Every method on SQuAD v1.1 (the tiny model), v2.0, sequences squad -> rte and rte -> squad, and the saved
    QA adapter stitched back in; stored EM / F1 equal a re-score of each run's predictions.json."""
    from harness.plan.suite import load_suite
    from harness.store.db import Store
    from harness.spec.methods import METHODS

    sizes = {"houlsby": ", size: 4", "pfeiffer": ", size: 4", "compacter": ", size: 8"}
    methods = "\n".join(f"  - {{name: {m}{sizes.get(m, '')}}}" for m in METHODS if not METHODS[m].loads_saved)
    first = _run(tmp_path, tiny_bert, tiny_qa, "qa", "[squad]", methods)
    _run(tmp_path, tiny_bert, tiny_qa, "qa2",
         "[squad_v2, {sequence: [squad, rte]}, {sequence: [rte, squad]}, {multitask: [squad, rte]}]",
         "  - full\n  - {name: houlsby, size: 4}")
    houlsby = next(c for c in load_suite(str(first)).cells() if c.method == "houlsby")
    adapter = tmp_path / "out" / "qa" / houlsby.key / "adapter"
    _run(tmp_path, tiny_bert, tiny_qa, "qa3", "[squad]", f"  - {{name: pretrained_adapter, path: {adapter}}}")

    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    recs = [r for r in store.records() if r.parent_id is None]
    assert len(recs) == (len(METHODS) - 1) + 4 * 2 + 1 and {r.status for r in recs} == {"completed"}
    for r in recs:
        if r.task in ("squad", "squad_v2"):
            version = 2 if r.task == "squad_v2" else 1
            rescored, complete = _rescore(tmp_path / "out" / r.suite / r.cell_key,
                                          tiny_qa / "SQuAD" / f"dev-v{'2.0' if version == 2 else '1.1'}.json", version)
            assert complete and r.eval_examples == 10 and r.train_examples == 24
            assert r.metrics["f1"] == pytest.approx(rescored["f1"]) and r.score == pytest.approx(rescored["f1"])
            assert r.metrics["exact"] == pytest.approx(rescored["exact"])
            assert r.head_params == 32 * 2 + 2                     # qa_outputs: hidden x (start, end) + biases
            if version == 2:
                assert {"HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(r.metrics)
                assert (tmp_path / "out" / r.suite / r.cell_key / "null_odds.json").is_file()
            assert r.hparams["max_length"] == 64 and r.hparams["doc_stride"] == 16
    by_label = {(r.suite, r.method_label): r for r in recs if r.task == "squad" and not r.regime}
    stitched = next(r for (suite, _), r in by_label.items() if suite == "qa3")
    assert stitched.score == pytest.approx(by_label[("qa", houlsby.method_label)].score)   # same adapter, same dev
    for r in recs:
        if r.regime == "sequential":
            child = store.children(r.id)[0]
            assert child.task == ("squad" if r.task == "rte" else "rte")
            assert r.extra["encoder_checksum"]["start"] == child.extra["encoder_checksum"]["end"]
        if r.regime == "multitask":   # one encoder, a QA head and a classification head
            members = {m.task: m for m in store.children(r.id)}
            assert set(members) == {"squad", "rte"} and "f1" in members["squad"].metrics
            assert json.load(open(tmp_path / "out" / "qa2" / r.cell_key / "squad" / "predictions.json"))
    # the adapter ablation re-scores a QA run through the same kind: no layer removed = the recorded score
    from tests.helpers import run_cli

    proc = run_cli("ablate", houlsby.key, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--data-dir", tiny_qa,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = store.analyses("qa", "adapter_ablation")[0].payload
    assert payload["baseline"] == pytest.approx(payload["recorded_score"]) and len(payload["spans"]) == 3


def test_params_count_the_qa_head(tmp_path):
    """`harness params --task squad` builds the QA model from bert-base's known config: the head is qa_outputs
    (hidden x 2 + 2), the rest as for GLUE."""
    from tests.helpers import run_cli, write_suite
    from harness.analysis.accounting import param_rows
    from harness.plan.suite import load_suite

    suite = write_suite(tmp_path / "p.yaml", """
name: p
models: [bert-base-uncased]
tasks: [squad, rte]
methods: [full, {name: houlsby, size: 64}]
""")
    rows = {r.method: r for r in param_rows(load_suite(str(suite)), "squad")}
    assert rows["full"].head == 768 * 2 + 2 and rows["full"].trainable == rows["full"].total
    glue = {r.method: r for r in param_rows(load_suite(str(suite)), "rte")}
    assert glue["full"].head == 768 * 2 + 2                                           # the classifier
    assert rows["full"].total == glue["full"].total - (768 * 768 + 768)              # QA models have no pooler
    houlsby = rows["houlsby(size=64,non_linearity=swish)"]
    assert houlsby.added == 12 * 2 * (2 * 64 * 768 + 768 + 64) and houlsby.trainable == houlsby.added + houlsby.head
    proc = run_cli("params", suite, "--task", "squad")
    assert proc.returncode == 0 and "head for" in proc.stdout.splitlines()[1], proc.stdout
    assert {line.split()[2] for line in proc.stdout.splitlines()[3:]} == {"squad"}, proc.stdout


def test_a_stride_too_long_for_the_window_is_bad_input(tmp_path):
    from tests.helpers import assert_refused, run_cli, write_suite

    suite = write_suite(tmp_path / "s.yaml", """
name: s
models: [minilm]
tasks: [squad]
methods: [full]
hparams:
  max_length: 128
  doc_stride: 64
""")
    line = assert_refused(run_cli("validate", suite), "hparams.doc_stride", where=suite)
    assert line == (f"error: {suite}:7: hparams.doc_stride: doc_stride 64 must be below half of "
                    f"max_length 128 (SQuAD windows)")
