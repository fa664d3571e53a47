"""A real, throw-away PostgreSQL server for the tests and the bench: initdb + pg_ctl from the installed
binaries on a free loopback port, in a temporary directory, torn down at the end.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user (runuser).
Not a fake: the name of the package is where the tests' and the bench's loopback stand-ins live.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.fakes.processes import free_port

SERVER_USER = "postgres"


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin with initdb and pg_ctl, else wherever pg_ctl is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    return None


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None when one can."""
    if find_bindir() is None:
        return ("PostgreSQL binaries not found (no /usr/lib/postgresql/*/bin/initdb, no initdb/pg_ctl on PATH); "
                "install the 'postgresql' package to run the PostgreSQL tests")
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no '{SERVER_USER}' user to run the PostgreSQL server as"
    return None



class PostgresServer:
    """``with PostgresServer() as pg: pg.create_database("t1") -> url``."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(unavailable_reason() or "no PostgreSQL binaries")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="klingbot-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._names = itertools.count(1)
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        # cwd: the server's own directory, which the postgres user can enter (the checkout may be root's).
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              cwd=self.root)

    def start(self) -> PostgresServer:
        if self._as_root:
            shutil.chown(self.root, SERVER_USER)
        self.root.chmod(0o700)
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                         "--no-sync", "--locale=C")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        last = ""
        for _ in range(5):  # the free port can be taken between choosing and binding it: choose again
            self.port = free_port()
            options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
                       "-c shared_buffers=32MB")
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
                             "-o", options, "start")
            if done.returncode == 0:
                return self
            last = (self.root / "log").read_text(errors="replace")[-2000:] if (self.root / "log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{last}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
