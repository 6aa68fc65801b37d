"""Lane worker processes: registered with RQ, named ``lanes lane:<id>``, one per lane, gone when idle."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from rq import Worker

from tests.conftest import wait_until
from webapp.extensions import db
from webapp.lanes import keys
from webapp.lanes.rq_adapter import current_job_id
from webapp.lanes.service import submit_request
from webapp.models import LaneRequest


def lane_keys(connection, user_id: int) -> list[str]:
    """Every Redis key (or index entry) that names the user's lane."""
    lane = keys.lane_name(user_id)
    found = [key.decode() for key in connection.scan_iter(f"*{lane}*")]
    found += [f"lanes:lease:{user_id}"] if connection.exists(keys.lease(user_id)) else []
    found += ["lanes:ready member"] if connection.zscore(keys.READY, str(user_id)) is not None else []
    found += ["lanes:known member"] if connection.sismember(keys.KNOWN, str(user_id)) else []
    found += [m.decode() for m in connection.smembers(keys.RQ_QUEUES) if m.decode().endswith(lane)]
    jobs = connection.scan_iter("rq:job:*")
    found += [key.decode() for key in jobs if connection.hget(key, "origin") == lane.encode()]
    return found


def has_exited(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (an orphan's new parent may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def process_title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_lane_worker_is_an_rq_worker_titled_with_its_lane(app, make_user, start_worker, redis_client):
    user = make_user("alice")
    with app.app_context():
        request_id = submit_request(user, "echo", {"message": "hold", "delay_ms": 3000}).request.id
    start_worker()
    start_worker()

    workers = wait_until(lambda: Worker.all(connection=redis_client), message="a lane worker to register")
    assert len(workers) == 1, "two workers serve one lane"
    worker = workers[0]
    assert worker.queue_names() == [keys.lane_name(user)]
    assert process_title(worker.pid) == f"lanes lane:{user}"
    time.sleep(1)
    assert len(Worker.all(connection=redis_client)) == 1

    def finished():
        with app.app_context():
            row = db.session.get(LaneRequest, request_id)
            status = row.status
            db.session.rollback()
            return status == "finished"

    wait_until(finished, timeout=15, message="the request to finish")


def test_idle_lane_worker_exits_and_an_absent_users_lane_leaves_no_key(app, make_user, start_worker, redis_client):
    user = make_user("bob")  # never signed in on the web: absent
    with app.app_context():
        submit_request(user, "echo", {"message": "hi"})
    assert lane_keys(redis_client, user), "submitting created the lane"
    start_worker(LANES_IDLE_SECONDS="1")
    wait_until(lambda: Worker.all(connection=redis_client), message="the lane worker")
    # The worker goes idle after 1 s, exits, and deletes the empty lane of an absent user.
    wait_until(lambda: not Worker.all(connection=redis_client), timeout=10, message="the idle worker to exit")
    wait_until(lambda: not lane_keys(redis_client, user), timeout=7, message="the lane's keys to go")


def test_lane_of_a_present_user_stays_until_they_leave(app, make_user, start_worker, redis_client):
    from webapp.lanes import presence
    from webapp.lanes.cleanup import delete_lane_if_gone

    user = make_user("carol")
    presence.touch_session(redis_client, user, "session-1", idle_minutes=5)
    with app.app_context():
        submit_request(user, "echo", {"message": "hi"})
    start_worker(LANES_IDLE_SECONDS="1")
    wait_until(lambda: Worker.all(connection=redis_client), message="the lane worker")
    wait_until(lambda: not Worker.all(connection=redis_client), timeout=10, message="the idle worker to exit")
    wait_until(lambda: not redis_client.exists(keys.lease(user)), timeout=5, message="the lease to be released")
    assert lane_keys(redis_client, user), "the lane of a present user was deleted"
    presence.end_session(redis_client, user, "session-1")
    assert delete_lane_if_gone(redis_client, user)
    assert lane_keys(redis_client, user) == []


def test_lane_workers_of_a_killed_supervisor_finish_their_job_and_stop(app, make_user, start_worker, redis_client):
    user = make_user("dora")
    with app.app_context():
        request_id = submit_request(user, "echo", {"message": "survives", "delay_ms": 2000}).request.id
    supervisor = start_worker(LANES_IDLE_SECONDS="120")  # idling alone would keep it for two minutes

    def busy_lane_worker():
        workers = [w for w in Worker.all(connection=redis_client) if current_job_id(w)]
        return workers[0].pid if workers else None

    lane_worker = wait_until(busy_lane_worker, message="the lane worker to start the job")
    os.kill(supervisor.process.pid, signal.SIGKILL)
    supervisor.process.wait()

    wait_until(lambda: has_exited(lane_worker), timeout=10, message="the orphaned lane worker to stop")
    with app.app_context():
        row = db.session.get(LaneRequest, request_id)
        assert (row.status, row.result) == ("finished", {"message": "survives"})
        db.session.rollback()
    assert not redis_client.exists(keys.lease(user)), "it handed the lane back"
