"""The model a cell trains: loaded per task, the method applied (what is added, what trains), heads set to
train, parameter counts; and the trained adapter saved beside its head."""

from __future__ import annotations

import os

from harness import atomic
from harness.spec import layout
from harness.spec.cell import Cell
from harness.spec.methods import adapter_dir, get_method
from harness.spec.models import ModelSpec
from harness.spec.schedule import Multitask
from harness.tasks.kinds import kind_of
from harness.train.heads import start_at_mean
from harness.train.methods import ADAPTER_NAME, set_up
from harness.train.models import dir_source, load_for_task
from harness.train.params import breakdown, count_total, count_trainable, head_parameter_names
from harness.train.precision import head_outside_autocast, remember_pretrained
from harness.train.schedules import MultiTaskModel, add_task_adapters, apply_handover, share_encoder
from harness.train.zero import numel


def _resolved_method_params(cell: Cell, model_base_dir: str) -> dict:
    params = dict(cell.method_params)
    if params.get("path"):   # a folder as validate and prefetch read it (relative to the suite file, ~ expanded)
        params["path"] = adapter_dir(params["path"], model_base_dir) or params["path"]   # else a hub id, as it is
    return params


def adapter_source(cell: Cell, model_base_dir: str) -> str | None:
    """What a pretrained_adapter cell stitched in, by content (extra.adapter_source): its saved folder's files
    (adapter, config, head) as `dir:PATH:sha256:DIGEST`, so a folder rewritten between cells (its run trained
    again) is told apart; an AdapterHub id as `hub:ID`. None for other methods."""
    if cell.method != "pretrained_adapter":
        return None
    path = _resolved_method_params(cell, model_base_dir).get("path")
    return dir_source(path) if path and os.path.isdir(path) else f"hub:{path}"


def build_model(cell: Cell, ctx, tasks: list, handover: dict | None = None, train: list | None = None):
    """Tokenizer, model (a MultiTaskModel for several tasks), head parameter names and parameter counts.
    The method adds modules and picks what trains; every head trains. `handover` (sequential adaptation) is the
    previous stage's encoder state, loaded after the method set the model up. `ctx`: the RunContext
    (harness/train/context.py), for the folder model and method paths are relative to. `train`: each task's
    training examples (RawSplit), where a regression head starts from their mean (harness/train/heads.py)."""
    spec = ModelSpec(cell.model, cell.trust_remote_code, ctx.model_base_dir)
    loaded = [load_for_task(spec, task) for task in tasks]
    tokenizer = loaded[0][0]
    models = [m for _, m, _ in loaded]
    heads = [head_parameter_names(m, missing) for _, m, missing in loaded]
    # before the method's setup: a head it loads (pretrained_adapter) replaces this starting point
    for m, head, task, split in zip(models, heads, tasks, train or [None] * len(tasks)):
        targets = kind_of(task).regression_targets(task, split) if split is not None else None
        if targets is not None:
            start_at_mean(m, head, targets)
    model, counts = compose(models, heads, cell.method, _resolved_method_params(cell, ctx.model_base_dir),
                            cell.schedule, tasks, handover)
    return tokenizer, model, models, heads, counts


def compose(models: list, heads: list, method_name: str, method_params: dict, schedule, tasks: list,
            handover: dict | None = None):
    """A cell's model from its task models (one per task, heads in place) and what the method trains, with its
    parameter counts: the encoder shared by several tasks (a MultiTaskModel, an adapter per task where the
    schedule asks), the method set up, heads set to train. The one composition `harness params` counts too (on
    models built from configs), so its numbers are the run's."""
    method = get_method(method_name)
    if len(models) > 1:
        share_encoder(models)
    first = models[0]
    for m in models:   # the pretrained parameters, before the method adds its own (precision.cast_frozen_linears)
        remember_pretrained(m)
    total_before = count_total(MultiTaskModel(models)) if len(models) > 1 else count_total(first)
    set_up(first, method_name, method_params)
    task_adapters = None
    if isinstance(schedule, Multitask) and schedule.adapter_per_task:
        task_adapters = add_task_adapters(first, tasks)
    if handover is not None:
        apply_handover(first, handover)
    if method.trains(method_params):
        for m, head in zip(models, heads):
            for name, p in m.named_parameters():
                if name in head:
                    p.requires_grad = True
    model = MultiTaskModel(models, task_adapters) if len(models) > 1 else first
    for m in models:   # under mixed precision only the encoder autocasts: the head's outputs keep fp32
        head_outside_autocast(m)
    counts = {"total_params": count_total(model), "trainable_params": count_trainable(model),
              "head_params": sum(numel(p) for m, head in zip(models, heads)
                                 for n, p in m.named_parameters() if n in head)}
    counts["added_params"] = counts["total_params"] - total_before
    counts["trainable_pct"] = 100.0 * counts["trainable_params"] / counts["total_params"]
    counts.update(breakdown(first))
    return model, counts


def save_adapter(model, head: set, out_dir: str) -> int:
    """The trained adapter (adapters' save_adapter format) and the task head beside it, so a later cell can
    stitch both in (method pretrained_adapter). Returns the bytes on disk."""
    from safetensors.torch import save_file

    def write(tmp: str) -> None:
        model.save_adapter(tmp, ADAPTER_NAME)
        save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if n in head},
                  os.path.join(tmp, layout.HEAD_FILE))

    atomic.write_dir(out_dir, write)   # a kill mid-save never leaves half an adapter under the final name
    return sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
