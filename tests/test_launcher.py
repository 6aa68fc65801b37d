"""``make run`` end to end: ``python -m webapp.launcher`` on a fresh instance directory, as a user runs it.

Each test starts the real thing (embedded Redis, migrations, gunicorn, ``worker.py``), uses it over
HTTP, stops it with a signal and checks that nothing it started is left behind.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import (
    FAST_ARGON2,
    ROOT,
    create_postgres_database,
    csrf_token_from,
    drop_postgres_database,
    wait_until,
)

START_SECONDS = 40
STOP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_of(instance_dir: Path) -> list[str]:
    """Live processes started for this instance directory (they all inherit its LANES_INSTANCE_DIR)."""
    marker = f"LANES_INSTANCE_DIR={instance_dir}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if marker in environ and state != "Z":
            found.append(f"{entry.name}: {command.strip()}")
    return found


class Lanes:
    """One ``python -m webapp.launcher`` run, its output in a file."""

    def __init__(self, instance_dir: Path, log_path: Path, **env):
        self.instance_dir = instance_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        clean = {
            key: value for key, value in os.environ.items()
            if key not in {"REDIS_URL", "DATABASE_URL", "SECRET_KEY", "HOST", "LANES_ADMIN_PASSWORD",
                           "LANES_SOCKETIO_CHANNEL"}
        }
        self.env = {
            **clean,
            "LANES_INSTANCE_DIR": str(instance_dir),
            "PORT": str(self.port),
            "LANES_WORKER_METRICS_PORT": "0",
            "LANES_IDLE_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
            **{key: str(value) for key, value in FAST_ARGON2.items()},
            **env,
        }
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webapp.launcher"], cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_running(self) -> str:
        def running():
            if self.process.poll() is not None:
                raise AssertionError(f"launcher exited with {self.process.returncode}:\n{self.output()}")
            return "Lanes is running at" in self.output()

        wait_until(running, timeout=START_SECONDS, interval=0.1, message="Lanes is running at")
        return self.output()

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"launcher did not stop within {STOP_SECONDS} s:\n{self.output()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args, **_kwargs):
        return None


class Visitor:
    """A browser-like HTTP client: cookies, no proxies, redirects shown rather than followed."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            NoRedirects(),
        )

    def request(self, method: str, path: str, form: dict | None = None, body: dict | None = None,
                token: str | None = None) -> tuple[int, dict, str]:
        data, headers = None, {}
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as response:
            return response.code, dict(response.headers), response.read().decode()

    def login(self, username: str, password: str) -> tuple[int, dict]:
        status, _, page = self.request("GET", "/auth/login")
        assert status == 200
        status, headers, _ = self.request(
            "POST", "/auth/login",
            form={"username": username, "password": password, "csrf_token": csrf_token_from(page)},
        )
        return status, headers


@pytest.fixture
def instance_dir():
    # Short, so that the embedded Redis gets its unix socket as on a usual checkout.
    with tempfile.TemporaryDirectory(prefix="lanes-run-") as path:
        yield Path(path)


@pytest.fixture
def launch(instance_dir, tmp_path):
    started: list[Lanes] = []

    def start(**env) -> Lanes:
        lanes = Lanes(instance_dir, tmp_path / f"launcher{len(started)}.log", **env)
        started.append(lanes)
        return lanes

    yield start
    for lanes in started:
        lanes.kill()


def assert_all_stopped(lanes: Lanes) -> None:
    wait_until(lambda: not processes_of(lanes.instance_dir), timeout=5,
               message=f"every process of the launcher to end: {processes_of(lanes.instance_dir)}")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", lanes.port), timeout=1).close()
    socket_path = lanes.instance_dir / "redis.sock"
    assert not socket_path.exists()


def test_make_run_starts_everything_creates_the_admin_runs_a_request_and_stops_on_ctrl_c(launch, instance_dir):
    lanes = launch()
    output = lanes.wait_until_running()
    passwords = re.findall(r"^Admin password: (\S+)$", output, re.MULTILINE)
    assert len(passwords) == 1, output
    password = passwords[0]
    assert f"Lanes is running at http://127.0.0.1:{lanes.port}/" in output
    assert (instance_dir / "redis.sock").exists() and (instance_dir / "lanes.db").exists()
    assert (instance_dir / "secret_key").exists()

    visitor = Visitor(lanes.url)
    assert visitor.login("admin", "wrong password")[0] == 401
    status, headers = visitor.login("admin", password)
    assert status == 302 and headers["Location"].endswith("/console"), (status, headers)

    status, _, body = visitor.request("POST", "/api/v1/tokens", body={"username": "admin", "password": password})
    assert status == 201, body
    token = json.loads(body)["token"]
    status, _, body = visitor.request(
        "POST", "/api/v1/requests", body={"type": "echo", "payload": {"message": "hello lanes"}}, token=token
    )
    assert status == 202, body
    request_id = json.loads(body)["id"]

    def finished():
        status, _, body = visitor.request("GET", f"/api/v1/requests/{request_id}?wait=5", token=token)
        assert status == 200, body
        return json.loads(body)["status"] == "finished" and json.loads(body)

    done = wait_until(finished, timeout=20, message="the echo request to finish")
    assert done["result"] == {"message": "hello lanes"}

    # A second `make run` on the same instance directory refuses, and leaves the first alone.
    second = subprocess.run(
        [sys.executable, "-m", "webapp.launcher"], cwd=ROOT, env={**lanes.env, "PORT": str(free_port())},
        capture_output=True, text=True, timeout=60,
    )
    assert second.returncode != 0
    assert "already running" in second.stderr, second.stderr + second.stdout
    assert visitor.request("GET", "/healthz")[0] == 200

    assert lanes.stop(signal.SIGINT) == 0, lanes.output()
    assert "Lanes stopped." in lanes.output()
    assert_all_stopped(lanes)


def test_a_given_admin_password_is_used_never_printed_and_kept_across_restarts(launch, instance_dir, redis_url):
    base = os.environ.get("TEST_DATABASE_URL")
    database_url = create_postgres_database(base) if base else f"sqlite:///{instance_dir / 'given.db'}"
    try:
        # With REDIS_URL and DATABASE_URL given, those are used and no embedded Redis starts.
        lanes = launch(LANES_ADMIN_PASSWORD="given admin password", DATABASE_URL=database_url, REDIS_URL=redis_url,
                       LANES_SOCKETIO_CHANNEL=f"lanes-launcher-test-{os.getpid()}")
        output = lanes.wait_until_running()
        assert "Admin password" not in output and "given admin password" not in output
        assert "LANES_ADMIN_PASSWORD" in output
        assert "Redis: embedded" not in output and not (instance_dir / "redis").exists()
        assert Visitor(lanes.url).login("admin", "given admin password")[0] == 302
        assert lanes.stop(signal.SIGTERM) == 0, lanes.output()
        assert_all_stopped(lanes)

        # The next start finds its admin: none is created, no password shown, the old one works.
        again = launch(DATABASE_URL=database_url)
        output = again.wait_until_running()
        assert "Admin password" not in output and "Created the administrator" not in output
        assert "Redis: embedded" in output
        assert Visitor(again.url).login("admin", "given admin password")[0] == 302
        assert again.stop(signal.SIGINT) == 0, again.output()
        assert_all_stopped(again)
    finally:
        if base:
            drop_postgres_database(database_url)


def pid_of(lanes: Lanes, name: str) -> int:
    """The pid of the launcher's own child whose command line names ``name`` (gunicorn's master, not its worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if parent == lanes.process.pid and name in command:
            found.append(int(entry.name))
    assert len(found) == 1, (name, found, processes_of(lanes.instance_dir))
    return found[0]


def test_when_web_dies_everything_stops_with_an_error(launch, instance_dir):
    lanes = launch()
    lanes.wait_until_running()
    os.kill(pid_of(lanes, "gunicorn"), signal.SIGKILL)  # the master

    assert lanes.process.wait(STOP_SECONDS) == 1
    assert "the web server (gunicorn) exited unexpectedly" in lanes.output()
    assert_all_stopped(lanes)


def test_a_killed_supervisor_is_started_again_with_back_off_while_web_stays_up(launch, instance_dir):
    lanes = launch(LANES_ADMIN_PASSWORD="given admin password")
    lanes.wait_until_running()
    visitor = Visitor(lanes.url)
    status, _, body = visitor.request(
        "POST", "/api/v1/tokens", body={"username": "admin", "password": "given admin password"})
    assert status == 201, body
    token = json.loads(body)["token"]

    first = pid_of(lanes, "worker.py")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: "started again" in lanes.output(), timeout=10, interval=0.1,
               message=f"the launcher to start the supervisor again:\n{lanes.output()}")
    output = lanes.output()
    assert "the supervisor (worker.py) exited unexpectedly (killed by SIGKILL); starting it again in 1 s" in output
    # Web never went away: the launcher is still running and a submit made now is acknowledged.
    assert lanes.process.poll() is None
    assert visitor.request("GET", "/healthz")[0] == 200
    status, _, body = visitor.request(
        "POST", "/api/v1/requests", body={"type": "echo", "payload": {"message": "after the crash"}}, token=token)
    assert status == 202, body
    request_id = json.loads(body)["id"]

    def finished():
        status, _, body = visitor.request("GET", f"/api/v1/requests/{request_id}?wait=5", token=token)
        assert status == 200, body
        return json.loads(body)["status"] == "finished" and json.loads(body)

    assert wait_until(finished, timeout=30, message="the request to finish on the new supervisor")["result"] == {
        "message": "after the crash"}
    second = pid_of(lanes, "worker.py")
    assert second != first

    # A second death soon after the first waits longer: the back-off grows.
    os.kill(second, signal.SIGKILL)
    wait_until(lambda: lanes.output().count("started again") == 2, timeout=15, interval=0.1,
               message=f"the second restart:\n{lanes.output()}")
    assert "(killed by SIGKILL); starting it again in 2 s" in lanes.output()
    assert pid_of(lanes, "worker.py") not in {first, second}

    assert lanes.stop(signal.SIGINT) == 0, lanes.output()
    assert_all_stopped(lanes)


def test_the_terminal_keeps_the_sign_in_line_last_and_the_access_log_in_a_file(launch, instance_dir):
    lanes = launch()
    output = lanes.wait_until_running()
    password = re.search(r"^Admin password: (\S+)$", output, re.MULTILINE).group(1)
    wait_until(lambda: "Press Ctrl-C to stop." in lanes.output(), timeout=5, message="the end of start-up")
    visitor = Visitor(lanes.url)
    assert visitor.login("admin", password)[0] == 302
    assert visitor.request("GET", "/console")[0] == 200

    # What the terminal shows at the bottom after start-up and some traffic: the sign-in line.
    lines = lanes.output().strip().splitlines()
    assert lines[-2:] == [
        f"Sign in at {lanes.url}/auth/login as admin with the password {password}",
        "Press Ctrl-C to stop.",
    ], lines
    assert "serving up to" in lanes.output()  # the supervisor's start-up came before it
    assert "GET /console" not in lanes.output() and "POST /auth/login" not in lanes.output()
    access_log = instance_dir / "logs" / "access.log"
    wait_until(lambda: access_log.exists() and "GET /console" in access_log.read_text(), timeout=5,
               message="the visit in instance/logs/access.log")
    assert "POST /auth/login" in access_log.read_text()
    assert lanes.stop(signal.SIGINT) == 0, lanes.output()
    assert_all_stopped(lanes)

    # LANES_ACCESS_LOG=1 puts it back on the terminal.
    shown = launch(LANES_ACCESS_LOG="1")
    shown.wait_until_running()
    assert Visitor(shown.url).request("GET", "/auth/login")[0] == 200
    wait_until(lambda: "GET /auth/login" in shown.output(), timeout=5, message="the access log on the terminal")
    assert shown.stop(signal.SIGTERM) == 0, shown.output()
    assert_all_stopped(shown)
