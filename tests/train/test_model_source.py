"""What a run's model was loaded from, by content (extra.model_source, harness/train/models.py): a local
directory by its files' digest, which changes when its weights or tokenizer do and not when a README does; an
alias likewise; a hub id by the commit of the cached snapshot (offline, from a prepared cache)."""

from __future__ import annotations

import hashlib
import shutil

from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from harness.spec.models import ModelSpec
from harness.train.models import dir_source, model_source


def source_of(spec: ModelSpec, **kwargs) -> str:
    return model_source(spec, AutoConfig.from_pretrained(spec.source(), **kwargs))


def test_a_local_directory_is_identified_by_the_content_loading_reads(tiny_bert, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    spec = ModelSpec("./model", base_dir=str(tmp_path))
    before = source_of(spec)
    assert before.startswith(f"dir:{folder}:sha256:")
    # another folder with the same files: the same content (the path aside)
    assert before.split(":sha256:")[1] == source_of(ModelSpec(str(tiny_bert))).split(":sha256:")[1]
    (folder / "README.md").write_text("notes that loading never reads\n")
    assert source_of(spec) == before
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: v * 2 if v.is_floating_point() else v for k, v in tensors.items()}, weights,
              metadata={"format": "pt"})
    changed = source_of(spec)
    assert changed != before
    vocab = folder / "vocab.txt"
    vocab.write_text(vocab.read_text().replace("[unused0]", "[unused9999]", 1))
    assert source_of(spec) not in (before, changed)


def test_the_embedded_alias_is_identified_by_its_files(tmp_path):
    spec = ModelSpec("minilm")
    source = source_of(spec)
    assert source.startswith(f"dir:{spec.source()}:sha256:")
    assert len(source.split(":sha256:")[1]) == len(hashlib.sha256().hexdigest())


def test_a_hub_model_is_identified_by_its_snapshot_commit(tiny_bert, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny"
    shutil.copytree(tiny_bert, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    source = source_of(ModelSpec("org/tiny"), cache_dir=str(tmp_path / "hub"))   # HF_HUB_OFFLINE (conftest)
    assert source == f"hub:org/tiny@{commit}"


def test_a_saved_adapter_folder_is_identified_by_every_file(tmp_path):
    """extra.adapter_source (harness/train/model_setup.py): a pretrained_adapter's folder, rewritten by its run
    trained again, gets another digest; the path aside, a copy gets the same."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"config": {}}')
    (folder / "pytorch_adapter.bin").write_bytes(b"\x00" * 64)
    (folder / "harness_head.safetensors").write_bytes(b"\x01" * 32)
    before = dir_source(str(folder))
    shutil.copytree(folder, tmp_path / "copy")
    assert dir_source(str(tmp_path / "copy")).split(":sha256:")[1] == before.split(":sha256:")[1]
    (folder / "harness_head.safetensors").write_bytes(b"\x02" * 32)   # the head alone changed
    assert dir_source(str(folder)) != before


def test_files_loading_does_not_read_leave_the_digest_as_it_is(tiny_bert, tmp_path):
    """Every *.json and both weight formats were digested: an unused pytorch_model.bin beside model.safetensors
    (loading prefers safetensors) deleted, or a training script's all_results.json edited, read as other model
    files and set off the tables' "trained from different files" note. What is read still counts."""
    import torch

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "all_results.json").write_text('{"eval_accuracy": 0.5}')
    (folder / "train.py").write_text("print('remote code, not trusted: not read')\n")
    spec = ModelSpec("./model", base_dir=str(tmp_path))
    before = source_of(spec)
    (folder / "pytorch_model.bin").unlink()
    (folder / "all_results.json").write_text('{"eval_accuracy": 0.9}')
    (folder / "train.py").write_text("print('edited')\n")
    assert source_of(spec) == before
    config = folder / "tokenizer_config.json"
    config.write_text(config.read_text().replace("{", '{"model_max_length": 64, ', 1))
    edited = source_of(spec)
    assert edited != before
    weights = folder / "model.safetensors"
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in load_file(weights).items()}, weights,
              metadata={"format": "pt"})
    assert source_of(spec) not in (before, edited)
    # trusted remote code is read: an edit to it counts
    trusted = ModelSpec("./model", trust_remote_code=True, base_dir=str(tmp_path))
    code = source_of(trusted)
    (folder / "train.py").write_text("print('edited again')\n")
    assert source_of(trusted) != code


def test_a_sharded_checkpoint_is_identified_by_its_index_and_shards(tiny_bert, tmp_path):
    """Without model.safetensors loading reads the index and every shard it names: a shard's edit counts."""
    import json

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, ns in shards.items():
        save_file({n: tensors[n] for n in ns}, folder / shard, metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: shard for shard, ns in shards.items() for n in ns}}))
    spec = ModelSpec("./model", base_dir=str(tmp_path))
    before = source_of(spec)
    second = folder / "model-00002-of-00002.safetensors"
    save_file({k: v * 3 for k, v in load_file(second).items()}, second, metadata={"format": "pt"})
    assert source_of(spec) != before


def test_a_saved_adapter_under_home_is_read_as_validate_reads_it(tmp_path, monkeypatch, small_glue):
    """`path: ~/saved` was a folder to validate and prefetch (~ expanded) while the run left it unexpanded: it
    recorded adapter_source `hub:~/saved` and loaded from a path relative to its working directory."""
    from harness.plan.preflight import preflight
    from harness.plan.suite import parse_suite
    from harness.spec.cell import Cell
    from harness.spec.tasks import get_task
    from harness.train.model_setup import _resolved_method_params, adapter_source

    home = tmp_path / "home"
    (home / "saved").mkdir(parents=True)
    (home / "saved" / "adapter_config.json").write_text('{"config": {}}')
    (home / "saved" / "harness_head.safetensors").write_bytes(b"\x01" * 32)
    monkeypatch.setenv("HOME", str(home))
    suites = tmp_path / "suites"
    preflight(parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [{name: pretrained_adapter, path: "
                          "~/saved}]\n", str(suites / "s.yaml")), str(small_glue))   # validate: a folder, there
    cell = Cell(suite="s", model="minilm", task="rte", task_version=get_task("rte").version,
                method="pretrained_adapter", method_params={"path": "~/saved"}, budget={}, seed=1, hparams={})
    assert _resolved_method_params(cell, str(suites))["path"] == str(home / "saved")   # what loading gets
    assert adapter_source(cell, str(suites)).startswith(f"dir:{home / 'saved'}:sha256:")
