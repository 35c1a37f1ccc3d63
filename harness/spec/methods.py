"""Adaptation methods as declarations: what each method is called, its parameters (types, defaults, bounds with
their reasons) and its capability flags. No setup code here: what a method adds to a model and which parameters
train is code, registered under the same name in harness/train/methods.py. Every method shares the one
training loop; the task head always trains. Adding a method: docs/adding-a-method.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, create_model

from harness.spec.hparams import STRICT, Choice, Grid, Range
from harness.spec.registry import Registry


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
    unused_when: str | None = None  # a boolean parameter that, when true, leaves this one unread (Cell.unread)

    def checks(self) -> tuple:
        """The pydantic validators of one value (the same Range / Choice as every hparam)."""
        out = []
        if self.minimum is not None or self.maximum is not None:
            out.append(Range(self.minimum, self.maximum, why=self.why))
        if self.choices is not None:
            out.append(Choice(self.choices))
        return tuple(out)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    params: dict[str, Param] = field(default_factory=dict)
    uses_adapters: bool = False
    trains_when: str | None = None  # a boolean parameter that decides whether the cell trains (else: evaluates)
    # a boolean parameter that, when true, loads the head with the method's saved weights: a cell that evaluates
    # only then draws nothing at random (evaluates_alike)
    head_loaded_when: str | None = None
    # capabilities, read wherever a feature depends on the method (one place, not name lists in several modules)
    ablatable: bool = False        # its layers' additions can be switched off one span at a time (analysis/ablate)
    stackable: bool = False        # sequence with adapter: new stacks a fresh adapter on the previous one
    loads_saved: bool = False      # starts from a saved single-task adapter + head: single-task cells only, and
                                   # its size is the saved adapter's (harness params skips it)
    frozen_encoder: bool = False   # nothing below the head trains: the encoder's output is computed once and
                                   # cached (harness/train/features.py)

    def trains(self, params: dict) -> bool:
        return bool(params[self.trains_when]) if self.trains_when else True

    def evaluates_alike(self, params: dict) -> bool:
        """Trains nothing and draws nothing at random (a saved adapter and its saved head, evaluated): every seed
        of it, and every budget that differs only in training, is the same evaluation again."""
        return not self.trains(params) and (self.head_loaded_when is None or bool(params[self.head_loaded_when]))

    def unread(self, params: dict) -> list[str]:
        """The parameters set on a variant that it never reads (a flat prefix's bottleneck_size): in its key (stored
        keys stand), never in what a label shows."""
        return [k for k, p in self.params.items() if p.unused_when and params.get(p.unused_when) and k in params]

    def shown(self, params: dict) -> dict:
        """A variant's parameters as a label shows them (harness params, a cell's label): the ones it reads."""
        unread = self.unread(params)
        return {k: v for k, v in params.items() if k not in unread}

    def resolve(self, given: dict) -> dict:
        """Fill defaults; `given` values must already be validated."""
        return {k: given.get(k, p.default) for k, p in self.params.items()}

    @cached_property
    def params_model(self) -> type[BaseModel]:
        """The pydantic model of this method's parameters in a suite: each one value or a list of values."""
        fields = {k: (Grid(p.type, *p.checks()) | None, None) for k, p in self.params.items()}
        return create_model(f"{self.name}_params", __config__=STRICT, **fields)


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


METHODS: Registry[MethodSpec] = Registry("method", {m.name: m for m in [
    MethodSpec("full", "fine-tune every weight (the baseline)"),
    MethodSpec("linear_probe", "frozen encoder, train the task head only (feature-based transfer) on features "
               "computed once and cached",
               # None: cls, the model's own head path (and every earlier cell key)
               {"pooling": Param(None, str, "what the head reads: cls (the first token, through the model's own "
                                            "pooler where it has one) or mean (masked mean of the last layer)",
                                 choices=("cls", "mean"))},
               frozen_encoder=True),
    MethodSpec("top_k", "fine-tune only the top k transformer layers (Houlsby's variable fine-tuning)",
               {"k": Param(1, int, "number of top layers that train", minimum=0, maximum=1000,
                           why="layers of the model", at_most="layers")}),
    MethodSpec("layernorm", "train only LayerNorm weights and biases"),
    MethodSpec("bitfit", "train only bias terms (BitFit)"),
    MethodSpec("houlsby", "Houlsby et al. 2019 bottleneck adapters after attention and FFN (adapters: double_seq_bn)",
               _bottleneck_params("swish"), uses_adapters=True, ablatable=True, stackable=True),
    MethodSpec("pfeiffer", "Pfeiffer et al. 2020 bottleneck adapter after the FFN only (adapters: seq_bn)",
               _bottleneck_params("relu"), uses_adapters=True, ablatable=True, stackable=True),
    MethodSpec("lora", "LoRA low-rank updates of attention matrices (adapters: LoRAConfig)", {
        "rank": Param(8, int, "rank r of the update", minimum=1, maximum=65536,
                      why="a rank no larger than the model's width", at_most="hidden"),
        "alpha": Param(8, int, "scaling numerator (update is scaled by alpha / r)", minimum=1, maximum=10 ** 6),
        "dropout": Param(0.0, float, "dropout on the LoRA input", minimum=0.0, maximum=0.99,
                         why="a dropout probability"),
        "matrices": Param("qv", str, "attention matrices to adapt: letters of q, k, v",
                          choices=("q", "k", "v", "qv", "qk", "kv", "qkv")),
    }, uses_adapters=True, ablatable=True),
    MethodSpec("compacter", "Compacter (Mahabadi et al. 2021): Houlsby-placed adapters of shared low-rank "
               "hypercomplex (PHM) layers (adapters: CompacterConfig)", {
                   "size": Param(24, int, "bottleneck width (divisible by phm_dim)", minimum=1, maximum=65536,
                                 why="a bottleneck no wider than the model", at_most="hidden"),
                   "phm_dim": Param(4, int, "number of Kronecker summands n", minimum=1, maximum=64),
                   "plus_plus": Param(False, bool, "Compacter++: one adapter per layer, after the FFN"),
               }, uses_adapters=True, stackable=True),
    MethodSpec("prefix_tuning", "prefix tuning (Li & Liang 2021): trained key/value prefixes in every attention "
               "layer (adapters: PrefixTuningConfig)", {
                   "prefix_length": Param(30, int, "number of prefix positions", minimum=1, maximum=4096,
                                          why="positions added to every attention layer"),
                   "bottleneck_size": Param(512, int, "width of the reparametrisation MLP (when flat is false)",
                                            minimum=1, maximum=65536, unused_when="flat"),
                   "flat": Param(False, bool, "train the prefixes directly instead of through the MLP"),
               }, uses_adapters=True),
    MethodSpec("pretrained_adapter", "load a saved adapter and its head (AdapterHub stitch-in); evaluate it, or "
               "train it further", {
                   "path": Param("", str, "directory written by an adapter run (OUTPUT/SUITE/KEY/adapter), or a "
                                          "hub id; relative paths start at the suite file"),
                   "train": Param(False, bool, "train the loaded adapter (and head) further; false: evaluate only"),
                   "load_head": Param(True, bool, "load the head saved beside the adapter"),
               }, uses_adapters=True, trains_when="train", head_loaded_when="load_head", loads_saved=True),
    MethodSpec("ia3", "(IA)^3 (Liu et al. 2022): learned rescaling of keys, values and FFN activations "
               "(adapters: IA3Config)", uses_adapters=True),
]})


def methods_with(flag: str) -> tuple[str, ...]:
    """Names of the methods that have a capability flag, in registry order (e.g. methods_with("ablatable"))."""
    return tuple(name for name, m in METHODS.items() if getattr(m, flag))


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)


# task kinds whose head reads one vector per example (a frozen encoder's output can be cached as that vector)
POOLED_HEAD_KINDS = ("classification",)


# what a cell's cached frozen features are kept apart for: its training data and its dev data (each split cached on
# its own, harness/train/features.py; its record counts them per role, time estimates charge them per role)
FEATURE_ROLES = ("train", "eval")


def reads_cached_features(method: MethodSpec, params: dict, kinds: tuple[str, ...], single_task: bool) -> bool:
    """Whether a cell of this method variant trains its head on frozen features computed once and cached
    (harness/train/features.py), as far as its plan says: the method freezes everything below the head, every
    task's head reads one vector per example, and the cell trains one task (sequential and multi-task cells hand
    on or share a live encoder). The model itself can still refuse it (a checkpoint whose pooler must train)."""
    return (method.frozen_encoder and method.trains(params) and single_task and bool(kinds)
            and all(k in POOLED_HEAD_KINDS for k in kinds))


def variant_problem(method: str, params: dict, kinds: tuple[str, ...] = (), single_task: bool = True,
                    sizes: dict | None = None) -> tuple[str, str] | None:
    """(parameter, why) when this method variant cannot run on cells of these task kinds (or on a model of these
    sizes: hidden, layers, positions), else None. The one home of the rules a cell would otherwise hit only when
    it starts: `validate` asks before anything runs (plan/), and the setup code asks again for direct callers."""
    sizes = sizes or {}
    if method == "compacter":
        phm = params["phm_dim"]
        if params["size"] % phm:
            return "size", f"compacter: size {params['size']} must be divisible by phm_dim {phm}"
        if sizes.get("hidden") and sizes["hidden"] % phm:
            return "phm_dim", f"compacter: the model's hidden size {sizes['hidden']} must be divisible by phm_dim {phm}"
    if method == "linear_probe" and (params.get("pooling") or "cls") != "cls":
        if not single_task or any(k not in POOLED_HEAD_KINDS for k in kinds):
            return "pooling", (f"pooling {params['pooling']} needs cached frozen features, which apply to single-task "
                               f"classification cells only (not {', '.join(k for k in kinds if k not in POOLED_HEAD_KINDS) or 'sequential or multi-task cells'})")
    return None


# load_head reads the head file an adapter run saved beside its adapter (train/methods.py); a hub id has no
# such file, and the hub's own heads are for the adapters library's flex-head models, which the harness does not
# build: validate and the run refuse it alike
HUB_HEAD = ("an AdapterHub id has no saved head to load (load_head reads the head an adapter run saved beside its "
            "adapter folder); set load_head: false to train a new head")


def adapter_dir(path: str, base: str) -> str | None:
    """The directory a pretrained_adapter `path` names (relative to the suite's folder `base`, `~` expanded), or
    None where it reads as an AdapterHub id, which loads from the hub while online only. The one reading of that
    path: validate (plan/preflight.py check_adapters), prefetch, and the run that loads and records it
    (train/model_setup.py)."""
    full = os.path.normpath(os.path.join(base, os.path.expanduser(path)))
    local = os.path.isabs(os.path.expanduser(path)) or path.startswith((".", "~")) or os.path.exists(full)
    return full if local else None
