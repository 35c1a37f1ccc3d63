"""A throwaway PostgreSQL server for tests and bench/: initdb + pg_ctl from the machine's PostgreSQL (Debian
`postgresql`), run as the `postgres` user when we are root, on a free local port, trust auth on loopback only."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile


def postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return os.path.dirname(found[-1])
    exe = shutil.which("pg_ctl")
    return os.path.dirname(exe) if exe else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
        self.root = tempfile.mkdtemp(prefix="harness-pg-")   # under /tmp: the postgres user can reach it
        self.data = os.path.join(self.root, "data")
        self.port = _free_port()
        self.as_user = []
        if os.geteuid() == 0:   # initdb refuses to run as root
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd, check=True):
        return subprocess.run([*self.as_user, *cmd], check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> "PostgresServer":
        self._run(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        return self.resume()

    def resume(self) -> "PostgresServer":
        """Start the (initialised) server; also after pause()."""
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c max_connections=200 -c shared_buffers=64MB")
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-o", opts, "-l",
                  os.path.join(self.root, "log"), "-w", "-t", "60", "start")
        return self

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage: connections drop, new ones are refused)."""
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def own_server():
    """A started server of the caller's own (a fixture yields it; it is stopped at the end), or a test failure
    naming the missing binaries."""
    import pytest

    if postgres_bin() is None:
        pytest.fail("PostgreSQL server binaries not found: apt-get install postgresql (.ci/run does)")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
