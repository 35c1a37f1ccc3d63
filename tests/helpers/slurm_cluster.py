"""A real single-node Slurm cluster for the tests: munged (as user munge, its own socket), slurmctld and slurmd on
this host with a minimal slurm.conf in a private folder, on free ports. Debian's slurm-wlm and munge packages
(.ci/run installs them). Client commands find it through SLURM_CONF (exported to the jobs by sbatch)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


CONF = """\
ClusterName=harnesstest
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
# cred_expire: also how long a requeued job waits before it may start again (slurm.conf(5); 120 s by default; the
# preemption test lets its requeued job start at once); 30 s still leaves a batch step's launch ample time on a
# loaded machine
AuthInfo=socket={munge_socket},cred_expire=30
CryptoType=crypto/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
# tasks bound to their cores, as on clusters that pin CPUs: a task sees (sched_getaffinity, nproc) only the CPUs its
# step gave it
TaskPlugin=task/affinity
TaskPluginParam=Cores
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=10
MinJobAge=600
MaxArraySize=1000
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    def __init__(self, cpus: int = 2):
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus
        # munged refuses folders that others can write or that it cannot reach: a folder of its own under /tmp
        self.root = Path(tempfile.mkdtemp(prefix="harness-slurm-"))
        self.root.chmod(0o755)
        self.munge_dir = self.root / "munge"
        self.munge_dir.mkdir()
        munge = pwd.getpwnam("munge")
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        self.munge_dir.chmod(0o755)   # clients reach the socket through it
        self.munge_socket = self.munge_dir / "munge.socket"
        for d in ("state", "spool"):
            (self.root / d).mkdir()
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []

    def start(self) -> "SlurmCluster":
        self.conf.write_text(CONF.format(host=self.host, ctld_port=_free_port(), slurmd_port=_free_port(),
                                         root=self.root, cpus=self.cpus, munge_socket=self.munge_socket))
        key = "/etc/munge/munge.key"
        if not os.path.exists(key):
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create", "--keyfile", key], check=True)
        # foreground daemons: this process owns them and stops them by pid
        self.procs.append(subprocess.Popen(
            ["runuser", "-u", "munge", "--", _binary("munged"), "-F", f"--socket={self.munge_socket}",
             f"--key-file={key}", f"--log-file={self.munge_dir}/munged.log", f"--pid-file={self.munge_dir}/munged.pid",
             f"--seed-file={self.munge_dir}/munged.seed"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        self._wait(lambda: self.munge_socket.exists(), "munged", self.munge_dir / "munged.log")
        self.procs.append(subprocess.Popen([_binary("slurmctld"), "-D", "-i", "-f", str(self.conf)], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._wait(lambda: self.run("scontrol", "ping").returncode == 0 and "UP" in self.run("scontrol", "ping").stdout,
                   "slurmctld", self.root / "slurmctld.log")
        self.procs.append(subprocess.Popen([_binary("slurmd"), "-D", "-f", str(self.conf)], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T").stdout, "slurmd", self.root / "slurmd.log")
        return self

    def _wait(self, ready, what: str, log: Path, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            for p in self.procs:
                if p.poll() is not None:
                    break
            time.sleep(0.5)
        text = log.read_text()[-3000:] if log.exists() else "(no log)"
        self.stop()
        raise RuntimeError(f"{what} did not come up in {timeout:g}s; its log:\n{text}")

    def run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env={**self.env, **kw.pop("env", {})}, capture_output=True, text=True,
                              timeout=kw.pop("timeout", 60), **kw)

    def stop(self) -> None:
        """Cancels what is left, stops the daemons (slurmd, slurmctld, munged: the reverse order) and removes the
        folder."""
        if self.procs:
            self.run("scancel", "--full", "--user=root", "--partition=test")
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []
        shutil.rmtree(self.root, ignore_errors=True)


# The first line of a fake `scontrol` (bash) in tests without a cluster: `scontrol show job` answers that the job
# runs, as it does after a --signal warning (harness.launch.slurm.requeue_slurm_task asks before it requeues);
# every other call falls through to the fake's own lines.
SCONTROL_SHOWS_RUNNING = 'if [ "$1" = show ]; then echo "JobId=1 JobState=RUNNING Reason=None"; exit 0; fi\n'
