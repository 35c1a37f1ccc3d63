"""Loading a model for a task: the tokenizer and the encoder with the head of the task's kind."""

from __future__ import annotations

from harness.spec.models import ModelSpec


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
    model, info = getattr(transformers, kind.auto_model).from_pretrained(
        src, config=config, trust_remote_code=spec.trust_remote_code, output_loading_info=True)
    return tokenizer, model, set(info.get("missing_keys", []))
