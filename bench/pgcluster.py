"""A throwaway PostgreSQL cluster in a temp dir, for tests and benchmarks: Debian's server binaries
(``/usr/lib/postgresql/*/bin``), a unix socket in that dir, trust auth, removed on exit.

The server refuses to run as root, so as root the cluster belongs to the ``postgres`` OS user (or
``nobody``) and ``initdb``/``pg_ctl`` run under ``runuser``. Clients connect through the socket.

    with Cluster.start() as pg:
        url = pg.create_database("t1")     # postgresql://semrec@/t1?host=/tmp/semrec-pg-.../sock
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "semrec"


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine (``apt-get install postgresql``)."""


def server_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` holding initdb, or the dir of ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresMissing("PostgreSQL server binaries not found (apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _os_user() -> str | None:
    """The non-root user that owns the cluster when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresMissing("running as root and no 'postgres' or 'nobody' user to own the cluster")


@dataclass
class Cluster:
    root: Path
    bindir: Path
    port: int
    user: str | None

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={self.port}"

    @classmethod
    def start(cls, settings: dict[str, str] | None = None, timeout_s: float = 60.0) -> Cluster:
        """initdb + pg_ctl start in a fresh temp dir; ``settings`` go to postgresql.conf."""
        bindir, user = server_bindir(), _os_user()
        root = Path(tempfile.mkdtemp(prefix="semrec-pg-"))  # under /tmp: reachable by that user
        self = cls(root, bindir, _free_port(), user)
        try:
            (root / "sock").mkdir()
            if user:
                pw = pwd.getpwnam(user)
                for p in (root, root / "sock"):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
            self._run("initdb", "-D", str(root / "data"), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                      "--no-instructions")
            conf = {"listen_addresses": "''", "unix_socket_directories": f"'{root / 'sock'}'",
                    "port": str(self.port), "max_connections": "200", **(settings or {})}
            with open(root / "data" / "postgresql.conf", "a") as fh:
                fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
            self._run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w",
                      "-t", str(int(timeout_s)), "start")
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{log[-2000:]}")

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the cluster."""
        if (self.root / "data" / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
            except RuntimeError:
                time.sleep(0.5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
