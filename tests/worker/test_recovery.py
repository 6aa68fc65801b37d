"""A request acknowledged is never lost: not by a killed lane worker, not by a Redis that lost its data."""

from __future__ import annotations

import os
import signal

from rq import Worker
from sqlalchemy import select

from tests.conftest import wait_until
from webapp.extensions import db
from webapp.lanes.rq_adapter import current_job_id
from webapp.lanes.service import submit_request
from webapp.models import LaneRequest


def rows_of(app, user_id):
    with app.app_context():
        query = select(LaneRequest).where(LaneRequest.user_id == user_id).order_by(LaneRequest.id)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        db.session.rollback()
        return rows


def all_finished(app, user_id):
    """The user's rows once every one has finished, else None (for ``wait_until``)."""
    rows = rows_of(app, user_id)
    return rows if all(r.status == "finished" for r in rows) else None


def busy_worker_pid(redis_client):
    """The pid of a live lane worker that is running a job (a killed one stays registered a while)."""
    for worker in Worker.all(connection=redis_client):
        if current_job_id(worker) and os.path.exists(f"/proc/{worker.pid}"):
            return worker.pid
    return None


def test_killed_lane_worker_job_is_rerun_first(app, make_user, start_worker, redis_client):
    user = make_user("alice")
    with app.app_context():
        first = submit_request(user, "echo", {"message": "interrupted", "delay_ms": 3000}).request.id
        second = submit_request(user, "echo", {"message": "after"}).request.id
    start_worker()

    def running():
        row = rows_of(app, user)[0]
        return row.status == "started" and busy_worker_pid(redis_client)

    os.kill(wait_until(running, message="the lane worker to start the job"), signal.SIGKILL)

    rows = wait_until(lambda: all_finished(app, user), timeout=30, message="both requests to finish after the crash")
    by_id = {row.id: row for row in rows}
    assert by_id[first].attempts == 2 and by_id[first].result == {"message": "interrupted"}
    assert by_id[second].attempts == 1
    assert by_id[second].started_at >= by_id[first].ended_at


def test_a_request_that_keeps_killing_its_worker_fails_as_worker_lost(app, make_user, start_worker, redis_client):
    user = make_user("bob")
    with app.app_context():
        doomed = submit_request(user, "echo", {"message": "doomed", "delay_ms": 20000}).request.id
        after = submit_request(user, "echo", {"message": "still runs"}).request.id
    start_worker(LANES_MAX_ATTEMPTS="2")
    for attempt in (1, 2):
        def running_attempt(attempt=attempt):
            row = {row.id: row for row in rows_of(app, user)}[doomed]
            return row.status == "started" and row.attempts == attempt and busy_worker_pid(redis_client)

        os.kill(wait_until(running_attempt, timeout=15, message=f"attempt {attempt} to run"), signal.SIGKILL)

    def settled():
        rows = {row.id: row for row in rows_of(app, user)}
        return rows if rows[after].status == "finished" else None

    rows = wait_until(settled, timeout=30, message="the lane to move past the doomed request")
    assert rows[doomed].status == "failed"
    assert rows[doomed].error_code == "worker_lost"
    assert rows[doomed].attempts == 2
    assert rows[after].result == {"message": "still runs"}


def test_requests_survive_redis_losing_its_data_and_keep_their_order(app, make_user, start_worker, redis_client):
    user = make_user("carol")
    with app.app_context():
        ids = [submit_request(user, "echo", {"message": str(n)}).request.id for n in range(5)]
    redis_client.flushdb()  # Redis restarted without its data: the database rows are the truth
    start_worker(LANES_RECONCILE_SECONDS="1")

    rows = wait_until(lambda: all_finished(app, user), timeout=30,
                      message="the reconciler to re-enqueue the lost requests")
    ran = sorted(rows, key=lambda row: row.started_at)
    assert [row.id for row in ran] == ids
    assert [row.result["message"] for row in ran] == [str(n) for n in range(5)]


def test_a_flush_under_a_running_lane_does_not_wait_for_the_reconciler(app, make_user, start_worker, redis_client):
    """Redis loses everything while a lane runs a job: the lane's worker takes its forgotten lease
    again and finishes the job; its queued requests (whose ids went with the flush, and which no new
    submit pushes again) still run right after, in order, although the reconciler would not look for
    minutes and the worker would not leave idle for one."""
    user = make_user("erin")
    start_worker(LANES_RECONCILE_SECONDS="600", LANES_LEASE_SECONDS="3", LANES_IDLE_SECONDS="60")
    with app.app_context():
        ids = [submit_request(user, "echo", {"message": "long", "delay_ms": 2500}).request.id]
        ids += [submit_request(user, "echo", {"message": str(n)}).request.id for n in range(3)]

    wait_until(lambda: rows_of(app, user)[0].status == "started", timeout=20, message="the long job to start")
    redis_client.flushdb()

    rows = wait_until(lambda: all_finished(app, user), timeout=20,
                      message="the flushed lane's requests to run without the reconciler or an idle exit")
    ran = sorted(rows, key=lambda row: row.started_at)
    assert [row.id for row in ran] == ids
    assert all(row.attempts == 1 for row in rows), "a request ran twice"
