"""`harness board`: serve the Streamlit leaderboard shipped in the package (harness/board/app.py)."""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys

from harness.cli.common import add_db, existing_store
from harness.spec.errors import InputError

HELP = "start the Streamlit leaderboard"
EXAMPLES = """
  harness board                             (the default store, on http://127.0.0.1:8501)
  harness board --db sqlite:///out/h.db --port 8600
"""
LOCAL = ("127.0.0.1", "localhost", "::1")


def add_arguments(p) -> None:
    add_db(p)
    p.add_argument("--port", type=port_number, default=8501, help="port to serve on (default: %(default)s)")
    p.add_argument("--address", default="127.0.0.1",
                   help="interface to serve on (default: %(default)s: this machine only; the board has no login "
                        "and shows hosts, paths, commands and errors of the store)")


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: one the system picks; argparse's type: a bad one is refused as the option's error)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {port}")
    return port


def check_bind(address: str, port: int) -> None:
    """Refuse an --address this machine has no interface for, or a --port already served, before Streamlit starts
    (it would fail after its banner with a long traceback). An empty address, which would serve every interface,
    is refused by the parser."""
    import socket

    try:
        found = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"--address: {address!r} is not an address of this machine ({e.strerror})") from None
    errors = []
    for family, kind, proto, _, where in found:   # (localhost: 127.0.0.1 and ::1; one is enough to serve)
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(where)
            except OSError as e:
                errors.append(e)
    taken = [e for e in errors if e.errno == errno.EADDRINUSE]
    if taken or len(errors) == len(found):
        e = (taken or errors)[0]
        raise InputError(f"{'--port' if taken else '--address'}: cannot serve on {address}:{port}: {e.strerror}")


def run(args) -> int:
    from harness.board import APP
    from harness.spec.status import lease_timeout

    lease_timeout(None)   # $HARNESS_LEASE_TIMEOUT_S: the grid page reads it, where a bad one was a traceback
    # a --db that cannot be opened, or a database that is not a store (it would show as an empty one), is refused
    # here, in one line, not inside the page; no store yet (None): the board says so
    store = existing_store(args.db, new_ok=True)
    if store is not None:
        store.engine.dispose()
    check_bind(args.address, args.port)

    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(args.port),
           "--server.address", args.address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--"]
    env = dict(os.environ)
    if args.db:   # through the environment, not the command line: `ps` shows a command line to every user
        env["HARNESS_DB"] = args.db
    if args.address in LOCAL:
        print(f"leaderboard on http://{args.address}:{args.port} (this machine only; --address 0.0.0.0 serves "
              f"every interface)", file=sys.stderr)
    else:
        print(f"warning: serving the leaderboard on {args.address}:{args.port} with no login: anyone who can reach "
              f"it sees the store's hosts, paths, commands and errors", file=sys.stderr)
    return subprocess.call(cmd, env=env)
