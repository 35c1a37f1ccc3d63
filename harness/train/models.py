"""Loading a model for a task: the tokenizer and the encoder with the head of the task's kind, with SDPA attention
where its architecture has it."""

from __future__ import annotations

import contextlib
import hashlib
import os

from harness.spec.models import ALIASES, ModelSpec

# SDPA: attention as one fused kernel (torch's scaled_dot_product_attention: flash or memory-efficient kernels on
# GPUs, a flash kernel on CPUs; in training on a CPU, written out where it has dropout, its math kernel under
# bf16: training_forward) instead of matmul, softmax, dropout and matmul with their intermediates. The
# default of transformers for BERT-like models already; asked for by name so that a model whose architecture
# lacks it is seen to fall back, and the record says which ran (extra.attn_implementation). The adapters
# library has SDPA versions of its attention classes (prefix tuning and LoRA included).
ATTENTION = "sdpa"
FALLBACK_ATTENTION = "eager"


@contextlib.contextmanager
def training_forward(device_type: str, mixed_precision: str, compiled: bool = False, drawn: set | None = None):
    """The context a training step's forward pass runs in. On a CPU (not compiled): dropout's masks drawn by
    train/dropout.py at half of torch's generator work, with attention that has dropout written out around them
    (SDPA's math kernel draws its own); `drawn` collects who drew them (dropout.CpuDropout). Under bf16 autocast
    on a CPU, SDPA without dropout restricted to its math kernel (matmul, softmax, matmul): torch's CPU flash
    kernel is fast forward but slow backward in bf16 (bench/RESULTS.md, 2026-12-03 night: forward + backward of
    one attention at 16 x 56 tokens 19-21 ms against 6-7 ms for the math kernel, about 80 ms of a full
    fine-tuning step over 6 layers); in fp32 and on GPUs the fused kernels are the faster ones, and evaluation
    (forward only, no dropout) keeps them everywhere."""
    with contextlib.ExitStack() as stack:
        if harness_draws_masks(device_type, compiled):
            from harness.train.dropout import CpuDropout

            stack.enter_context(CpuDropout(drawn))
        if device_type == "cpu" and mixed_precision == "bf16":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        yield


def harness_draws_masks(device_type: str, compiled: bool) -> bool:
    """Whether training_forward draws dropout's masks here (train/dropout.py): on a CPU, not compiled (inductor
    draws its own)."""
    return device_type == "cpu" and not compiled


def dropout_masks(device_type: str, compiled: bool, drawn: set) -> str:
    """Who drew a training run's dropout masks (extra.dropout_masks): where the harness draws them, from what
    training_forward's `drawn` collected (dropout.drawn_by); elsewhere torch (or inductor), not tracked."""
    from harness.train.dropout import DRAWN_BY_TORCH, drawn_by

    return drawn_by(drawn) if harness_draws_masks(device_type, compiled) else DRAWN_BY_TORCH


def with_attention(make):
    """make(attn_implementation) -> model: SDPA, or the plain implementation where transformers refuses SDPA for
    the architecture (a ValueError naming it)."""
    try:
        return make(ATTENTION)
    except ValueError:   # any other cause fails the plain load too, and is raised from there
        return make(FALLBACK_ATTENTION)


def attention_of(model) -> str | None:
    """The attention implementation a loaded model runs ("sdpa", "eager", ...)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def model_source(spec: ModelSpec, config) -> str:
    """What a run's config, weights and tokenizer were loaded from, by content (extra.model_source), so that two
    runs of one model name are told apart where its files differ (a hub repository updated between them, a local
    directory edited): `hub:ID@COMMIT` (the snapshot's commit, content-addressed by the hub; `@unknown` where
    transformers did not say), `dir:PATH:sha256:DIGEST` for an alias or a local directory (the files loading
    reads, spec/models.py loaded_files, by name and content: dir_source)."""
    from harness.spec.models import loaded_files

    path = spec.local_path() or (spec.source() if spec.name in ALIASES else None)
    if path is None:
        return f"hub:{spec.name}@{getattr(config, '_commit_hash', None) or 'unknown'}"
    return dir_source(path, loaded_files(path, spec.trust_remote_code))


def dir_source(path: str, names: list[str] | None = None) -> str:
    """A folder by the content of its files (top level; those named in `names`, or all): `dir:PATH:sha256:D`,
    D over each file's name and sha256 (each hashed once per process while it stays as it is)."""
    from harness.tasks.data import file_digest

    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full) and (names is None or name in names):
            digest.update(f"{name}\0{file_digest(full)}\0".encode())
    return f"dir:{os.path.abspath(path)}:sha256:{digest.hexdigest()}"


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.source(), trust_remote_code=spec.trust_remote_code)


def load_for_task(spec: ModelSpec, task):
    """Tokenizer and the model with the head of the task's kind (sequence classification, question answering),
    plus the names of weights the checkpoint did not provide (they are newly initialised, so they must train:
    they count as the head)."""
    import transformers
    from transformers import AutoConfig

    from harness.tasks.kinds import kind_of

    kind = kind_of(task)
    src = spec.source()
    tokenizer = load_tokenizer(spec)
    config = AutoConfig.from_pretrained(src, trust_remote_code=spec.trust_remote_code, **kind.config_kwargs(task))
    model, info = with_attention(lambda attention: getattr(transformers, kind.auto_model).from_pretrained(
        src, config=config, trust_remote_code=spec.trust_remote_code, output_loading_info=True,
        attn_implementation=attention))
    return tokenizer, model, set(info.get("missing_keys", []))
