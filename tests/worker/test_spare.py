"""The spare lane worker: a cold lane's first request is served by a process that was already
running and connected, a used or killed spare is replaced, and it never counts as a lane worker."""

from __future__ import annotations

import os
import signal
import time

import psutil
from rq import Worker
from sqlalchemy import select

from tests.conftest import requests_of, wait_until
from tests.worker.test_lane_worker import has_exited, process_title
from webapp.extensions import db
from webapp.lanes import keys
from webapp.lanes.service import submit_request
from webapp.lanes.spare import TITLE
from webapp.models import SystemEvent


def children(supervisor) -> list[psutil.Process]:
    try:
        return [child for child in psutil.Process(supervisor.process.pid).children()
                if child.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def spares(supervisor) -> list[int]:
    found = []
    for child in children(supervisor):
        try:
            if process_title(child.pid) == TITLE:
                found.append(child.pid)
        except FileNotFoundError:
            continue
    return found


def the_spare(supervisor, besides: int | None = None) -> int:
    """Wait for the supervisor's one spare (another than ``besides``); its pid. (A generous timeout:
    the first spare comes once the supervisor has started, which is slow on a loaded machine.)"""
    def one():
        found = [pid for pid in spares(supervisor) if pid != besides]
        return found[0] if len(found) == 1 else None

    return wait_until(one, timeout=40, message="the supervisor's spare lane worker")


def lane_worker_pids(redis_client, user_id: int) -> list[int]:
    return [worker.pid for worker in Worker.all(connection=redis_client)
            if worker.queue_names() == [keys.lane_name(user_id)]]


def finished(app, user_id: int) -> bool:
    rows = requests_of(app, user_id)
    return bool(rows) and all(row.status == "finished" for row in rows)


def lane_titled(pid: int) -> bool:
    try:
        return process_title(pid).startswith("lanes lane:")
    except FileNotFoundError:
        return False


def test_a_cold_lanes_first_request_is_served_by_the_waiting_spare_which_is_then_replaced(
        app, make_user, start_worker, redis_client):
    supervisor = start_worker()
    spare = the_spare(supervisor)
    assert not Worker.all(connection=redis_client), "a spare must not be listed as an RQ worker"
    user = make_user("cold")
    with app.app_context():
        submit_request(user, "echo", {"message": "first", "delay_ms": 500})

    served_by = wait_until(lambda: lane_worker_pids(redis_client, user), message="the lane's worker to register")
    assert served_by == [spare], "the cold lane was not given to the spare that was waiting"
    assert process_title(spare) == f"lanes lane:{user}"
    replacement = the_spare(supervisor, besides=spare)
    assert replacement != spare
    wait_until(lambda: finished(app, user), message="the request to finish")


def test_sigterm_stops_the_spare_with_its_supervisor(app, start_worker):
    supervisor = start_worker()
    spare = the_spare(supervisor)
    assert supervisor.stop(timeout=30) == 0
    wait_until(lambda: has_exited(spare), timeout=5, message="the spare to stop with its supervisor")


def test_a_killed_supervisors_spare_stops(app, start_worker):
    supervisor = start_worker()
    spare = the_spare(supervisor)
    os.kill(supervisor.process.pid, signal.SIGKILL)
    supervisor.process.wait()
    wait_until(lambda: has_exited(spare), timeout=5, message="the orphaned spare to stop")


def test_a_killed_spare_is_replaced_not_reported_as_a_crash_and_lanes_still_start(
        app, make_user, start_worker, redis_client):
    supervisor = start_worker()
    spare = the_spare(supervisor)
    os.kill(spare, signal.SIGKILL)
    replacement = the_spare(supervisor, besides=spare)

    user = make_user("after")
    with app.app_context():
        submit_request(user, "echo", {"message": "still served"})
    wait_until(lambda: finished(app, user), message="the request to finish")
    assert supervisor.process.poll() is None
    assert "spare lane worker" in supervisor.output() and f"{replacement}" in supervisor.output()
    with app.app_context():
        crashes = db.session.scalars(select(SystemEvent).where(SystemEvent.kind == "worker.crashed")).all()
        db.session.rollback()
    assert crashes == [], "a spare that served no lane was reported as a crashed lane worker"


def test_a_spare_takes_no_slot_and_one_worker_serves_each_lane(app, make_user, start_worker, redis_client):
    """One slot per supervisor, two supervisors (each with a spare), three lanes of slow jobs: at no
    time does a supervisor run more than one lane worker, nor a lane have two, and every request
    finishes, in order."""
    users = [make_user(f"slot{n}") for n in range(3)]
    with app.app_context():
        for n in range(2):
            for user in users:
                submit_request(user, "echo", {"message": f"{user}-{n}", "delay_ms": 300})
    supervisors = [start_worker(LANES_MAX_WORKERS="1", LANES_IDLE_SECONDS="1") for _ in range(2)]
    for supervisor in supervisors:
        the_spare(supervisor)

    most = 0
    deadline = time.monotonic() + 40
    while not all(finished(app, user) for user in users):
        assert time.monotonic() < deadline, "the requests did not all finish"
        lanes = [tuple(worker.queue_names()) for worker in Worker.all(connection=redis_client)]
        assert len(lanes) == len(set(lanes)), f"two workers serve one lane: {lanes}"
        running = [sum(1 for child in children(supervisor) if lane_titled(child.pid)) for supervisor in supervisors]
        assert max(running) <= 1, f"lane workers per one-slot supervisor: {running}"
        most = max(most, sum(running))
        time.sleep(0.05)
    assert most == 2, "the two supervisors' slots were not both used"
    for user in users:
        rows = requests_of(app, user)
        assert [row.id for row in sorted(rows, key=lambda row: row.started_at)] == [row.id for row in rows]


def test_a_lane_handed_to_a_spare_that_died_unseen_is_reported_so_the_supervisor_forks_instead():
    from webapp.lanes.spare import Spare, read_handover

    read_end, write_end = os.pipe()
    assert Spare(0, write_end).hand(7, 3, "host:1:abc:def")
    assert read_handover(read_end) == (7, 3, "host:1:abc:def")
    assert read_handover(read_end) is None, "the supervisor's end is closed once the lane is handed"
    os.close(read_end)

    read_end, write_end = os.pipe()
    os.close(read_end)  # the spare died: nobody reads its pipe
    assert not Spare(0, write_end).hand(7, 3, "host:1:abc:def")
