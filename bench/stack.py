"""The Lanes under test: Redis, the migrated database, ``worker.py`` and gunicorn, and the bench's users.

``DATABASE_URL`` and ``REDIS_URL`` are honoured as ``make run`` honours them; when unset, the
database is an SQLite file and Redis an embedded server, both in a temporary instance directory
(never the developer's ``instance/``). Web and worker are started with the launcher's own
commands, on a free port, and everything the bench made is removed when it stops.
"""

from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.counting import counting_env
from webapp.config import PROJECT_ROOT
from webapp.embedded_redis import EmbeddedRedis, EmbeddedRedisError, answers, free_loopback_port
from webapp.launcher import GRACEFUL_SECONDS, WHAT, Launcher, LaunchError, db_url_for_humans, without_password

HOST = "127.0.0.1"
STOP_MARGIN_SECONDS = 10
WORKER_START_SECONDS = 30
# Bench users are thrown away at the end: their random passwords need no costly hash.
CHEAP_ARGON2 = {"LANES_ARGON2_MEMORY_KIB": 1024, "LANES_ARGON2_TIME_COST": 1}
RATE_LIMIT_KEY = re.compile(r"LIMITER/(\d+)/")
DEAD_LANE_WORKER_KEY = re.compile(r"^rq:worker:.+\.lane(\d+)$")  # RQ keeps a dead worker's hash for 60 s


class StackError(RuntimeError):
    """The Lanes under test could not be started (the message says what and why)."""


@dataclass
class BenchUser:
    id: int
    name: str
    token: str


class Child:
    """A process the bench started (in a session of its own), with its output in a log file."""

    def __init__(self, command: list[str], env: dict, log_path: Path):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"

    def stop(self, allowed_seconds: float) -> None:
        """SIGTERM, wait, then SIGKILL the whole process group (gunicorn's worker, lane workers)."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(allowed_seconds + STOP_MARGIN_SECONDS)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass  # gone already, or killed just below
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers in its group, if any
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


class WebServer(Child):
    """gunicorn serving ``wsgi:app`` with the launcher's flags (threads adjustable) on a free port."""

    def __init__(self, env: dict, log_path: Path, threads: int | None = None, worker_connections: int | None = None,
                 port: int | None = None):
        self.port = port or free_loopback_port()
        self.url = f"http://{HOST}:{self.port}"
        self.launcher = Launcher(HOST, self.port)
        command = self.launcher.web_command()
        if threads is not None:
            command[command.index("--threads") + 1] = str(threads)
        if worker_connections is not None:
            # gunicorn's gthread worker stops accepting at --worker-connections.
            command[command.index("--worker-connections") + 1] = str(worker_connections)
        bind = command.index("--bind")
        # As the report shows them: without the address (a free port each time) and the app.
        self.flags = " ".join(command[command.index("--worker-class"):bind] + command[bind + 2:-1])
        super().__init__(command, env, log_path)
        self.launcher.children = {"web": self.process}
        try:
            self.launcher.wait_until_healthy()
        except LaunchError as problem:
            self.stop(GRACEFUL_SECONDS)
            raise StackError(f"{problem}\n{self.log_tail()}") from None

    def worker_process(self) -> psutil.Process:
        """The gunicorn worker (the process that holds the connections)."""
        children = psutil.Process(self.pid).children()
        if not children:
            raise StackError(f"{WHAT['web']} has no worker process")
        return children[0]


def is_spare(process: psutil.Process) -> bool:
    """Whether a supervisor's child is its spare lane worker (``webapp/lanes/spare.py``), by its title."""
    from webapp.lanes.spare import TITLE

    try:
        return (process.cmdline() or [""])[0] == TITLE
    except psutil.Error:
        return False


class Stack:
    """Starts and stops the Lanes under test; creates and removes the bench's users."""

    def __init__(self):
        self.scratch = Path(tempfile.mkdtemp(prefix="lanes-bench-"))
        self.instance_dir = self.scratch / "instance"
        self.instance_dir.mkdir()
        self.embedded_redis: EmbeddedRedis | None = None
        self.redis_url = ""
        self.env: dict = {}
        self.app = None
        self.worker: Child | None = None
        self.webs: list[WebServer] = []
        self.users: list[BenchUser] = []
        self.prefix = f"bench.{uuid.uuid4().hex[:6]}"

    # -- starting ---------------------------------------------------------------------------

    def start(self, worker: bool = True) -> None:
        """Redis, the migrated database and (unless ``worker`` is False) ``worker.py``."""
        self._start_redis()
        self.env = {
            **os.environ,
            "LANES_INSTANCE_DIR": str(self.instance_dir),
            "REDIS_URL": self.redis_url,
            "LANES_WORKER_METRICS_PORT": "0",  # never contend with a running Lanes for its metrics port
            "PYTHONUNBUFFERED": "1",
        }
        from webapp import create_app

        self.app = create_app({"INSTANCE_DIR": self.instance_dir, "REDIS_URL": self.redis_url, **CHEAP_ARGON2})
        self._migrate()
        if worker:
            self.worker = Child([sys.executable, "worker.py"], counting_env(self.env, self.worker_counts),
                                self.scratch / "worker.log")
            self._wait_for_supervisor()

    @property
    def worker_counts(self) -> Path:
        """Where worker.py and its lane workers count their statements and commands."""
        return self.scratch / "counts-worker"

    def web_counts(self, web: WebServer) -> Path:
        """Where a web process counts its statements and commands."""
        return self.scratch / f"counts-web{web.port}"

    def lane_workers(self) -> list[psutil.Process]:
        """The lane workers worker.py runs now (its spare, waiting to be given a lane, is not one)."""
        try:
            return [child for child in psutil.Process(self.worker.pid).children() if not is_spare(child)]
        except psutil.NoSuchProcess:
            return []

    def pause_worker(self) -> None:
        """Stop worker.py in its tracks (SIGSTOP): nothing is served until ``resume_worker``."""
        os.kill(self.worker.pid, signal.SIGSTOP)

    def resume_worker(self) -> None:
        os.kill(self.worker.pid, signal.SIGCONT)

    def _start_redis(self) -> None:
        given = os.environ.get("REDIS_URL")
        if given:
            if not answers(given):
                raise StackError(f"no Redis answers at REDIS_URL={without_password(given)}")
            self.redis_url = given
            return
        self.embedded_redis = EmbeddedRedis(self.instance_dir)
        try:
            self.embedded_redis.start()
        except EmbeddedRedisError as problem:
            self.embedded_redis = None
            raise StackError(str(problem)) from None
        self.redis_url = self.embedded_redis.url

    def _migrate(self) -> None:
        """Apply the migrations (in a process of its own: Alembic reconfigures logging)."""
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=PROJECT_ROOT, env=self.env,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
        )
        if done.returncode != 0:
            raise StackError(f"migrating {self.database_for_humans()} failed:\n{done.stderr[-2000:]}")

    def _wait_for_supervisor(self) -> None:
        """worker.py is serving once its supervisor has written its first heartbeat."""
        from webapp.lanes import keys

        mine = f"{socket.gethostname()}:{self.worker.pid}:"
        deadline = time.monotonic() + WORKER_START_SECONDS
        while time.monotonic() < deadline:
            if self.worker.process.poll() is not None:
                raise StackError(f"{WHAT['worker']} exited (code {self.worker.process.returncode}):\n"
                                 f"{self.worker.log_tail()}")
            if any(member.decode().startswith(mine) for member in self.redis.zrange(keys.SUPERVISORS, 0, -1)):
                return
            time.sleep(0.05)
        raise StackError(f"{WHAT['worker']} did not start within {WORKER_START_SECONDS} s:\n{self.worker.log_tail()}")

    def start_web(self, threads: int | None = None, worker_connections: int | None = None) -> WebServer:
        port = free_loopback_port()
        env = counting_env(self.env, self.scratch / f"counts-web{port}")
        web = WebServer(env, self.scratch / f"web{len(self.webs)}.log", threads, worker_connections, port)
        self.webs.append(web)
        return web

    def stop_web(self, web: WebServer) -> None:
        web.stop(GRACEFUL_SECONDS)
        self.webs.remove(web)

    # -- facts ------------------------------------------------------------------------------

    @property
    def redis(self):
        return self.app.extensions["lanes_redis"]

    def database_for_humans(self) -> str:
        return db_url_for_humans(self.app.config["SQLALCHEMY_DATABASE_URI"])

    def environment(self) -> dict:
        """What the numbers depend on: database, Redis, CPUs, load."""
        server = self.redis.info("server")
        if self.embedded_redis is not None:
            redis_kind = f"embedded redis-server {server.get('redis_version')} at {self.redis_url}"
        else:
            redis_kind = f"redis-server {server.get('redis_version')} at {without_password(self.redis_url)}"
        with self.app.app_context():
            from webapp.extensions import db

            with db.engine.connect():
                pass  # the dialect learns the server's version on the first connection
            dialect = db.engine.dialect.name
            version = ".".join(str(part) for part in (db.engine.dialect.server_version_info or ())[:2])
        if dialect == "sqlite":
            import sqlite3

            version = sqlite3.sqlite_version
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        return {
            "database": f"{dialect} {version} ({self.database_for_humans()})",
            "redis": redis_kind,
            "cpus": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by this process)",
            "load average": f"{load} (1, 5, 15 min) at the start",
            "python": f"{platform.python_version()} on {platform.system()} {platform.release()}",
            "ulimit -n": " / ".join(str(limit) for limit in _nofile_limits()),
        }

    # -- users ------------------------------------------------------------------------------

    def new_user(self, role: str) -> BenchUser:
        """A throwaway user named ``bench.<run>.<role><n>`` with an API token."""
        from webapp.auth.accounts import create_user, issue_token

        name = f"{self.prefix}.{role}{len(self.users)}"[:32]
        with self.app.app_context():
            user = create_user(name, secrets.token_urlsafe(24))
            _, token = issue_token(user, "bench")
            found = BenchUser(user.id, name, token)
        self.users.append(found)
        return found

    def new_users(self, role: str, count: int) -> list[BenchUser]:
        return [self.new_user(role) for _ in range(count)]

    # -- stopping ---------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Stop everything, remove the bench's users and their keys; the problems met on the way."""
        problems = []
        for web in list(self.webs):
            self.stop_web(web)
        if self.worker is not None:
            shutdown = self.app.config["LANES_SHUTDOWN_SECONDS"] if self.app else 30
            self.resume_worker()  # in case a scenario left it paused
            self.worker.stop(shutdown)
            self._release_reconcile_lock()
            self.worker = None
        if self.app is not None:
            try:
                self._forget_users()
            except Exception as problem:  # noqa: BLE001 - report it, and still stop Redis and remove files
                problems.append(f"could not remove the bench users ({', '.join(u.name for u in self.users)}): "
                                f"{problem}")
        if self.embedded_redis is not None:
            self.embedded_redis.stop()
            self.embedded_redis = None
        shutil.rmtree(self.scratch, ignore_errors=True)
        return problems

    def _release_reconcile_lock(self) -> None:
        """The stopped supervisor may hold the reconcile lock for a few more seconds: free it."""
        from webapp.lanes import keys

        holder = self.redis.get(keys.RECONCILE_LOCK)
        if holder is not None and holder.decode().startswith(f"{socket.gethostname()}:{self.worker.pid}:"):
            self.redis.delete(keys.RECONCILE_LOCK)

    def _forget_users(self) -> None:
        """Delete the bench users (their requests and tokens go with them) and every key naming them."""
        from sqlalchemy import delete, select

        from webapp.extensions import db
        from webapp.lanes import keys
        from webapp.lanes.cleanup import delete_lane_if_gone
        from webapp.models import LaneRequest, User

        ids = [user.id for user in self.users]
        if not ids:
            return
        connection = self.redis
        with self.app.app_context():
            request_ids = list(db.session.scalars(select(LaneRequest.id).where(LaneRequest.user_id.in_(ids))))
            with connection.pipeline(transaction=False) as pipe:
                for user_id in ids:
                    # Workers and web are stopped: presence and leases left behind are stale, and so
                    # are jobs still queued (a run without worker.py leaves them): their rows go below.
                    pipe.delete(keys.presence(user_id), keys.lease(user_id), keys.rq_queue(user_id))
                    pipe.lrem(keys.WAKEUP, 0, str(user_id))  # nudges no supervisor took
                for request_id in request_ids:
                    pipe.delete(keys.rq_job(str(request_id)), f"rq:results:{request_id}",
                                f"rq:executions:{request_id}", keys.cancel_flag(request_id))
                pipe.execute()
            for user_id in ids:
                delete_lane_if_gone(connection, user_id)
            # The submit rate limit's counters (the ``limits`` library's keys name the user id)
            # and the hashes of the lane workers that served them.
            mine = {str(user_id) for user_id in ids}
            leftovers = [key for key in connection.scan_iter(match="LIMITS:*LIMITER/*", count=1000)
                         if (found := RATE_LIMIT_KEY.search(key.decode())) and found.group(1) in mine]
            leftovers += [key for key in connection.scan_iter(match="rq:worker:*", count=1000)
                          if (found := DEAD_LANE_WORKER_KEY.match(key.decode())) and found.group(1) in mine]
            if leftovers:
                connection.delete(*leftovers)
            db.session.execute(delete(User).where(User.id.in_(ids)))
            db.session.commit()
            db.session.remove()
            db.engine.dispose()
        self.users.clear()


def _nofile_limits() -> tuple[int, int]:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)
