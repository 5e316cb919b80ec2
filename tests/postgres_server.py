"""A throw-away PostgreSQL 15 cluster for the tests: its own folder, its own port, loopback only.

The cluster never touches the one Debian's postgresql package may have created (nor its
service): it lives in a temporary folder, listens on 127.0.0.1 on a free port (and on a unix
socket inside that folder), and is stopped and removed at teardown. PostgreSQL refuses to run as
root, so initdb and pg_ctl run as the `postgres` system user, owner of the folder.

Local (unix socket) connections are trusted: the socket lies in a 0700 folder only `postgres`
and root can enter. TCP connections need the password of the test user, generated per run.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from orthanc_server import RUNTIME, OrthancServer, free_port

#: The index plugin, at the same path on bookworm and in the chroots.
POSTGRESQL_INDEX = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"


def _pg_bin() -> Path:
    """TEST_PG_VERSION (default 15, Debian bookworm's) if installed, else the newest installed."""
    wanted = os.environ.get("TEST_PG_VERSION", "15")
    if (Path("/usr/lib/postgresql") / wanted / "bin" / "initdb").exists():
        return Path("/usr/lib/postgresql") / wanted / "bin"
    installed = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
                       key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return installed[-1] if installed else Path("/usr/lib/postgresql") / wanted / "bin"


PG_BIN = _pg_bin()
SYSTEM_USER = "postgres"


class PostgresServer:
    """One PostgreSQL cluster with one database and one password-protected owner."""

    def __init__(self, database: str = "orthanc_test", user: str = "orthanc_test") -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL is not installed ({PG_BIN}/initdb is missing)")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.database = database
        self.user = user
        self.password = secrets.token_hex(16)
        self.folder = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.folder / "data"
        self.socket_dir = self.folder / "socket"
        self.log_path = self.folder / "postgresql.log"
        self._started = False

    # --- running commands as the postgres user ---------------------------------------------
    def _as_postgres(self, *command: str, stdin: str | None = None, timeout: float = 120) -> str:
        result = subprocess.run(["runuser", "-u", SYSTEM_USER, "--", *command], cwd=self.folder,
                                input=stdin, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}\n{self.log()[-3000:]}")
        return result.stdout

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run SQL as the superuser over the unix socket; the unaligned, tuples-only output."""
        return self._as_postgres(str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                 "-h", str(self.socket_dir), "-p", str(self.port), "-U", SYSTEM_USER,
                                 "-d", database or self.database, stdin=sql)

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> "PostgresServer":
        account = pwd.getpwnam(SYSTEM_USER)
        self.socket_dir.mkdir()
        for path in (self.folder, self.socket_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
            path.chmod(0o700)
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", SYSTEM_USER,
                          "--encoding=UTF8", "--locale=C", "--auth-local=trust",
                          "--auth-host=scram-sha-256", "--no-sync")
        options = " ".join([
            "-c listen_addresses=127.0.0.1", f"-p {self.port}",
            f"-c unix_socket_directories={self.socket_dir}", "-c unix_socket_permissions=0700",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",  # test data only
            "-c max_connections=50",
        ])
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
                          "-o", options, "-w", "-t", "60", "start")
        self._started = True
        # Identifiers are ours (no quoting issue); the password is hex.
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}';", database="postgres")
        self.psql(f"CREATE DATABASE {self.database} OWNER {self.user};", database="postgres")
        return self

    def stop(self) -> None:
        if self._started:
            try:
                self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                                  "-t", "60", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                  "-w", "stop")
            self._started = False

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # --- for Orthanc -------------------------------------------------------------------------
    def node_settings(self, server, storage, plugins: list[str]) -> dict:
        """What makes `server` a node of a cluster on this database: the index plugin loaded
        (`plugins`: its path as Orthanc sees it), the index here, files in the shared `storage`
        folder, and nothing else in its own index folder."""
        return {"Plugins": server.settings["Plugins"] + plugins,
                "PostgreSQL": self.orthanc_section(),
                "StorageDirectory": RUNTIME.inside(storage),
                "IndexDirectory": RUNTIME.inside(server.workdir / "index")}

    def orthanc_section(self, **extra) -> dict:
        """The "PostgreSQL" section of an Orthanc configuration: index here, files on disk."""
        section = {
            "EnableIndex": True,
            "EnableStorage": False,
            "Host": self.host,
            "Port": self.port,
            "Database": self.database,
            "Username": self.user,
            "Password": self.password,
            "Lock": False,  # several Orthancs share this database
        }
        section.update(extra)
        return section

    @contextmanager
    def nodes(self, configure: Callable[[OrthancServer, int], None] = lambda server, number: None,
              count: int = 2, start: bool = True) -> Iterator[tuple[Path, list[OrthancServer]]]:
        """`count` Orthancs with the plugin on this database and one shared storage folder (as
        the shared folder, and the servers); `configure(server, number)` adds each one's own
        settings before it starts. All are removed at the end."""
        shared = RUNTIME.workdir()
        storage = shared / "storage"
        storage.mkdir()
        servers: list[OrthancServer] = []
        try:
            for number in range(1, count + 1):
                server = OrthancServer()
                server.configure({"Name": f"consistent-anon-node-{number}",
                                  **self.node_settings(server, storage, [POSTGRESQL_INDEX])})
                configure(server, number)
                servers.append(server)
                if start:
                    server.start()
            yield storage, servers
        finally:
            for server in servers:
                server.cleanup()
            shutil.rmtree(shared, ignore_errors=True)
