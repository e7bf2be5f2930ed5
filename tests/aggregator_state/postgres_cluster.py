"""A real PostgreSQL server for the state-store tests: the one named by
HEALTHFED_TEST_POSTGRES_URL, or a private throwaway cluster (initdb into a temporary
directory, pg_ctl start on a free 127.0.0.1 port, password authentication, stopped and
deleted at the end of the session).

initdb and the server refuse to run as root, so as root the cluster belongs to the
`postgres` OS user (from the Debian packages) and its commands run through runuser.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ENV_URL = "HEALTHFED_TEST_POSTGRES_URL"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be found or started; the message says why."""


def _bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: on PATH, else the newest Debian install."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                       if p.parent.parent.name.isdigit() else 0)
    if not installed:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql/*/bin); install it "
            f"(apt-get install postgresql) or set {ENV_URL}"
        )
    return installed[-1].parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def with_database(url: str, database: str) -> str:
    """`url` with its database name replaced."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@dataclass
class PrivateCluster:
    """A cluster this test session owns: started by `start`, removed by `stop`."""

    root: Path
    bin_dir: Path
    port: int
    owner: str | None  # OS user the server runs as when we are root; None: ourselves
    admin_url: str

    @classmethod
    def start(cls) -> PrivateCluster:
        bin_dir = _bin_dir()
        owner = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no `postgres` OS user to own a cluster") from None
            owner = "postgres"
        # Not under pytest's tmp dirs: those are 0700 root, which the postgres user cannot enter.
        root = Path(tempfile.mkdtemp(prefix="healthfed-pg-"))
        password = secrets.token_hex(16)
        port = _free_port()
        cluster = cls(root, bin_dir, port, owner, f"postgresql://healthfed_test:{password}@127.0.0.1:{port}/postgres")
        try:
            (root / "pwfile").write_text(password + "\n")
            if owner:
                shutil.chown(root, owner)
                shutil.chown(root / "pwfile", owner)
            cluster._run("initdb", "-D", str(root / "data"), "-U", "healthfed_test", "--pwfile", str(root / "pwfile"),
                         "--auth", "scram-sha-256", "-E", "UTF8", "--no-sync")
            # fsync off: these tests check what the store commits and reads back, not power loss,
            # and CREATE DATABASE per test is several times faster without it.
            options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
                       "-c fsync=off -c full_page_writes=off -c max_connections=60")
            cluster._run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-t", "60",
                         "-o", options, "start")
        except (OSError, subprocess.CalledProcessError) as error:
            log = root / "server.log"
            detail = getattr(error, "stderr", "") or ""
            if log.exists():
                detail += log.read_text()[-2000:]
            cluster.stop()
            raise PostgresUnavailable(f"could not start a private PostgreSQL cluster with {bin_dir}: {error}\n{detail}")
        return cluster

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
            except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass  # nothing more to do for a server that will not stop; its directory still goes
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer:
    """Hands out a fresh database per test on one server."""

    def __init__(self, admin_url: str, cluster: PrivateCluster | None) -> None:
        self.admin_url = admin_url
        self.cluster = cluster
        self._admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=10)

    @classmethod
    def from_environment(cls) -> PostgresServer:
        url = os.environ.get(ENV_URL)
        if url:
            try:
                return cls(url, None)
            except psycopg.Error as error:
                raise PostgresUnavailable(f"{ENV_URL} is set but the server does not answer: {error}") from None
        cluster = PrivateCluster.start()
        try:
            return cls(cluster.admin_url, cluster)
        except psycopg.Error as error:
            cluster.stop()
            raise PostgresUnavailable(f"the private cluster started but refuses connections: {error}") from None

    def create_database(self) -> str:
        name = f"healthfed_test_{secrets.token_hex(6)}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self._admin.close()
        if self.cluster is not None:
            self.cluster.stop()
