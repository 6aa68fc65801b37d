"""Debian's PgBouncer in transaction mode, started on a free loopback port in front of a PostgreSQL.

Used by ``python -m bench.many_lanes`` and by the tests of ``LANES_DB_POOLER=transaction``.
PgBouncer refuses to run as root, so as root it runs as the ``postgres`` user, its files in a
temporary folder that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from webapp.embedded_redis import free_loopback_port

PGBOUNCER = "/usr/sbin/pgbouncer"
START_SECONDS = 10.0


class PgBouncerError(RuntimeError):
    """PgBouncer could not start (the message says why)."""


def pgbouncer_installed() -> bool:
    return shutil.which(PGBOUNCER) is not None


class PgBouncer:
    """One PgBouncer (``pool_mode = transaction``) for every database of the server ``database_url`` names."""

    def __init__(self, database_url: str, pool_size: int, max_client_conn: int = 1000):
        self.server = make_url(database_url)
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = free_loopback_port()
        self.folder = Path(tempfile.mkdtemp(prefix="lanes-pgbouncer-"))
        self.process: subprocess.Popen | None = None

    def url_for(self, database_url: str) -> str:
        """``database_url`` with PgBouncer's address instead of the server's."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    @property
    def log_path(self) -> Path:
        return self.folder / "pgbouncer.log"

    def start(self) -> PgBouncer:
        user = self.server.username or "postgres"
        password = (self.server.password or "").replace('"', '""')
        (self.folder / "users.txt").write_text(f'"{user}" "{password}"\n')
        server_password = f" password={self.server.password}" if self.server.password else ""
        (self.folder / "pgbouncer.ini").write_text("\n".join([
            "[databases]",
            f"* = host={self.server.host or '127.0.0.1'} port={self.server.port or 5432} user={user}{server_password}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust" if not self.server.password else "auth_type = plain",
            f"auth_file = {self.folder / 'users.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            f"max_client_conn = {self.max_client_conn}",
            f"max_db_connections = {self.pool_size}",
            f"admin_users = {user}",
            "ignore_startup_parameters = extra_float_digits",
            f"logfile = {self.log_path}",
            "log_connections = 0",
            "log_disconnections = 0",
        ]) + "\n")
        run_as = {}
        if os.geteuid() == 0:  # "PgBouncer should not run as root"
            owner = pwd.getpwnam("postgres")
            for path in (self.folder, *self.folder.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen([PGBOUNCER, str(self.folder / "pgbouncer.ini")], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **run_as)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PgBouncerError(f"pgbouncer exited (code {self.process.returncode}):\n{self.log_tail()}")
            try:
                self.show("VERSION")
                return self
            except psycopg.Error:
                time.sleep(0.1)
        self.stop()
        raise PgBouncerError(f"pgbouncer did not answer within {START_SECONDS} s:\n{self.log_tail()}")

    def show(self, what: str) -> list[dict]:
        """A ``SHOW`` of PgBouncer's admin console (``POOLS``, ``CLIENTS``, ``SERVERS``, ``STATS``…)."""
        admin = self.server.set(drivername="postgresql", host="127.0.0.1", port=self.port, database="pgbouncer")
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True,
                             prepare_threshold=None, connect_timeout=5) as connection:
            cursor = connection.execute(f"SHOW {what}", prepare=False)
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # immediate shutdown (SIGINT waits for clients)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
