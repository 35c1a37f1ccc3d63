"""`python -m harness.launch.relay accelerate launch ...`: start a launcher so that a stop signal reaches every
rank and the launcher itself survives it.

`accelerate launch` does not forward SIGUSR1/SIGUSR2: the default action of both is to end the launcher (its
single-process launcher, or torch's elastic agent for several ranks), and when a Slurm task's top process ends,
Slurm kills whatever is left of the step -- the ranks in the middle of writing their checkpoint. So the launcher
is started in its own process group with SIGUSR1, SIGUSR2 and SIGTERM ignored (the harness's workers install
their own handlers, harness.train.preempt), and any of those signals sent to this relay (`kill -USR1 PID`, srun
forwarding, Slurm's `--signal`) is passed to the whole group as SIGUSR2. Under Slurm every process of the step
gets the job's signal anyway; the relay makes the same true outside Slurm. Exits with the launcher's code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

FORWARDED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


def _ignore_stop_signals() -> None:   # in the launcher, between fork and exec
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m harness.launch.relay COMMAND [ARGS...]", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv, process_group=0, preexec_fn=_ignore_stop_signals)

    def forward(signum, frame):
        try:
            os.killpg(child.pid, signal.SIGUSR2)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.signal(signal.SIGINT, lambda s, f: os.killpg(child.pid, signal.SIGINT))
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
