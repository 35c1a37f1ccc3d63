"""The padded tokens a pilot scales its rates by (harness/train/padding.py) are those of the batches the loop
really runs: training batches of one epoch, dev batches of one evaluation, a linear probe's encoder pass."""

from __future__ import annotations

import pytest

from harness.spec.cell import Cell
from harness.spec.methods import get_method
from harness.spec.tasks import get_task
from harness.train import features, padding, recipe
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
    """(training batches of the first epoch, dev batches of the first evaluation, encoder-pass batches) as
    (rows, padded length), seen by the loop's own forward and the probe's encoder."""
    seen = {"train": [], "eval": [], "pass": []}
    forward = recipe.CellRun.forward

    def spy(self, t, batch):
        ids = batch.get("input_ids")
        if ids is not None:
            seen["train" if self.model.training else "eval"].append(tuple(ids.shape))
        return forward(self, t, batch)

    encode = features.encode

    def spy_encode(encoder, ds, *args, **kwargs):
        hook = encoder.register_forward_pre_hook(
            lambda m, a, kw: seen["pass"].append(tuple(kw["input_ids"].shape)), with_kwargs=True)
        try:
            return encode(encoder, ds, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(recipe.CellRun, "forward", spy)
    monkeypatch.setattr(features, "encode", spy_encode)
    r = train_and_evaluate(cell, RunContext(data_dir=str(data), cache_dir=None, show_progress=False))
    per_epoch = r.steps // 2
    evaluations = 2   # one per epoch
    assert len(seen["eval"]) % evaluations == 0
    return seen["train"][:per_epoch], seen["eval"][:len(seen["eval"]) // evaluations], seen["pass"]


def _per_row(batches):
    return sum(b * length for b, length in batches) / sum(b for b, _ in batches)


def test_batch_tokens_pads_each_batch_to_its_longest_row():
    lengths = [5, 3, 9, 2, 7]
    order = padding.longest_first(lengths)
    assert order == [2, 4, 0, 1, 3]
    assert padding.batch_tokens(lengths, order, 2) == 2 * 9 + 2 * 5 + 1 * 2
    assert padding.batch_tokens(lengths, order, 2, multiple=8) == 2 * 16 + 2 * 8 + 1 * 8
    assert padding.batch_tokens(lengths, order, 2, fixed=32) == 5 * 32


@pytest.mark.parametrize("hparams", [{}, {"group_by_length": False}, {"padding": "max_length"}],
                         ids=["grouped", "random", "max_length"])
def test_padding_per_row_is_what_the_loop_ran(tmp_path, tiny_bert, small_glue, monkeypatch, hparams):
    cell = _cell(tiny_bert, **hparams)
    train, dev, _ = _batches_run(cell, small_glue, monkeypatch)
    predicted = padding.per_row(cell, RunContext(data_dir=str(small_glue), cache_dir=str(tmp_path)), "cpu")
    assert predicted["train"] == pytest.approx(_per_row(train))
    assert predicted["eval"] == pytest.approx(_per_row(dev))


def test_a_probe_pass_and_a_question_answering_cell(tmp_path, tiny_bert, small_glue, monkeypatch):
    probe = _cell(tiny_bert, method="linear_probe", learning_rate=1e-2)
    _, _, passes = _batches_run(probe, small_glue, monkeypatch)
    ctx = RunContext(data_dir=str(small_glue), cache_dir=str(tmp_path / "c1"))
    predicted = padding.per_row(probe, ctx, "cpu")
    n_train = 48   # write_small_glue's training rows: the pass goes over them, then over the 21 dev rows
    rows = [b for b, _ in passes]
    assert sum(rows) == n_train + 21
    split = next(i for i in range(len(passes) + 1) if sum(rows[:i]) == n_train)
    assert predicted["pass"] == pytest.approx(_per_row(passes[:split]))
    assert predicted["eval"] == pytest.approx(_per_row(passes[split:]))

    squad = write_small_squad(tmp_path / "squad")
    qa = _cell(tiny_bert, task="squad", max_length=48, doc_stride=16)
    train, dev, _ = _batches_run(qa, squad, monkeypatch)
    predicted = padding.per_row(qa, RunContext(data_dir=str(squad), cache_dir=str(tmp_path / "c2")), "cpu")
    assert predicted["train"] == pytest.approx(_per_row(train))   # per window, as the loop counts rows
    assert predicted["eval"] == pytest.approx(_per_row(dev))
