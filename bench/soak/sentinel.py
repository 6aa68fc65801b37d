"""A Redis Sentinel deployment of the soak's own: a primary and a replica, three sentinels.

The two data servers are the soak's :class:`~bench.soak.servers.RedisServer` (append-only, on
free loopback ports, data in the soak's directory); the sentinels are the same redis-server
program run with ``--sentinel`` (quorum 2, ``down-after-milliseconds`` 1000), so a failover takes
about two seconds. ``url`` is the ``redis+sentinel://`` URL Lanes is given. The soak and
``tests/test_redis_failover.py`` both use this class: one way of standing Sentinel up.

Which server is primary changes with every failover: ``primary`` is the one the sentinels last
named, and a killed primary comes back as a replica of the new one (``rejoin``), so the next
failover has a replica to promote.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from webapp.embedded_redis import free_loopback_port

from .servers import HOST, START_SECONDS, RedisServer, ServerError, dies_with_soak, redis_server_binary

SERVICE = "lanes"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def sentinel_missing() -> str | None:
    """Why a Sentinel deployment cannot be started here, or None."""
    try:
        redis_server_binary()
    except ServerError as problem:
        return str(problem)
    return None


def wait_for(predicate, seconds: float, what: str, interval: float = 0.1):
    """``predicate()``'s first true value within ``seconds``, else ServerError naming ``what``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise ServerError(f"timed out after {seconds:g} s waiting for {what}")


def answers(port: int) -> bool:
    try:
        with redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1) as connection:
            return bool(connection.ping())
    except redis.RedisError:
        return False


class Sentinel:
    """One redis-sentinel process watching the service ``lanes``; its config file is its own (it rewrites it)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_loopback_port()
        self.process: subprocess.Popen | None = None

    def start(self, primary_port: int) -> None:
        config = self.directory / "sentinel.conf"
        config.write_text("\n".join([
            f"bind {HOST}", f"port {self.port}", f'dir "{self.directory}"', "daemonize no",
            f'logfile "{self.directory / "redis.log"}"',
            f"sentinel monitor {SERVICE} {HOST} {primary_port} {QUORUM}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]) + "\n")
        command = [redis_server_binary(), str(config), "--sentinel"]
        self.process = subprocess.Popen(dies_with_soak(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: self.process.poll() is not None or answers(self.port), START_SECONDS,
                 f"redis-sentinel on port {self.port}")
        if self.process.poll() is not None:
            raise ServerError(f"redis-sentinel exited with {self.process.returncode}: see {self.directory}/redis.log")

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def primary_port(self) -> int | None:
        try:
            with self.client() as connection:
                found = connection.sentinel_get_master_addr_by_name(SERVICE)
        except redis.RedisError:
            return None
        return int(found[1]) if found else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


class SentinelDeployment:
    """Primary + replica + three sentinels, on free loopback ports, their files under ``directory``."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.servers = [RedisServer(directory / "redis-a"), RedisServer(directory / "redis-b")]
        self.sentinels = [Sentinel(directory / f"sentinel{number}") for number in range(3)]
        self.primary = self.servers[0]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def primary_port(self) -> int:
        return self.primary.port

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers] + [sentinel.port for sentinel in self.sentinels]

    def replicas(self) -> list[RedisServer]:
        return [server for server in self.servers if server is not self.primary]

    def start(self) -> SentinelDeployment:
        self.primary.start()
        for replica in self.replicas():
            replica.start(replica_of=self.primary.port)
        for sentinel in self.sentinels:
            sentinel.start(self.primary.port)
        wait_for(self.ready, 30, "the sentinels to see the replica and each other", interval=0.2)
        return self

    def ready(self) -> bool:
        """Every sentinel sees the primary up, each replica up and linked, and the other sentinels."""
        self.refresh()
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as connection:
                    primary = connection.sentinel_master(SERVICE)
                    replicas = connection.sentinel_slaves(SERVICE)
                    others = connection.sentinel_sentinels(SERVICE)
            except redis.RedisError:
                return False
            if int(primary["port"]) != self.primary.port or "s_down" in primary["flags"]:
                return False
            healthy = {int(r["port"]) for r in replicas
                       if "s_down" not in r["flags"] and r.get("master-link-status") == "ok"}
            if any(replica.port not in healthy for replica in self.replicas()):
                return False
            if len(others) < len(self.sentinels) - 1:
                return False
        return True

    def primary_by_sentinels(self) -> int | None:
        """The primary's port, if every sentinel that answers agrees on it."""
        seen = {port for port in (sentinel.primary_port() for sentinel in self.sentinels) if port is not None}
        return seen.pop() if len(seen) == 1 else None

    def refresh(self) -> RedisServer:
        """``primary``, made the server the sentinels agree on if they promoted another one and it answers as primary.

        A fault that only meant to restart the primary may have outlasted down-after-milliseconds
        on a busy machine: the next fault must still hit the primary.
        """
        port = self.primary_by_sentinels()
        if port is not None and port != self.primary.port and self._is_primary(port):
            self.primary = self.server_on(port)
        return self.primary

    def server_on(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def kill_primary(self) -> int:
        """SIGKILL the primary (no shutdown, no last write to its append-only file); returns its port."""
        port = self.primary.port
        self.primary.kill()
        return port

    def wait_for_new_primary(self, timeout: float = 30) -> tuple[int, float]:
        """Once the sentinels agree on another primary and it answers as one: its port, and how long that took."""
        began = time.monotonic()
        old = self.primary.port

        def promoted() -> int | None:
            port = self.primary_by_sentinels()
            return port if port not in (None, old) and self._is_primary(port) else None

        self.primary = self.server_on(wait_for(promoted, timeout, "the sentinels to promote the replica"))
        return self.primary.port, time.monotonic() - began

    @staticmethod
    def _is_primary(port: int) -> bool:
        try:
            with redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1) as connection:
                return connection.info("replication").get("role") == "master"
        except redis.RedisError:
            return False

    def rejoin(self, timeout: float = 60) -> None:
        """Start every stopped server as a replica of the primary; wait until the sentinels count on it again."""
        for server in self.replicas():
            if not server.running():
                server.start(replica_of=self.primary.port)
        wait_for(self.ready, timeout, "the sentinels to see the rejoined replica", interval=0.2)

    def restore(self) -> None:
        """After a fault that failed half-way: every server running, not frozen, the sentinels counting on it."""
        for server in self.servers:
            if server.frozen:
                server.thaw()
        self.rejoin()

    def log_paths(self) -> list[tuple[str, Path]]:
        """(a name for the copy, the log) of every process, for a failed run's kept logs."""
        return ([(f"redis-{server.port}.log", server.directory / "redis.log") for server in self.servers]
                + [(f"sentinel-{sentinel.port}.log", sentinel.directory / "redis.log") for sentinel in self.sentinels])

    def stop(self) -> None:
        """SIGKILL the sentinels (no failover on the way down), then shut the servers down."""
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.shut_down()
