"""The command line as the tests drive it: `python -m harness` in a real subprocess, `harness.cli.main` in this
process, and the one check of how bad input is refused."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.files import ROOT


def run_cli(*args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m harness ...` in a real subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def call_cli(*args) -> subprocess.CompletedProcess:
    """`harness ...` through the CLI's main in this process (no interpreter start), with its exit code and what it
    printed, in the shape run_cli gives."""
    from harness.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:   # the parser refused an option
            code = e.code
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def assert_refused(proc: subprocess.CompletedProcess, expect: str, where: str | Path | None = None) -> str:
    """Bad input refused the way the CLI refuses it: exit 2, nothing on stdout, no traceback, and one line on
    stderr, `error: ...`, that contains `expect` (plain text, not a pattern) and, where `where` names the file at
    fault, starts with `error: WHERE:`. Returns that line, for a caller that checks it whole."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.args, proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (proc.args, err[-2000:])
    if where is not None:
        assert lines[0].startswith(f"error: {where}:"), (proc.args, lines[0])
    assert expect in lines[0], (proc.args, expect, lines[0])
    assert proc.stdout == "", (proc.args, proc.stdout[-2000:])
    return lines[0]
