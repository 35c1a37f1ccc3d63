"""Reading a running worker's log: the tests that signal, kill or race workers wait for a line first."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Callable


def read_stderr_until(proc: subprocess.Popen, *needles: str, done: Callable[[str], bool] | None = None,
                      timeout: float = 300) -> str:
    """The process's stderr, read line by line, up to the first line holding one of `needles` (or until
    `done(text read so far)` holds). Fails the test, showing the last lines, when the process closes its stderr or
    the timeout passes first (a readline that blocks is not interrupted: the caller's communicate() timeout is the
    backstop)."""
    seen, deadline = [], time.time() + timeout
    os.set_blocking(proc.stderr.fileno(), True)
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if any(n in line for n in needles) or (done is not None and done("".join(seen))):
            return "".join(seen)
    wanted = f"none of {needles}" if needles else "the awaited state"
    raise AssertionError(f"{wanted} in the worker's log in time:\n" + "".join(seen[-30:]))
