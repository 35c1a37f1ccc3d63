"""`harness prefetch --check`: offline, it says what a suite needs and what the caches lack (exit 1)."""

import http.server
import threading

import pytest

from tests.helpers import assert_refused, listing, run_cli, write_suite


def test_check_counts_the_embedded_model_and_local_data_as_present(tmp_path, glue_dir):
    suite = write_suite(tmp_path / "s.yaml", "name: p\nmodels: [minilm]\ntasks: [rte, squad]\nmethods: [full]\n")
    proc = run_cli("prefetch", suite, "--check", "--data-dir", glue_dir, cwd=tmp_path,
                   env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MISSING" not in proc.stdout and "minilm" in proc.stdout and "squad" in proc.stdout


def test_a_grid_above_the_cap_is_checked_with_max_cells(tmp_path, glue_dir):
    """The cap's message says "--max-cells N allows it": prefetch had no such option (unrecognized arguments)."""
    suite = write_suite(tmp_path / "s.yaml", "name: p\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n"
                                             "seeds: [1, 2, 3]\n")
    assert_refused(run_cli("prefetch", suite, "--check", "--data-dir", glue_dir, "--max-cells", "2", cwd=tmp_path),
                   "more than the cap of 2; a list is probably longer than meant (--max-cells 3 allows it)",
                   where=suite)
    proc = run_cli("prefetch", suite, "--check", "--data-dir", glue_dir, "--max-cells", "3", cwd=tmp_path,
                   env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_lists_what_the_cache_lacks_and_fails(tmp_path, glue_dir, monkeypatch):
    suite = write_suite(tmp_path / "s.yaml", "name: p\nmodels: [minilm, bert-base-uncased]\ntasks: [rte]\n"
                                             "methods: [full]\n")
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)   # the hub's data set, not a local folder
    proc = run_cli("prefetch", suite, "--check", cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    missing = [line for line in proc.stdout.splitlines() if "MISSING" in line]
    assert any("bert-base-uncased" in line for line in missing), proc.stdout
    assert any("rte" in line for line in missing), proc.stdout          # the hub data set is not cached either
    assert not any("minilm" in line for line in missing)


OFFLINE = {   # variable set: the suite's models, what is refused without a data folder, and with one (None: all there)
    "HF_HUB_OFFLINE": ("[minilm, bert-base-uncased, roberta-base]",
                       "2 item(s) the cache lacks cannot be downloaded (model bert-base-uncased, model roberta-base)",
                       "3 item(s) the cache lacks cannot be downloaded (data rte, model bert-base-uncased, model "
                       "roberta-base)"),
    "HF_DATASETS_OFFLINE": ("[minilm]", None, "1 item(s) the cache lacks cannot be downloaded (data rte)"),
}


@pytest.mark.parametrize("variable", list(OFFLINE))
def test_downloading_in_offline_mode_is_refused_in_one_line(tmp_path, small_glue, monkeypatch, variable):
    """With a compute node's HF_HUB_OFFLINE=1 still set, prefetch tried every missing item and printed a download
    failure for each (`download failed: OfflineModeIsEnabled` per model, exit 1): one line says offline mode is
    on, names the variable and what it keeps out, exit 2, nothing printed or written. A suite whose every item is
    there is not refused (nothing to download)."""
    models, with_data, without_data = OFFLINE[variable]
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)   # the hub's data set, not a local folder
    suite = write_suite(tmp_path / "s.yaml", f"name: p\nmodels: {models}\ntasks: [rte]\nmethods: [full]\n")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0",
           "HF_DATASETS_OFFLINE": "0", variable: "1"}
    (tmp_path / "hf").mkdir()
    before = listing(tmp_path)
    for data, expect in (([], without_data), (["--data-dir", small_glue], with_data)):
        proc = run_cli("prefetch", suite, *data, cwd=tmp_path, env=env, timeout=120)
        if expect is None:
            assert proc.returncode == 0 and "MISSING" not in proc.stdout, proc.stdout + proc.stderr
        else:
            assert_refused(proc, f"${variable}: offline mode is on ({variable}=1), so the {expect}; unset it on a "
                                 f"machine with internet, or give --check", where=f"${variable}")
        assert listing(tmp_path) == before


@pytest.fixture()
def hub_server():
    """A local stand-in for the hub's address: it answers every request 404 and keeps the paths asked for."""
    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            asked.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()


def test_a_download_after_a_failed_check_goes_online(tmp_path, hub_server, monkeypatch):
    """The cache check runs offline; the download that follows it must not (it once inherited the check's
    offline flag and never asked the hub for a data set)."""
    endpoint, asked = hub_server
    suite = write_suite(tmp_path / "s.yaml", "name: p\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n")
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    proc = run_cli("prefetch", suite, cwd=tmp_path, timeout=120,
                   env={"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0",
                        "HF_DATASETS_OFFLINE": "0"})
    assert proc.returncode == 1, proc.stdout + proc.stderr   # the stand-in has no data set
    assert any("nyu-mll/glue" in path for path in asked), proc.stdout
    assert "OfflineModeIsEnabled" not in proc.stdout
    assert any(line.startswith("MISSING  data rte") for line in proc.stdout.splitlines()), proc.stdout


def test_check_counts_the_adapters_cells_stitch_in(tmp_path, glue_dir):
    """A pretrained_adapter path is something a compute node loads too: a saved directory is present where it holds
    an adapter, and an AdapterHub id is missing (it loads only online, which validate refuses offline)."""
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "adapter_config.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    suite = write_suite(tmp_path / "s.yaml", "name: p\nmodels: [minilm]\ntasks: [rte]\nmethods:\n"
                                             "  - {name: pretrained_adapter, path: ./saved}\n"
                                             "  - {name: pretrained_adapter, path: ./empty, learning_rate: 1e-3}\n"
                                             "  - {name: pretrained_adapter, path: org/adapter, learning_rate: 2e-3}\n")
    proc = run_cli("prefetch", suite, "--check", "--data-dir", glue_dir, cwd=tmp_path,
                   env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert f"present  adapter ./saved (local: {saved})" in lines, proc.stdout
    assert f"MISSING  adapter ./empty (local: {tmp_path / 'empty'}): no adapter_config.json in {tmp_path / 'empty'}" \
        in lines, proc.stdout
    assert any(line.startswith("MISSING  adapter org/adapter (hub: org/adapter): an AdapterHub id loads only "
                               "while online") for line in lines), proc.stdout
    assert "2 of 5 needed item(s) missing" in proc.stderr, proc.stderr


def test_a_repo_sharded_as_bin_gets_its_shards(tmp_path, tiny_bert, monkeypatch):
    """fetch downloads the hub patterns (*.json: a pytorch_model.bin.index.json too, no *.bin), then .bin weights
    where no weights are there; the index alone read as weights, so the shards never came. The hub here: a
    folder, served by pattern as snapshot_download serves a repository's files."""
    import fnmatch
    import shutil

    import huggingface_hub
    import torch

    from harness.launch.prefetch import Need, fetch
    from harness.spec.models import ModelSpec
    from tests.plan.test_validation import _shard_as_bin

    remote = tmp_path / "remote"
    shutil.copytree(tiny_bert, remote)
    for shard, tensors in _shard_as_bin(remote).items():
        torch.save(tensors, remote / shard)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()

    def snapshot_download(repo_id, allow_patterns):
        for f in remote.iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                shutil.copy(f, snapshot)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    fetch(Need("model", "org/tiny", "hub", "org/tiny", model=ModelSpec("org/tiny")))
    assert sorted(p.name for p in snapshot.glob("*.bin")) == ["pytorch_model-00001-of-00002.bin",
                                                              "pytorch_model-00002-of-00002.bin"]
    assert ModelSpec(str(snapshot)).missing_files() is None


def hub_cache(tmp_path, model, name: str, folder: str = "hf/hub"):
    """`model`'s files as the hub's cache holds repository org/NAME (one snapshot, refs/main naming it)."""
    import shutil

    snapshot = tmp_path / folder / f"models--org--{name}" / "snapshots" / ("0" * 40)
    shutil.copytree(model, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    return snapshot


def test_the_cache_named_is_the_one_the_models_are_read_from(tmp_path, tiny_bert, small_glue):
    """With HF_HUB_CACHE set (a cluster's shared cache) prefetch found the model there but named $HF_HOME (or
    ~/.cache/huggingface) as "the HF cache": the folder to copy to the compute nodes was the wrong one. It names
    the folder huggingface_hub reads and writes."""
    hub_cache(tmp_path, tiny_bert, "tiny", "shared")
    suite = write_suite(tmp_path / "s.yaml", "name: p\nmodels: [org/tiny]\ntasks: [rte]\nmethods: [full]\n")
    proc = run_cli("prefetch", suite, "--check", "--data-dir", small_glue, cwd=tmp_path,
                   env={"HF_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "shared")})
    assert proc.returncode == 0 and "present  model org/tiny (hub: org/tiny)" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr.endswith(f"(models from {tmp_path / 'shared'})\n"), proc.stderr


def test_a_trusted_model_s_remote_code_is_needed(tmp_path, tiny_bert, small_glue):
    """A trust_remote_code model whose config.json's auto_map names modeling_tiny.py: a cache without that file
    was "present" (prefetch --check, exit 0; validate: valid), and every cell then failed offline ("couldn't find
    them in the cached files"). The code its auto_map names is needed, in its own repository or another's."""
    import json

    snapshot = hub_cache(tmp_path, tiny_bert, "remote")
    config = json.loads((snapshot / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModel": "org/code--modeling_tiny.M"}
    (snapshot / "config.json").write_text(json.dumps(config))
    (snapshot / "configuration_tiny.py").write_text("")
    suite = write_suite(tmp_path / "s.yaml", "name: p\nmodels: [{name: org/remote, trust_remote_code: true}]\n"
                                             "tasks: [rte]\nmethods: [full]\n")
    proc = run_cli("prefetch", suite, "--check", "--data-dir", small_glue, cwd=tmp_path,
                   env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MISSING  model org/remote (hub: org/remote): no modeling_tiny.py of org/code (config.json's auto_map: " \
           "remote code) in the Hugging Face cache" in proc.stdout, proc.stdout
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "modeling_tiny.py").write_text("")
    hub_cache(tmp_path, tmp_path / "code", "code")   # the other repository's code, cached
    proc = run_cli("prefetch", suite, "--check", "--data-dir", small_glue, cwd=tmp_path,
                   env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_trusted_tokenizer_s_remote_code_is_needed(tmp_path, tiny_bert, small_glue):
    """tokenizer_config.json's auto_map names the tokenizer's code (AutoTokenizer reads it there first): a model
    folder without tokenization_tiny.py was valid and "present", and loading it failed every cell ("does not
    appear to have a file named tokenization_tiny.py"). Refused as config.json's auto_map is."""
    import json
    import shutil

    from tests.helpers import call_cli

    model = tmp_path / "remote"
    shutil.copytree(tiny_bert, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_tiny.TinyTokenizer", None]}
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    suite = write_suite(tmp_path / "s.yaml", f"name: p\nmodels: [{{name: {model}, trust_remote_code: true}}]\n"
                                             f"tasks: [rte]\nmethods: [full]\ndata_dir: {small_glue}\n")
    assert_refused(call_cli("validate", suite), f'model "{model}": no tokenization_tiny.py (tokenizer_config.json\'s '
                                                f'auto_map: remote code) in {model}', where=f"{suite}:2: models[0]")
    (model / "tokenization_tiny.py").write_text("")
    assert call_cli("validate", suite).returncode == 0
