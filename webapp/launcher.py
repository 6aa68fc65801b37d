"""``make run`` (``python -m webapp.launcher``): Lanes on one machine, started and stopped as one.

It starts the embedded Redis when ``REDIS_URL`` is unset, applies the migrations, creates the first
admin, runs web (gunicorn) and the supervisor (``worker.py``) as processes of their own, and on
Ctrl-C or SIGTERM stops them all, the embedded Redis last. A supervisor that dies is started again
(with back-off) while web stays up; web's access log goes to ``instance/logs/`` unless
``LANES_ACCESS_LOG=1``.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from webapp.config import PROJECT_ROOT, Config
from webapp.embedded_redis import EmbeddedRedis, EmbeddedRedisError, answers

ADMIN_NAME = "admin"
HEALTH_TIMEOUT_SECONDS = 60
# How long start-up waits for the supervisor to announce itself, so that the sign-in line is
# printed after its start-up lines; a slower supervisor only delays its own lines.
SUPERVISOR_ANNOUNCE_SECONDS = 15
# Each open WebSocket and each long-poll holds a thread; threads start only when needed.
WEB_THREADS = int(os.environ.get("LANES_WEB_THREADS", "1100"))
GRACEFUL_SECONDS = 5  # gunicorn's graceful timeout: open WebSockets must not hold shutdown up
STOP_MARGIN_SECONDS = 10
# A supervisor that dies is started again after 1, 2, 4 ... at most 30 s; one that ran this
# long before dying counts as healthy, and the back-off starts over.
RESTART_DELAYS_SECONDS = (1, 2, 4, 8, 16, 30)
STABLE_SECONDS = 60
WHAT = {"web": "the web server (gunicorn)", "worker": "the supervisor (worker.py)"}
WORKER_COMMAND = [sys.executable, "worker.py"]


class LaunchError(RuntimeError):
    """Lanes could not start, or a part of it died (the message says which and why)."""


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived: stop everything and exit 0."""


def say(message: str, stream=None) -> None:
    try:
        print(message, file=stream or sys.stdout, flush=True)
    except OSError:
        pass  # the terminal is gone (SIGHUP): stopping must carry on regardless


def without_password(url: str) -> str:
    """``url`` fit to print: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def http_host(host: str) -> str:
    """``host`` as it goes in a URL or a gunicorn bind (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Launcher:
    """Starts the parts of Lanes in order and stops them in reverse."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.url = f"http://{http_host(host)}:{port}/"
        self.settings: Config | None = None
        self.redis: EmbeddedRedis | None = None
        self.app = None  # the Flask app this process migrated with (its Redis client reads heartbeats)
        self.children: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.worker_restarts = 0  # in a row, without a stable run between them
        self.worker_restart_at: float | None = None
        self.stop_signal: int | None = None

    def run(self) -> int:
        """Start, then watch until a signal (exit 0) or until a part dies (exit 1)."""
        # SIGHUP too: a closed terminal must not leave web, worker and Redis running on their own.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._request_stop)
        try:
            generated_password = self.start()
            say(f"Lanes is running at {self.url}")
            if generated_password:
                # Repeated here, last, so that start-up output does not scroll it away.
                say(f"Sign in at {self.url}auth/login as {ADMIN_NAME} with the password {generated_password}")
            say("Press Ctrl-C to stop.")
            self.watch()
        except StopRequested:
            say(f"\nLanes: {signal.Signals(self.stop_signal).name} received; stopping.")
            return 0
        except LaunchError as problem:
            say(f"Lanes: {problem}", sys.stderr)
            return 1
        finally:
            self.stop()
        return 0

    # -- starting -------------------------------------------------------------------------

    def start(self) -> str | None:
        """Bring every part up; the admin password when one was generated."""
        self.settings = Config()  # creates instance/ and its secret key on the first run
        self._ensure_port_free()
        if os.environ.get("REDIS_URL"):
            shown = without_password(os.environ["REDIS_URL"])
            if not answers(os.environ["REDIS_URL"]):
                raise LaunchError(
                    f"no Redis answers at REDIS_URL={shown}; start it, or unset REDIS_URL for the embedded one"
                )
            say(f"Redis: {shown}")
        else:
            self.redis = EmbeddedRedis(self.settings.INSTANCE_DIR)
            try:
                self.redis.start()
            except EmbeddedRedisError as problem:
                self.redis = None  # not ours to stop: it never started, or another Lanes owns it
                raise LaunchError(str(problem)) from None
            os.environ["REDIS_URL"] = self.redis.url  # for this process's app and for the children
            say(f"Redis: embedded, at {self.redis.url} (data in {self.redis.data_dir})")
        self._check_stop()
        password = self.prepare_database()
        self._check_stop()
        access_log = self.access_log()
        if access_log != "-":
            say(f"Access log: {access_log} (LANES_ACCESS_LOG=1 shows it here instead)")
        self.spawn("web", self.web_command(access_log))
        self.spawn("worker", WORKER_COMMAND)
        self.wait_until_healthy()
        self.wait_for_supervisor()
        return password

    def prepare_database(self) -> str | None:
        """Apply the migrations and create the first admin; the password when one was generated."""
        from flask_migrate import upgrade
        from sqlalchemy.exc import SQLAlchemyError

        from webapp import create_app
        from webapp.extensions import db

        app = self.app = create_app()
        database = db_url_for_humans(app.config["SQLALCHEMY_DATABASE_URI"])
        say(f"Database: {database}")
        try:
            with app.app_context():
                upgrade()
                password = self.ensure_admin()
                db.session.remove()
                db.engine.dispose()  # this process is done with the database
        except SQLAlchemyError as problem:
            raise LaunchError(f"the database at {database} is not usable: {problem}") from None
        return password

    def ensure_admin(self) -> str | None:
        """Create ``admin`` when no administrator exists; the password when it was generated."""
        from sqlalchemy import select

        from webapp.auth.accounts import AccountError, create_user, find_user, validate_password
        from webapp.extensions import db
        from webapp.models import User

        if db.session.scalar(select(User.id).where(User.is_admin.is_(True)).limit(1)) is not None:
            return None
        if find_user(ADMIN_NAME) is not None:
            say(f"Warning: a user named {ADMIN_NAME!r} exists but is not an administrator, so none was created. "
                "Create one with: flask --app wsgi user create NAME --admin")
            return None
        given = os.environ.get("LANES_ADMIN_PASSWORD")
        if given:
            try:
                validate_password(given)
            except AccountError as problem:
                raise LaunchError(f"LANES_ADMIN_PASSWORD is not usable: {problem}") from None
        password = given or secrets.token_urlsafe(12)
        create_user(ADMIN_NAME, password, is_admin=True)
        if given:
            say(f"Created the administrator {ADMIN_NAME!r} with the password in LANES_ADMIN_PASSWORD.")
            return None
        say(f"Created the administrator {ADMIN_NAME!r}.")
        say(f"Admin password: {password}")
        return password

    def access_log(self) -> str:
        """Where gunicorn writes its access log: a file under instance/logs/, or ``-`` (the terminal)."""
        if os.environ.get("LANES_ACCESS_LOG", "").strip().lower() in {"1", "true", "yes", "on"}:
            return "-"
        logs_dir = self.settings.INSTANCE_DIR / "logs"
        logs_dir.mkdir(parents=True, exist_ok=True)
        return str(logs_dir / "access.log")

    def web_command(self, access_log: str = "-") -> list[str]:
        """gunicorn's command line; ``access_log`` is a file or ``-`` (its standard output)."""
        # The threaded worker carries Socket.IO over WebSocket (simple-websocket); each open
        # socket holds a thread. No control socket: gunicorn's default one in ~/.gunicorn is
        # shared by every instance on the host.
        return [
            sys.executable, "-m", "gunicorn",
            "--worker-class", "gthread", "--workers", "1", "--threads", str(WEB_THREADS),
            # gthread stops accepting at worker-connections, and drops keep-alive once threads reach it.
            "--worker-connections", str(WEB_THREADS + 200),
            "--bind", f"{http_host(self.host)}:{self.port}",
            "--graceful-timeout", str(GRACEFUL_SECONDS),
            "--no-control-socket",
            "--access-logfile", access_log,
            "wsgi:app",
        ]

    def spawn(self, name: str, command: list[str]) -> None:
        # A session of their own: a terminal Ctrl-C reaches only this launcher, which then
        # stops them in order (RQ would take a second signal as a cold shutdown).
        self.children[name] = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.started_at[name] = time.monotonic()

    def wait_until_healthy(self) -> None:
        probe_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        health_url = f"http://{http_host(probe_host)}:{self.port}/healthz"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while True:
            self._check_stop()
            self._check_parts()
            try:
                with opener.open(health_url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, http.client.HTTPException, OSError):
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise LaunchError(f"{WHAT['web']} did not answer {health_url} within {HEALTH_TIMEOUT_SECONDS} s")
            time.sleep(0.1)

    def wait_for_supervisor(self) -> None:
        """Wait (bounded) until the supervisor's heartbeat names its pid: it has logged its start."""
        import redis

        from webapp.lanes import keys

        connection = self.app.extensions["lanes_redis"]
        deadline = time.monotonic() + SUPERVISOR_ANNOUNCE_SECONDS
        while time.monotonic() < deadline:
            self._check_stop()
            self._check_parts()
            marker = f":{self.children['worker'].pid}:"
            try:
                if any(marker in member.decode() for member in connection.zrange(keys.SUPERVISORS, 0, -1)):
                    return
            except redis.RedisError:
                pass  # the supervisor reports Redis trouble itself
            time.sleep(0.1)

    def _ensure_port_free(self) -> None:
        """Fail before starting anything when web could not listen (gunicorn would retry for a while)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            try:
                probe.bind((self.host.strip("[]"), self.port))
            except OSError as problem:
                raise LaunchError(
                    f"cannot listen on {http_host(self.host)}:{self.port} ({problem.strerror or problem}); "
                    "set PORT (or HOST) to choose another address"
                ) from None

    # -- running --------------------------------------------------------------------------

    def watch(self) -> None:
        while True:
            self._check_stop()
            self._check_parts()
            time.sleep(0.2)

    def _request_stop(self, signum, _frame) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        else:
            # os.write, not print: print is not safe to re-enter from a signal handler.
            try:
                os.write(2, b"Lanes: still stopping; running jobs are given time to finish.\n")
            except OSError:
                pass

    def _check_stop(self) -> None:
        if self.stop_signal is not None:
            raise StopRequested()

    def _check_parts(self) -> None:
        web_code = self.children["web"].poll()
        if web_code is not None:
            raise LaunchError(f"{WHAT['web']} exited unexpectedly (code {web_code}); stopping everything.")
        if "worker" in self.children:  # the benchmark borrows this watch for web alone
            self._keep_worker_running()
        if self.redis is not None and self.redis.process is not None and self.redis.process.poll() is not None:
            raise LaunchError(
                f"the embedded Redis exited unexpectedly (code {self.redis.process.returncode}); stopping "
                f"everything. The end of {self.redis.log_path}:\n{self.redis.log_tail()}"
            )

    def _keep_worker_running(self) -> None:
        """Start the supervisor again after it died, waiting longer after each quick death.

        Its lane workers outlive it (they finish their job and stop), and a new supervisor takes
        their lanes over, so web and the queued requests never notice more than a delay.
        """
        now = time.monotonic()
        if self.worker_restart_at is not None:
            if now >= self.worker_restart_at:
                self.worker_restart_at = None
                self.spawn("worker", WORKER_COMMAND)
                say(f"Lanes: {WHAT['worker']} started again (pid {self.children['worker'].pid}).")
            return
        code = self.children["worker"].poll()
        if code is None:
            return
        if now - self.started_at["worker"] >= STABLE_SECONDS:
            self.worker_restarts = 0
        delay = RESTART_DELAYS_SECONDS[min(self.worker_restarts, len(RESTART_DELAYS_SECONDS) - 1)]
        self.worker_restarts += 1
        self.worker_restart_at = now + delay
        say(f"Lanes: {WHAT['worker']} exited unexpectedly ({exit_reason(code)}); "
            f"starting it again in {delay} s. Web stays up; queued requests wait for it.", sys.stderr)

    # -- stopping -------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM web and worker, wait (the worker lets running jobs finish), kill stragglers, then Redis."""
        running = {name: child for name, child in self.children.items() if child.poll() is None}
        if not self.children and self.redis is None:
            return  # nothing was started
        if running:
            say(f"Stopping {', '.join(WHAT[name] for name in running)}...")
        for child in running.values():
            _signal(child, signal.SIGTERM)
        shutdown_seconds = self.settings.LANES_SHUTDOWN_SECONDS if self.settings else 30
        allowed = {"web": GRACEFUL_SECONDS, "worker": shutdown_seconds}
        for name, child in running.items():
            try:
                child.wait(allowed[name] + STOP_MARGIN_SECONDS)
            except subprocess.TimeoutExpired:
                say(f"Lanes: {WHAT[name]} did not stop in time; killing it.")
                _kill_group(child)
        self.children.clear()
        if self.app is not None:
            self.app.extensions["lanes_redis"].close()
        if self.redis is not None:
            say("Stopping the embedded Redis...")
            self.redis.stop()
            self.redis = None
        say("Lanes stopped.")


def _signal(child: subprocess.Popen, signum: int) -> None:
    try:
        child.send_signal(signum)
    except ProcessLookupError:
        pass


def _kill_group(child: subprocess.Popen) -> None:
    """SIGKILL the child and its process group (gunicorn's worker included)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def exit_reason(code: int) -> str:
    """How a child ended, in words: ``code 1`` or ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"code {code}"


def db_url_for_humans(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> int:
    host = os.environ.get("HOST") or "127.0.0.1"
    try:
        port = int(os.environ.get("PORT") or 5000)
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        print(f"Lanes: PORT must be a number from 1 to 65535, not {os.environ.get('PORT')!r}.", file=sys.stderr)
        return 2
    return Launcher(host, port).run()


if __name__ == "__main__":
    sys.exit(main())
