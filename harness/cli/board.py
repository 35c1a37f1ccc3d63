"""`harness board`: serve the Streamlit leaderboard shipped in the package (harness/board/app.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.cli.common import add_db

HELP = "start the Streamlit leaderboard"
EXAMPLES = """
  harness board                             (the default store, on http://127.0.0.1:8501)
  harness board --db sqlite:///out/h.db --port 8600
"""
LOCAL = ("127.0.0.1", "localhost", "::1")


def add_arguments(p) -> None:
    add_db(p)
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default: %(default)s)")
    p.add_argument("--address", default="127.0.0.1",
                   help="interface to serve on (default: %(default)s: this machine only; the board has no login "
                        "and shows hosts, paths, commands and errors of the store)")


def run(args) -> int:
    from harness.board import APP
    from harness.store.engine import make_engine

    try:   # a --db that cannot be opened is refused here, in one line, not inside the page
        make_engine(args.db, read_only=True).dispose()
    except FileNotFoundError:
        pass   # no store yet: the board says so

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
