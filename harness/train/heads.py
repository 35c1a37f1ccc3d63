"""A regression head that starts at its targets' mean.

A newly initialised head outputs about 0 (weights of std 0.02, bias 0), while STS-B's targets lie in [0, 5]
around 2.7. The cheapest way down the squared loss is then the head's bias, so the first steps go to walking
the output up to the mean, predicting near-constants meanwhile; where little below the head trains (adapters,
LoRA) some seeds stayed at that constant (Pearson about 0) for hundreds of steps, and at the demo's budget for
good. Starting the output bias at the mean of the cell's own training targets (never dev: the constant-mean
baseline of harness/tasks/baselines.py uses the same examples) puts every seed at that baseline from step 0,
so its steps go to the correlation. Classification heads are left as they are.
"""

from __future__ import annotations

import math

from torch import nn


def output_layer(model: nn.Module, head: set[str]) -> nn.Linear | None:
    """The head's last Linear: the one that gives the prediction (BERT's and ALBERT's classifier, RoBERTa's
    classifier.out_proj, DistilBERT's classifier after its pre_classifier). `head`: the head's parameter names
    (harness/train/params.py); modules come in the order the model registered them, the output last."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and f"{name}.weight" in head:
            last = module
    return last


def start_at_mean(model: nn.Module, head: set[str], targets) -> float | None:
    """Sets the bias of a one-output head to the mean of `targets`; returns that mean, or None where nothing was
    set (no targets, no one-output Linear with a bias, or a non-finite mean: a NaN target fails the cell at its
    loss check, as it would have)."""
    import torch

    layer = output_layer(model, head)
    values = [float(t) for t in targets]
    if layer is None or layer.out_features != 1 or layer.bias is None or not values:
        return None
    mean = math.fsum(values) / len(values)
    if not math.isfinite(mean):
        return None
    with torch.no_grad():
        layer.bias.fill_(mean)
    return mean
