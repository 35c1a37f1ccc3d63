"""Adapter ablation (Houlsby et al. 2019, Fig. 6): remove the trained adapters of every contiguous span of
layers [i..j] and re-score on dev, without retraining.

"Removing" sets the span's up-projections (LoRA: the B matrices) to zero: the adapter then adds nothing to
its residual stream, which is exactly the layer without the adapter. The run's saved adapter and head are
loaded into a fresh copy of its base model and scored as the run scored them: on the dev examples it was scored
on (the same bytes as its record's data sources; other data is refused) and in its precision (bf16/fp16
autocast with the head outside it, as harness/train/precision.py runs it), so the span "none" reproduces the
run's own final score.
"""

from __future__ import annotations

import re

import torch

from harness.spec.errors import InputError

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def _removable(model) -> dict[int, list[torch.nn.Parameter]]:
    """Per layer index: the parameters whose zeroing removes that layer's adapters."""
    from harness.train.methods import ADAPTER_NAME

    by_layer: dict[int, list] = {}
    for name, p in model.named_parameters():
        if f".{ADAPTER_NAME}." not in name or not ("adapter_up" in name or "lora_B" in name):
            continue
        m = _LAYER.search(name)
        if m is None:
            raise InputError(f"ablation: cannot tell the layer of {name} (layers shared across depth?)")
        by_layer.setdefault(int(m.group(1)), []).append(p)
    return by_layer


def load_trained_adapter(record, base_dir: str = ".", trust_remote_code: bool = False):
    """Tokenizer and the run's model: base checkpoint + its saved adapter and head. trust_remote_code comes from
    the caller (the suite file or the command line), never from the stored row: anyone who can write to a shared
    store could otherwise make this run code of their choosing."""
    import os

    from harness.spec.methods import get_method
    from harness.train.methods import set_up
    from harness.spec.models import ModelSpec
    from harness.train.models import load_for_task
    from harness.spec.tasks import get_task

    if not record.adapter_path:   # (a store written without output folders)
        raise InputError(f"run {record.id}: no saved adapter: the store keeps no adapter folder for it")
    if not os.path.isdir(record.adapter_path):
        raise InputError(f"run {record.id}: no saved adapter (adapter methods save one; looked at "
                         f"{record.adapter_path})")
    task = get_task(record.task)
    tokenizer, model, _ = load_for_task(ModelSpec(record.model, trust_remote_code, base_dir), task)
    method = get_method("pretrained_adapter")
    set_up(model, method.name, method.resolve({"path": record.adapter_path}))
    model.eval()
    return tokenizer, model


def check_ablatable(record) -> None:
    """Refuse a stored run that has nothing to ablate: not completed, or not a single-task run of a method with
    adapters. The CLI checks every run given before it opens the store for writing or reads any data."""
    from harness.spec.methods import METHODS, methods_with
    from harness.spec.status import Status

    if record.status != Status.COMPLETED:
        raise InputError(f"run {record.id} is {record.status}, not completed")
    method = METHODS.get(record.method)
    if method is None or not method.ablatable or record.parent_id is not None or record.regime:
        raise InputError(f"run {record.id}: ablation needs a single-task run of "
                         f"{', '.join(methods_with('ablatable'))} (got {record.method_label})")


def check_same_data(record, ctx) -> None:
    """Refuse to re-score a run on dev examples other than those it was scored on: each dev split read here (the
    run's cap applied) must be the bytes its record names (`extra.data_sources`, by content: a copy of the same
    files elsewhere is the same data). A record from before data sources were kept cannot be checked."""
    from harness.report.provenance import content_key
    from harness.spec.tasks import get_task

    recorded = ((record.extra or {}).get("data_sources") or {}).get(record.task)
    if not recorded:
        return
    task = get_task(record.task)
    raw = ctx.raw_data(task)
    for s in task.eval_splits:
        here = raw[s.hub_split].head(record.budget.get("max_eval_samples")).source
        if s.hub_split not in recorded or content_key(here) != content_key(recorded[s.hub_split]):
            raise InputError(f"run {record.id}: the {task.name} {s.hub_split} split here is not the data it was "
                             f"scored on (read {here}; the run read {recorded.get(s.hub_split)}): give its data "
                             f"with --data-dir")


def _autocast(record, device):
    """The autocast the run evaluated under: its precision (the environment's mixed_precision, what it chose)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get((record.env or {}).get("mixed_precision"))
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def ablate(record, ctx, device: str | None = None, trust_remote_code: bool = False) -> dict:
    """The payload of an "adapter_ablation" analysis of one completed run."""
    from transformers import DataCollatorWithPadding

    from harness.tasks.kinds import kind_of
    from harness.spec.tasks import get_task
    from harness.train.evaluation import evaluate_task, predict
    from harness.train.loaders import eval_loader, eval_sets_for
    from harness.train.precision import head_outside_autocast

    check_ablatable(record)
    check_same_data(record, ctx)
    task = get_task(record.task)
    kind = kind_of(task)
    tokenizer, model = load_trained_adapter(record, ctx.model_base_dir, trust_remote_code)
    head_outside_autocast(model)   # as in the run: the encoder under autocast, the head at its weights' precision
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    sets = eval_sets_for(task, ctx, tokenizer, record.hparams, record.budget)
    collator = DataCollatorWithPadding(tokenizer)
    for es in sets:
        es.loader = eval_loader(es.dataset, record.hparams.get("eval_batch_size") or 64, collator)

    def on_device(es):
        with _autocast(record, device):
            return predict(model, ({k: v.to(device) for k, v in b.items()} for b in es.loader), kind=kind,
                           hp=record.hparams)

    def score() -> float:
        return evaluate_task(task, sets, on_device)[1]

    layers = _removable(model)
    num_layers = max(layers) + 1
    baseline = score()
    spans = []
    for i in range(num_layers):
        for j in range(i, num_layers):
            params = [p for k in range(i, j + 1) for p in layers.get(k, [])]
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p in params:
                    p.zero_()
            spans.append([i, j, score()])
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    return {"num_layers": num_layers, "baseline": baseline, "recorded_score": record.score, "task": task.name,
            "method_label": record.method_label, "spans": spans}
