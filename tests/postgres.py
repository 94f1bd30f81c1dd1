"""A throwaway PostgreSQL server for the tests and the benchmark: a real one, never a mock.

    with PostgresServer.start() as server:
        url = server.new_database()   # postgresql://...: a fresh, empty database

The cluster lives in a temporary folder and listens on a unix socket in it only (no TCP
port); it is stopped and removed on exit. ``initdb`` refuses to run as root, so as root
the server runs as ``nobody`` (through ``runuser``), in a folder that user owns. The server
binaries are found on PATH or in Debian's ``/usr/lib/postgresql/<version>/bin``; ``make
test`` installs Debian's ``postgresql`` package where neither has them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

#: Where Debian puts the server binaries (not on PATH there).
DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"
RUN_AS = "nobody"


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when this machine has none."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for folder in sorted(glob.glob(DEBIAN_BINARIES), reverse=True):
        if Path(folder, "initdb").is_file():
            return Path(folder)
    return None


@dataclass
class PostgresServer:
    folder: Path
    binaries: Path
    user: str
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    @contextlib.contextmanager
    def start(cls) -> Iterator[PostgresServer]:
        binaries = server_binaries()
        if binaries is None:
            raise RuntimeError(
                "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: run `make "
                "test`, which installs Debian's postgresql package, or apt-get install postgresql"
            )
        folder = Path(tempfile.mkdtemp(prefix="lora-pg-"))
        as_root = os.geteuid() == 0
        user = RUN_AS if as_root else _me()
        if as_root:
            shutil.chown(folder, user=RUN_AS)
        server = cls(folder, binaries, user)
        try:
            server._run("initdb", "-D", str(folder / "data"), "-A", "trust", "-U", user,
                        "--no-sync", "-E", "UTF8")
            options = (f"-c listen_addresses='' -c unix_socket_directories='{folder}' "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       "-c max_connections=200")
            server._run("pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "log"),
                        "-o", options, "-w", "start")
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                server._run("pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "-w",
                            "stop")
            shutil.rmtree(folder, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.binaries / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{quote(self.user)}@/{database}?host={quote(str(self.folder))}"

    def new_database(self) -> str:
        """The URL of a new, empty database on this server."""
        name = f"lora_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name
