"""Redis that fails over: web, ``worker.py`` and Socket.IO follow the primary a Sentinel promotes.

A real gunicorn web process and a real supervisor run against ``REDIS_URL=redis+sentinel://…``
(Debian's redis-server as primary and replica, three redis-sentinel processes). Users submit
without pause; the primary is SIGKILLed under that load. Clients retry a 503 (nothing was
acknowledged); every acknowledged request must finish, in order per user, after the failover,
and live events and long-polls must work again.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests
import socketio

from bench.soak.sentinel import SentinelDeployment, sentinel_missing
from tests.conftest import requests_of, wait_until

USERS = 4
LOAD_BEFORE_KILL_SECONDS = 2.0
LOAD_AFTER_PROMOTION_SECONDS = 4.0
SUBMIT_DEADLINE_SECONDS = 60.0
PAUSE_SECONDS = 0.05  # between one user's submits: steady load that the lanes can keep up with

pytestmark = pytest.mark.skipif(
    bool(sentinel_missing()) and not os.environ.get("CI"),
    reason=f"{sentinel_missing()} (.ci/run installs it)",
)


@pytest.fixture
def sentinels(tmp_path_factory):
    # Short paths: the processes' files live here, and unix-socket limits are near.
    deployment = SentinelDeployment(tmp_path_factory.mktemp("sentinel"))
    try:
        yield deployment.start()
    finally:
        deployment.stop()


class Submitter(threading.Thread):
    """One user submitting numbered echoes back to back; a 503 is retried, anything else is a failure."""

    def __init__(self, base_url: str, token: str, user: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.base_url, self.user, self.stop = base_url, user, stop
        self.acknowledged: list[tuple[int, str, float]] = []  # (id, message, time.monotonic() of the 202)
        self.unavailable = 0
        self.unexpected: list[str] = []

    def run(self) -> None:
        number = 0
        deadline = time.monotonic() + SUBMIT_DEADLINE_SECONDS
        while not self.stop.is_set() and time.monotonic() < deadline:
            message = f"user{self.user}-{number}"
            try:
                response = self.session.post(f"{self.base_url}/api/v1/requests", timeout=30,
                                             json={"type": "echo", "payload": {"message": message}})
            except requests.RequestException as problem:
                self.unexpected.append(f"{message}: {problem}")
                return
            if response.status_code == 202:
                self.acknowledged.append((response.json()["id"], message, time.monotonic()))
                number += 1
                time.sleep(PAUSE_SECONDS)
            elif response.status_code == 503:
                assert response.json()["error"]["code"] == "service_unavailable"
                self.unavailable += 1
                time.sleep(0.1)
            else:
                self.unexpected.append(f"{message}: {response.status_code} {response.text[:200]}")
                return


def test_acknowledged_requests_finish_in_order_after_the_primary_is_killed(
    app, make_user, make_token, sentinels, start_web, start_worker
):
    users = [make_user(f"failover{n}") for n in range(USERS)]
    tokens = {user: make_token(user) for user in users}
    watcher_token = make_token(make_user("watcher"))  # its own lane: live checks, apart from the load
    env = {"REDIS_URL": sentinels.url, "LANES_SUBMIT_RATE": "100000/minute"}
    web = start_web(**env)
    start_worker(**env)

    live = socketio.Client(reconnection=True)
    finished_live: set[int] = set()
    live.on("request.finished", lambda request: finished_live.add(request["id"]))
    live.connect(web.url, auth={"token": watcher_token}, transports=["websocket"], wait_timeout=10)
    api = requests.Session()
    api.trust_env = False
    api.headers["Authorization"] = f"Bearer {watcher_token}"
    assert heard_live(api, web.url, finished_live, deadline_seconds=15), "no live event even before the failover"

    stop = threading.Event()
    submitters = [Submitter(web.url, tokens[user], user, stop) for user in users]
    try:
        for submitter in submitters:
            submitter.start()
        time.sleep(LOAD_BEFORE_KILL_SECONDS)
        before_kill = sum(len(s.acknowledged) for s in submitters)
        old_primary = sentinels.kill_primary()
        killed_at = time.monotonic()
        new_primary, promotion_seconds = sentinels.wait_for_new_primary(timeout=30)
        time.sleep(LOAD_AFTER_PROMOTION_SECONDS)
    finally:
        stop.set()
        for submitter in submitters:
            submitter.join(40)

    assert new_primary != old_primary
    assert before_kill > 0, "nothing was acknowledged before the primary died"
    for submitter in submitters:
        assert not submitter.unexpected, submitter.unexpected
        after = [ack for ack in submitter.acknowledged if ack[2] > killed_at + promotion_seconds]
        assert after, f"user {submitter.user}: no submit was acknowledged after the failover"

    # Every acknowledged request finishes, each exactly once, in its user's order; and nothing
    # answered 503 left a request behind.
    acknowledged = {s.user: [(ack[0], ack[1]) for ack in s.acknowledged] for s in submitters}

    def all_ended():
        rows = requests_of(app, users)
        return rows if rows and all(row.status in ("finished", "failed", "canceled") for row in rows) else None

    rows = wait_until(all_ended, timeout=60, interval=0.5, message="every acknowledged request to end")
    for user in users:
        mine = [row for row in rows if row.user_id == user]
        assert [(row.id, row.status, row.result) for row in mine] == [
            (request_id, "finished", {"message": message}) for request_id, message in acknowledged[user]
        ]
        ran = sorted(mine, key=lambda row: row.started_at)
        assert [row.id for row in ran] == [row.id for row in mine], f"user {user}: out of order"
        for earlier, later in zip(ran, ran[1:], strict=False):
            assert later.started_at >= earlier.ended_at, f"request {later.id} started before {earlier.id} ended"

    # Live events and long-polls work again through the new primary.
    heard = heard_live(api, web.url, finished_live, deadline_seconds=40)
    live.disconnect()
    assert heard, "no request.finished reached the Socket.IO client after the failover"


def heard_live(api: requests.Session, base_url: str, finished_live: set[int], deadline_seconds: float) -> bool:
    """Submit, long-poll it to its end, and see its ``request.finished`` arrive over Socket.IO.

    The Socket.IO listener resubscribes with a back-off, so an event published before it is back
    is not heard (pub/sub delivers at most once): try again until the deadline.
    """
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        response = api.post(f"{base_url}/api/v1/requests", json={"type": "echo", "payload": {"message": "live"}},
                            timeout=30)
        assert response.status_code == 202, response.text
        request_id = response.json()["id"]
        waited = {}
        for _ in range(3):  # a busy machine may need more than one 30 s long-poll
            waited = api.get(f"{base_url}/api/v1/requests/{request_id}", params={"wait": 30}, timeout=60).json()
            if waited["status"] == "finished":
                break
        assert waited["status"] == "finished", waited
        try:
            wait_until(lambda: request_id in finished_live, timeout=3)  # noqa: B023 - used at once
            return True
        except AssertionError:
            continue
    return False
