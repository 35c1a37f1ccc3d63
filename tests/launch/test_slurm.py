"""`harness slurm` on a real single-node Slurm cluster started by the tests (slurmctld + slurmd + munged): an array
of workers on one store trains every cell exactly once; a worker preempted mid-cell (scancel --signal=USR2
--full) checkpoints, requeues itself and resumes the cell with the uninterrupted metric. Plus the templates."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import ROOT, assert_refused, call_cli, run_cli, suite_yaml, write_suite
from harness.launch.slurm import SQUEUE_TRIES
from harness.spec.errors import EXIT_SLURM_UNREACHABLE
from harness.store.db import Store
from harness.train import checkpoint
from tests.helpers.slurm_cluster import SlurmCluster, missing_binaries

CLAIM = re.compile(r"cell ([0-9a-f]{16}): .*\(attempt (\d+)")
RESUMED = re.compile(r"resumed from its checkpoint at step (\d+)/(\d+)")


@pytest.fixture(scope="session")
def slurm():
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm/munge binaries not installed ({', '.join(missing)}): apt-get install slurm-wlm munge "
                    f"(.ci/run does)")
    cluster = SlurmCluster(cpus=2).start()
    yield cluster
    cluster.stop()


def suite_text(model, name, methods="[full, {name: houlsby, size: 4, learning_rate: 1e-3}, bitfit]",
               tasks="[rte, stsb]", budget="{epochs: 1}", hparams="batch_size: 8, learning_rate: 1e-4"):
    return suite_yaml(model, name, methods, tasks, budget, hparams)


def _logs(out: Path) -> str:
    return "".join(p.read_text() for p in sorted((out / "slurm-logs").glob("*.out")))


def _slurm_cli(slurm, *args, timeout=900):
    env = {"SLURM_CONF": str(slurm.conf), "HARNESS_SLURM_POLL_S": "1", "HARNESS_HEARTBEAT_S": "2",
           "HARNESS_LEASE_TIMEOUT_S": "30"}
    return run_cli("slurm", *args, env=env, timeout=timeout)


# --- templates (no cluster needed) ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, template, must", [
    ([], "array", ["#SBATCH --array=0-2", "#SBATCH --gpus-per-node=1", "--num_processes 1 --num_machines 1"]),
    (["--gpus-per-worker", "4"], "multi-GPU", ["--multi_gpu --num_processes 4", "#SBATCH --gpus-per-node=4"]),
    (["--gpus-per-worker", "4", "--nodes-per-worker", "2"], "multi-node",
     ["#SBATCH --nodes=2", "--num_machines 2 --num_processes 8 --machine_rank \"$SLURM_NODEID\"",
      "--rdzv_backend c10d", "bash -c '"]),
])
def test_dry_run_prints_the_filled_template(tmp_path, tiny_bert, flags, template, must):
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    r = run_cli("slurm", suite, "--workers", "3", "--time", "01:00:00", "--partition", "gpu", "--db",
                "sqlite:///rel.db", "--sbatch-arg=--mem=16G", "--dry-run", *flags, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    from harness.launch.slurm import WARNING_S

    for line in [f"#SBATCH --signal=USR2@{WARNING_S}", "#SBATCH --requeue", "#SBATCH --time=01:00:00",
                 "#SBATCH --partition=gpu", "#SBATCH --mem=16G", "-m harness.launch.relay", "-m harness.run ",
                 f"export HARNESS_DB=sqlite:///{tmp_path}/rel.db", "%x-%A_%a.out", "HARNESS_SLURM_REQUEUE=1", *must]:
        assert line in text, (line, text)
    assert "{{" not in text and "B:USR2" not in text
    assert not (tmp_path / "results").exists(), "a dry run writes nothing"


def test_the_warning_time_is_one_constant(tmp_path, tiny_bert, monkeypatch):
    """WARNING_S is the stop signal's warning: the `--time` help and the script's comment said "90 s" as written
    text, so a new WARNING_S would leave them telling the old one. Both now say the constant's value."""
    import argparse

    from harness.cli import slurm as cli_slurm
    from harness.launch import slurm as launch

    monkeypatch.setattr(launch, "WARNING_S", 123)
    parser = argparse.ArgumentParser()
    cli_slurm.add_arguments(parser)
    assert "SIGUSR2 123 s before it" in " ".join(parser.format_help().split())
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    text = launch.render(launch.SlurmRequest(str(suite), "s", 1, db=f"sqlite:///{tmp_path}/x.db"))
    assert "#SBATCH --signal=USR2@123\n" in text and "the warning signal 123 s before" in text, text
    assert not re.search(r"\b90 s\b", text), text


def test_bad_flags_exit_2(tmp_path, tiny_bert):
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    (tmp_path / "typo.yaml").write_text("distributed_type: MULTI_GPU\nmixed_precison: bf16\n")
    (tmp_path / "nodist.yaml").write_text("mixed_precision: bf16\n")
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "twice.yaml").write_text("distributed_type: MULTI_GPU\nmixed_precision: bf16\nmixed_precision: 'no'\n")
    for flags, field in ((["--workers", "0"], "--workers"), (["--workers", "2", "--time", "soon"], "--time"),
                         (["--workers", "7"], "--workers: 7 workers, but suite s has 6 cell(s)"),
                         (["--workers", "2", "--accelerate-config", "nope.yaml"],
                          "--accelerate-config: no such file: nope.yaml"),
                         # a folder is there, but is no config file: said so, not "no such file"
                         (["--workers", "2", "--accelerate-config", str(tmp_path)],
                          f"--accelerate-config: a folder, not a config file: {tmp_path}"),
                         # settings `accelerate launch` refuses in every array task: printed, exit 0
                         (["--workers", "1", "--accelerate-config", "typo.yaml"],
                          'typo.yaml: mixed_precison: not an accelerate setting (did you mean "mixed_precision"?)'),
                         (["--workers", "1", "--accelerate-config", "nodist.yaml"],
                          "nodist.yaml: accelerate refuses it: A `distributed_type` must be specified"),
                         (["--workers", "1", "--accelerate-config", "twice.yaml"],
                          "twice.yaml:3: mixed_precision: duplicate key (first at line 2)"),
                         (["--workers", "1", "--accelerate-config", "deep.yaml"],   # was a RecursionError
                          "deep.yaml: nested too deep to be accelerate settings")):
        assert_refused(run_cli("slurm", suite, *flags, "--dry-run", cwd=tmp_path), field)


def test_a_config_that_overrides_a_merged_key_is_no_duplicate(tmp_path, tiny_bert):
    """A YAML merge (`<<:`) and a key that overrides one it brings is YAML, not a key given twice. The config is
    parsed once: building its value rewrites the node tree in place (the merged keys put beside the given ones),
    so the duplicate-key check must read the tree before that; after it, this read "zero_stage: duplicate key"."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    (tmp_path / "merged.yaml").write_text("distributed_type: DEEPSPEED\ndeepspeed_config:\n"
                                          "  <<: {zero_stage: 2, offload_optimizer_device: none}\n  zero_stage: 3\n")
    r = call_cli("slurm", suite, "--workers", "1", "--dry-run", "--accelerate-config", tmp_path / "merged.yaml")
    assert r.returncode == 0 and f"--config_file {tmp_path / 'merged.yaml'}" in r.stdout, r.stderr


def test_deepspeed_config_drops_multi_gpu(tmp_path, tiny_bert):
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    shipped = ROOT / "harness" / "launch" / "templates" / "deepspeed_zero3.yaml"
    for config in (shipped, "deepspeed_zero3"):   # a file, or a config shipped in the package by name
        r = run_cli("slurm", suite, "--workers", "2", "--gpus-per-worker", "2", "--dry-run", "--accelerate-config",
                    config, cwd=tmp_path)
        assert r.returncode == 0 and f"--config_file {shipped}" in r.stdout, r.stderr
        assert "--multi_gpu --num_processes" not in r.stdout and "\"${LAUNCH[@]}\" --num_processes 2" in r.stdout


SECRET = "s3cr3t-pw"


def _bash_n(text: str, tmp_path: Path) -> None:
    """A real syntax check of a generated script."""
    import subprocess

    script = tmp_path / "check.sbatch"
    script.write_text(text)
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, (done.stderr, text)


@pytest.mark.parametrize("flags", [[], ["--gpus-per-worker", "2"], ["--gpus-per-worker", "2", "--nodes-per-worker", "2"]])
def test_dry_run_never_writes_the_store_password(tmp_path, tiny_bert, flags, monkeypatch):
    """A password in --db or $HARNESS_DB never reaches the script: the script takes $HARNESS_DB from the
    environment sbatch is called from (or the URL without its password, for PGPASSFILE / PGPASSWORD)."""
    import subprocess

    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    url = f"postgresql+psycopg://alice:{SECRET}@db.example:5432/harness"
    for how in (["--db", url], [f"--db={url}"], []):
        env = {} if how else {"HARNESS_DB": url}
        r = run_cli("slurm", suite, "--workers", "2", *how, "--dry-run", *flags, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        assert SECRET not in r.stdout + r.stderr, r.stdout
        _bash_n(r.stdout, tmp_path)
        # the HARNESS_DB lines, run by bash: the submitting environment's URL wins, else the URL without password
        lines = "\n".join(line for line in r.stdout.splitlines() if "HARNESS_DB" in line and not line.startswith("#"))
        for given, expect in ((url, url), ("", "postgresql+psycopg://alice@db.example:5432/harness")):
            done = subprocess.run(["bash", "-c", lines + '\nprintf %s "$HARNESS_DB"'], capture_output=True,
                                  text=True, env={"PATH": "/usr/bin:/bin", "HARNESS_DB": given})
            assert done.stdout == expect, (done.stdout, done.stderr, lines)


@pytest.mark.parametrize("flags", [[], ["--gpus-per-worker", "2"], ["--gpus-per-worker", "2", "--nodes-per-worker", "2"]])
def test_a_script_given_another_store_stops_in_one_line(tmp_path, tiny_bert, flags, monkeypatch):
    """A script for a store URL with a password takes $HARNESS_DB from the submitting environment: one naming
    another store (another host, port, database or user) was used as it was, and the workers filled that store.
    The script checks it names the store it was written for (not the password, not the driver) and stops the task
    in one line (exit 2) before anything is launched; the same store with its password, or no $HARNESS_DB, runs."""
    import subprocess

    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    env = _fake_launchers(tmp_path, tmp_path / "python", monkeypatch)
    monkeypatch.chdir(tmp_path)
    r = call_cli("slurm", suite, "--workers", "1", "--db", f"postgresql+psycopg://alice:{SECRET}@db.example/h",
                 "--dry-run", *flags)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "job.sbatch"
    script.write_text(r.stdout)
    for other in ("bob@db.example/h", "alice@db2.example/h", "alice@db.example:5433/h", "alice@db.example/h2"):
        url = f"postgresql+psycopg://{other.replace('@', f':{SECRET}@')}"
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={**env, "HARNESS_DB": url},
                              cwd=tmp_path, timeout=60)
        assert done.returncode == 2 and done.stdout == "", (url, done.returncode, done.stdout, done.stderr)
        assert done.stderr.startswith("error: $HARNESS_DB names the store ") and done.stderr.count("\n") == 1, (
            done.stderr)
        assert "written for postgresql+psycopg://alice@db.example/h (" in done.stderr and SECRET not in done.stderr
        assert not (tmp_path / "argv").exists(), "nothing launched"
    for given, expect in (("postgresql://alice:other-pw@DB.example:5432/h", None),
                          (None, "postgresql+psycopg://alice@db.example/h")):
        argv = _launched_argv(r.stdout, tmp_path, {**env, **({"HARNESS_DB": given} if given else {})})
        assert "harness.run" in argv and _launched_env(tmp_path)["HARNESS_DB"] == (expect or given)
        (tmp_path / "argv").unlink()


@pytest.mark.parametrize("given, written, same", [
    ("postgresql://alice@/harness?host=db1.example", "postgresql://alice@/harness?host=db2.example", False),
    ("postgresql://alice@/harness?host=/run/a", "postgresql://alice@/harness?host=/run/b", False),
    ("postgresql://alice@/harness?host=db1&port=5433", "postgresql://alice@/harness?host=db1&port=5434", False),
    ("postgresql://alice@db1/harness?port=5433", "postgresql://alice@db1/harness", False),
    ("postgresql://alice:pw@db1/harness", "postgresql+psycopg://alice@/harness?host=DB1&port=5432", True),
    ("postgresql://alice@/harness?host=/run/a/", "postgresql://alice@/harness?host=/run/a", True),
])
def test_the_same_store_check_reads_host_and_port_from_the_query_too(given, written, same):
    """Host and port given in the URL's query (`?host=db1`, a unix socket folder, `&port=5433`) name the store as
    the netloc's do: two hosts, two socket folders or two ports there were taken for one store, and the task ran
    against another; the same host written either way is the same store."""
    from harness.launch.slurm import other_store

    why = other_store(given, written)
    assert (why is None) == same, why
    if not same:
        assert why.startswith("$HARNESS_DB names the store ") and "\n" not in why


def _fake_slurm(tmp_path: Path, monkeypatch=None, **commands: str) -> Path:
    """Fake Slurm commands (name: bash body after the shebang) in tmp_path/bin; with monkeypatch, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in commands.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}")
        (bin_dir / name).chmod(0o755)
    if monkeypatch is not None:
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_submit_hands_the_url_to_sbatch_in_its_environment(tmp_path, tiny_bert):
    """Not in the script, yet the job gets it: sbatch (here a fake one) is called with HARNESS_DB set."""
    import os

    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    bin_dir = _fake_slurm(tmp_path, sbatch='printf %s "$HARNESS_DB" > "$SEEN"\necho 42\n')
    url = f"postgresql+psycopg://alice:{SECRET}@db.example/harness"
    r = run_cli("slurm", suite, "--workers", "1", "--db", url, "--output-dir", tmp_path / "out", cwd=tmp_path,
                env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SEEN": str(tmp_path / "seen")})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "seen").read_text() == url
    assert SECRET not in r.stdout + r.stderr
    scripts = list((tmp_path / "out").rglob("*.sbatch"))
    assert len(scripts) == 1 and SECRET not in scripts[0].read_text()


@pytest.mark.parametrize("flag, value, option", [
    ("--partition", "gpu\n#SBATCH --wrap=id", "--partition"),
    ("--partition", "gpu --exclusive", "--partition"),
    ("--sbatch-arg", "--mem=1G\nrm -rf ~", "--sbatch-arg"),
    ("--sbatch-arg", "mem=1G", "--sbatch-arg"), ("--sbatch-arg", '--comment=a"b', "--sbatch-arg"),
    # what the script sets itself: sbatch takes the last line, so these overrode it (a real sbatch ran 5 array
    # tasks for --workers 2 with --sbatch-arg=--array=0-4, and a 20-minute limit for --time 10:00)
    ("--sbatch-arg", "--array=0-4", "--sbatch-arg: '--array=0-4' sets --array, which the script sets itself"),
    ("--sbatch-arg", "-a 0-4", "--sbatch-arg: '-a 0-4' sets --array"), ("--sbatch-arg", "--arr=0-4", "--array"),
    ("--sbatch-arg", "--time=20:00", "use --time"), ("--sbatch-arg", "-t20", "use --time"),
    ("--sbatch-arg", "--partition=gpu", "use --partition"), ("--sbatch-arg", "--no-requeue", "--no-requeue"),
    ("--sbatch-arg", "--signal=B:USR2@60", "--signal"), ("--sbatch-arg", "--output=x.log", "--output"),
    ("--sbatch-arg", "--open-mode=truncate", "--open-mode"), ("--sbatch-arg", "-J x", "--job-name"),
    ("--sbatch-arg", "--gpus-per-node=2", "use --gpus-per-worker"), ("--sbatch-arg", "-N 2", "--nodes-per-worker"),
    ("--output-dir", "out\nid > /tmp/x", "--output-dir"),
    ("--time", "01:00:00\nid", "--time"),
    ("--time", "04:75:00", "--time"), ("--time", "1-25", "--time"), ("--time", "soon", "--time"),
    ("--time", "1:2:3:4", "--time"),
    # the stop signal comes WARNING_S (90) s before the limit, up to SIGNAL_SLACK_S (60) s earlier: with --time 1
    # the test cluster signalled the task 30 s after it started, and it requeued itself; a cell longer than that
    # would never finish
    ("--time", "1", "--time: 1 (60 s) leaves no time to train"), ("--time", "2:30", "(150 s) leaves no time"),
    ("--time", "0-0:02", "(120 s)"),
    ("--db", "sqlite://", "--db"), ("--db", "sqlite:///:memory:", "--db"), ("--db", "nosuchdb://u@h/x", "--db"),
    # a script sbatch refuses (22.05: "Invalid Trackable RESource (TRES) specification", "is not a valid node
    # count"), printed with exit 0: at most MAX_PROCESSES per worker, the count a run's row records
    ("--gpus-per-worker", str(10 ** 20), "--gpus-per-worker: 100000000000000000000 GPU(s) x 1 node(s) is "
                                         "100000000000000000000 processes per worker; at most 2147483647"),
    ("--nodes-per-worker", str(2 ** 31), "--nodes-per-worker: 1 GPU(s) x 2147483648 node(s)"),
    # sbatch keeps %3 for an array of 2 and it limits nothing
    ("--throttle", "3", "--throttle: 3 above --workers 2: an array of 2 task(s) never runs more than 2 at once"),
])
def test_bad_script_values_are_refused_and_nothing_is_written(tmp_path, tiny_bert, flag, value, option):
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    out = tmp_path / "results"
    args = ["--output-dir", out] if flag != "--output-dir" else []
    for dry in (["--dry-run"], []):
        r = call_cli("slurm", suite, "--workers", "2", f"{flag}={value}", *args, *dry)
        assert_refused(r, option)
    assert not out.exists() and not (tmp_path / value.split("\n")[0]).exists(), "nothing written"


@pytest.mark.parametrize("what", ["--data-dir", "$HARNESS_DATA_DIR", "--db", "--accelerate-config",
                                  "$HARNESS_HEARTBEAT_S", "$HARNESS_FINISH_TRIES", "$HARNESS_PEAK_FLOPS",
                                  "$HARNESS_WORKERS"])
def test_input_every_array_task_would_fail_on_is_refused_before_the_script(tmp_path, tiny_bert, what, monkeypatch):
    """A data folder that is not there, an SQLite file that is not a database, an accelerate config that does not
    parse, a variable every task's `harness run` refuses (the tasks inherit the environment: sbatch --export=ALL):
    the script was printed (exit 0) or submitted, and every array task failed on it. (A server database is still
    left to the tasks: a login node may not reach it.) sbatch here is a fake that says if it was called."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    (tmp_path / "text.db").write_text("these are my notes, not a database\n")
    (tmp_path / "bad.yaml").write_text("compute_environment: [LOCAL_MACHINE\n")
    _fake_slurm(tmp_path, monkeypatch, sbatch='touch "$SUBMITTED"\necho 42\n')
    monkeypatch.setenv("SUBMITTED", str(tmp_path / "submitted"))
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    missing = tmp_path / "nothing"
    flags, expect = {
        "--data-dir": (["--data-dir", missing], f"--data-dir: data directory {missing} does not exist"),
        "$HARNESS_DATA_DIR": ([], f"$HARNESS_DATA_DIR: data directory {missing} does not exist"),
        "--db": (["--db", f"sqlite:///{tmp_path / 'text.db'}"], "file is not a database"),
        "--accelerate-config": (["--accelerate-config", tmp_path / "bad.yaml"],
                                f"--accelerate-config: {tmp_path / 'bad.yaml'}:2: not YAML"),
        "$HARNESS_HEARTBEAT_S": ([], "must be a positive number of seconds, not nan"),
        "$HARNESS_FINISH_TRIES": ([], "not a whole number: 'nan'"),
        "$HARNESS_PEAK_FLOPS": ([], "the peak must be a positive number of FLOP/s"),
        "$HARNESS_WORKERS": ([], "not a whole number: 'nan'"),
    }[what]
    if what == "$HARNESS_DATA_DIR":
        monkeypatch.setenv("HARNESS_DATA_DIR", str(missing))
    elif what.startswith("$"):
        monkeypatch.setenv(what[1:], "nan")
    out = tmp_path / "results"
    for dry in (["--dry-run"], []):
        r = call_cli("slurm", suite, "--workers", "1", "--output-dir", out, *flags, *dry)
        assert_refused(r, expect, where=what)
    assert not out.exists() and not (tmp_path / "submitted").exists(), "nothing written, nothing submitted"


@pytest.mark.parametrize("value, expect", [
    ("abc", "not a number of seconds: 'abc'"), ("nan", "must be a non-negative number of seconds, not nan"),
    ("-1", "must be a non-negative number of seconds, not -1.0"), ("1e20", "must be at most 31536000 seconds"),
    ("0", "must be at least 1 s (each poll is a squeue call to the Slurm controller), not 0"),
    ("0.5", "must be at least 1 s (each poll is a squeue call to the Slurm controller), not 0.5"),
])
def test_a_poll_interval_slurm_wait_cannot_sleep_is_refused_before_submitting(tmp_path, tiny_bert, value, expect,
                                                                              monkeypatch):
    """$HARNESS_SLURM_POLL_S was read bare once the job was submitted: 'abc' a traceback then, and nan, -1 or 1e20
    time.sleep's traceback at the first poll (here a failing squeue), the job left running. 0 polled squeue in a
    busy loop (4,488 calls of a fake squeue in 5 s): a floor of MIN_POLL_S."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s", "[bitfit]", "[rte]"))
    _fake_slurm(tmp_path, monkeypatch, sbatch='touch "$SUBMITTED"\necho 42\n',
                squeue="echo 'squeue: error: Unable to contact slurm controller' >&2\nexit 1\n")
    monkeypatch.setenv("SUBMITTED", str(tmp_path / "submitted"))
    monkeypatch.setenv("HARNESS_SLURM_POLL_S", value)
    out = tmp_path / "results"
    r = call_cli("slurm", suite, "--workers", "1", "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", out,
                 "--wait")
    assert_refused(r, expect, where="$HARNESS_SLURM_POLL_S")
    assert not out.exists() and not (tmp_path / "submitted").exists(), "nothing written, nothing submitted"


def test_an_output_dir_of_another_store_is_refused_on_a_dry_run_too(tmp_path, tiny_bert):
    """The submit path refused a folder holding another store's runs, but --dry-run printed the script (exit 0),
    the docs' way to edit it and sbatch it by hand, and every array task then failed on that folder."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    out = tmp_path / "results"
    out.mkdir()
    mark = out / ".harness-store.json"
    mark.write_text('{"store_id": "0123456789abcdef", "db": "sqlite:////elsewhere/h.db"}')
    for dry in (["--dry-run"], []):
        r = call_cli("slurm", suite, "--workers", "1", "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", out,
                     *dry)
        assert_refused(r, f"--output-dir: {out} holds the runs of another store")
    assert [p.name for p in out.iterdir()] == [mark.name] and not (tmp_path / "h.db").exists(), "nothing written"


def test_without_sbatch_no_script_is_left_behind(tmp_path, tiny_bert):
    """`sbatch: not found` came after the script and the log folder were written."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    r = run_cli("slurm", suite, "--workers", "1", "--output-dir", tmp_path / "results",
                env={"PATH": os.path.dirname(sys.executable)})
    assert_refused(r, "sbatch: not found")
    assert not (tmp_path / "results").exists()


def test_without_sbatch_no_folder_is_made_in_the_output_folder(tmp_path, tiny_bert, monkeypatch):
    """The script's and the logs' folders were made, then removed again when sbatch was not found: a worker
    writing into the same output folder (its makedirs done, its file not yet) lost the folder. Now sbatch is
    looked for first and nothing is made (the --output-dir check's probe folder aside: its own unique name)."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    made = []
    real_makedirs, real_mkdir = os.makedirs, os.mkdir
    monkeypatch.setattr(os, "makedirs", lambda path, *a, **k: made.append(str(path)) or real_makedirs(path, *a, **k))
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: made.append(str(path)) or real_mkdir(path, *a, **k))
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    assert_refused(call_cli("slurm", suite, "--workers", "1", "--output-dir", tmp_path / "results"),
                   "sbatch: not found")
    assert [p for p in made if ".harness-probe-" not in p] == []


def test_a_job_sbatch_refuses_is_one_line_and_leaves_no_script_behind(tmp_path, tiny_bert, slurm):
    """A real sbatch refusing the job (a partition the cluster does not have) was a 16-line traceback (exit 1),
    with the script and the log folder left in the output folder."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    (tmp_path / "results").mkdir()   # the user's folder stays; what the command made in it goes
    r = _slurm_cli(slurm, suite, "--workers", "1", "--gpus-per-worker", "0", "--partition", "nosuch",
                   "--output-dir", tmp_path / "results",
                   "--db", f"sqlite:///{tmp_path / 'h.db'}")
    line = assert_refused(r, "sbatch: refused the job: ")
    assert "partition" in line.lower(), line
    assert list((tmp_path / "results").iterdir()) == []


def test_a_percent_sign_in_the_output_folder_stays_in_the_log_path(tmp_path, tiny_bert, slurm):
    """sbatch expands %x, %j, %A, ... anywhere in --output, the folder included: an output folder named
    "run 50%x done" sent every task's log to "run 50harness-a done/slurm-logs/...", a folder nobody made, so
    the task could not open its log. The task's log is where the harness said, and nothing else was made."""
    suite = write_suite(tmp_path / "a.yaml", suite_text(tiny_bert, "a"))
    out = tmp_path / "run 50%x 100%% done"
    r = _slurm_cli(slurm, suite, "--workers", "1", "--gpus-per-worker", "0", "--output-dir", out,
                   "--db", f"sqlite:///{tmp_path / 'h.db'}")
    assert r.returncode == 0, r.stderr
    job = re.search(r"submitted job (\d+)", r.stdout).group(1)
    log = out / "slurm-logs" / f"harness-a-{job}_0.out"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not log.exists():   # slurmstepd opens it as the task starts
            time.sleep(0.5)
    finally:
        slurm.run("scancel", "--full", job)
    assert log.exists(), (slurm.run("scontrol", "show", "job", job).stdout, list(tmp_path.iterdir()))
    assert [p for p in tmp_path.iterdir() if p.name.startswith("run ")] == [out], "no folder of its own for the log"


def test_sbatch_args_the_script_does_not_set_are_passed_on(tmp_path, tiny_bert):
    """Real sbatch options that merely begin like one the script sets (--gpus, --ntasks, --time-min) stay."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    args = ["--gpus=1", "--ntasks=1", "--time-min=30", "--account=abc", "--cpus-per-task=4", "--nodelist=n1",
            "-A abc", "--mem=16G"]
    r = call_cli("slurm", suite, "--workers", "1", *(f"--sbatch-arg={a}" for a in args), "--dry-run")
    assert r.returncode == 0, r.stderr
    for a in args:
        assert f"#SBATCH {a}\n" in r.stdout or f'#SBATCH "{a}"\n' in r.stdout, (a, r.stdout)


@pytest.mark.parametrize("value", ["90", "10:30", "2:31", "04:00:00", "1-12", "1-12:30", "2-00:00:00", "UNLIMITED",
                                   "0"])
def test_slurm_time_formats_are_accepted(tmp_path, tiny_bert, value):
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    r = call_cli("slurm", suite, "--workers", "1", "--time", value, "--dry-run")
    assert r.returncode == 0 and f"#SBATCH --time={value}" in r.stdout, r.stderr


def _fake_launchers(tmp_path: Path, python: Path, monkeypatch) -> dict:
    """A fake Python at `python` (prints its argv, NUL-separated, into $ARGV_OUT, and its environment into
    $ARGV_OUT.env; the scripts' store check it hands to the real Python) made sys.executable, and a fake srun (its
    argv into $ARGV_OUT.srun; runs its command) and scontrol on PATH: the environment to run a generated script in
    with bash."""
    import shlex

    real = f"PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(sys.executable)}"
    python.write_text(f'#!/bin/bash\nif [ "$2" = harness.launch.slurm ]; then exec env {real} "$@"; fi\n'
                      'printf "%s\\0" "$@" > "$ARGV_OUT"\nenv -0 > "$ARGV_OUT.env"\n')
    python.chmod(0o755)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$ARGV_OUT.srun"\n'
                                   'while [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (fake_bin / "scontrol").write_text("#!/bin/bash\necho node1\n")
    for f in fake_bin.iterdir():
        f.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "ARGV_OUT": str(tmp_path / "argv")}
    env.pop("HARNESS_DB", None)
    return env


def _launched_argv(script_text: str, tmp_path: Path, env: dict) -> list[str]:
    """The generated script run by bash with the fake launchers: the argv the (fake) Python got."""
    import subprocess

    _bash_n(script_text, tmp_path)
    script = tmp_path / "job.sbatch"
    script.write_text(script_text)
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    return (tmp_path / "argv").read_text().split("\0")[:-1]


TEMPLATE_FLAGS = [[], ["--gpus-per-worker", "2"], ["--gpus-per-worker", "2", "--nodes-per-worker", "2"]]


@pytest.mark.parametrize("flags", TEMPLATE_FLAGS)
def test_launch_line_keeps_every_value_one_argument(tmp_path, tiny_bert, flags, monkeypatch):
    """The generated script run by bash, with a fake srun (runs its command) and a fake Python at a path with
    spaces and $(...) (prints its argv): the config file, suite, output folder and Python path each arrive as one
    argument, and no $(...) inside them runs."""
    odd = tmp_path / "a b $(touch PWNED) 'q'"
    odd.mkdir()
    suite = write_suite(odd / "s.yaml", suite_text(tiny_bert, "s"))
    config = odd / "cfg $(touch PWNED).yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\n")
    python = odd / "python"
    env = _fake_launchers(tmp_path, python, monkeypatch)
    monkeypatch.chdir(odd)
    out = odd / "out $(touch PWNED)"
    r = call_cli("slurm", suite, "--workers", "1", "--output-dir", out, "--accelerate-config", config,
                 "--retry-failed", "--dry-run", *flags)
    assert r.returncode == 0, r.stderr
    argv = _launched_argv(r.stdout, tmp_path, env)
    assert argv[:3] == ["-m", "harness.launch.relay", str(python)], argv
    assert argv[argv.index("--config_file") + 1] == str(config)
    assert argv[argv.index("harness.run") + 1] == str(suite)
    assert argv[argv.index("--output-dir") + 1] == str(out)
    assert argv[-2:] == ["--no-progress", "--retry-failed"]
    logs = next(line for line in r.stdout.splitlines() if line.startswith("#SBATCH --output="))
    assert logs == f'#SBATCH --output="{out}/slurm-logs/%x-%A_%a.out"'   # sbatch takes double quotes only
    assert not list(tmp_path.rglob("PWNED")), "a $(...) inside a value ran"


def test_max_cells_is_taken_and_handed_to_every_worker(tmp_path, tiny_bert, monkeypatch):
    """A grid above the cap was refused with "--max-cells N allows it", an option `harness slurm` did not have
    (unrecognized arguments): a grid of over 10,000 cells could not be submitted at all. It takes --max-cells, and
    the workers it starts get it too (they load the suite again)."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))   # 6 cells
    monkeypatch.chdir(tmp_path)
    assert_refused(call_cli("slurm", suite, "--workers", "1", "--max-cells", "5", "--dry-run"),
                   "more than the cap of 5", where=suite)
    env = _fake_launchers(tmp_path, tmp_path / "python", monkeypatch)
    r = call_cli("slurm", suite, "--workers", "1", "--max-cells", "6", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert _launched_argv(r.stdout, tmp_path, env)[-3:] == ["--no-progress", "--max-cells", "6"]
    r = call_cli("slurm", suite, "--workers", "1", "--dry-run")
    assert "--max-cells" not in r.stdout   # the default: the script as before


@pytest.mark.parametrize("flags", TEMPLATE_FLAGS)
def test_data_dir_reaches_the_workers_over_the_suites_own(tmp_path, tiny_bert, small_glue, flags, monkeypatch):
    """`harness slurm --data-dir D` on a suite whose YAML says data_dir: the login node checked D, but the script
    exported D as $HARNESS_DATA_DIR, which the suite's data_dir outranks: every worker read the suite's folder
    (other data, or none: every task failed). The workers get --data-dir D, as `harness run --data-dir D` would."""
    from harness.plan.suite import load_suite

    (tmp_path / "other-glue").mkdir()
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s") + "data_dir: other-glue\n")
    env = _fake_launchers(tmp_path, tmp_path / "python", monkeypatch)
    monkeypatch.chdir(tmp_path)
    r = call_cli("slurm", suite, "--workers", "1", "--data-dir", small_glue, "--dry-run", *flags)
    assert r.returncode == 0, r.stderr
    argv = _launched_argv(r.stdout, tmp_path, env)
    run_args = argv[argv.index("harness.run") + 1:]
    assert run_args[run_args.index("--data-dir") + 1] == str(small_glue), argv
    # what the worker then reads: the option outranks the suite's data_dir and any $HARNESS_DATA_DIR
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "other-glue"))
    assert load_suite(str(suite)).data(run_args[run_args.index("--data-dir") + 1]).path == str(small_glue)


@pytest.mark.parametrize("flags, threads", zip(TEMPLATE_FLAGS, ("4", "2", "2")))
def test_the_cpus_of_the_task_reach_srun_and_the_threads(tmp_path, tiny_bert, flags, threads, monkeypatch):
    """Slurm 22.05 and later: srun no longer takes --cpus-per-task from sbatch, and accelerate sets one thread
    unless told: with --sbatch-arg=--cpus-per-task=4 a worker trained with one thread (on one CPU where Slurm binds
    CPUs). The srun line gets the task's CPUs, and accelerate the threads of each of its ranks on the node (4 CPUs,
    2 GPUs: 2 each); without --cpus-per-task neither is given (Slurm's and accelerate's defaults)."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    env = _fake_launchers(tmp_path, tmp_path / "python", monkeypatch)
    monkeypatch.chdir(tmp_path)
    r = call_cli("slurm", suite, "--workers", "1", "--sbatch-arg=--cpus-per-task=4", "--dry-run", *flags)
    assert r.returncode == 0, r.stderr
    argv = _launched_argv(r.stdout, tmp_path, {**env, "SLURM_CPUS_PER_TASK": "4"})   # what sbatch sets
    assert "--cpus-per-task=4" in _srun_options(tmp_path)
    assert argv[argv.index("--num_cpu_threads_per_process") + 1] == threads, argv
    r = call_cli("slurm", suite, "--workers", "1", "--dry-run", *flags)
    assert r.returncode == 0, r.stderr
    env.pop("SLURM_CPUS_PER_TASK", None)
    argv = _launched_argv(r.stdout, tmp_path, env)
    assert "--num_cpu_threads_per_process" not in argv and _srun_options(tmp_path) == [
        "--ntasks-per-node=1" if "--nodes-per-worker" in flags else "--ntasks=1"]


@pytest.mark.parametrize("flags", TEMPLATE_FLAGS)
@pytest.mark.parametrize("cpus_arg", [None, "--cpus-per-task=3", "-c 3", "-c3", "--cpus-per-t=3"])
def test_cpus_inherited_from_the_submitting_allocation_do_not_reach_srun(tmp_path, tiny_bert, flags, cpus_arg,
                                                                         monkeypatch):
    """`srun -c 8 --pty bash`, then `harness slurm` without --cpus-per-task: sbatch's --export=ALL hands that
    allocation's SLURM_CPUS_PER_TASK=8 to the job, the script read it and asked srun for 8 CPUs in a 1-CPU job
    (every task failed). The script writes the CPUs given with --sbatch-arg (any of sbatch's spellings) and drops
    an inherited value: none reaches srun, the threads or the worker where none was asked for."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    env = _fake_launchers(tmp_path, tmp_path / "python", monkeypatch)
    monkeypatch.chdir(tmp_path)
    r = call_cli("slurm", suite, "--workers", "1", "--dry-run", *flags,
                 *([f"--sbatch-arg={cpus_arg}"] if cpus_arg else []))
    assert r.returncode == 0, r.stderr
    given = {"SLURM_CPUS_PER_TASK": "3"} if cpus_arg else {}   # what sbatch sets for this job, if asked
    argv = _launched_argv(r.stdout, tmp_path, {**env, "SLURM_CPUS_PER_TASK": "8", "SRUN_CPUS_PER_TASK": "8", **given})
    srun = _srun_options(tmp_path)
    if cpus_arg:
        assert "--cpus-per-task=3" in srun and argv[argv.index("--num_cpu_threads_per_process") + 1] in ("3", "1")
    else:
        assert not [o for o in srun if o.startswith("--cpus")] and "--num_cpu_threads_per_process" not in argv
        assert "SLURM_CPUS_PER_TASK" not in _launched_env(tmp_path) and "SRUN_CPUS_PER_TASK" not in _launched_env(
            tmp_path)


@pytest.mark.parametrize("value", ["--cpus-per-task=four", "-c 0", "--cpus-per-task="])
def test_a_cpus_per_task_that_is_not_a_number_is_refused(tmp_path, tiny_bert, value):
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    r = call_cli("slurm", suite, "--workers", "1", f"--sbatch-arg={value}", "--dry-run")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1 and "--cpus-per-task" in r.stderr, (
        r.stderr)


def _srun_options(tmp_path: Path) -> list[str]:
    """The options the fake srun of the last _launched_argv got (before its command)."""
    import itertools

    srun = (tmp_path / "argv.srun").read_text().split("\0")
    return list(itertools.takewhile(lambda a: a.startswith("--"), srun))


def _launched_env(tmp_path: Path) -> dict:
    """The environment the fake Python of the last _launched_argv ran with."""
    pairs = (tmp_path / "argv.env").read_text().split("\0")[:-1]
    return dict(p.split("=", 1) for p in pairs)


@pytest.mark.parametrize("flags", TEMPLATE_FLAGS)
def test_harness_data_dir_of_the_submitting_shell_is_pinned_in_the_script(tmp_path, tiny_bert, small_glue, flags,
                                                                          monkeypatch):
    """`HARNESS_DATA_DIR=D harness slurm ...` (no --data-dir): the login node checked D, but the script did not
    name it, so the workers read whatever $HARNESS_DATA_DIR the job's environment had: none under --export=NONE,
    another folder when the --dry-run script was submitted from another shell. The script exports D, made
    absolute, and still as the variable: the worker gets no --data-dir."""
    (tmp_path / "other-glue").mkdir()
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    env = _fake_launchers(tmp_path, tmp_path / "python", monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DATA_DIR", os.path.relpath(small_glue, tmp_path))
    r = call_cli("slurm", suite, "--workers", "1", "--dry-run", *flags)
    assert r.returncode == 0, r.stderr
    for submitting in ({"HARNESS_DATA_DIR": str(tmp_path / "other-glue")}, {}):   # another shell; --export=NONE
        env.pop("HARNESS_DATA_DIR", None)
        argv = _launched_argv(r.stdout, tmp_path, {**env, **submitting})
        assert _launched_env(tmp_path).get("HARNESS_DATA_DIR") == str(small_glue), (submitting, r.stdout)
        assert "--data-dir" not in argv, argv


# --- a real cluster -------------------------------------------------------------------------------------------------

def test_array_of_two_workers_trains_every_cell_once(tmp_path, tiny_bert, small_glue, slurm):
    suite = write_suite(tmp_path / "a.yaml", suite_text(tiny_bert, "a"))
    db, out = f"sqlite:///{tmp_path / 'h.db'}", tmp_path / "out"
    r = _slurm_cli(slurm, suite, "--workers", "2", "--gpus-per-worker", "0", "--db", db, "--output-dir", out,
                   "--data-dir", small_glue, "--time", "10:00", "--wait")
    logs = _logs(out)
    assert r.returncode == 0, r.stdout + r.stderr + logs[-4000:]
    job = re.search(r"submitted job (\d+)", r.stdout).group(1)
    assert "6 cells: 6 completed" in r.stdout
    rows = [x for x in Store(db).records("a") if x.parent_id is None]
    assert len(rows) == 6 and {str(x.status) for x in rows} == {"completed"}
    trained = Counter(m.group(1) for m in CLAIM.finditer(logs))
    assert trained == Counter({x.cell_key: 1 for x in rows}), trained       # each cell trained once, in all logs
    assert {x.slurm_job_id for x in rows} == {job}
    assert {x.slurm_array_task_id for x in rows} == {0, 1}, "both array tasks took cells"
    assert {x.slurm_restart_count for x in rows} == {0} and all(x.attempts == 1 for x in rows)
    assert sorted(p.name for p in (out / "slurm-logs").glob("*.out")) == [f"harness-a-{job}_0.out",
                                                                        f"harness-a-{job}_1.out"]
    assert len(list((out / "slurm").glob("a-*.sbatch"))) == 1, "the submitted script is kept"


def _task_cpus(marker: str) -> int | None:
    """The CPUs (sched_getaffinity) of the process of this host that runs the relay (python -m
    harness.launch.relay, not the srun that starts it in the batch step) with `marker` among its arguments; None
    while there is none."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            if cmdline[1:3] == ["-m", "harness.launch.relay"] and marker in cmdline:
                return len(os.sched_getaffinity(int(pid)))
        except OSError:   # gone meanwhile
            continue
    return None


def test_a_task_given_two_cpus_trains_on_both(tmp_path, tiny_bert, small_glue, slurm):
    """--sbatch-arg=--cpus-per-task=2 on a cluster that binds tasks to their CPUs (as the test cluster does):
    Slurm 22.05's srun no longer takes --cpus-per-task from sbatch, so the worker ran bound to one CPU, and with
    one thread (accelerate's default). The worker's process may run on both CPUs and trains with 2 threads."""
    suite = write_suite(tmp_path / "c.yaml", suite_text(tiny_bert, "c", "[bitfit]", "[rte]", "{max_steps: 20}"))
    db, out = f"sqlite:///{tmp_path / 'h.db'}", tmp_path / "out"
    r = _slurm_cli(slurm, suite, "--workers", "1", "--gpus-per-worker", "0", "--db", db, "--output-dir", out,
                   "--data-dir", small_glue, "--time", "10:00", "--sbatch-arg=--cpus-per-task=2")
    assert r.returncode == 0, r.stderr
    job = re.search(r"submitted job (\d+)", r.stdout).group(1)
    cpus, deadline = None, time.time() + 600
    while time.time() < deadline and slurm.run("squeue", "-h", "-j", job).stdout.strip():
        cpus = cpus or _task_cpus(str(suite))
        time.sleep(0.1)
    assert not slurm.run("squeue", "-h", "-j", job).stdout.strip(), _logs(out)[-4000:]
    (row,) = Store(db).records("c")
    assert str(row.status) == "completed", _logs(out)[-4000:]
    assert (cpus, row.num_threads) == (2, 2), _logs(out)[-4000:]


def _one_worker_args(suite, db, out, data) -> tuple:
    return (suite, "--workers", "1", "--gpus-per-worker", "0", "--db", db, "--output-dir", out, "--data-dir", data,
            "--time", "10:00")


def _submitted_and_training(slurm, name: str, suite, db, out, data) -> tuple[str, Path]:
    """A one-task array of suite `name` submitted, once its log shows training under way (eval step 10): its job
    id and log."""
    r = _slurm_cli(slurm, *_one_worker_args(suite, db, out, data))
    assert r.returncode == 0, r.stderr
    job = re.search(r"submitted job (\d+)", r.stdout).group(1)
    log = out / "slurm-logs" / f"harness-{name}-{job}_0.out"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "eval step 10 " in log.read_text()):
        time.sleep(0.2)
    assert log.exists() and "eval step 10 " in log.read_text(), _logs(out)   # training is under way
    return job, log


def test_preempted_worker_requeues_and_resumes_with_the_uninterrupted_metric(tmp_path, tiny_bert, small_glue, slurm):
    budget, hp = "{max_steps: 150}", "batch_size: 8, learning_rate: 1e-4, eval_steps: 10"
    methods = "[{name: houlsby, size: 4, learning_rate: 1e-3}]"
    ref_suite = write_suite(tmp_path / "ref.yaml", suite_text(tiny_bert, "ref", methods, "[rte]", budget, hp))
    suite = write_suite(tmp_path / "p.yaml", suite_text(tiny_bert, "p", methods, "[rte]", budget, hp))
    db, out = f"sqlite:///{tmp_path / 'h.db'}", tmp_path / "out"
    ref = run_cli("run", ref_suite, "--db", db, "--output-dir", out, "--data-dir", small_glue, "--no-progress")
    assert ref.returncode == 0, ref.stderr[-3000:]
    (ref_row,) = Store(db).records("ref")

    job, log = _submitted_and_training(slurm, "p", suite, db, out, small_glue)
    sig = slurm.run("scancel", "--signal=USR2", "--full", f"{job}_0")
    assert sig.returncode == 0, sig.stderr

    deadline, expedited = time.time() + 600, False
    while time.time() < deadline and slurm.run("squeue", "-h", "-j", job).stdout.strip():
        if not expedited and _job_fields(slurm, f"{job}_0").get("Reason") == "BeginTime":
            # requeued (by the worker: its log says so below): Slurm holds a requeued job for cred_expire (30 s
            # here) before it may start again, a wait that is Slurm's, not the harness's: it may start now
            expedited = slurm.run("scontrol", "update", f"JobId={job}_0", "StartTime=now").returncode == 0
        time.sleep(0.5)
    text = log.read_text()
    assert not slurm.run("squeue", "-h", "-j", job).stdout.strip(), text[-4000:]
    assert "SIGUSR2 received" in text and "checkpointed" in text and "scontrol requeue" in text, text[-4000:]
    (resumed,) = RESUMED.findall(text)
    assert 10 <= int(resumed[0]) < 150 and resumed[1] == "150"
    claims = [int(a) for _, a in CLAIM.findall(text)]
    assert claims == [1, 2], text[-4000:]      # trained once from step 0, once resumed
    (row,) = Store(db).records("p")
    assert str(row.status) == "completed" and row.attempts == 2, text[-4000:]
    assert row.slurm_job_id == job and row.slurm_array_task_id == 0 and row.slurm_restart_count == 1
    assert row.steps == 150 and row.score == ref_row.score
    rec = json.loads((out / "p" / row.cell_key / "record.json").read_text())
    assert rec["score"] == ref_row.score
    assert not checkpoint.paths_under(str(out / "p")), "the checkpoint is deleted once the cell completed"


def test_an_sbatch_that_does_not_answer_keeps_the_script_and_says_so(tmp_path, tiny_bert, monkeypatch):
    """sbatch timing out may still have queued the job: the script stays, for the record, and the one line says
    where it is and to look at squeue (the path had no test)."""
    from harness.launch import slurm as slurm_launch

    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    _fake_slurm(tmp_path, monkeypatch, sbatch="exec sleep 30\n")
    monkeypatch.setattr(slurm_launch, "SBATCH_TIMEOUT_S", 1)
    r = call_cli("slurm", suite, "--workers", "1", "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir",
                 tmp_path / "out")
    (script,) = (tmp_path / "out" / "slurm").glob("s-*.sbatch")
    assert_refused(r, f"sbatch: no answer in 1 s; the job may be queued (see squeue); script {script}")


@pytest.mark.parametrize("failures, code", [(SQUEUE_TRIES - 1, 1), (SQUEUE_TRIES, EXIT_SLURM_UNREACHABLE),
                                            (SQUEUE_TRIES + 10, EXIT_SLURM_UNREACHABLE)])
def test_a_failing_squeue_is_retried_then_ends_wait_in_one_line(tmp_path, tiny_bert, monkeypatch, failures, code):
    """`harness slurm --wait` ended with a traceback (exit 1, as for a cell that failed) at the first squeue that
    failed. A failure is tried again at the next poll: SQUEUE_TRIES - 1 in a row and the wait goes on (here the job
    then ended, its cell never ran: exit 1); the SQUEUE_TRIES-th in a row ends it with one line and exit 5 (the job
    may still run). squeue is called once per failure and once more if it then answers, never past SQUEUE_TRIES."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s", "[bitfit]", "[rte]"))
    # squeue fails the first $FAILURES calls, then says the job is gone (no line)
    _fake_slurm(tmp_path, monkeypatch, sbatch="echo 42\n",
                squeue='echo x >> "$CALLS"\nif [ "$(wc -l < "$CALLS")" -le "$FAILURES" ]; '
                       'then echo "squeue: error: Unable to contact slurm controller" >&2; exit 1; fi\n')
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    monkeypatch.setenv("FAILURES", str(failures))
    from harness.launch import slurm as slurm_launch

    monkeypatch.setattr(slurm_launch, "MIN_POLL_S", 0)   # the polls without the floor's waits
    monkeypatch.setenv("HARNESS_SLURM_POLL_S", "0")
    r = call_cli("slurm", suite, "--workers", "1", "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir",
                 tmp_path / "out", "--wait")
    assert r.returncode == code and "Traceback" not in r.stderr, (r.returncode, r.stderr[-3000:])
    assert (tmp_path / "calls").read_text().count("x") == min(failures + 1, SQUEUE_TRIES)
    if code == EXIT_SLURM_UNREACHABLE:
        assert r.stderr == (f"error: squeue failed {SQUEUE_TRIES} times in a row, 0 s apart (last: error: Unable to contact slurm "
                            f"controller); job 42 may still be running (squeue -j 42; harness status {suite})\n")
    else:
        assert r.stderr == "" and "job 42 ended: 1 cells: 1 pending" in r.stdout, r.stdout


def test_a_cancelled_array_stays_cancelled_and_a_new_submission_resumes_it(tmp_path, tiny_bert, small_glue, slurm):
    """`scancel JOB` sends SIGTERM, which the worker also takes for a stop: it checkpointed, gave the cell back and
    ran `scontrol requeue`, which Slurm 22.05 grants a cancelled job too, so the task ran again and trained the cell
    to the end (restart count 1): the cancel was undone. Now it stays cancelled, its cell pending with its
    checkpoint, and the same suite submitted again resumes it and records it once."""
    budget, hp = "{max_steps: 300}", "batch_size: 8, learning_rate: 1e-4, eval_steps: 10"
    suite = write_suite(tmp_path / "x.yaml", suite_text(tiny_bert, "x", "[bitfit]", "[rte]", budget, hp))
    db, out = f"sqlite:///{tmp_path / 'h.db'}", tmp_path / "out"
    job, log = _submitted_and_training(slurm, "x", suite, db, out, small_glue)
    assert slurm.run("scancel", job).returncode == 0
    deadline = time.time() + 120
    while time.time() < deadline and slurm.run("squeue", "-h", "-j", job).stdout.strip():
        time.sleep(0.5)
    text = log.read_text()
    assert not slurm.run("squeue", "-h", "-j", job).stdout.strip(), text[-3000:]   # not pending again either
    assert "was cancelled (scancel): not requeued" in text and "scontrol requeue" not in text, text[-3000:]
    (row,) = Store(db).records("x")
    assert (str(row.status), row.attempts) == ("pending", 1), text[-3000:]
    assert checkpoint.paths_under(str(out / "x")), "the cancelled cell's checkpoint is kept for the next submission"

    again = _slurm_cli(slurm, *_one_worker_args(suite, db, out, small_glue), "--wait")
    assert again.returncode == 0, again.stdout + again.stderr + _logs(out)[-3000:]
    (row,) = Store(db).records("x")
    assert (str(row.status), row.attempts, row.slurm_restart_count) == ("completed", 2, 0), _logs(out)[-3000:]
    assert row.slurm_job_id != job and row.steps == 300
    assert len(RESUMED.findall(_logs(out))) == 1, _logs(out)[-3000:]


@pytest.mark.parametrize("shown, cancelled", [
    ("JobState=COMPLETING Reason=None PreemptTime=None", True),                  # scancel JOB
    ("JobState=CANCELLED Reason=None PreemptTime=None", True),
    ("JobState=COMPLETING Reason=TimeLimit PreemptTime=None", False),           # its time limit: run again
    ("JobState=RUNNING Reason=None PreemptTime=None", False),                   # the --signal warning
    ("JobState=COMPLETING Reason=None PreemptTime=2026-12-07T03:00:00", False),  # preempted (PreemptMode=CANCEL)
    # what a real slurmctld 22.05 showed at the signal (one node, partition_prio preemption):
    ("JobState=COMPLETING Reason=None PreemptTime=None SuspendTime=2026-12-07T05:48:17", True),  # scancel after a
    # suspension (PreemptMode=SUSPEND,GANG or scontrol suspend: PreemptTime stays None)
    ("JobState=PENDING Reason=None Requeue=1 Restarts=1", False),    # node set down: Slurm requeued it (--requeue)
    ("JobState=NODE_FAIL Reason=NodeDown PreemptTime=None", False),  # node set down, --no-requeue
    # PreemptMode=REQUEUE: no PreemptTime, read as a cancel; Slurm requeues the job itself (docs/cluster.md)
    ("JobState=COMPLETING Reason=None Requeue=1 Restarts=1 SuspendTime=None", True),
])
def test_only_a_cancelled_job_is_told_from_one_to_requeue(tmp_path, monkeypatch, shown, cancelled):
    """What `scontrol show job` says while the worker's stop signal arrives decides whether it requeues its task:
    a preempted job also shows COMPLETING with reason None (PreemptMode=CANCEL), and was taken for a scancel, so
    it was not requeued: its PreemptTime tells it apart."""
    from harness.launch.slurm import slurm_cancelled

    (tmp_path / "scontrol").write_text(f'#!/bin/bash\necho "JobId=7 ArrayJobId=7 {shown} Command=/a=b/x.sh"\n')
    (tmp_path / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert slurm_cancelled("7") is cancelled


@pytest.mark.parametrize("gpus, hidden", [("0", True), ("1", False)])
def test_a_cpu_only_worker_sees_no_gpu_slurm_left_visible(tmp_path, tiny_bert, gpus, hidden, monkeypatch):
    """`--gpus-per-worker 0` ("CPUs only") on a node whose GPUs Slurm does not fence off: the worker saw
    CUDA_VISIBLE_DEVICES as the node had it and trained on the first GPU, beside another job's ranks. Its
    script hides them; a worker given a GPU keeps what Slurm set."""
    suite = write_suite(tmp_path / "s.yaml", suite_text(tiny_bert, "s"))
    env = _fake_launchers(tmp_path, tmp_path / "python", monkeypatch)
    monkeypatch.chdir(tmp_path)
    r = call_cli("slurm", suite, "--workers", "1", "--gpus-per-worker", gpus, "--dry-run")
    assert r.returncode == 0, r.stderr
    _launched_argv(r.stdout, tmp_path, {**env, "CUDA_VISIBLE_DEVICES": "0,1"})
    assert _launched_env(tmp_path)["CUDA_VISIBLE_DEVICES"] == ("" if hidden else "0,1")


def _job_fields(slurm, job: str) -> dict:
    return dict(w.partition("=")[::2] for w in slurm.run("scontrol", "show", "job", "-o", job).stdout.split())


def test_a_job_slurm_already_requeued_is_not_requeued_again(slurm, monkeypatch, capfd):
    """A --requeue job that Slurm put back in the queue itself (a node set down; here `scontrol requeue`) shows
    PENDING, its restart count one past the worker's: the worker's own `scontrol requeue` failed ("Job is pending
    execution") and printed a warning. Now it says in one line that the job is already requeued, and asks nothing."""
    from harness.launch.slurm import requeue_slurm_task

    job = slurm.run("sbatch", "--requeue", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300").stdout.strip()
    try:
        deadline = time.time() + 60
        while _job_fields(slurm, job).get("JobState") != "RUNNING" and time.time() < deadline:
            time.sleep(0.3)
        assert slurm.run("scontrol", "requeue", job).returncode == 0
        while _job_fields(slurm, job).get("JobState") != "PENDING" and time.time() < deadline:
            time.sleep(0.3)
        assert _job_fields(slurm, job).get("JobState") == "PENDING"
        for name, value in (("SLURM_CONF", str(slurm.conf)), ("SLURM_JOB_ID", job), ("HARNESS_SLURM_REQUEUE", "1")):
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
        monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)   # the first incarnation: Slurm sets none
        capfd.readouterr()
        assert requeue_slurm_task()
        err = capfd.readouterr().err
        assert err.strip() == f"harness: Slurm job {job} is already back in the queue (PENDING, restart 1): not " \
                              f"requeued again", err
    finally:
        slurm.run("scancel", job)
