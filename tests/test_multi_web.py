"""Several web processes behind a real load balancer: Debian's nginx, configured by ``deploy/``.

Each test runs nginx as its own process (its config rendered from ``deploy/nginx/lanes.conf.template``
into a temporary prefix, on a free loopback port) in front of two gunicorn web processes, with two
``worker.py`` supervisors behind them. This is also the proof that Socket.IO keeps working with more
than one web process: a client's events reach it whichever process holds its socket.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
import socketio

from deploy.nginx_config import write as write_nginx_config
from tests.conftest import free_port, wait_until

DEBIAN_NGINX = "/usr/sbin/nginx"
WEB_ENV = {"LANES_TRUSTED_PROXIES": "1", "LANES_LOGIN_RATE_ADDRESS": "3/15minutes"}
RECONNECT_SECONDS = 5  # a client of a killed web process is served by another one within this


def nginx_program() -> str:
    """Debian's nginx; missing, a failure in CI and a skip elsewhere."""
    path = shutil.which("nginx") or (DEBIAN_NGINX if os.access(DEBIAN_NGINX, os.X_OK) else None)
    if path is None:
        message = "nginx is not installed (Debian: apt-get install nginx; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class Nginx:
    """nginx as a process of the test (never the system service), on a free loopback port."""

    def __init__(self, program: str, web_urls: list[str]):
        # Under /tmp, not pytest's private tmp_path: nginx's workers (user nobody) must reach it.
        self.prefix = Path(tempfile.mkdtemp(prefix="lanes-nginx-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backends = [url.removeprefix("http://") for url in web_urls]
        write_nginx_config(self.prefix, f"127.0.0.1:{self.port}", self.backends)
        self.output = open(self.prefix / "logs" / "nginx.out", "wb")
        self.process = subprocess.Popen(
            [program, "-p", str(self.prefix), "-c", "nginx.conf", "-e", "logs/error.log", "-g", "daemon off;"],
            stdout=self.output, stderr=subprocess.STDOUT,
        )
        wait_until(self._answers, timeout=15, message=f"nginx on port {self.port}")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"nginx exited: {(self.prefix / 'logs' / 'error.log').read_text()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def served_by(self, pattern: str) -> list[str]:
        """For each access-log line matching ``pattern``: the web process that answered it."""
        lines = (self.prefix / "logs" / "access.log").read_text().splitlines()
        # After a retry $upstream_addr lists every process tried; the last one answered.
        return [re.search(r"upstream=(.*) time=", line).group(1).split(", ")[-1]
                for line in lines if re.search(pattern, line)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()
        shutil.rmtree(self.prefix, ignore_errors=True)


class Cluster:
    def __init__(self, webs, workers, nginx: Nginx):
        self.webs, self.workers, self.nginx = webs, workers, nginx

    def web_at(self, address: str):
        return next(web for web in self.webs if web.url.endswith(address))


@pytest.fixture
def cluster(start_web, start_worker):
    program = nginx_program()
    webs = [start_web(**WEB_ENV) for _ in range(2)]
    workers = [start_worker() for _ in range(2)]
    nginx = Nginx(program, [web.url for web in webs])
    yield Cluster(webs, workers, nginx)
    nginx.stop()


@pytest.fixture
def token(make_user, make_token):
    return make_token(make_user("alice"))


class Listener:
    """A python-socketio client that records its connects and every event it receives."""

    EVENTS = ("request.queued", "request.started", "request.finished", "request.failed", "request.canceled")

    def __init__(self, url: str, token: str, transports: list[str] | None = None, reconnection: bool = False):
        self.events: list[tuple[str, dict]] = []
        self.connected_at: list[float] = []
        self.lock = threading.Lock()
        self.client = socketio.Client(reconnection=reconnection, reconnection_delay=0.5, reconnection_delay_max=1,
                                      randomization_factor=0)
        self.client.on("connect", lambda: self.connected_at.append(time.monotonic()))
        for name in self.EVENTS:
            self.client.on(name, self._recorder(name))
        self.client.connect(url, auth={"token": token}, transports=transports, wait_timeout=10)

    def _recorder(self, name):
        def record(data):
            with self.lock:
                self.events.append((name, data))
        return record

    def names_for(self, request_id: int) -> list[str]:
        with self.lock:
            return [name for name, data in self.events if data.get("id") == request_id]

    def finished(self) -> list[int]:
        with self.lock:
            return [data["id"] for name, data in self.events if name == "request.finished"]

    def close(self) -> None:
        self.client.disconnect()


def call(method: str, url: str, token: str, body: dict | None = None, headers: dict | None = None,
         timeout: float = 20) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False  # loopback only, never through a proxy from the environment
        return session.request(method, url, json=body, timeout=timeout,
                               headers={"Authorization": f"Bearer {token}", **(headers or {})})


def submit(base: str, token: str, payload: dict, headers: dict | None = None) -> int:
    response = call("POST", f"{base}/api/v1/requests", token, {"type": "echo", "payload": payload}, headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_socketio_through_nginx_every_client_gets_every_event_whichever_process_holds_its_socket(cluster, token):
    web0, web1 = cluster.webs
    nginx = cluster.nginx
    listeners = {
        "WebSocket on web 0": Listener(web0.url, token, ["websocket"]),
        "WebSocket on web 1": Listener(web1.url, token, ["websocket"]),
        # Socket.IO's default: a long-polling handshake, then the upgrade; needs the sticky route.
        "polling, then WebSocket, through nginx": Listener(nginx.url, token),
        # A browser that cannot open a WebSocket: every poll must reach the process holding the session.
        "long-polling only, through nginx": Listener(nginx.url, token, ["polling"]),
    }
    try:
        request_ids = [submit(nginx.url, token, {"message": f"message {n}"}) for n in range(6)]
        # The submits were spread over both web processes (least_conn), so each queued event came from
        # one process and reached the sockets held by the other through the Redis message queue.
        assert set(nginx.served_by(r'"POST /api/v1/requests ')) == set(nginx.backends)

        for name, listener in listeners.items():
            wait_until(lambda listener=listener: set(request_ids) <= set(listener.finished()), timeout=30,
                       message=f"every request.finished at the client with {name}")
        for name, listener in listeners.items():
            for request_id in request_ids:
                assert listener.names_for(request_id) == ["request.queued", "request.started", "request.finished"], (
                    name, request_id, listener.events)
            assert listener.finished() == request_ids, name  # one lane: finished in the order submitted
            assert listener.client.transport() == ("polling" if "only" in name else "websocket"), name
            assert len(listener.connected_at) == 1, f"{name} had to reconnect"
        results = [data["result"] for name, data in listeners["long-polling only, through nginx"].events
                   if name == "request.finished"]
        assert results == [{"message": f"message {n}"} for n in range(6)]
    finally:
        for listener in listeners.values():
            listener.close()


def test_long_polls_and_cancels_work_through_any_web_process(cluster, token):
    web0, web1 = cluster.webs
    nginx = cluster.nginx
    running = submit(web0.url, token, {"message": "slow", "delay_ms": 20000})
    waiting = submit(web1.url, token, {"message": "next"})
    wait_until(lambda: call("GET", f"{nginx.url}/api/v1/requests/{running}", token).json()["status"] == "started",
               timeout=20, message="the slow request to start")

    answers: dict[str, dict] = {}

    def long_poll(label: str, base: str, request_id: int) -> None:
        response = call("GET", f"{base}/api/v1/requests/{request_id}?wait=20", token, timeout=30)
        answers[label] = {"status_code": response.status_code, **response.json(), "at": time.monotonic()}

    polls = [
        threading.Thread(target=long_poll, args=("running, on web 0", web0.url, running)),
        threading.Thread(target=long_poll, args=("running, through nginx", nginx.url, running)),
        threading.Thread(target=long_poll, args=("waiting, on web 1", web1.url, waiting)),
    ]
    for poll in polls:
        poll.start()
    time.sleep(1)
    assert answers == {}, "the long-polls return only when their request ends"

    # A queued request canceled on web 0 (it was submitted, and is long-polled, on web 1).
    canceled = call("DELETE", f"{web0.url}/api/v1/requests/{waiting}", token)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled", canceled.text
    # The running one canceled on web 1 (submitted on web 0, long-polled on web 0 and through nginx).
    canceled_at = time.monotonic()
    stopping = call("DELETE", f"{web1.url}/api/v1/requests/{running}", token)
    assert stopping.status_code == 202, stopping.text
    for poll in polls:
        poll.join(10)
    assert set(answers) == {"running, on web 0", "running, through nginx", "waiting, on web 1"}, answers
    for label, answer in answers.items():
        assert answer["status_code"] == 200 and answer["status"] == "canceled", (label, answer)
    slowest = max(answer["at"] for label, answer in answers.items() if label.startswith("running"))
    assert slowest - canceled_at < 3, "a running cancelable request ends canceled within about a second"

    # And a submit, long-poll and result all through nginx.
    through = submit(nginx.url, token, {"message": "through nginx"})
    answer = call("GET", f"{nginx.url}/api/v1/requests/{through}?wait=20", token, timeout=30).json()
    assert answer["status"] == "finished" and answer["result"] == {"message": "through nginx"}


def kill_web(web) -> None:
    """SIGKILL a gunicorn web server: its worker process (which holds the sockets) and its master."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == web.process.pid:
                    children.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile
    assert children, "gunicorn's worker process"
    for pid in [*children, web.process.pid]:
        os.kill(pid, signal.SIGKILL)
    web.process.wait(10)


class Submitter(threading.Thread):
    """Submits echo requests through nginx as a careful client does: each with its Idempotency-Key,
    retried (same key) on a connection error or a 502/503 until acknowledged."""

    def __init__(self, base: str, token: str):
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.stop_event = threading.Event()
        self.acknowledged: list[tuple[str, int, float]] = []  # key, request id, when
        self.retries = 0
        self.problem: str | None = None  # what went wrong, for the test to report

    def run(self) -> None:
        try:
            self._submit_until_stopped()
        except Exception as problem:  # noqa: BLE001 - handed to the test, which fails with it
            self.problem = repr(problem)

    def _submit_until_stopped(self) -> None:
        for n in range(400):
            if self.stop_event.is_set():
                return
            key = f"kill-test-{n}"
            for _attempt in range(50):
                try:
                    response = call("POST", f"{self.base}/api/v1/requests", self.token,
                                    {"type": "echo", "payload": {"message": key}}, {"Idempotency-Key": key}, timeout=10)
                except requests.RequestException:
                    response = None
                if response is not None and response.status_code in (200, 202):
                    self.acknowledged.append((key, response.json()["id"], time.monotonic()))
                    break
                assert response is None or response.status_code in (502, 503, 504), response.text
                self.retries += 1
                time.sleep(0.2)
            else:
                raise AssertionError(f"{key} was never acknowledged")
            time.sleep(0.01)  # nearly always one submit in flight, so the kill is likely to cut one


def test_killing_a_web_process_moves_its_clients_to_another_and_loses_nothing(cluster, token):
    nginx = cluster.nginx
    listener = Listener(nginx.url, token, reconnection=True)
    submitter = Submitter(nginx.url, token)
    try:
        [home] = set(nginx.served_by(r'"GET /socket.io/\?.*transport=polling'))
        victim = cluster.web_at(home)
        [survivor] = [web for web in cluster.webs if web is not victim]

        submitter.start()
        wait_until(lambda: len(submitter.acknowledged) >= 10 or submitter.problem, timeout=20,
                   message="submits before the kill")
        killed_at = time.monotonic()
        kill_web(victim)

        wait_until(lambda: len(listener.connected_at) == 2, timeout=RECONNECT_SECONDS + 5,
                   message="the Socket.IO client to reconnect")
        reconnect_seconds = listener.connected_at[1] - killed_at
        assert reconnect_seconds <= RECONNECT_SECONDS, reconnect_seconds
        assert nginx.served_by(r'"GET /socket.io/\?.*transport=polling')[-1] == survivor.url.removeprefix("http://")
        reconnected_at = listener.connected_at[1]
        wait_until(lambda: sum(at > reconnected_at + 1 for *_, at in submitter.acknowledged) >= 10 or submitter.problem,
                   timeout=20, message="submits after the reconnect")
    finally:
        submitter.stop_event.set()
        submitter.join(30)
    assert submitter.problem is None, submitter.problem
    try:
        acknowledged = submitter.acknowledged
        ids = [request_id for _, request_id, _ in acknowledged]
        assert len(set(ids)) == len(ids) == len({key for key, _, _ in acknowledged}), "one request per key"

        def last_has_ended() -> bool:
            last = call("GET", f"{nginx.url}/api/v1/requests/{ids[-1]}?wait=5", token, timeout=30).json()
            return last["status"] in {"finished", "failed", "canceled"}

        # One lane runs in order: once the last request has ended, every one before it has too.
        wait_until(last_has_ended, timeout=60, interval=0, message="the last acknowledged request to end")
        finals = [call("GET", f"{nginx.url}/api/v1/requests/{request_id}", token).json() for request_id in ids]
        # Every acknowledged request finished with its own message, in the order submitted.
        assert [(r["status"], r["result"]) for r in finals] == [
            ("finished", {"message": key}) for key, _, _ in acknowledged], [
            (r["id"], r["status"], r["attempts"], r["started_at"]) for r in finals]
        assert [r["started_at"] for r in finals] == sorted(r["started_at"] for r in finals)
        # Nothing else landed: a POST cut off by the kill and retried with its key is the same request.
        listed, cursor = [], ""
        for _page in range(20):
            page = call("GET", f"{nginx.url}/api/v1/requests?limit=200{cursor}", token).json()
            listed += [r["id"] for r in page["requests"]]
            if page["next"] is None:
                break
            cursor = f"&before={page['next']}"
        assert sorted(listed) == sorted(ids)
        # The moved client gets the events of everything submitted once it was back.
        after = [request_id for _, request_id, at in acknowledged if at > reconnected_at]
        wait_until(lambda: set(after) <= set(listener.finished()), timeout=10,
                   message="request.finished on the moved client")
    finally:
        listener.close()


def sign_in_from(source: str, port: int, username: str, password: str, forwarded: str | None = None) -> int:
    """POST /api/v1/tokens to nginx from the loopback address ``source``; the status code."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(source, 0))
    try:
        headers = {"Content-Type": "application/json", **({"X-Forwarded-For": forwarded} if forwarded else {})}
        connection.request("POST", "/api/v1/tokens", body=json.dumps({"username": username, "password": password}),
                           headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_rate_limits_see_each_client_address_through_nginx(cluster, make_user):
    make_user("alice", "correct horse battery")
    port = cluster.nginx.port
    # Three failed sign-ins from one client (other names each time: only the address limit, 3 here,
    # is reached), spread over both web processes, throttle that client's address.
    assert [sign_in_from("127.0.0.2", port, f"nobody{n}", "wrong password") for n in range(3)] == [401] * 3
    assert set(cluster.nginx.served_by(r'^127\.0\.0\.2 .*"POST /api/v1/tokens')) == set(cluster.nginx.backends)
    assert sign_in_from("127.0.0.2", port, "alice", "correct horse battery") == 429
    # A forged X-Forwarded-For does not help: nginx appends the real address, and only that is trusted.
    assert sign_in_from("127.0.0.2", port, "alice", "correct horse battery", forwarded="127.0.0.7") == 429
    # Another client, through the same nginx, is not throttled for it.
    assert sign_in_from("127.0.0.3", port, "alice", "correct horse battery") == 201
