"""`harness prefetch --check`: offline, it says what a suite needs and what the caches lack (exit 1)."""

from tests.helpers import run_cli, write_suite


def test_check_counts_the_embedded_model_and_local_data_as_present(tmp_path, glue_dir):
    suite = write_suite(tmp_path / "s.yaml", "name: p\nmodels: [minilm]\ntasks: [rte, squad]\nmethods: [full]\n")
    proc = run_cli("prefetch", suite, "--check", "--data-dir", glue_dir, cwd=tmp_path,
                   env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MISSING" not in proc.stdout and "minilm" in proc.stdout and "squad" in proc.stdout


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
