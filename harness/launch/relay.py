"""`python -m harness.launch.relay accelerate launch ...`: start a launcher so that a stop signal reaches every
rank and the launcher itself survives it.

`accelerate launch` does not forward SIGUSR1/SIGUSR2: the default action of both is to end the launcher (its
single-process launcher, or torch's elastic agent for several ranks), and when a Slurm task's top process ends,
Slurm kills whatever is left of the step -- the ranks in the middle of writing their checkpoint. So the launcher
is started in its own process group with SIGUSR1, SIGUSR2 and SIGTERM ignored (the harness's workers install
their own handlers, harness.train.preempt), and any of those signals sent to this relay (`kill -USR1 PID`, srun
forwarding, Slurm's `--signal`) is passed to the whole group as SIGUSR2. Under Slurm every process of the step
gets the job's signal anyway; the relay makes the same true outside Slurm. Exits with the launcher's code.

Two things torch's elastic agent (`accelerate launch --multi_gpu`) does would defeat this: it starts every rank in
a session of its own (so a signal to the launcher's group misses them: the relay sends it to every descendant
too), and it installs its own SIGTERM handler, which on `scancel` kills the ranks 30 s later whatever their grace
time (so the relay asks it, through TORCHELASTIC_SIGNALS_TO_HANDLE, to leave SIGTERM ignored: the ranks get
Slurm's SIGTERM themselves, checkpoint and exit, and the agent then ends with them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from harness.spec.errors import EXIT_INPUT

FORWARDED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
# what torch's elastic agent may handle itself: not SIGTERM (see above)
AGENT_SIGNALS = "SIGINT,SIGHUP,SIGQUIT"


def _own_group_ignoring_stop_signals() -> None:   # in the launcher, between fork and exec
    os.setpgid(0, 0)   # (Popen's process_group= is Python 3.11+)
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN)


def _send(pid: int, sig: int) -> None:
    """`sig` to the launcher's process group and to every descendant (ranks in sessions of their own)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    group = os.getpgid(pid) if psutil.pid_exists(pid) else pid
    for proc in descendants:
        try:
            if os.getpgid(proc.pid) != group:   # the group's members already have it
                proc.send_signal(sig)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m harness.launch.relay COMMAND [ARGS...]", file=sys.stderr)
        return EXIT_INPUT
    env = {**os.environ, "TORCHELASTIC_SIGNALS_TO_HANDLE": AGENT_SIGNALS}
    child = subprocess.Popen(argv, preexec_fn=_own_group_ignoring_stop_signals, env=env)

    def forward(signum, frame):
        _send(child.pid, signal.SIGUSR2)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.signal(signal.SIGINT, lambda s, f: _send(child.pid, signal.SIGINT))
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
