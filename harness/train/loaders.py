"""Data loaders: training batches (random, or grouped by length), dev batches (longest first), and a task's
dev splits as features (EvalSet)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.tasks.data import lengths
from harness.tasks.kinds import kind_of


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Random mega-batches of MEGA_BATCHES batches, sorted by length inside (transformers' grouping function).
    Small mega-batches keep most of the padding saving while batches stay close to random: transformers' own
    sampler uses up to 50, which cost 1.3 MRPC points over 3 seeds in bench/RESULTS.md."""

    MEGA_BATCHES = 8

    def __init__(self, lengths_: list[int], batch_size: int, generator: torch.Generator):
        self.lengths, self.batch_size, self.generator = lengths_, batch_size, generator

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return iter(get_length_grouped_indices(self.lengths, self.batch_size, mega_batch_mult=self.MEGA_BATCHES,
                                               generator=self.generator))


def pinned() -> bool:
    """Batches in page-locked memory where they go to a GPU: only from there is the copy asynchronous (the
    Accelerator copies non_blocking, harness/train/context.py); a plain copy waits for the GPU every batch."""
    return torch.cuda.is_available()


def train_sampler(lengths_: list[int], hp, seed: int):
    """The order a cell's training rows are drawn in, epoch after epoch: length-grouped mega-batches, or plain
    random, from the cell's seed (harness/train/padding.py reads one epoch of it)."""
    from torch.utils.data import RandomSampler

    generator = torch.Generator().manual_seed(seed)
    if hp["group_by_length"]:
        return LengthGroupedSampler(lengths_, hp["batch_size"], generator)
    return RandomSampler(range(len(lengths_)), generator=generator)


def longest_first(lengths_: list[int]) -> list[int]:
    """Row indices, longest first: dev batches and a frozen encoder's pass pad least in this order."""
    return sorted(range(len(lengths_)), key=lengths_.__getitem__, reverse=True)


def train_loader(ds, hp, collator, seed):
    from torch.utils.data import DataLoader

    return DataLoader(ds, batch_size=hp["batch_size"], sampler=train_sampler(lengths(ds), hp, seed),
                      collate_fn=collator, pin_memory=pinned())


def eval_loader(ds, batch_size, collator):
    """Longest first: least padding, and an out-of-memory shows at once. Order cannot change the metrics
    (predictions carry their example index)."""
    from torch.utils.data import DataLoader

    return DataLoader(ds, batch_size=batch_size, sampler=longest_first(lengths(ds)), collate_fn=collator,
                      pin_memory=pinned())


@dataclass
class EvalSet:
    task: object
    suffix: str
    split: str
    dataset: object          # the tokenized features (some kinds: several per example)
    raw: object = None       # the examples (span extraction maps features back to their contexts)
    loader: object = None


def eval_sets_for(task, ctx, tokenizer, hp, budget) -> list[EvalSet]:
    """The task's dev splits, capped at max_eval_samples examples each, as features. `ctx` is the RunContext
    (harness/train/context.py): raw data and the tokenized cache."""
    kind, raw = kind_of(task), ctx.raw_data(task)
    out = []
    for s in task.eval_splits:
        examples = raw[s.hub_split].head(budget.get("max_eval_samples"))
        out.append(EvalSet(task, s.suffix, s.hub_split,
                           kind.features(task, examples, tokenizer, hp, ctx.tokenized, training=False), examples))
    return out
