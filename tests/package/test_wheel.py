"""The package as a new user gets it: the wheel built from this checkout, installed (not editable) into a fresh
virtualenv, used from a folder outside the checkout: `harness slurm --dry-run` prints a script, `harness board`
serves the leaderboard, and `accelerate launch -m harness.run SUITE` trains one cell into the store.

The virtualenv sees the system site-packages (torch and the rest come from there; nothing is downloaded) and its
own copy of harness shadows any editable install of a checkout (checked: harness.__file__ lies in the venv).
Takes a minute or two: marked `wheel`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT, make_tiny_model, real_glue_dir
from harness.spec.status import Status
from harness.store.db import Store

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(900)]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    """{"python", "harness", "env", "cwd"}: a virtualenv holding the wheel of this checkout, an environment
    without PYTHONPATH (so nothing of the checkout is importable but through the wheel) and a folder outside."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"   # only what the build reads: the checkout itself gets no build/ or egg-info
    shutil.copytree(ROOT / "harness", src / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  "-w", tmp / "dist", src], timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("peft_bench_harness-*.whl")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    made = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", tmp / "venv"], timeout=120)
    assert made.returncode == 0, made.stderr
    bin_dir = tmp / "venv" / "bin"
    python = bin_dir / "python"
    # the system's pip (visible through the system site-packages) installs into the venv's prefix; an editable
    # install of the harness outside the venv is left alone ("outside environment") and shadowed
    installed = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", wheel],
                     env=env, timeout=300)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    outside = tmp / "elsewhere"
    outside.mkdir()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    where = _run([python, "-c", "import harness, harness.board, harness.launch.slurm as s; "
                                "print(harness.__file__); print(harness.board.APP); print(s.TEMPLATES)"],
                 env=env, cwd=outside, timeout=120)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(str(tmp / "venv")), f"not the wheel's copy: {line}"
    return {"python": python, "harness": bin_dir / "harness", "env": env, "cwd": outside, "tmp": tmp}


@pytest.fixture(scope="module")
def suite(venv) -> Path:
    model = make_tiny_model(venv["tmp"] / "tiny-bert")
    path = venv["cwd"] / "tiny.yaml"
    path.write_text(f"""
name: tiny
models: ["{model}"]
tasks: [rte]
methods: [bitfit]
budgets:
  - {{max_steps: 2, max_train_samples: 16, max_eval_samples: 16}}
hparams: {{batch_size: 8, learning_rate: 1e-3}}
""".lstrip())
    return path


def test_slurm_dry_run_prints_the_script(venv, suite):
    # (one worker: the suite has one cell, and a worker beyond one per cell is refused)
    r = _run([venv["harness"], "slurm", suite.name, "--workers", "1", "--dry-run"], env=venv["env"],
             cwd=venv["cwd"], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "#SBATCH --array=0-0" in r.stdout and '-m harness.run "$HARNESS_SUITE"' in r.stdout
    assert f"{venv['python']} -m accelerate.commands.launch" in r.stdout and "harness/run.py" not in r.stdout
    shipped = _run([venv["harness"], "slurm", suite.name, "--workers", "1", "--gpus-per-worker", "2", "--dry-run",
                    "--accelerate-config", "deepspeed_zero2"], env=venv["env"], cwd=venv["cwd"], timeout=300)
    assert shipped.returncode == 0 and "/site-packages/harness/launch/templates/deepspeed_zero2.yaml" in shipped.stdout


def test_accelerate_launch_module_runs_a_cell(venv, suite):
    data = real_glue_dir()
    if data is None:
        pytest.skip("real GLUE files not found: set HARNESS_DATA_DIR (e.g. ../shared/data/glue from the checkout)")
    db = f"sqlite:///{venv['tmp'] / 'h.db'}"
    r = _run([venv["python"], "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "harness.run", suite.name, "--db", db,
              "--output-dir", venv["tmp"] / "out", "--data-dir", data, "--no-progress"],
             env={**venv["env"], "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, cwd=venv["cwd"], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (rec,) = Store(db, read_only=True).records("tiny")
    assert rec.status == Status.COMPLETED and rec.steps == 2 and "-m harness.run" in rec.command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_board_serves_the_leaderboard(venv):
    port = _free_port()
    db = f"sqlite:///{venv['tmp'] / 'h.db'}"
    server = subprocess.Popen([str(venv["harness"]), "board", "--db", db, "--port", str(port)], env=venv["env"],
                              cwd=venv["cwd"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)   # streamlit runs as harness's child: stopped as a group
    status, deadline = None, time.monotonic() + 120
    try:
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    status = resp.status
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    assert status == 200, f"no answer on port {port}; harness board said:\n{out[-3000:]}"
