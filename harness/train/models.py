"""Loading a model for a task: the tokenizer and the encoder with the head of the task's kind, with SDPA attention
where its architecture has it."""

from __future__ import annotations

from harness.spec.models import ModelSpec

# SDPA: attention as one fused kernel (torch's scaled_dot_product_attention: flash or memory-efficient kernels on
# GPUs, a flash kernel on CPUs) instead of matmul, softmax, dropout and matmul with their intermediates. The
# default of transformers for BERT-like models already; asked for by name so that a model whose architecture
# lacks it is seen to fall back, and the record says which ran (extra.attn_implementation). The adapters
# library has SDPA versions of its attention classes (prefix tuning and LoRA included).
ATTENTION = "sdpa"
FALLBACK_ATTENTION = "eager"


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


def load_for_task(spec: ModelSpec, task):
    """Tokenizer and the model with the head of the task's kind (sequence classification, question answering),
    plus the names of weights the checkpoint did not provide (they are newly initialised, so they must train:
    they count as the head)."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from harness.tasks.kinds import kind_of

    kind = kind_of(task)
    src = spec.source()
    tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=spec.trust_remote_code)
    config = AutoConfig.from_pretrained(src, trust_remote_code=spec.trust_remote_code, **kind.config_kwargs(task))
    model, info = with_attention(lambda attention: getattr(transformers, kind.auto_model).from_pretrained(
        src, config=config, trust_remote_code=spec.trust_remote_code, output_loading_info=True,
        attn_implementation=attention))
    return tokenizer, model, set(info.get("missing_keys", []))
