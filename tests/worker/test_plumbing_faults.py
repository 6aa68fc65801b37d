"""Lanes' own plumbing failing under a running request: it is re-run like a crash, never failed,
and the lane carries on within seconds of the database or Redis coming back."""

from __future__ import annotations

import shutil
import subprocess
import time

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from tests.conftest import free_port, requests_of, wait_until
from webapp.extensions import db
from webapp.lanes.service import submit_request


def all_ended(app, user_id: int):
    found = requests_of(app, user_id)
    return found if found and all(row.status in ("finished", "failed", "canceled") for row in found) else None


def terminate_other_connections(database_url: str) -> int:
    """What a database failover or an operator's pg_terminate_backend does to every worker connection."""
    url = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as connection:
        return len(connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall())


def test_a_lane_resumes_after_its_database_connections_are_cut_mid_job(app, make_user, start_worker, settings):
    if not settings["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("cutting server connections needs PostgreSQL (CI sets TEST_DATABASE_URL)")
    user = make_user("sid")
    with app.app_context():
        first = submit_request(user, "echo", {"message": "cut", "delay_ms": 1500}).request.id
    start_worker(LANES_IDLE_SECONDS="30")
    wait_until(lambda: requests_of(app, user)[0].status == "started", timeout=30, message="the request to start")

    assert terminate_other_connections(settings["SQLALCHEMY_DATABASE_URI"]) >= 1
    cut_at = time.monotonic()
    with app.app_context():
        db.engine.dispose()  # this test's own pooled connections were cut too
        later = submit_request(user, "echo", {"message": "after the cut"}).request.id

    found = {row.id: row for row in wait_until(lambda: all_ended(app, user), timeout=30, message="both to end")}
    resumed_in = time.monotonic() - cut_at
    assert found[first].status == "finished", f"the interrupted request ended {found[first].status}"
    assert found[later].status == "finished"
    assert found[later].started_at >= found[first].ended_at
    assert resumed_in < 10, f"the lane took {resumed_in:.1f} s to carry on after the database came back"


class PrivateRedis:
    """A redis-server of this test's own, which it may stop and start like an operator would."""

    def __init__(self, folder):
        binary = shutil.which("redis-server", path="/usr/bin:/usr/local/bin") or shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _answers(client), timeout=10, message="the private redis-server")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _answers(client) -> bool:
    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    yield server
    if server.process.poll() is None:
        server.stop()


def test_a_redis_restart_mid_job_reruns_the_request_instead_of_failing_it(settings, make_user, start_worker,
                                                                          private_redis, migrated):
    from webapp import create_app

    app = create_app({**settings, "REDIS_URL": private_redis.url})
    user = make_user("tara")
    with app.app_context():
        first = submit_request(user, "echo", {"message": "through a restart", "delay_ms": 2500}).request.id
        second = submit_request(user, "echo", {"message": "next"}).request.id
    start_worker(REDIS_URL=private_redis.url, LANES_IDLE_SECONDS="30", LANES_RECONCILE_SECONDS="1")
    wait_until(lambda: requests_of(app, user)[0].status == "started", timeout=30, message="the request to start")

    private_redis.stop()  # the running job's cancel checks and the lane's lease now fail
    time.sleep(2)
    private_redis.start()  # empty: queues, leases and indexes are gone
    back_at = time.monotonic()

    found = {row.id: row for row in wait_until(lambda: all_ended(app, user), timeout=40, message="both to end")}
    assert found[first].status == "finished", f"{found[first].status}: {found[first].error}"
    assert found[first].error is None
    assert found[second].status == "finished"
    assert found[second].started_at >= found[first].ended_at
    assert time.monotonic() - back_at < 30


def test_a_redis_blip_as_a_lane_worker_starts_hands_the_lane_back_instead_of_crashing(app, make_user, redis_client,
                                                                                      monkeypatch):
    from webapp.lanes import rq_adapter
    from webapp.lanes.lane_worker import serve_lane
    from webapp.lanes.lease import LaneLease

    user = make_user("uma")
    with app.app_context():
        request_id = submit_request(user, "echo", {"message": "later"}).request.id
    lease = LaneLease(redis_client, user, "test:blip", seconds=10)
    assert lease.acquire()

    def refused(self):
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(rq_adapter.LaneRQWorker, "register_birth", refused)

    assert serve_lane(app, user, lease) == 0, "a Redis blip at start-up is not a crash"
    assert not redis_client.exists(f"lanes:lease:{user}"), "the lane was not handed back"
    assert redis_client.zscore("lanes:ready", str(user)) is not None, "the lane left the ready index"
    assert [row.status for row in requests_of(app, user)] == ["queued"]
    assert request_id


def test_a_lane_handed_back_while_redis_fails_over_stays_ready(app, make_user, redis_client, monkeypatch):
    """A lane worker starts as the primary dies: it cannot start, nor at first hand its lane back, and
    the new primary lacks the lane's id (replication is asynchronous). It keeps trying to hand the
    lane back until Redis answers, and leaves it ready: its request does not wait for the reconciler."""
    from webapp.lanes import keys, rq_adapter
    from webapp.lanes.lane_worker import serve_lane
    from webapp.lanes.lease import LaneLease

    user = make_user("vera")
    with app.app_context():
        submit_request(user, "echo", {"message": "lost with the old primary"})
    lease = LaneLease(redis_client, user, "test:failover", seconds=10)
    assert lease.acquire()
    redis_client.delete(keys.rq_queue(user))  # the id the old primary held
    redis_client.zrem(keys.READY, str(user))  # admitted: the lane left the ready index

    def refused(*_args, **_kwargs):
        raise redis.exceptions.ConnectionError("Connection refused.")

    monkeypatch.setattr(rq_adapter.LaneRQWorker, "register_birth", refused)
    release, tries = LaneLease.release, []

    def release_once_redis_answers(self):
        tries.append(1)
        if len(tries) < 3:
            refused()
        return release(self)

    monkeypatch.setattr(LaneLease, "release", release_once_redis_answers)

    assert serve_lane(app, user, lease) == 0
    assert len(tries) == 3, "the hand-back was not tried again"
    assert not redis_client.exists(keys.lease(user)), "the lane was not handed back"
    assert redis_client.zscore(keys.READY, str(user)) is not None, "the lane with work is not ready"
