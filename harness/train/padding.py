"""Padded tokens per example: what a cell's batches run, worked out from its own data and tokenizer, no model.

A step's time follows the padded tokens it runs (bench/RESULTS.md, eleventh session: a full fine-tuning step of
MiniLM at the demo's shapes took 77 ms plus 1.29 ms per padded token), and how much a batch pads depends on how
many rows are batched together. A pilot (`harness estimate --pilot`) trains 10 steps over the first 160
examples and scores one dev batch of 64: on SST-2 its training batches ran 19.6 tokens per row against the
demo cell's 16.8, and its dev batch 44.0 against 28.1 (600 dev sentences, longest first, in batches of 64). Its
rates are scaled by these ratios before they price the cell.

What is counted per role, as the loop batches it (harness/train/loaders.py), for a cell whose encoder runs at
every step (a linear probe's head reads cached vectors, harness/train/features.py):
  train  one epoch of training batches: length-grouped (or random) with the cell's seed, batch_size rows each,
         per row (a SQuAD question's context windows are rows apart, as the loop's training examples count them)
  eval   one evaluation: each dev split longest first, eval_batch_size rows per batch, per dev example (a
         question with all its windows, as the loop's dev examples count them)
A batch runs its longest row's length (max_length when `padding: max_length`), rounded up to the collator's
multiple where the cell compiles (the speed of compiled code itself is not modelled here).
"""

from __future__ import annotations

from harness.spec.hparams import COMPILE_DEFAULT
from harness.spec.models import ModelSpec
from harness.spec.tasks import get_task
from harness.tasks.data import lengths
from harness.tasks.kinds import kind_of
from harness.train import compiling
from harness.train.loaders import longest_first, train_sampler
from harness.train.models import load_tokenizer
from harness.train.optim import planned_steps

# examples read per split: the padding per row of a length-grouped or sorted batch depends on the lengths'
# distribution, which a few thousand examples give (the first ones: a split ordered by length or topic would bias
# it); a whole MNLI would cost the pilot minutes of tokenizing
SAMPLE_ROWS = 5000


def batch_tokens(lengths_: list[int], order, batch_size: int, fixed: int | None = None,
                 multiple: int | None = None) -> int:
    """Padded tokens of the batches `order` makes, `batch_size` rows each: each batch as long as its longest row
    (or `fixed`), rounded up to `multiple`."""
    order = list(order)
    total = 0
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        longest = fixed or max(lengths_[i] for i in rows)
        if multiple:
            longest = -(-longest // multiple) * multiple
        total += len(rows) * longest
    return total


def per_example(cell, ctx, device_type: str, tokenizer=None) -> dict[str, float] | None:
    """{"train": ..., "eval": ...}: padded tokens per example of a one-task cell (the roles above); None for a
    cell of several tasks (its batches alternate between tasks). `ctx`: a RunContext (harness/train/context.py),
    for the data and the tokenized cache; `tokenizer`: the cell model's (default: loaded here). Not
    DeepSpeed-aware: a cell under DeepSpeed never compiles, which this cannot see."""
    if len(cell.tasks) != 1:
        return None
    task = get_task(cell.tasks[0])
    kind, hp, budget = kind_of(task), cell.hparams, cell.budget
    if tokenizer is None:
        tokenizer = load_tokenizer(ModelSpec(cell.model, cell.trust_remote_code, ctx.model_base_dir))
    raw = ctx.raw_data(task)

    def split_lengths(split, cap, training):
        """(the rows' lengths, examples read, examples the cell has) of the split's first SAMPLE_ROWS examples"""
        examples = raw[split].head(cap)
        sample = examples.head(SAMPLE_ROWS)
        rows = lengths(kind.features(task, sample, tokenizer, hp, ctx.tokenized, training=training))
        return rows, len(sample), len(examples)

    train, n_read, n_train = split_lengths("train", budget.get("max_train_samples"), True)
    fixed = hp["max_length"] if hp["padding"] != "dynamic" else None
    train_rows = round(len(train) * n_train / max(n_read, 1))   # the loop's steps count rows (SQuAD: windows)
    compiled = compiling.chosen(hp.get("compile", COMPILE_DEFAULT), device_type,
                                planned_steps([range(train_rows)], hp, budget, cell.num_processes))
    multiple = compiling.pad_multiple(hp) if compiled else None
    one_epoch = train_sampler(train, hp, cell.seed)
    out = {"train": batch_tokens(train, one_epoch, hp["batch_size"], fixed, multiple) / max(len(train), 1)}
    dev_tokens = dev_examples = 0
    for s in task.eval_splits:   # longest first per split, as each split's loader runs it
        dev, n_read, _ = split_lengths(s.hub_split, budget.get("max_eval_samples"), False)
        dev_tokens += batch_tokens(dev, longest_first(dev), hp["eval_batch_size"], fixed, multiple)
        dev_examples += n_read
    out["eval"] = dev_tokens / max(dev_examples, 1)
    return out
