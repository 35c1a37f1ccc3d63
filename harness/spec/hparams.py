"""Hyperparameters and budgets: their types, ranges (with the reason for each bound) and defaults, in one place.

A suite's `hparams` give every cell's defaults and a method entry may override any of them; a value may be a
list, which expands into the grid. Strict types (no text->number or bool->int coercion), finite numbers only.
Defaults that depend on the task (SQuAD's windows) are the task's: harness/spec/tasks.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from harness.spec.errors import did_you_mean


def as_list(v):
    return v if isinstance(v, list) else [v]


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e12 else f"{x:g}"


def _interval(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    return f"{'<' if hi_open else '<='} {_num(hi)}"


def Range(lo=None, hi=None, *, lo_open=False, hi_open=False, why=""):
    """A bound whose message gives the allowed interval and the reason (pydantic's own message has neither)."""
    def check(v):
        if v is not None and ((lo is not None and (v <= lo if lo_open else v < lo))
                              or (hi is not None and (v >= hi if hi_open else v > hi))):
            raise ValueError(f"{v!r} is out of range: must be {_interval(lo, hi, lo_open, hi_open)}"
                             + (f" ({why})" if why else ""))
        return v
    return AfterValidator(check)


def Choice(choices: tuple):
    """One of a few names, with a "did you mean" (a method parameter such as LoRA's matrices)."""
    def check(v):
        if v is not None and v not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))} (got {v!r}){did_you_mean(v, choices)}")
        return v
    return AfterValidator(check)


def _auto_or_bool(v):
    """A switch that can also be left to the harness (`compile`)."""
    if v != "auto" and not isinstance(v, bool):
        raise ValueError(f"must be auto, true or false (got {v!r})")
    return v


def Grid(item_type, *checks):
    """A hyperparameter that may be one value or a list of values (a list expands into the grid)."""
    item = Annotated[(item_type, *checks)] if checks else item_type
    return Annotated[list[item], BeforeValidator(as_list), Field(min_length=1)]


COMPILE_DEFAULT = "auto"   # also what the cell key leaves out (harness/spec/cell.py): keys from before it stay

# no text->number, number->text or bool->int coercion; finite numbers only
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# The special tokens an encoder adds around one text and around a pair, at most among those the harness loads
# (BERT, ALBERT, DistilBERT: [CLS] a [SEP] b [SEP]; RoBERTa: <s> a </s></s> b </s>). A max_length that leaves no
# token of each text is refused (plan/checks.py check_lengths): the tokenizer keeps the specials alone, and where
# they do not fit it leaves the pair untruncated (RTE at max_length 2: 12 tokens, a logged warning only).
MAX_SPECIAL_TOKENS = {1: 2, 2: 4}


def min_length(texts: int) -> int:
    """The shortest max_length that holds the special tokens and one token of each of `texts` texts."""
    return MAX_SPECIAL_TOKENS[texts] + texts


class Hparams(BaseModel):
    """Defaults for every cell; a method may override any of them."""

    model_config = STRICT
    learning_rate: Grid(float, Range(0, 1, lo_open=True, why="a positive step size; AdamW diverges above 1")) = [2e-5]
    batch_size: Grid(int, Range(1, 65536, why="examples per process and step")) = [32]
    eval_batch_size: Grid(int, Range(1, 65536, why="examples per process and evaluation step")) = [64]
    # and at most the model's maximum positions: checked against its config before training (plan/preflight.py)
    # at least min_length(1): no task holds a token of text in less (a pair task: min_length(2), check_lengths)
    max_length: Grid(int, Range(min_length(1), 65536, why="tokens per example, special tokens included")) = [128]
    warmup_ratio: Grid(float, Range(0, 1, hi_open=True, why="a fraction of the training steps")) = [0.0]
    weight_decay: Grid(float, Range(0, 1, why="AdamW's decoupled decay, a fraction of each weight")) = [0.0]
    gradient_accumulation_steps: Grid(int, Range(1, 10_000, why="batches per optimizer step")) = [1]
    max_grad_norm: Grid(float, Range(0, 1e6, lo_open=True, why="the gradient clipping norm")) = [1.0]
    mixed_precision: Grid(Literal["auto", "no", "fp16", "bf16"]) = ["auto"]
    padding: Grid(Literal["dynamic", "max_length"]) = ["dynamic"]
    # batches of similar lengths, grouped within small random mega-batches: far less padding, so faster on
    # every device, with dev scores within seed noise of plain random batches (bench/RESULTS.md)
    group_by_length: Grid(bool) = [True]
    eval_steps: Grid(int, Range(1, 10 ** 9, why="optimizer steps between evaluations")) | None = None   # None: each epoch
    # span extraction (SQuAD): the stride between context windows; None: 128 for cells with a QA task
    doc_stride: Grid(int, Range(1, 10 ** 6, why="tokens shared by consecutive SQuAD context windows")) | None = None
    # torch.compile (harness/train/compiling.py): auto compiles on GPUs only, for cells of 18,000 planned optimizer
    # steps or more (shorter ones did not earn their compile back); true / false force it either way
    compile: Grid(str | bool, AfterValidator(_auto_or_bool)) = [COMPILE_DEFAULT]


HPARAM_NAMES = tuple(Hparams.model_fields)

# Hparams only a cell that trains reads (an evaluation-only cell: pretrained_adapter with train: false). Not
# batch_size (it sizes the bf16 timing that mixed_precision auto decides by) nor gradient_accumulation_steps (in
# the effective batch and DeepSpeed's config).
TRAINING_ONLY = ("learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm", "group_by_length", "eval_steps")
# The budget fields such a cell reads: how many dev examples it scores. Its seed and the rest of its budget change
# nothing it does where it loads its head (bitwise the same predictions: plan/grid.py Suite.crossings).
EVALUATION_BUDGET = ("max_eval_samples",)
# each hparam's default value (a grid's first); a cell's label names the hparams that differ from these
DEFAULTS = {name: value[0] if isinstance(value, list) else value for name, value in Hparams().model_dump().items()}


# the most optimizer steps a budget may ask for (max_steps); also the longest pilot `harness estimate` trains
MAX_STEPS = 10 ** 8


class Budget(BaseModel):
    model_config = STRICT
    epochs: Annotated[float, Range(0, 1000, lo_open=True, why="passes over the training data")] | None = None
    max_steps: Annotated[int, Range(1, MAX_STEPS, why="optimizer steps")] | None = None
    max_train_samples: Annotated[int, Range(1, 10 ** 9, why="training examples used")] | None = None
    max_eval_samples: Annotated[int, Range(1, 10 ** 9, why="dev examples scored")] | None = None
    time_limit_min: Annotated[float, Range(0, 525_600, lo_open=True, why="minutes; 525,600 is a year")] | None = None

    @model_validator(mode="after")
    def _needs_a_length(self):
        if self.epochs is None and self.max_steps is None:
            raise ValueError("a budget needs epochs or max_steps")
        return self

    def as_dict(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v is not None}


Seed = Annotated[int, Range(0, 2 ** 32, hi_open=True, why="numpy and torch take 32-bit seeds")]
