"""Trivial baselines on small hand-made dev sets: majority class (of train, not dev), MCC of a constant, F1 of
always "equivalent", constant regression, several dev splits, and SQuAD's empty and first-span answers with and
without unanswerable questions, each worked out by hand."""

import pytest

from harness.spec.tasks import get_task
from harness.tasks.baselines import first_span_words
from harness.tasks.data import RawSplit
from harness.tasks.kinds import kind_of
from harness.tasks.squad import QASplit


def glue(labels, n_text=2) -> RawSplit:
    return RawSplit({c: ["x"] * len(labels) for c in ("sentence1", "sentence2")[:n_text]}, list(labels), "hand")


def baselines(task_name, train, *dev):
    task = get_task(task_name)
    suffixes = [s.suffix for s in task.eval_splits]
    return kind_of(task).trivial_baselines(task, train, list(zip(suffixes, dev)))


def test_majority_class_is_taken_from_train_and_scored_on_dev():
    # train's majority is 1; dev's would be 0 (3 of 4): always 1 is right once in 4
    assert baselines("rte", glue([1, 1, 1, 0]), glue([0, 0, 0, 1])) == {"majority": pytest.approx(25.0)}
    # a tie goes to the lowest label index: always 0 is right on 2 of 3
    assert baselines("rte", glue([1, 0, 1, 0]), glue([0, 0, 1])) == {"majority": pytest.approx(200 / 3)}


def test_mcc_of_a_constant_is_zero():
    assert baselines("cola", glue([1, 1, 0], 1), glue([0, 1, 1, 0, 1], 1)) == {"majority": 0.0}


def test_f1_of_always_predicting_the_positive_class():
    # MRPC's main score is the mean of F1 and accuracy. Always "equivalent" on 3 positives of 5:
    # accuracy 60; precision 3/5, recall 1 -> F1 0.75
    assert baselines("mrpc", glue([1, 1, 0]), glue([1, 1, 0, 1, 0])) == {"majority": pytest.approx((75 + 60) / 2)}
    # always "not equivalent": no true positive, F1 0; accuracy 40
    assert baselines("mrpc", glue([0, 0, 1]), glue([1, 1, 0, 1, 0])) == {"majority": pytest.approx(20.0)}


def test_constant_regression_scores_zero_correlation():
    # Pearson and Spearman of a constant are undefined (0/0): defined as 0, not NaN
    assert baselines("stsb", glue([1.0, 2.0, 4.5]), glue([0.5, 3.0, 2.2, 5.0])) == {"constant_mean": 0.0}


def test_constant_whose_float_std_is_not_zero_scores_zero_without_a_warning():
    import warnings

    # np.std of [0.1, 0.1, 0.1] is 1.4e-17, not 0: scipy would warn about a constant input and return NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert baselines("stsb", glue([0.1, 0.1]), glue([0.5, 3.0, 2.2])) == {"constant_mean": 0.0}


def test_main_score_averages_the_dev_splits():
    # MNLI: majority 2 (contradiction) from train; matched 1 of 2, mismatched 3 of 4 -> (50 + 75) / 2
    assert baselines("mnli", glue([2, 2, 1]), glue([2, 0]), glue([2, 2, 2, 1])) == {"majority": pytest.approx(62.5)}


def qa(contexts, answers, ids=None) -> QASplit:
    ids = ids or [f"q{i}" for i in range(len(contexts))]
    return QASplit(ids, ["what?"] * len(ids), list(contexts), [list(a) for a in answers],
                   [[0] * len(a) for a in answers], "hand")


# train answers of 2, 1 and 3 words: k = 2
TRAIN = qa(["c"] * 3, [["Denver Broncos"], ["Paris"], ["the Seine river", "x"]])


def test_first_span_length_is_the_mean_train_answer_length():
    assert first_span_words(TRAIN) == 2
    assert first_span_words(qa(["c"] * 2, [["a b c d"], ["a b c d e"]])) == 5      # 4.5 rounds up
    assert first_span_words(qa(["c"], [[]])) == 3                                # no answers: the default


def test_squad_v1_empty_and_first_span():
    dev = qa(["Denver Broncos won the game.", "In 1990 Paris hosted it.", "The Seine river flows."],
             [["Denver Broncos"], ["Paris"], ["Seine river"]])
    # first 2 words: "Denver Broncos" (EM, F1 1); "In 1990" (0); "The Seine" -> "seine" vs "seine river":
    # P 1, R 1/2 -> F1 2/3. F1 = (1 + 0 + 2/3) / 3. The empty answer scores 0 everywhere in v1.1.
    assert baselines("squad", TRAIN, dev) == {"empty": 0.0, "first_span": pytest.approx(100 * (5 / 3) / 3)}


def test_squad_v2_empty_answer_is_right_on_unanswerable_questions():
    dev = qa(["Denver Broncos won the game.", "In 1990 Paris hosted it.", "The Seine river flows."],
             [["Denver Broncos"], [], []])
    # empty: wrong on q0, right on the two unanswerable -> 2/3; first span: right on q0 only -> 1/3
    assert baselines("squad_v2", TRAIN, dev) == {"empty": pytest.approx(200 / 3),
                                                  "first_span": pytest.approx(100 / 3)}


def test_strongest_baseline_is_the_bar_to_clear():
    from harness.tasks.baselines import strongest

    assert strongest({"empty": 30.0, "first_span": 12.5}) == 30.0
    assert strongest(None) is None and strongest({}) is None
