"""Adaptation methods as registry entries.

A method only decides what is added to the model and which parameters train; every method shares the
one training loop (harness/train/loop.py). The task head (and any weight the checkpoint did not provide)
always trains: the loop switches it on after `setup` runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # torch is imported where a method runs: validating a suite needs the registry, not torch
    from torch import nn

from harness.errors import InputError, did_you_mean

ADAPTER_NAME = "harness"
HEAD_FILE = "harness_head.safetensors"   # the task head, saved beside the adapter


@dataclass(frozen=True)
class Param:
    default: Any
    type: type
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None   # a static sanity bound; sizes are also checked against the model's width
    why: str = ""                  # the reason for the bounds, shown when one is broken
    at_most: str | None = None     # "hidden" or "layers": no larger than that size of the model (checked before
                                   # training, once the model's config is known: plan/preflight.py)

    def coerce(self, value):
        """Return `value` as this parameter's type, or raise ValueError with a readable reason. Strict: no
        text->number or bool->number coercion, finite numbers only."""
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "text"}[self.type]
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not self.type:
            hint = "; write it without quotes" if isinstance(value, str) and self.type is not str else ""
            raise ValueError(f"must be {kind} (got {value!r}){hint}")
        if self.type is float and not math.isfinite(value):
            raise ValueError(f"must be a finite number (got {value!r})")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))} (got {value!r}){did_you_mean(value, self.choices)}")
        why = f" ({self.why})" if self.why else ""
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be >= {self.minimum:g} (got {value!r}){why}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be <= {self.maximum:g} (got {value!r}){why}")
        return value


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    setup: Callable[[nn.Module, dict], None]
    params: dict[str, Param] = field(default_factory=dict)
    uses_adapters: bool = False
    trains: Callable[[dict], bool] = lambda params: True   # False: the cell only evaluates
    # capabilities, read wherever a feature depends on the method (one place, not name lists in several modules)
    ablatable: bool = False        # its layers' additions can be switched off one span at a time (analysis/ablate)
    stackable: bool = False        # sequence with adapter: new stacks a fresh adapter on the previous one
    loads_saved: bool = False      # starts from a saved single-task adapter + head: single-task cells only, and
                                   # its size is the saved adapter's (harness params skips it)
    frozen_encoder: bool = False   # nothing below the head trains: the encoder's output is computed once and
                                   # cached (harness/train/features.py)

    def resolve(self, given: dict) -> dict:
        """Fill defaults; `given` values must already be coerced."""
        return {k: given.get(k, p.default) for k, p in self.params.items()}


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
    for what, value in (("size", params["size"]), ("hidden size", hidden)):
        if value % params["phm_dim"]:
            raise InputError(f"compacter: the {what} ({value}) must be divisible by phm_dim ({params['phm_dim']})")
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


def _bottleneck_params(non_linearity: str) -> dict[str, Param]:
    return {
        "size": Param(64, int, "bottleneck width m (the reduction factor is derived from the hidden size)", minimum=1,
                      maximum=65536, why="a bottleneck no wider than the model", at_most="hidden"),
        "non_linearity": Param(non_linearity, str, "activation inside the bottleneck",
                               choices=("relu", "swish", "gelu", "tanh", "silu")),
        # None keeps the adapters library's own initialisation (and every earlier cell key)
        "init_std": Param(None, float, "std of the truncated-normal adapter initialisation (Houlsby: 1e-2)",
                          minimum=1e-12, maximum=10.0, why="Houlsby et al. tried 1e-7 to 1"),
    }


def _setup_pretrained_adapter(model, params):
    """AdapterHub's "stitch in": load a saved adapter (a directory written by save_adapter, or a hub id where
    online) and the task head saved beside it, then evaluate it, or train it further."""
    import os

    import adapters

    path = params["path"]
    if not path:
        raise InputError("pretrained_adapter: path is required (a saved adapter directory or an AdapterHub id)")
    adapters.init(model)
    model.load_adapter(path, load_as=ADAPTER_NAME, set_active=True)
    head_file = os.path.join(path, HEAD_FILE)
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


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("full", "fine-tune every weight (the baseline)", _setup_full),
        Method("linear_probe", "frozen encoder, train the task head only (feature-based transfer) on features "
               "computed once and cached", _setup_linear_probe,
               # None: cls, the model's own head path (and every earlier cell key)
               {"pooling": Param(None, str, "what the head reads: cls (the first token, through the model's own "
                                            "pooler where it has one) or mean (masked mean of the last layer)",
                                 choices=("cls", "mean"))},
               frozen_encoder=True),
        Method("top_k", "fine-tune only the top k transformer layers (Houlsby's variable fine-tuning)", _setup_top_k,
               {"k": Param(1, int, "number of top layers that train", minimum=0, maximum=1000,
                            why="layers of the model", at_most="layers")}),
        Method("layernorm", "train only LayerNorm weights and biases", _setup_by_name(_is_layernorm)),
        Method("bitfit", "train only bias terms (BitFit)", _setup_by_name(lambda n, p: n.endswith("bias"))),
        Method("houlsby", "Houlsby et al. 2019 bottleneck adapters after attention and FFN (adapters: double_seq_bn)",
               _setup_bottleneck(_lazy_config("DoubleSeqBnConfig")), _bottleneck_params("swish"), uses_adapters=True,
               ablatable=True, stackable=True),
        Method("pfeiffer", "Pfeiffer et al. 2020 bottleneck adapter after the FFN only (adapters: seq_bn)",
               _setup_bottleneck(_lazy_config("SeqBnConfig")), _bottleneck_params("relu"), uses_adapters=True,
               ablatable=True, stackable=True),
        Method("lora", "LoRA low-rank updates of attention matrices (adapters: LoRAConfig)", _setup_lora,
               {
                   "rank": Param(8, int, "rank r of the update", minimum=1, maximum=65536,
                                 why="a rank no larger than the model's width", at_most="hidden"),
                   "alpha": Param(8, int, "scaling numerator (update is scaled by alpha / r)", minimum=1, maximum=10 ** 6),
                   "dropout": Param(0.0, float, "dropout on the LoRA input", minimum=0.0, maximum=0.99,
                                    why="a dropout probability"),
                   "matrices": Param("qv", str, "attention matrices to adapt: letters of q, k, v",
                                     choices=("q", "k", "v", "qv", "qk", "kv", "qkv")),
               }, uses_adapters=True, ablatable=True),
        Method("compacter", "Compacter (Mahabadi et al. 2021): Houlsby-placed adapters of shared low-rank "
               "hypercomplex (PHM) layers (adapters: CompacterConfig)", _setup_compacter,
               {
                   "size": Param(24, int, "bottleneck width (divisible by phm_dim)", minimum=1, maximum=65536,
                                 why="a bottleneck no wider than the model", at_most="hidden"),
                   "phm_dim": Param(4, int, "number of Kronecker summands n", minimum=1, maximum=64),
                   "plus_plus": Param(False, bool, "Compacter++: one adapter per layer, after the FFN"),
               }, uses_adapters=True, stackable=True),
        Method("prefix_tuning", "prefix tuning (Li & Liang 2021): trained key/value prefixes in every attention "
               "layer (adapters: PrefixTuningConfig)", _setup_prefix_tuning,
               {
                   "prefix_length": Param(30, int, "number of prefix positions", minimum=1, maximum=4096,
                                          why="positions added to every attention layer"),
                   "bottleneck_size": Param(512, int, "width of the reparametrisation MLP (when flat is false)",
                                            minimum=1, maximum=65536),
                   "flat": Param(False, bool, "train the prefixes directly instead of through the MLP"),
               }, uses_adapters=True),
        Method("pretrained_adapter", "load a saved adapter and its head (AdapterHub stitch-in); evaluate it, or "
               "train it further", _setup_pretrained_adapter,
               {
                   "path": Param("", str, "directory written by an adapter run (OUTPUT/SUITE/KEY/adapter), or a "
                                          "hub id; relative paths start at the suite file"),
                   "train": Param(False, bool, "train the loaded adapter (and head) further; false: evaluate only"),
                   "load_head": Param(True, bool, "load the head saved beside the adapter"),
               }, uses_adapters=True, trains=lambda params: params["train"], loads_saved=True),
        Method("ia3", "(IA)^3 (Liu et al. 2022): learned rescaling of keys, values and FFN activations "
               "(adapters: IA3Config)", _setup_ia3, {}, uses_adapters=True),
    ]
}


def methods_with(flag: str) -> tuple[str, ...]:
    """Names of the methods that have a capability flag, in registry order (e.g. methods_with("ablatable"))."""
    return tuple(name for name, m in METHODS.items() if getattr(m, flag))


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f'unknown method "{name}"{did_you_mean(name, METHODS)}; known: {", ".join(METHODS)}')
    return METHODS[name]
