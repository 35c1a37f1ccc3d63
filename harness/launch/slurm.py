"""`harness slurm SUITE --workers N`: an sbatch array of N workers on one store, from the templates shipped in
the package (harness/launch/templates/, with the accelerate/DeepSpeed configs).

Slurm schedules, accelerate launches, the store arbitrates: each array task is one worker (one process, a
multi-GPU group, or a multi-node group) that claims cells until none is left (harness.launch.runner). Jobs ask for
a warning signal 90 s before their time limit and may be requeued; a worker stopped by a signal checkpoints its
cell, gives it back and requeues its own task (requeue_slurm_task), and whoever claims the cell next resumes it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from harness.spec.errors import InputError
from harness.spec.layout import DEFAULT_OUTPUT_DIR, RunLayout

TEMPLATES = resources.files("harness.launch") / "templates"   # package data: works from a wheel as from a checkout
ARRAY, MULTI_GPU, MULTI_NODE = "array.sbatch", "multi_gpu.sbatch", "multi_node.sbatch"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass
class SlurmRequest:
    suite_path: str
    suite_name: str
    workers: int
    gpus_per_worker: int = 1
    nodes_per_worker: int = 1
    partition: str | None = None
    time: str | None = None
    db: str | None = None
    output_dir: str = DEFAULT_OUTPUT_DIR
    sbatch_args: list[str] = field(default_factory=list)
    accelerate_config: str | None = None
    throttle: int | None = None
    run_args: list[str] = field(default_factory=list)
    data_dir: str | None = None

    def validate(self) -> None:
        for name, value, least in (("--workers", self.workers, 1), ("--gpus-per-worker", self.gpus_per_worker, 0),
                                   ("--nodes-per-worker", self.nodes_per_worker, 1), ("--throttle", self.throttle, 1)):
            if value is not None and value < least:
                raise InputError(f"{name}: must be at least {least}, not {value}")
        if self.nodes_per_worker > 1 and self.gpus_per_worker < 1:
            raise InputError("--nodes-per-worker > 1 needs --gpus-per-worker >= 1 (one rank per GPU)")
        if self.time is not None and not re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", self.time):
            raise InputError(f"--time: not a Slurm time (MM, HH:MM:SS or D-HH:MM:SS): {self.time!r}")
        if self.accelerate_config and not os.path.isfile(self.accelerate_config):
            shipped = shipped_config(self.accelerate_config)
            if shipped is None:
                raise InputError(f"--accelerate-config: no such file: {self.accelerate_config} (shipped configs: "
                                 f"{', '.join(SHIPPED_CONFIGS)})")
            self.accelerate_config = shipped

    @property
    def template(self) -> str:
        if self.nodes_per_worker > 1:
            return MULTI_NODE
        return MULTI_GPU if self.gpus_per_worker > 1 else ARRAY

    @property
    def world(self) -> int:
        return max(1, self.gpus_per_worker) * self.nodes_per_worker


SHIPPED_CONFIGS = ("deepspeed_zero2", "deepspeed_zero3")


def shipped_config(name: str) -> str | None:
    """The path of an accelerate config shipped with the package, by name (deepspeed_zero2 or
    deepspeed_zero2.yaml); None for any other name."""
    stem = name[:-len(".yaml")] if name.endswith(".yaml") else name
    return str(TEMPLATES / f"{stem}.yaml") if stem in SHIPPED_CONFIGS else None


def render(req: SlurmRequest) -> str:
    """The filled template. A line whose placeholder has no value (no --partition, no --time, no GPU) is left
    out, so the script shows only what was asked for."""
    from harness.store.engine import absolute_db_url, default_db_url

    req.validate()
    q = shlex.quote
    output_dir = os.path.abspath(req.output_dir)
    accelerate_args = []
    if req.accelerate_config:
        accelerate_args += ["--config_file", q(os.path.abspath(req.accelerate_config))]
    deepspeed = bool(req.accelerate_config) and "DEEPSPEED" in Path(req.accelerate_config).read_text()
    values = {
        "workers": str(req.workers), "last_task": str(req.workers - 1),
        "throttle": f"%{req.throttle}" if req.throttle else "",
        "job_name": re.sub(r"[^\w.-]", "_", f"harness-{req.suite_name}"),
        "gpus": str(req.gpus_per_worker) if req.gpus_per_worker else None,
        "gpus_text": f"{req.gpus_per_worker} GPU" if req.gpus_per_worker else "CPUs only",
        "nodes": str(req.nodes_per_worker), "world": str(req.world),
        "multi_gpu": "" if deepspeed else "--multi_gpu ",   # a DeepSpeed config picks its own launcher
        "partition": req.partition, "time": req.time,
        "log_dir": RunLayout(output_dir).slurm_logs,
        "sbatch_args": "\n".join(f"#SBATCH {a}" for a in req.sbatch_args) or None,
        "workdir": q(os.getcwd()), "db": q(absolute_db_url(req.db or default_db_url())),
        "suite": q(os.path.abspath(req.suite_path)), "suite_name": req.suite_name, "output_dir": q(output_dir),
        "python": q(sys.executable), "accelerate_args": " ".join(accelerate_args),
        "run_args": " ".join(q(a) for a in req.run_args),
        "env": f"export HARNESS_DATA_DIR={q(os.path.abspath(req.data_dir))}" if req.data_dir else None,
    }
    if req.gpus_per_worker == 0 and req.template == ARRAY:
        values["multi_gpu"] = ""
    text = (TEMPLATES / req.template).read_text()
    lines = []
    for line in text.splitlines():
        names = _PLACEHOLDER.findall(line)
        if any(values.get(n) is None for n in names):
            unknown = [n for n in names if n not in values]
            if unknown:
                raise KeyError(f"{req.template}: unknown placeholder {unknown[0]}")
            continue
        filled = _PLACEHOLDER.sub(lambda m: values[m.group(1)], line)
        if names:   # an empty value leaves no double space behind (indentation kept)
            indent = len(filled) - len(filled.lstrip(" "))
            filled = filled[:indent] + re.sub(r" {2,}", " ", filled[indent:]).rstrip()
        lines.append(filled)
    return "\n".join(lines) + "\n"


def script_path(output_dir: str, suite_name: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(RunLayout(output_dir).slurm_scripts, f"{suite_name}-{stamp}.sbatch")


def submit(script_file: str) -> str:
    """sbatch the script; returns the job id."""
    try:
        done = subprocess.run(["sbatch", "--parsable", script_file], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise InputError("sbatch: not found; run this on a Slurm login node (or print the script with --dry-run)")
    if done.returncode != 0:
        raise RuntimeError(f"sbatch failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def wait_for(job_id: str, poll_s: float = 10.0) -> None:
    """Until no task of the array is pending, running or requeued (a requeued task shows as pending again)."""
    while True:
        done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True)
        if done.returncode != 0 and "Invalid job id" not in done.stderr:
            raise RuntimeError(f"squeue failed: {done.stderr.strip()}")
        if not done.stdout.strip():
            return
        time.sleep(poll_s)


def slurm_task_id() -> str | None:
    """The id `scontrol requeue` takes for this job or array task (123_4 for task 4 of array 123)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_slurm_task() -> bool:
    """After a stop signal, rank 0 of a worker asks Slurm to put its own job (array task) back in the queue, as
    submitit does from its handler: Slurm itself does not requeue a job that ends at its time limit. Only when
    HARNESS_SLURM_REQUEUE=1 (the sbatch templates set it) inside a Slurm job submitted with --requeue.
    scontrol then ends this job's processes: called last, after the checkpoint and the release of the claim."""
    job = slurm_task_id()
    if not job or os.environ.get("HARNESS_SLURM_REQUEUE") != "1":
        return False
    print(f"harness: requeueing Slurm job {job} (scontrol requeue)", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"warning: scontrol requeue {job} failed: {exc}", file=sys.stderr, flush=True)
        return False
    if done.returncode != 0:
        print(f"warning: scontrol requeue {job} failed: {done.stderr.strip()}", file=sys.stderr, flush=True)
        return False
    return True
