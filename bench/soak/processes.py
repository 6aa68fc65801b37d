"""The Lanes under test: one gunicorn web process and several ``worker.py`` supervisors, and their lane workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
import requests

from webapp.config import PROJECT_ROOT
from webapp.launcher import Launcher
from webapp.redis_client import redis_client

from .servers import HOST, dies_with_soak

START_SECONDS = 60
LANE_TITLE = "lanes lane:"


class LanesError(RuntimeError):
    """Web or a supervisor could not be (re)started."""


class Child:
    """A process in a session of its own, its output appended to a log file."""

    def __init__(self, command: list[str], env: dict, log_path: Path):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(dies_with_soak(command), cwd=PROJECT_ROOT, env=env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"

    def kill_group(self) -> None:
        """SIGKILL the process and everything in its session (gunicorn's master and worker)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def kill(self) -> None:
        """SIGKILL the process alone (a supervisor: its lane workers live in groups of their own)."""
        if self.alive():
            self.process.kill()
        self.process.wait()

    def stop(self, seconds: float) -> None:
        """SIGTERM, wait, then SIGKILL whatever is left in its session."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(seconds)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()


@dataclass
class Lanes:
    """Starts, kills and restarts web and supervisors; finds the lane workers they forked."""

    env: dict
    logs: Path
    redis_url: str
    supervisors: list[Child] = field(default_factory=list)
    web: Child | None = None
    started: int = 0
    known: dict[int, float] = field(default_factory=dict)  # lane worker pid -> its create_time

    def __post_init__(self):
        from webapp.embedded_redis import free_loopback_port

        self.port = free_loopback_port()
        self.url = f"http://{HOST}:{self.port}"
        self.env = {**self.env, "PYTHONUNBUFFERED": "1"}

    # -- web --------------------------------------------------------------------------------

    def start_web(self) -> None:
        command = Launcher(HOST, self.port).web_command()
        self.web = Child(command, {**self.env, "PGAPPNAME": "soak-web"}, self.logs / "web.log")
        self._wait(self._healthy, self.web, "web")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill_web(self) -> None:
        self.web.kill_group()

    # -- supervisors -----------------------------------------------------------------------

    def start_supervisor(self, slot: int | None = None) -> None:
        """Start ``worker.py`` (as ``bench.soak.named_worker``) and wait for its first heartbeat."""
        from webapp.lanes import keys

        self.started += 1
        child = Child([sys.executable, "-m", "bench.soak.named_worker"], self.env,
                      self.logs / f"supervisor{self.started}.log")
        if slot is None:
            self.supervisors.append(child)
        else:
            self.supervisors[slot] = child
        mine = f"{socket.gethostname()}:{child.pid}:"

        def heartbeat() -> bool:
            try:
                with redis_client(self.redis_url, socket_timeout=2, socket_connect_timeout=2) as r:
                    return any(m.decode().startswith(mine) for m in r.zrange(keys.SUPERVISORS, 0, -1))
            except redis.RedisError:
                return False

        self._wait(heartbeat, child, "supervisor")

    def kill_supervisor(self, slot: int) -> None:
        self.supervisors[slot].kill()

    def _wait(self, ready, child: Child, what: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if not child.alive():
                raise LanesError(f"{what} exited with {child.process.returncode}:\n{child.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise LanesError(f"{what} was not ready within {START_SECONDS} s:\n{child.log_tail()}")

    # -- lane workers -----------------------------------------------------------------------

    def lane_workers(self) -> dict[int, list[int]]:
        """Lane id -> pids of this run's live lane workers, found by their title ``lanes lane:<id>``.

        A lane worker is a child of one of this run's supervisors; one orphaned by a killed
        supervisor is still known from an earlier look. (setproctitle overwrites the environment
        block, so ``/proc/<pid>/environ`` cannot tell this run's workers from another Lanes'.)
        """
        for child in self.supervisors:
            try:
                for process in psutil.Process(child.pid).children():
                    self.known.setdefault(process.pid, process.create_time())
            except psutil.Error:
                continue
        found: dict[int, list[int]] = {}
        for pid, created in list(self.known.items()):
            try:
                process = psutil.Process(pid)
                if process.create_time() != created or process.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.NoSuchProcess(pid)
                title = (process.cmdline() or [""])[0]
            except psutil.Error:
                del self.known[pid]
                continue
            if title.startswith(LANE_TITLE):
                try:
                    found.setdefault(int(title[len(LANE_TITLE):].split()[0]), []).append(pid)
                except (ValueError, IndexError):
                    continue
        return found

    def stop(self, seconds: float) -> None:
        for child in self.supervisors:
            child.stop(seconds)
        if self.web is not None:
            self.web.stop(10)
        # Lane workers orphaned by a killed supervisor stop on their own (SIGTERM from the
        # kernel when their parent died); whatever is left of this run goes now.
        for pids in self.lane_workers().values():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


class TwoWorkerWatch(threading.Thread):
    """Samples the process table: times when two live lane workers of this run served one lane.

    Not a violation by itself (a second worker may be forked and refused by a fence), but the
    first sign of item 1's bug; the checks prove from the database whether two runs overlapped.
    """

    def __init__(self, lanes: Lanes, interval: float = 0.5):
        super().__init__(name="two-worker-watch", daemon=True)
        self.lanes = lanes
        self.interval = interval
        self.stopping = threading.Event()
        self.sightings: list[tuple[float, int, tuple[int, ...]]] = []  # (time, lane, pids)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            now = time.time()
            for lane, pids in self.lanes.lane_workers().items():
                if len(pids) > 1:
                    self.sightings.append((now, lane, tuple(sorted(pids))))

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
