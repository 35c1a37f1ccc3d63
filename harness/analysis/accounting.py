"""`harness params SUITE`: parameter counts per model x method, from model configs alone (no weights, no data).

Each model is built from its config on the meta device (no memory, no download of weights), the method sets
it up exactly as in a run, and the counts come from requires_grad as in a run. As in a run, the head is every
weight outside the pretrained encoder plus every weight the checkpoint does not provide (a pooler a checkpoint
was saved without is newly initialised, so it trains whatever the method freezes): the checkpoint is read from
its local files on the meta device (nothing downloaded, no weight read into memory). ALBERT rows also show the
BERT of the same hidden size, depth and vocabulary, to make its factorised embedding and cross-layer sharing
visible. Hub models need their config from the hub or the local cache; a few classic ones are known offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.report.text import pct_text
from harness.spec.errors import InputError

# The published configs of classic checkpoints (config.json on the hub), so offline comparisons work.
_BERT = dict(model_type="bert", vocab_size=30522, max_position_embeddings=512, type_vocab_size=2)
_ALBERT = dict(model_type="albert", vocab_size=30000, embedding_size=128, max_position_embeddings=512,
               type_vocab_size=2, num_hidden_groups=1, inner_group_num=1)
KNOWN_CONFIGS = {
    "bert-base-uncased": {**_BERT, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                          "intermediate_size": 3072},
    "bert-large-uncased": {**_BERT, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                           "intermediate_size": 4096},
    "roberta-base": {"model_type": "roberta", "vocab_size": 50265, "max_position_embeddings": 514,
                     "type_vocab_size": 1, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "intermediate_size": 3072, "pad_token_id": 1},
    "distilbert-base-uncased": {"model_type": "distilbert", "vocab_size": 30522, "dim": 768, "n_layers": 6,
                                "n_heads": 12, "hidden_dim": 3072, "max_position_embeddings": 512},
    "albert-base-v2": {**_ALBERT, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                       "intermediate_size": 3072},
    "albert-large-v2": {**_ALBERT, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                        "intermediate_size": 4096},
    "albert-xlarge-v2": {**_ALBERT, "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16,
                         "intermediate_size": 8192},
    "albert-xxlarge-v2": {**_ALBERT, "hidden_size": 4096, "num_hidden_layers": 12, "num_attention_heads": 64,
                          "intermediate_size": 16384},
}


def known_config(spec) -> dict | None:
    """The published config of a classic checkpoint (any org's copy of it), or None."""
    return KNOWN_CONFIGS.get(spec.name.split("/")[-1])


def model_config(spec, task):
    from transformers import AutoConfig

    from harness.tasks.kinds import kind_of

    kwargs = kind_of(task).config_kwargs(task)
    known = known_config(spec)
    try:  # a classic checkpoint's config is known: never wait on the hub for it
        return AutoConfig.from_pretrained(spec.source(), trust_remote_code=spec.trust_remote_code,
                                          local_files_only=known is not None, **kwargs)
    except OSError:
        if known is None:
            raise InputError(f'model "{spec.name}": no config found offline (not cached, not a local directory); '
                             f"known offline: {', '.join(KNOWN_CONFIGS)}") from None
        known = dict(known)
        return AutoConfig.for_model(known.pop("model_type"), **known, **kwargs)


def checkpoint_missing(spec, config, task) -> set[str]:
    """The weights of the task's model that the checkpoint does not provide (newly initialised: they train with
    the head, harness/train/params.py head_parameter_names), as a run's load_for_task finds them. Loaded on the
    meta device from local files only; a model whose weights are not on this machine (a classic checkpoint known
    by its config) is taken to provide every encoder weight, as the published ones do."""
    import transformers
    from transformers.utils import cached_file

    from harness.tasks.kinds import kind_of

    from harness.spec.models import weight_files

    src = spec.source()
    if weight_files(lambda name: cached_file(src, name, local_files_only=True,
                                             _raise_exceptions_for_missing_entries=False,
                                             _raise_exceptions_for_connection_errors=False)) is None:
        return set()
    _, info = getattr(transformers, kind_of(task).auto_model).from_pretrained(
        src, config=config, trust_remote_code=spec.trust_remote_code, local_files_only=True, device_map="meta",
        output_loading_info=True)
    return set(info.get("missing_keys", []))


def _build(config, task):
    """The model with the head of the task's kind (sequence classification or question answering)."""
    import transformers

    from harness.tasks.kinds import kind_of

    with torch.device("meta"):
        return getattr(transformers, kind_of(task).auto_model).from_config(config)


def bert_equivalent_params(config) -> int:
    """Parameters of a BERT encoder with ALBERT's hidden size, depth, heads, FFN and vocabulary, unshared."""
    from transformers import BertConfig, BertModel

    from harness.train.params import count_total

    bert = BertConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                      num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                      intermediate_size=config.intermediate_size,
                      max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size)
    with torch.device("meta"):
        return count_total(BertModel(bert))


@dataclass
class ParamRow:
    model: str
    method: str
    total: int
    trainable: int
    added: int
    head: int
    embedding: int
    encoder: int
    bert_equivalent: int | None
    tasks: str = ""   # the task whose head is counted, or a multi-task entry's stored name (rte+stsb)

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable / self.total


def param_rows(suite, task_name: str | None = None) -> list[ParamRow]:
    """A row per model x method with the head of `task_name` (default: the suite's first task), then, unless a
    task is named, a row per model x method x multi-task entry of the suite: its one jointly trained model (a
    head per task, an adapter per task where it asks), as its cells train it."""
    from harness.spec.cell import method_label
    from harness.spec.methods import get_method
    from harness.spec.schedule import Multitask
    from harness.spec.tasks import get_task
    from harness.train.model_setup import compose
    from harness.train.params import head_parameter_names

    first = get_task(task_name or suite.task_slots[0].tasks[0])
    groups = [(first.name, None, [first])]
    if task_name is None:
        groups += [(slot.task, slot.schedule, [get_task(t) for t in slot.tasks]) for slot in suite.task_slots
                   if isinstance(slot.schedule, Multitask)]
    rows = []
    for spec in suite.model_specs():
        configs: dict = {}   # task -> (config, the weights its checkpoint lacks): read once per model
        for label, schedule, tasks in groups:
            for task in tasks:
                if task.name not in configs:
                    config = model_config(spec, task)
                    configs[task.name] = config, checkpoint_missing(spec, config, task)
            config = configs[tasks[0].name][0]
            bert_eq = bert_equivalent_params(config) if config.model_type == "albert" else None
            for method_name, params, _ in suite.method_variants:
                if get_method(method_name).loads_saved:
                    continue  # its size is the saved adapter's (uncounted_variants: the table says so)
                models = [_build(configs[t.name][0], t) for t in tasks]
                heads = [head_parameter_names(m, configs[t.name][1]) for m, t in zip(models, tasks)]
                _, counts = compose(models, heads, method_name, params, schedule, tasks)
                shown = method_label(method_name, get_method(method_name).shown(params))
                rows.append(ParamRow(spec.name, shown, counts["total_params"],
                                     counts["trainable_params"], counts["added_params"], counts["head_params"],
                                     counts["embedding_params"], counts["encoder_params"], bert_eq, label))
    return rows


def uncounted_variants(suite) -> list[str]:
    """The labels of the suite's variants param_rows leaves out: those that start from a saved adapter
    (pretrained_adapter), whose size is the saved adapter's, which configs alone do not give."""
    from harness.spec.cell import method_label
    from harness.spec.methods import get_method

    return [method_label(name, params) for name, params, _ in suite.method_variants if get_method(name).loads_saved]


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def format_rows(rows: list[ParamRow], uncounted: list[str] = ()) -> str:
    header = ["model", "method", "head for", "total", "trainable", "%", "added", "head", "embedding", "encoder"]
    lines = [header]
    for r in rows:
        lines.append([r.model, r.method, r.tasks, _m(r.total), _m(r.trainable), pct_text(r.trainable_pct),
                      _m(r.added), _m(r.head), _m(r.embedding), _m(r.encoder)])
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
    title = "parameters per model x method (counted from requires_grad, shared tensors once)"
    joint = next((r.tasks for r in rows if "+" in r.tasks), None)   # said only where a row is one
    out = [title + (f"; a multi-task entry ({joint}): its one jointly trained model, a head per task" if joint else "")]
    for k, row in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in
                             enumerate(zip(row, widths))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    for model in dict.fromkeys(r.model for r in rows):
        r = next(r for r in rows if r.model == model)
        if r.bert_equivalent:
            base = r.embedding + r.encoder
            out.append(f"{model}: ALBERT, factorised embedding {_m(r.embedding)} and one shared layer block: "
                       f"{_m(base)} parameters vs {_m(r.bert_equivalent)} for a BERT of the same hidden size, "
                       f"depth and vocabulary ({r.bert_equivalent / base:.1f}x fewer)")
    for label in uncounted:   # a variant without a row, said so: a table silently shorter reads as complete
        out.append(f"{label}: not counted (a saved adapter: its size is the saved one's; each run of it records "
                   f"its parameter counts, the store its adapter_bytes)")
    return "\n".join(out) + "\n"
