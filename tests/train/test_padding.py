"""The padded tokens a pilot scales its rates by (harness/train/padding.py) are those of the batches the loop
really runs: training batches of one epoch per row, dev batches of one evaluation per dev example."""

from __future__ import annotations

import pytest

from harness.spec.cell import Cell
from harness.spec.methods import get_method
from harness.spec.tasks import get_task
from harness.train import padding, recipe
from harness.train.context import RunContext
from harness.train.recipe import train_and_evaluate
from tests.helpers import write_small_squad


def _cell(model, task="rte", method="full", **hparams):
    hp = dict(learning_rate=1e-3, batch_size=4, eval_batch_size=8, max_length=32, warmup_ratio=0.0,
              weight_decay=0.0, gradient_accumulation_steps=1, max_grad_norm=1.0, mixed_precision="no",
              padding="dynamic", group_by_length=True, eval_steps=None, compile=False)
    hp.update(hparams)
    return Cell(suite="t", model=str(model), task=task, task_version=get_task(task).version, method=method,
                method_params=get_method(method).resolve({}), budget={"epochs": 2.0}, seed=3, hparams=hp)


def _batches_run(cell, data, monkeypatch):
    """(the padded tokens per row of the first epoch's training batches, those of the first evaluation per dev
    example), as the loop's own forward saw the batches."""
    seen = {True: [], False: []}
    forward = recipe.CellRun.forward

    def spy(self, t, batch):
        seen[self.model.training].append(tuple(batch["input_ids"].shape))
        return forward(self, t, batch)

    monkeypatch.setattr(recipe.CellRun, "forward", spy)
    r = train_and_evaluate(cell, RunContext(data_dir=str(data), cache_dir=None, show_progress=False))
    train = seen[True][:r.steps // 2]   # the first of two epochs
    dev = seen[False][:len(seen[False]) // 2]   # the first of two evaluations (one per epoch)
    return (sum(b * n for b, n in train) / sum(b for b, _ in train),
            sum(b * n for b, n in dev) / r.eval_examples)


def test_batch_tokens_pads_each_batch_to_its_longest_row():
    lengths = [5, 3, 9, 2, 7]
    order = padding.longest_first(lengths)
    assert order == [2, 4, 0, 1, 3]
    assert padding.batch_tokens(lengths, order, 2) == 2 * 9 + 2 * 5 + 1 * 2
    assert padding.batch_tokens(lengths, order, 2, multiple=8) == 2 * 16 + 2 * 8 + 1 * 8
    assert padding.batch_tokens(lengths, order, 2, fixed=32) == 5 * 32


@pytest.mark.parametrize("hparams", [{}, {"group_by_length": False}, {"padding": "max_length"}],
                         ids=["grouped", "random", "max_length"])
def test_padding_per_example_is_what_the_loop_ran(tmp_path, tiny_bert, small_glue, monkeypatch, hparams):
    cell = _cell(tiny_bert, **hparams)
    train, dev = _batches_run(cell, small_glue, monkeypatch)
    predicted = padding.per_example(cell, RunContext(data_dir=str(small_glue), cache_dir=str(tmp_path)), "cpu")
    assert predicted == {"train": pytest.approx(train), "eval": pytest.approx(dev)}


def test_question_answering_counts_windows_in_training_and_questions_in_evaluation(tmp_path, tiny_bert,
                                                                                    monkeypatch):
    """Long SQuAD contexts are cut into several windows: the loop's training examples are windows, its dev
    examples questions (each scored from all its windows)."""
    squad = write_small_squad(tmp_path / "squad")
    cell = _cell(tiny_bert, task="squad", max_length=48, doc_stride=16)
    train, dev = _batches_run(cell, squad, monkeypatch)
    predicted = padding.per_example(cell, RunContext(data_dir=str(squad), cache_dir=str(tmp_path / "c")), "cpu")
    assert predicted == {"train": pytest.approx(train), "eval": pytest.approx(dev)}
    assert dev > 48   # more than one window per question: per window, the test above would not see it
