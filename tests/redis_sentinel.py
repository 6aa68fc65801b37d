"""A Redis Sentinel deployment for tests: Debian's redis-server (a primary and a replica) and three
redis-sentinel processes with quorum 2, on free loopback ports, their files in a temporary folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.conftest import free_port, wait_until

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_SENTINEL = "/usr/bin/redis-sentinel"
SERVICE = "lanes"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def debian_redis_sentinel_installed() -> bool:
    return all(shutil.which(program) for program in (REDIS_SERVER, REDIS_SENTINEL))


class SentinelDeployment:
    """Primary + replica + three sentinels; ``url`` is the ``redis+sentinel://`` URL naming them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.processes: dict[int, subprocess.Popen] = {}  # port -> process
        self.sentinel_ports: list[int] = []
        self.primary_port = 0

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelDeployment:
        self.primary_port = self._server("primary")
        self._server("replica", f"replicaof 127.0.0.1 {self.primary_port}")
        for number in range(3):
            self.sentinel_ports.append(self._sentinel(number))
        wait_until(self._ready, timeout=30, interval=0.2, message="the sentinels to see the replica and each other")
        return self

    def _start(self, name: str, program: str, config: list[str]) -> int:
        port = free_port()
        folder = self.folder / name
        folder.mkdir()
        config_path = folder / f"{name}.conf"
        config_path.write_text("\n".join([
            "bind 127.0.0.1", f"port {port}", f'dir "{folder}"', "daemonize no", 'save ""', "appendonly no",
            f'logfile "{folder / "log"}"', *config,
        ]) + "\n")
        self.processes[port] = subprocess.Popen([program, str(config_path)], stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self._answers(port), timeout=10, message=f"{name} on port {port}")
        return port

    def _server(self, name: str, *config: str) -> int:
        return self._start(name, REDIS_SERVER, list(config))

    def _sentinel(self, number: int) -> int:
        return self._start(f"sentinel{number}", REDIS_SENTINEL, [
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} {QUORUM}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
        ])

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1).ping())
        except redis.exceptions.RedisError:
            return False

    def _ready(self) -> bool:
        for port in self.sentinel_ports:
            sentinel = redis.Redis(port=port, socket_timeout=1)
            replicas = [r for r in sentinel.sentinel_slaves(SERVICE) if "s_down" not in r["flags"]]
            if not replicas or len(sentinel.sentinel_sentinels(SERVICE)) < len(self.sentinel_ports) - 1:
                return False
        return True

    def primary_by_sentinels(self) -> int | None:
        """The primary's port, if every sentinel that answers agrees on it."""
        seen = set()
        for port in self.sentinel_ports:
            try:
                _host, primary = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(SERVICE)
            except (redis.exceptions.RedisError, TypeError):
                continue
            seen.add(int(primary))
        return seen.pop() if len(seen) == 1 else None

    def kill_primary(self) -> int:
        """SIGKILL the primary (no shutdown, no last save); returns its port."""
        port = self.primary_port
        process = self.processes[port]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        return port

    def wait_for_new_primary(self, timeout: float = 30) -> tuple[int, float]:
        """The replica's port once the sentinels promoted it, and how long that took."""
        began = time.monotonic()
        old = self.primary_port
        self.primary_port = wait_until(lambda: (port := self.primary_by_sentinels()) not in (None, old) and port,
                                       timeout=timeout, interval=0.1, message="the sentinels to promote the replica")
        return self.primary_port, time.monotonic() - began

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(10)
