"""What each adaptation method does to a model: the setup code, registered under the method's name.

A method only decides what is added to the model and which parameters train; every method shares the one
training loop. The task head (and any weight the checkpoint did not provide) always trains: the loop switches it
on after the setup runs. The method's parameters and flags are declared in harness/spec/methods.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:   # torch is imported where a method runs: validating a suite needs the registry, not torch
    from torch import nn

from harness.spec import layout
from harness.spec.errors import InputError
from harness.spec.methods import HUB_HEAD, variant_problem
from harness.spec.registry import Registry

ADAPTER_NAME = "harness"


def _set_all(model: nn.Module, trainable: bool) -> None:
    for p in model.parameters():
        p.requires_grad = trainable


def _setup_full(model, params):
    _set_all(model, True)


def _setup_linear_probe(model, params):
    _set_all(model, False)


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's stack of layers (BERT/RoBERTa: encoder.layer, DistilBERT: transformer.layer, ALBERT: its
    shared layer groups): the longest ModuleList inside the base model."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    from torch import nn

    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")
    return max(lists, key=len)


def _setup_top_k(model, params):
    _set_all(model, False)
    layers = transformer_layers(model)
    k = params["k"]
    if k > len(layers):
        raise InputError(f"top_k: k={k} but the model has {len(layers)} layers")
    for layer in list(layers)[len(layers) - k:]:
        for p in layer.parameters():
            p.requires_grad = True


def _setup_by_name(predicate):
    def setup(model, params):
        for name, p in model.named_parameters():
            p.requires_grad = predicate(name, p)

    return setup


def _is_layernorm(name, p) -> bool:
    return "layernorm" in name.lower().replace("_", "")


def reduction_factor(hidden_size: int, size: int) -> float:
    """adapters sizes bottlenecks as int(hidden // reduction_factor); pick a factor that gives exactly `size`."""
    if not 1 <= size <= hidden_size:
        raise InputError(f"adapter size {size} must be between 1 and the hidden size {hidden_size}")
    factor = hidden_size / size
    if int(hidden_size // factor) != size:  # float rounding, e.g. 384 / (384 / 100)
        factor = hidden_size / (size + 0.5)
    return factor


def _add_and_train(model, config) -> None:
    import adapters

    adapters.init(model)
    model.add_adapter(ADAPTER_NAME, config=config)
    model.train_adapter(ADAPTER_NAME)  # freezes everything but the adapter, activates it


def _setup_bottleneck(config_cls):
    def setup(model, params):
        hidden = model.config.hidden_size
        config = config_cls(reduction_factor=reduction_factor(hidden, params["size"]),
                            non_linearity=params["non_linearity"])
        _add_and_train(model, config)
        if params.get("init_std") is not None:
            init_near_identity(model, params["init_std"])

    return setup


def init_near_identity(model: nn.Module, std: float) -> None:
    """Houlsby et al.'s initialisation at a chosen scale: both projections of every bottleneck drawn from a
    normal with this std truncated at two std, biases zero, so each adapter starts close to the identity."""
    import torch
    from torch import nn

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and f"adapters.{ADAPTER_NAME}." in name + "." and (
                    "adapter_down" in name or "adapter_up" in name):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


def _setup_compacter(model, params):
    from adapters import CompacterConfig, CompacterPlusPlusConfig

    hidden = model.config.hidden_size
    problem = variant_problem("compacter", params, sizes={"hidden": hidden})
    if problem:
        raise InputError(problem[1])
    cls = CompacterPlusPlusConfig if params["plus_plus"] else CompacterConfig
    _add_and_train(model, cls(reduction_factor=reduction_factor(hidden, params["size"]), phm_dim=params["phm_dim"]))


def _setup_prefix_tuning(model, params):
    from adapters import PrefixTuningConfig

    _add_and_train(model, PrefixTuningConfig(prefix_length=params["prefix_length"], flat=params["flat"],
                                             bottleneck_size=params["bottleneck_size"]))


def _setup_ia3(model, params):
    from adapters import IA3Config

    _add_and_train(model, IA3Config())


def _setup_lora(model, params):
    from adapters import LoRAConfig

    config = LoRAConfig(r=params["rank"], alpha=params["alpha"], dropout=params["dropout"],
                        attn_matrices=[m for m in params["matrices"]], selfattn_lora=True,
                        intermediate_lora=False, output_lora=False)
    _add_and_train(model, config)


def _setup_pretrained_adapter(model, params):
    """AdapterHub's "stitch in": load a saved adapter (a directory written by save_adapter, or a hub id where
    online) and the task head saved beside it, then evaluate it, or train it further."""
    import os

    import adapters

    path = params["path"]
    if not path:
        raise InputError("pretrained_adapter: path is required (a saved adapter directory or an AdapterHub id)")
    if params["load_head"] and not os.path.isdir(path):   # (before anything is downloaded)
        raise InputError(f"pretrained_adapter: {path} is no folder here, so a hub id: {HUB_HEAD}")
    adapters.init(model)
    # with_head=False: the library would also load the head its save_adapter wrote beside the adapter, whatever
    # load_head says; the harness's own head file (below) is the one load_head decides on
    model.load_adapter(path, load_as=ADAPTER_NAME, set_active=True, with_head=False)
    head_file = os.path.join(path, layout.HEAD_FILE)
    if params["load_head"]:
        if not os.path.isfile(head_file):
            raise InputError(f"pretrained_adapter: no saved head at {head_file} (set load_head: false to train a "
                             f"new head)")
        from safetensors.torch import load_file

        head = load_file(head_file)
        own = dict(model.named_parameters())
        wrong = [n for n, t in head.items() if n not in own or own[n].shape != t.shape]
        if wrong:
            raise InputError(f"pretrained_adapter: the saved head does not fit this model and task ({wrong[0]})")
        model.load_state_dict(head, strict=False)
    if params["train"]:
        model.train_adapter(ADAPTER_NAME)
    else:
        _set_all(model, False)


def _lazy_config(name):
    def make(**kw):
        import adapters

        return getattr(adapters, name)(**kw)

    return make


# setup code by method name (the declarations, with the same names, are harness/spec/methods.py)
SETUPS: Registry[Callable[[nn.Module, dict], None]] = Registry("method", {
    "full": _setup_full,
    "linear_probe": _setup_linear_probe,
    "top_k": _setup_top_k,
    "layernorm": _setup_by_name(_is_layernorm),
    "bitfit": _setup_by_name(lambda n, p: n.endswith("bias")),
    "houlsby": _setup_bottleneck(_lazy_config("DoubleSeqBnConfig")),
    "pfeiffer": _setup_bottleneck(_lazy_config("SeqBnConfig")),
    "lora": _setup_lora,
    "compacter": _setup_compacter,
    "prefix_tuning": _setup_prefix_tuning,
    "pretrained_adapter": _setup_pretrained_adapter,
    "ia3": _setup_ia3,
})


def set_up(model: nn.Module, method: str, params: dict) -> None:
    """Add the method's modules to `model` and choose what trains (the loop then switches the head on)."""
    SETUPS.get(method)(model, params)
