"""Strict validation beyond the bad-suite corpus: good input still passes (and keeps its keys), the grid cap and
its override, a 10,000-cell suite, checks against a model's config, a failing cell's one line and
error.log, the board's binding, the read-only store for any file name, trust_remote_code never from the store,
and relative paths resolved once."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr

import pytest

from tests.helpers import ROOT, assert_refused, make_tiny_model, run_cli, write_small_glue, write_suite
from harness.spec.errors import InputError
from harness.plan.suite import load_suite, parse_suite

HEAD = "name: s\nmodels: [minilm]\ntasks: [rte]\n"


def test_yaml_1_2_numbers_and_booleans():
    suite = parse_suite(HEAD + "methods:\n  - {name: full, learning_rate: 1e-3}\nhparams: {group_by_length: false}\n"
                               "budgets: [{epochs: 1}]\nseeds: [0, 4294967295]\n", "s.yaml")
    cell = suite.cells()[0]
    assert cell.hparams["learning_rate"] == 0.001 and cell.hparams["group_by_length"] is False
    assert cell.budget == {"epochs": 1.0} and [c.seed for c in suite.cells()] == [0, 4294967295]
    # `yes` is text in YAML 1.2: a name, never a boolean
    assert parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\ndescription: yes\n",
                       "s.yaml").model.description == "yes"


def _grid_suite(n_seeds: int) -> str:
    # 4 tasks x 5 methods x 5 learning rates x 4 budgets x n seeds
    return ("name: big\nmodels: [minilm]\ntasks: [rte, mrpc, stsb, cola]\n"
            "methods: [full, linear_probe, bitfit, {name: houlsby, size: 16}, {name: lora, rank: 4}]\n"
            "budgets: [{epochs: 1}, {epochs: 2}, {epochs: 3}, {max_steps: 100}]\n"
            f"seeds: [{', '.join(map(str, range(n_seeds)))}]\n"
            "hparams: {learning_rate: [1e-5, 2e-5, 5e-5, 1e-4, 3e-4]}\n")


def test_a_grid_at_the_cap_is_valid_with_distinct_keys():
    """10,000 cells, the default cap exactly, pass (how fast: bench/bench_validate.py)."""
    cells = parse_suite(_grid_suite(25), "big.yaml").cells()   # 4 x 5 x 5 x 4 x 25 = 10,000 cells
    assert len(cells) == 10_000 and len({c.key for c in cells}) == 10_000


def test_grid_cap_and_its_override(tmp_path):
    path = write_suite(tmp_path / "big.yaml", _grid_suite(26))   # 10,400 cells
    with pytest.raises(InputError, match=r"10,400 cells .* more than the cap of 10,000.*--max-cells 10400"):
        load_suite(str(path))
    assert len(load_suite(str(path), max_cells=10_400).cells()) == 10_400
    proc = run_cli("validate", path, "--max-cells", "10400", cwd=tmp_path)
    assert proc.returncode == 0 and "10400 cells" in proc.stdout, proc.stderr
    assert_refused(run_cli("validate", path, cwd=tmp_path), "--max-cells 10400", where=path)


def test_cells_of_a_sweep_have_distinct_labels(tmp_path, small_glue):
    """A label named the learning rate only: the cells of a batch-size sweep printed the same line in validate,
    estimate, status and the run's log (their keys told them apart)."""
    text = ("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n"
            "hparams: {batch_size: [8, 32], warmup_ratio: [0.0, 0.1]}\n")
    cells = parse_suite(text, "s.yaml").cells()
    assert len({c.label for c in cells}) == len(cells) == 4
    assert {c.label for c in cells} >= {"minilm rte full lr=2e-05 batch_size=8 warmup_ratio=0.1 [epochs=1] seed=1",
                                        "minilm rte full lr=2e-05 [epochs=1] seed=1"}   # defaults left out
    out = run_cli("validate", write_suite(tmp_path / "s.yaml", text), "--list", "--data-dir", small_glue).stdout
    assert "lr=2e-05 batch_size=8 [epochs=1] seed=1" in out, out


def test_the_demo_suite_has_distinct_keys():
    """Every cell of the shipped demo suite has its own key (the pinned key: tests/plan/test_suite.py)."""
    cells = load_suite(str(ROOT / "suites" / "demo.yaml")).cells()
    assert cells and len({c.key for c in cells}) == len(cells)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny")   # hidden 32, 2 layers, 128 positions


def test_a_tasks_default_length_is_checked_against_the_model(tiny, tmp_path):
    """SQuAD cells default to 384-token windows: on a model with 128 positions the cell failed when it started."""
    from harness.plan.preflight import preflight

    shutil.copytree(tiny, tmp_path / "tiny")
    suite = parse_suite("name: s\nmodels: [./tiny]\ntasks: [squad]\nmethods: [full]\n", str(tmp_path / "s.yaml"))
    with pytest.raises(InputError) as err:
        preflight(suite, str(write_small_glue(tmp_path / "glue")))
    assert ":3: tasks[0]: max_length 384 (the default of squad's cells) is more than the maximum positions of " \
           "model ./tiny (128" in str(err.value)


def test_minus_zero_is_zero_in_the_key():
    zero, minus = (parse_suite(HEAD + f"methods: [full]\nhparams: {{weight_decay: {v}}}\n", "s.yaml").cells()[0]
                   for v in ("0.0", "-0.0"))
    assert zero.key == minus.key


@pytest.mark.parametrize("body, expected", [
    ("hparams: {max_length: 129}", ":5: hparams.max_length: 129 is more than the maximum positions of model ./tiny (128"),
    ("methods: [{name: houlsby, size: 33}]", ":4: methods[0].size: 33 is more than the hidden size of model ./tiny (32"),
    ("methods: [{name: lora, rank: [4, 64]}]", ":4: methods[0].rank[1]: 64 is more than the hidden size"),
    ("methods: [{name: top_k, k: 3}]", ":4: methods[0].k: 3 is more than the number of layers of model ./tiny (2"),
])
def test_sizes_are_checked_against_the_model_config(tiny, tmp_path, body, expected):
    from harness.plan.preflight import preflight

    shutil.copytree(tiny, tmp_path / "tiny")
    glue = write_small_glue(tmp_path / "glue")
    text = "name: s\nmodels: [./tiny]\ntasks: [rte]\nmethods: [full]\n"
    key = body.split(":")[0]
    text = text.replace("methods: [full]\n", "") + body + "\n" if key == "methods" else text + body + "\n"
    suite = parse_suite(text, str(tmp_path / "s.yaml"))
    with pytest.raises(InputError) as err:
        preflight(suite, str(glue))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_roberta_positions_leave_out_the_padding_offset(tmp_path):
    from harness.plan.preflight import model_sizes

    assert model_sizes({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1,
                        "hidden_size": 768, "num_hidden_layers": 12}) == {"positions": 512, "hidden": 768, "layers": 12}
    assert model_sizes({"model_type": "distilbert", "max_position_embeddings": 512, "dim": 768, "n_layers": 6}) == \
        {"positions": 512, "hidden": 768, "layers": 6}


def test_a_saved_adapter_passes_and_a_folder_without_one_does_not(tmp_path, small_glue):
    from harness.plan.preflight import preflight

    (tmp_path / "ad").mkdir()
    text = "name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [{name: pretrained_adapter, path: ad}]\n"
    with pytest.raises(InputError, match=r":4: methods\[0\]\.path: \"ad\" holds no adapter"):
        preflight(parse_suite(text, str(tmp_path / "s.yaml")), str(small_glue))
    (tmp_path / "ad" / "adapter_config.json").write_text("{}")
    preflight(parse_suite(text, str(tmp_path / "s.yaml")), str(small_glue))
    # an absolute path elsewhere is allowed: it says where it goes
    text = text.replace("path: ad", f"path: {tmp_path / 'ad'}")
    preflight(parse_suite(text, str(tmp_path / "sub" / "s.yaml")), str(small_glue))


def test_an_adapterhub_id_with_load_head_is_refused_by_validate_and_the_run(tmp_path, small_glue, monkeypatch):
    """load_head (true by default) reads the head file an adapter run saves beside its adapter folder: online,
    validate accepted a hub id with it, and the run downloaded the adapter, then failed looking for that file
    under the id ("no saved head at AdapterHub/x/harness_head.safetensors"). Refused in one line naming the field;
    load_head: false passes."""
    from harness.plan.preflight import preflight
    from harness.train.methods import _setup_pretrained_adapter

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)   # (online: nothing below downloads)
    text = ("name: s\nmodels: [minilm]\ntasks: [rte]\n"
            "methods: [{name: pretrained_adapter, path: AdapterHub/bert-base-uncased-pf-rte, train: false}]\n")
    with pytest.raises(InputError, match=r"^\S+s\.yaml:4: methods\[0\]\.load_head: path \"AdapterHub/bert-base-"
                                         r"uncased-pf-rte\": an AdapterHub id has no saved head to load .*set "
                                         r"load_head: false to train a new head$"):
        preflight(parse_suite(text, str(tmp_path / "s.yaml")), str(small_glue))
    preflight(parse_suite(text.replace("train: false", "load_head: false"), str(tmp_path / "s.yaml")),
              str(small_glue))
    # the run, refused before it downloads anything (the model is never touched)
    with pytest.raises(InputError, match="is no folder here, so a hub id: an AdapterHub id has no saved head"):
        _setup_pretrained_adapter(None, {"path": "AdapterHub/bert-base-uncased-pf-rte", "load_head": True})


def test_a_model_without_its_weights_or_tokenizer_here_is_refused_before_anything_is_written(tmp_path, tiny_bert,
                                                                                              small_glue):
    """A hub cache holding a model's config alone (a download cut short) passed, and every cell then failed as it
    loaded (a TypeError from the tokenizer); likewise a local folder without weights. HF_HUB_OFFLINE: conftest."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--org--tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(tiny_bert / "config.json", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {"HF_HOME": str(tmp_path / "hf")}
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmodels: [org/tiny]\ntasks: [rte]\nmethods: [full]\n")
    proc = run_cli("run", suite, "--data-dir", small_glue, "--db", f"sqlite:///{tmp_path / 'h.db'}",
                   "--output-dir", tmp_path / "out", cwd=tmp_path, env=env)
    assert_refused(proc, 'models[0]: model "org/tiny": no weights (model.safetensors / pytorch_model.bin) in the '
                         'Hugging Face cache; HF_HUB_OFFLINE is set', suite)
    assert not (tmp_path / "h.db").exists() and not (tmp_path / "out").exists()
    check = run_cli("prefetch", suite, "--check", "--data-dir", small_glue, cwd=tmp_path, env=env)
    assert check.returncode == 1 and "MISSING  model org/tiny (hub: org/tiny): no weights" in check.stdout
    shutil.copytree(tiny_bert, repo / "snapshots" / commit, dirs_exist_ok=True)   # the whole snapshot
    proc = run_cli("validate", suite, "--data-dir", small_glue, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    # a local folder: its weights are not there
    shutil.copytree(tiny_bert, tmp_path / "local")
    (tmp_path / "local" / "model.safetensors").unlink()
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmodels: [./local]\ntasks: [rte]\nmethods: [full]\n")
    assert_refused(run_cli("validate", suite, "--data-dir", small_glue, cwd=tmp_path),
                   f'model "./local": no weights (model.safetensors / pytorch_model.bin) in {tmp_path / "local"}',
                   suite)


def _shard_as_bin(folder):
    """The folder's weights as an older hub repo holds them: pytorch_model.bin.index.json and two .bin shards."""
    import json

    from safetensors.torch import load_file

    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: shard for shard, ns in shards.items() for n in ns}}))
    return {shard: {n: tensors[n] for n in ns} for shard, ns in shards.items()}


def test_a_weight_index_without_its_shards_is_refused(tmp_path, tiny_bert, small_glue):
    """pytorch_model.bin.index.json alone (prefetch downloads *.json, and .bin only where no weights read as
    there) passed as weights, and every cell failed as it loaded; so for a local folder and a hub snapshot."""
    import torch

    shutil.copytree(tiny_bert, tmp_path / "local")
    shards = _shard_as_bin(tmp_path / "local")
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmodels: [./local]\ntasks: [rte]\nmethods: [full]\n")
    assert_refused(run_cli("validate", suite, "--data-dir", small_glue, cwd=tmp_path),
                   f'model "./local": pytorch_model.bin.index.json in {tmp_path / "local"} names shards that are '
                   f'not there', suite)
    first, second = shards
    torch.save(shards[first], tmp_path / "local" / first)   # one of two: still refused
    assert run_cli("validate", suite, "--data-dir", small_glue, cwd=tmp_path).returncode == 2
    torch.save(shards[second], tmp_path / "local" / second)
    proc = run_cli("validate", suite, "--data-dir", small_glue, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # a hub cache snapshot: the same index, no shards; then with them
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(tmp_path / "local", snapshot, ignore=shutil.ignore_patterns("*.bin"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {"HF_HOME": str(tmp_path / "hf")}
    suite = write_suite(tmp_path / "h.yaml", "name: h\nmodels: [org/tiny]\ntasks: [rte]\nmethods: [full]\n")
    check = run_cli("prefetch", suite, "--check", "--data-dir", small_glue, cwd=tmp_path, env=env)
    assert check.returncode == 1 and "MISSING  model org/tiny (hub: org/tiny): pytorch_model.bin.index.json" \
        in check.stdout, check.stdout
    for shard in shards:
        shutil.copy(tmp_path / "local" / shard, snapshot)
    check = run_cli("prefetch", suite, "--check", "--data-dir", small_glue, cwd=tmp_path, env=env)
    assert check.returncode == 0 and "present  model org/tiny" in check.stdout, check.stdout + check.stderr


def test_a_weight_index_nested_past_the_json_decoders_limit_is_refused(tmp_path, tiny_bert, small_glue):
    """A local model folder whose model.safetensors.index.json is 100,000 '[': `harness validate` (and run, prefetch
    --check) ended in a RecursionError traceback, exit 1; now the index is read as one without a weight_map, in one
    line naming the model and the file, exit 2."""
    shutil.copytree(tiny_bert, tmp_path / "local")
    (tmp_path / "local" / "model.safetensors").unlink()
    (tmp_path / "local" / "model.safetensors.index.json").write_text("[" * 100_000)
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmodels: [./local]\ntasks: [rte]\nmethods: [full]\n")
    assert_refused(run_cli("validate", suite, "--data-dir", small_glue, cwd=tmp_path),
                   f'model "./local": model.safetensors.index.json in {tmp_path / "local"} names shards that are '
                   f'not there (or no readable weight_map)', suite)


def test_run_checks_data_before_writing_anything(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmodels: [minilm]\ntasks: [rte, qqp]\nmethods: [full]\n")
    line = assert_refused(run_cli("run", suite, "--data-dir", tmp_path / "glue", cwd=tmp_path), "--data-dir")
    assert line == f"error: --data-dir: data directory {tmp_path / 'glue'} does not exist"
    write_small_glue(tmp_path / "glue")   # has RTE, not QQP
    proc = run_cli("run", suite, "--data-dir", "glue", cwd=tmp_path)   # relative: resolved against the cwd
    assert_refused(proc, f":3: tasks[1]: no data for qqp: {tmp_path / 'glue' / 'QQP' / 'train.tsv'}", where=suite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glue", "s.yaml"]


def test_failing_cell_is_one_line_with_traceback_in_error_log_and_store(tiny, tmp_path, small_glue):
    from harness.store.db import Store

    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    # weights that are no safetensors file: every file is there, so every check passes; the cell fails as it
    # loads the model
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmodels: [./broken]\ntasks: [rte]\nmethods: [full]\n"
                                             "budgets: [{max_steps: 1}]\n")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = run_cli("run", suite, "--db", db, "--data-dir", small_glue, "--output-dir", tmp_path / "out",
                   "--no-progress", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    failed = [l for l in proc.stderr.splitlines() if "FAILED" in l]
    assert len(failed) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "SafetensorError" in failed[0] and "./broken rte full" in failed[0] and "error.log" in failed[0], failed[0]
    rec = next(iter(Store(db, read_only=True).records()))
    log = tmp_path / "out" / "s" / rec.cell_key / "error.log"
    assert rec.status == "failed" and rec.error.splitlines()[0].startswith("SafetensorError")
    assert "Traceback (most recent call last)" in rec.error and "Traceback" in log.read_text()
    proc = run_cli("run", suite, "--db", db, "--data-dir", small_glue, "--output-dir", tmp_path / "out",
                   "--no-progress", "--retry-failed", "--verbose", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr


def test_board_binds_localhost_unless_told(monkeypatch):
    import subprocess

    from harness import cli

    calls, dbs = [], []
    monkeypatch.setattr(subprocess, "call", lambda cmd, env: calls.append(cmd) or dbs.append(env["HARNESS_DB"]) or 0)
    err = io.StringIO()
    with redirect_stderr(err):
        assert cli.main(["board", "--db", "sqlite:////tmp/x.db", "--port", "0"]) == 0   # (8501 may be served)
        assert cli.main(["board", "--address", "0.0.0.0", "--port", "0"]) == 0
    first, second = calls
    assert dbs[0] == "sqlite:////tmp/x.db" and "x.db" not in " ".join(first)   # the URL never on a command line
    assert first[first.index("--server.address") + 1] == "127.0.0.1"
    assert second[second.index("--server.address") + 1] == "0.0.0.0"
    lines = err.getvalue().splitlines()
    assert "this machine only" in lines[0] and lines[1].startswith("warning: serving the leaderboard on 0.0.0.0")


@pytest.mark.parametrize("name", ["a#b.db", "a?mode=rw.db", "a%23b.db", "sp ace.db"])
def test_read_only_sqlite_opens_exactly_that_file(tmp_path, name):
    from sqlalchemy.exc import OperationalError

    from harness.store.db import Store
    from harness.store.engine import make_engine

    path = tmp_path / name
    store = Store("sqlite:///" + str(path).replace("%", "%25").replace("?", "%3F").replace("#", "%23"))
    cell = parse_suite(HEAD + "methods: [full]\n", "s.yaml").cells()[0]
    store.start(cell, cell.config(), "cmd", "out")
    url = store.url
    ro = Store(url, read_only=True)
    assert [r.cell_key for r in ro.records()] == [cell.key]
    with pytest.raises(OperationalError):
        ro.start(parse_suite(HEAD + "methods: [bitfit]\n", "s.yaml").cells()[0], {}, "cmd", "out")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(name)) == []
    with make_engine(url, read_only=True).connect() as conn:
        with pytest.raises(OperationalError):
            conn.exec_driver_sql("CREATE TABLE t (x INT)")


def test_read_only_is_refused_for_a_backend_it_cannot_enforce():
    from harness.store.engine import make_engine

    with pytest.raises(InputError, match="oracle cannot be opened read-only"):
        make_engine("oracle://u:p@host/db", read_only=True)


def test_ablate_never_takes_trust_remote_code_from_the_store(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import harness.train.models as models
    from harness.analysis.ablate import load_trained_adapter

    seen = []

    def fake_load(spec, task):
        seen.append(spec.trust_remote_code)
        raise RuntimeError("stop")

    monkeypatch.setattr(models, "load_for_task", fake_load)
    record = SimpleNamespace(id=1, adapter_path=str(tmp_path), task="rte", model="someorg/m",
                             config={"trust_remote_code": True})   # written by whoever can write to the store
    for flag in (False, True):
        with pytest.raises(RuntimeError):
            load_trained_adapter(record, trust_remote_code=flag)
    assert seen == [False, True]


def test_relative_paths_are_resolved_once_where_read(tmp_path, monkeypatch):
    from harness.cli import build_parser, resolve_user_paths
    from harness.store.engine import absolute_db_url

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DATA_DIR", "data/glue")
    monkeypatch.setenv("HARNESS_DB", "sqlite:///env.db")
    args = build_parser().parse_args(["run", "s.yaml", "--db", "sqlite:///rel/h.db", "--output-dir", "out",
                                      "--data-dir", "d"])
    resolve_user_paths(args)
    assert args.db == f"sqlite:///{tmp_path / 'rel' / 'h.db'}"
    assert args.output_dir == str(tmp_path / "out") and args.data_dir == str(tmp_path / "d")
    assert os.environ["HARNESS_DATA_DIR"] == str(tmp_path / "data" / "glue")   # what subprocesses inherit
    assert os.environ["HARNESS_DB"] == f"sqlite:///{tmp_path / 'env.db'}"
    assert absolute_db_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert absolute_db_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"


def test_ci_runs_the_readme_test_command_verbatim():
    """.ci/run runs the README's test command as written: its own extraction (run here) gives the first line of the
    first bash block under "## Run the tests", a pytest command whose data directory is relative to the checkout
    (no machine's path), and CI sets no data directory of its own."""
    import subprocess

    readme = (ROOT / "README.md").read_text()
    command = readme.split("## Run the tests", 1)[1].split("```bash\n", 1)[1].splitlines()[0]
    env_part, _, rest = command.partition(" ")
    assert env_part.startswith("HARNESS_DATA_DIR=") and rest.split()[:3] == ["python", "-m", "pytest"]
    assert not os.path.isabs(env_part.removeprefix("HARNESS_DATA_DIR="))
    ci = (ROOT / ".ci" / "run").read_text()
    extract = next(line for line in ci.splitlines() if line.startswith("test_command=$("))
    got = subprocess.run(["bash", "-c", f'{extract}; printf %s "$test_command"'], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert got == command
    assert "eval \"$test_command\"" in ci and "HARNESS_DATA_DIR=" not in ci


@pytest.mark.parametrize("name", ["alias_bomb", "anchor_and_alias", "deep_nesting", "duplicate_methods_key",
                                  "seed_quoted", "trust_remote_code_bare_yes", "python_tag"])
def test_pure_python_yaml_gives_the_same_errors(monkeypatch, name):
    """Without libyaml, the pure-Python parser applies the same checks (anchors refused before expansion, depth)."""
    from harness.plan import strict_yaml

    monkeypatch.setattr(strict_yaml, "_parsers", lambda text: (strict_yaml._Loader(text), strict_yaml._Loader(text)))
    path = ROOT / "tests" / "bad_suites" / f"{name}.yaml"
    expect = path.read_text().splitlines()[1].removeprefix("# expect: ")
    with pytest.raises(InputError) as err:
        load_suite(str(path))
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_ablate_trusts_remote_code_only_for_a_model_named_on_the_command_line(monkeypatch, tmp_path):
    """`--trust-remote-code MODEL`: the model id read from the store is never trusted by itself; a bare flag (which
    used to trust whatever model the stored row named) is refused by the parser."""
    import harness.analysis.ablate
    from harness.store.db import Store
    from tests.helpers import call_cli

    suite = parse_suite("name: t\nmodels: [someorg/remote-model]\ntasks: [rte]\nmethods: [{name: houlsby, size: 4}]\n")
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    cell = suite.cells()[0]
    claim = store.start(cell, cell.config(), "", str(tmp_path))
    store.finish(claim, "completed", {"score": 60.0})
    run_id = str(store.records()[0].id)
    seen = []
    monkeypatch.setattr(harness.analysis.ablate, "ablate", lambda rec, ctx, trust_remote_code=False: seen.append(
        trust_remote_code) or {"num_layers": 1, "baseline": 60.0, "recorded_score": 60.0, "task": "rte",
                               "method_label": rec.method_label, "spans": [[0, 0, 50.0]]})
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    bare = run_cli("ablate", run_id, "--db", url, "--trust-remote-code", cwd=tmp_path)
    assert bare.returncode == 2 and seen == [], bare.stderr
    assert_refused(call_cli("ablate", run_id, "--db", url, "--trust-remote-code", "otherorg/model"),
                   "--trust-remote-code otherorg/model: no run given is of this model")
    assert seen == []
    assert call_cli("ablate", run_id, "--db", url).returncode == 0
    assert call_cli("ablate", run_id, "--db", url, "--trust-remote-code", "someorg/remote-model").returncode == 0
    assert seen == [False, True]
    from harness.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["ablate"].format_help()
    assert "--trust-remote-code MODEL" in text and "never trusted" in " ".join(text.split())


def test_a_reader_that_goes_away_ends_a_command_quietly():
    """`harness validate suites/demo.yaml | head -1`: the reader closed the pipe; the command stops without a
    traceback, with the shell's exit status for a closed pipe (141), as `ls | head -1` does."""
    read_end, write_end = os.pipe()
    os.close(read_end)   # gone before the first byte: every write to the pipe fails (EPIPE)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness", "validate", str(ROOT / "suites" / "demo.yaml")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == 141


def _help_examples():
    """(subcommand, argv after `harness`) of every line of every subcommand's --help examples: the trailing
    "(...)" note and leading VAR=value settings dropped; `accelerate launch` lines left to the docs test."""
    import re
    import shlex

    from harness.cli import SUBCOMMANDS

    for name, module in SUBCOMMANDS.items():
        for line in module.EXAMPLES.strip().splitlines():
            words = shlex.split(re.sub(r"\s{2,}\(.*\)\s*$", "", line.strip()))
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)
            if words[0] == "harness":
                yield name, words[1:]


def test_every_subcommand_that_reads_a_suite_takes_max_cells():
    """The cap's refusal says "--max-cells N allows it" on whichever command loaded the suite: slurm and prefetch
    had no such option (unrecognized arguments), so a grid above the cap could not be submitted or prefetched."""
    from harness.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    reading = {name for name, p in subparsers.items() if any(a.dest == "suite" and not a.option_strings
                                                            for a in p._actions)}   # a suite YAML
    assert reading >= {"validate", "run", "slurm", "prefetch"}
    assert sorted(n for n in reading if "--max-cells" not in subparsers[n]._option_string_actions) == []


def test_every_help_example_parses_and_the_offline_ones_run(monkeypatch):
    """Each subcommand's --help examples: its options exist and their values parse, the suite files they name are
    the checkout's; those that need no store, data or network (ls, params) run and exit 0."""
    from harness.cli import build_parser

    from harness.plan.suite import load_suite

    examples = list(_help_examples())
    assert {name for name, _ in examples} >= {"ls", "params", "validate", "ablate", "run"}
    for name, argv in examples:
        args = build_parser().parse_args(argv)
        assert args.command == name, argv
        assert all((ROOT / a).is_file() for a in argv if a.endswith(".yaml")), argv
        # a shipped suite named by --suite has the task and the method variants named with it (compare's
        # examples asked the demo suite for rte and bitfit, which it never trains: "no completed runs")
        shipped = ROOT / "suites" / f"{getattr(args, 'suite', None)}.yaml"
        if getattr(args, "task", None) and shipped.is_file():
            cells = [c for c in load_suite(str(shipped)).cells() if c.task == args.task]
            assert cells, (argv, f"{shipped.name} has no task {args.task}")
            labels = {c.method_label for c in cells}
            assert {args.a, args.b} - {None} <= labels, (argv, sorted(labels))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")   # params reads bert-base-uncased's config from those it knows
    for name, argv in examples:
        if name in ("ls", "params"):
            proc = run_cli(*argv, cwd=ROOT)
            assert proc.returncode == 0 and proc.stderr == "", (argv, proc.stderr[-2000:])
            assert proc.stdout.count("\n") > 3, (argv, proc.stdout)


def test_a_model_config_nested_too_deep_is_refused_in_one_line(tmp_path):
    """A config.json nested past the JSON decoder's recursion limit was a RecursionError traceback (exit 1)."""
    from tests.helpers import call_cli

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("[" * 100000)
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmodels: [./m]\ntasks: [rte]\nmethods: [full]\n")
    assert_refused(call_cli("validate", suite), 'model "./m": its config.json cannot be read', where=suite)
