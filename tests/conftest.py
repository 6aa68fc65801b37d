"""Shared fixtures: a real PostgreSQL (``TEST_DATABASE_URL``) or SQLite database, a real Redis,
the app, a test client that speaks CSRF, users and tokens, and real ``worker.py`` processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
import redis
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
REDIS_DATABASES = 16  # a Redis server's default number of databases


def redis_url_for_worker(url: str, worker: str | None) -> str:
    """Each pytest-xdist worker (gw0, gw1, ...) gets a Redis database of its own, counting on from the URL's.

    Tests flush their database; workers sharing one would flush each other's lanes.
    """
    index = int(worker[2:]) if worker and worker.startswith("gw") else 0
    if index == 0:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    base = int(query.get("db") or parts.path.strip("/") or 0)
    database = str((base + index) % REDIS_DATABASES)
    if parts.scheme == "unix":
        return urlunsplit(parts._replace(query=urlencode({**query, "db": database})))
    return urlunsplit(parts._replace(path=f"/{database}"))
FAST_ARGON2 = {"LANES_ARGON2_MEMORY_KIB": 1024, "LANES_ARGON2_TIME_COST": 1}
PASSWORD = "correct horse battery"


def create_postgres_database(url: str) -> str:
    """A fresh database on the server of ``url``, for this test session only."""
    parsed = make_url(url)
    name = f"lanes_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = parsed.set(drivername="postgresql", database=parsed.database or "postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return parsed.set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


@contextmanager
def fresh_database(folder: Path):
    """An empty database: on the ``TEST_DATABASE_URL`` server (PostgreSQL), else an SQLite file in ``folder``."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CI must set TEST_DATABASE_URL (PostgreSQL)")
        yield f"sqlite:///{folder / 'lanes.db'}"
        return
    url = create_postgres_database(base)
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    url = redis_url_for_worker(TEST_REDIS_URL, os.environ.get("PYTEST_XDIST_WORKER"))
    connection = redis.Redis.from_url(url)
    try:
        connection.ping()
    except redis.exceptions.ConnectionError:
        pytest.fail(f"Redis is not answering at {url} (set TEST_REDIS_URL)")
    return url


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("instance")


@pytest.fixture(scope="session")
def settings(database_url, redis_url, instance_dir):
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "INSTANCE_DIR": instance_dir,
        "SECRET_KEY": "test-secret",
        "TESTING": True,
        "LANES_WORKER_METRICS_PORT": 0,
        "LANES_SOCKETIO_CHANNEL": f"lanes-test-{uuid.uuid4().hex[:8]}",
        **FAST_ARGON2,
    }


@pytest.fixture(scope="session")
def migrated(settings):
    """Apply the migrations once per session, from an empty database."""
    from flask_migrate import upgrade

    from webapp import create_app

    app = create_app(settings)
    with app.app_context():
        upgrade()
    return True


@pytest.fixture
def app(settings, migrated):
    from webapp import create_app
    from webapp.extensions import db

    app = create_app(settings)
    with app.app_context():
        _empty_database(db)
        app.extensions["lanes_redis"].flushdb()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _empty_database(db) -> None:
    tables = [
        "request_log_lines", "lane_owners", "export_files", "ledger_entries", "ledger_accounts", "lane_requests",
        "api_tokens", "user_sessions", "users", "system_events",
    ]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        for table in tables:
            db.session.execute(text(f"DELETE FROM {table}"))
        db.session.execute(text("DELETE FROM sqlite_sequence")) if _has_sqlite_sequence(db) else None
    db.session.commit()


def _has_sqlite_sequence(db) -> bool:
    return bool(db.session.execute(text("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'")).first())


@pytest.fixture
def redis_client(app):
    return app.extensions["lanes_redis"]


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no csrf_token field"
    return match.group(1)


class Browser:
    """A test client that signs in like a person: fetch the form, post it with its CSRF token."""

    def __init__(self, client):
        self.client = client

    def csrf(self, path: str = "/auth/login") -> str:
        return csrf_token_from(self.client.get(path).get_data(as_text=True))

    def login(self, username: str, password: str = PASSWORD):
        token = self.csrf("/auth/login")
        return self.client.post(
            "/auth/login", data={"username": username, "password": password, "csrf_token": token}
        )

    def logout(self):
        token = self.csrf("/console")
        return self.client.post("/auth/logout", data={"csrf_token": token})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def browser(app):
    return Browser(app.test_client())


@pytest.fixture
def make_user(app):
    from webapp.auth.accounts import create_user

    def make(username: str, password: str = PASSWORD, admin: bool = False):
        with app.app_context():
            user = create_user(username, password, is_admin=admin)
            return user.id

    return make


@pytest.fixture
def make_token(app):
    from webapp.auth.accounts import issue_token
    from webapp.extensions import db
    from webapp.models import User

    def make(user_id: int, name: str = "test") -> str:
        with app.app_context():
            _, plain = issue_token(db.session.get(User, user_id), name)
            return plain

    return make


@pytest.fixture
def api(client, make_user, make_token):
    """An API client for a fresh user ``alice``: ``api.post(path, json=...)`` with her token."""
    user_id = make_user("alice")
    return ApiClient(client, make_token(user_id), user_id)


class ApiClient:
    def __init__(self, client, token: str, user_id: int):
        self.client, self.token, self.user_id = client, token, user_id

    def _headers(self, extra=None):
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path, **kw):
        return self.client.get(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, path, **kw):
        return self.client.post(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, path, **kw):
        return self.client.delete(path, headers=self._headers(kw.pop("headers", None)), **kw)


def worker_env(settings, **overrides) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings["SQLALCHEMY_DATABASE_URI"],
        REDIS_URL=settings["REDIS_URL"],
        SECRET_KEY=settings["SECRET_KEY"],
        LANES_INSTANCE_DIR=str(settings["INSTANCE_DIR"]),
        LANES_SOCKETIO_CHANNEL=settings["LANES_SOCKETIO_CHANNEL"],
        LANES_WORKER_METRICS_PORT="0",
        LANES_IDLE_SECONDS="2",
        LANES_RECONCILE_SECONDS="2",
        PYTHONUNBUFFERED="1",
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


class ProcessUnderTest:
    """A real process of ours, its output in a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, command: list[str], env: dict, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


class WorkerProcess(ProcessUnderTest):
    """A real ``python worker.py`` supervisor."""

    def __init__(self, env: dict, log_path: Path):
        super().__init__([sys.executable, str(ROOT / "worker.py")], env, log_path)


def _processes(kind, name: str, settings, folder: Path):
    """Yield a ``start(**env_overrides)`` function for processes of ``kind``; stop them all afterwards."""
    started: list[ProcessUnderTest] = []

    def start(**overrides):
        process = kind(worker_env(settings, **overrides), folder / f"{name}{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_worker(settings, tmp_path, app):
    """Start real ``python worker.py`` supervisors: ``start_worker(LANES_IDLE_SECONDS="1")``."""
    yield from _processes(WorkerProcess, "worker", settings, tmp_path)


def requests_of(app, user_ids) -> list:
    """The request rows of these users (an id or a list of ids), oldest first, read fresh and detached."""
    from webapp.extensions import db
    from webapp.models import LaneRequest

    ids = [user_ids] if isinstance(user_ids, int) else list(user_ids)
    with app.app_context():
        rows = db.session.scalars(
            select(LaneRequest).where(LaneRequest.user_id.in_(ids)).order_by(LaneRequest.id)
        ).all()
        db.session.expunge_all()
        db.session.rollback()
        return rows


@pytest.fixture(params=["suite database", "sqlite"])
def lane_app(request, app, settings, tmp_path):
    """The suite's database, and SQLite (what ``make run`` uses without ``DATABASE_URL``)."""
    if request.param == "suite database":
        yield app
        return
    from flask_migrate import upgrade

    from webapp import create_app
    from webapp.extensions import db

    sqlite_app = create_app({**settings, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'lanes.db'}"})
    with sqlite_app.app_context():
        upgrade()
    yield sqlite_app
    with sqlite_app.app_context():
        db.session.remove()
        db.engine.dispose()


def wait_until(predicate, timeout: float = 15, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebProcess(ProcessUnderTest):
    """The real web server (gunicorn, threaded worker, Socket.IO over WebSocket) on a free port."""

    def __init__(self, env: dict, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        threads = env.get("LANES_WEB_THREADS", "50")  # start_web(LANES_WEB_THREADS="400") for load tests
        command = [sys.executable, "-m", "gunicorn", "-w", "1", "--threads", threads, "-b", f"127.0.0.1:{self.port}",
                   "--graceful-timeout", "2", "--no-control-socket", "wsgi:app"]
        super().__init__(command, env, log_path)
        wait_until(self._answers, timeout=20, message=f"the web server on port {self.port}")

    def _answers(self) -> bool:
        import urllib.request

        if self.process.poll() is not None:
            raise AssertionError(f"web server exited:\n{self.output()}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False


@pytest.fixture
def start_web(settings, tmp_path, app):
    """Start real gunicorn web servers: ``start_web().url``."""
    yield from _processes(WebProcess, "web", settings, tmp_path)
