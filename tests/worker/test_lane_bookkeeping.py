"""Redis bookkeeping that drifts from the database is settled without running anything twice."""

from __future__ import annotations

from sqlalchemy import select

from tests.worker.test_lane_worker import lane_keys
from webapp.extensions import db
from webapp.lanes import keys
from webapp.lanes.lane_worker import serve_lane
from webapp.lanes.lease import LaneLease
from webapp.lanes.reconciler import reconcile
from webapp.lanes.service import submit_request
from webapp.models import LaneRequest


def queue_of(connection, user_id: int) -> list[str]:
    return [job_id.decode() for job_id in connection.lrange(keys.rq_queue(user_id), 0, -1)]


def test_an_id_left_without_its_job_does_not_keep_an_idle_lane_alive(app, make_user, redis_client, monkeypatch):
    # RQ moves each id it dequeues to the lane's intermediate list, and leaves it there when
    # the job hash is already gone: a finished job whose id was in the lane twice.
    user = make_user("dana")  # never signed in: the lane must go once it is idle
    with app.app_context():
        submit_request(user, "echo", {"message": "hi"})
    redis_client.rpush(keys.rq_queue(user), "999999")
    lease = LaneLease(redis_client, user, "test:1", seconds=10)
    assert lease.acquire()
    monkeypatch.setitem(app.config, "LANES_IDLE_SECONDS", 1)

    serve_lane(app, user, lease)  # in this process: returns once the lane has been idle 1 s

    assert lane_keys(redis_client, user) == [], "the idle lane of an absent user is gone at once"
    with app.app_context():
        assert [row.status for row in db.session.scalars(select(LaneRequest))] == ["finished"]
        db.session.rollback()


def test_releasing_a_lane_puts_a_dequeued_job_back_in_front(app, make_user, redis_client):
    user = make_user("erin")
    with app.app_context():
        first = submit_request(user, "echo", {"message": "1"}).request.id
        second = submit_request(user, "echo", {"message": "2"}).request.id
    # A worker dequeued the first job and died before starting it; a stray id sits beside it.
    redis_client.lmove(keys.rq_queue(user), f"{keys.rq_queue(user)}:intermediate")
    redis_client.rpush(f"{keys.rq_queue(user)}:intermediate", "999999")
    lease = LaneLease(redis_client, user, "test:1", seconds=10)
    assert lease.acquire()

    assert lease.release() is True, "the lane still has work"
    assert queue_of(redis_client, user) == [str(first), str(second)]
    assert not redis_client.exists(f"{keys.rq_queue(user)}:intermediate")
    assert redis_client.zscore(keys.READY, str(user)) is not None


def test_releasing_a_lost_lease_leaves_the_new_holders_jobs_alone(app, make_user, redis_client):
    user = make_user("fay")
    with app.app_context():
        submit_request(user, "echo", {"message": "1"})
    redis_client.lmove(keys.rq_queue(user), f"{keys.rq_queue(user)}:intermediate")
    stale = LaneLease(redis_client, user, "test:old", seconds=10)
    redis_client.set(keys.lease(user), "test:new")  # another worker holds the lane now

    assert stale.release() is True
    assert redis_client.llen(f"{keys.rq_queue(user)}:intermediate") == 1
    assert redis_client.get(keys.lease(user)) == b"test:new"


def stale_rows(app, user_id: int):
    """The lane's rows as the reconciler read them while they were still queued."""
    with app.app_context():
        rows = db.session.execute(
            select(LaneRequest.user_id, LaneRequest.id, LaneRequest.status, LaneRequest.type)
            .where(LaneRequest.user_id == user_id).order_by(LaneRequest.id)
        ).all()
        db.session.rollback()
    return rows


def test_reconciler_does_not_re_enqueue_a_request_that_ran_meanwhile(app, make_user, redis_client, monkeypatch):
    from webapp.lanes import reconciler

    user = make_user("gail")
    with app.app_context():
        request_id = submit_request(user, "echo", {"message": "once"}).request.id
    monkeypatch.setattr(reconciler, "GRACE", reconciler.GRACE * 0)
    read_while_queued = stale_rows(app, user)
    # Between the reconciler's read and its look at Redis, a worker ran the job to the end.
    redis_client.delete(keys.rq_queue(user), keys.rq_job(str(request_id)))
    redis_client.set(keys.lease(user), "test:worker")
    with app.app_context():
        db.session.get(LaneRequest, request_id).status = "finished"
        db.session.commit()
        monkeypatch.setattr(reconciler.db.session, "execute", replay_first(db.session.execute, read_while_queued))

        assert reconcile(redis_client) == 0
    assert queue_of(redis_client, user) == []


def test_reconciler_leaves_a_job_being_started_alone_and_re_enqueues_a_lost_one(app, make_user, redis_client,
                                                                                monkeypatch):
    from webapp.lanes import reconciler

    user = make_user("hana")
    with app.app_context():
        starting = submit_request(user, "echo", {"message": "starting"}).request.id
        lost = submit_request(user, "echo", {"message": "lost"}).request.id
    monkeypatch.setattr(reconciler, "GRACE", reconciler.GRACE * 0)
    # The lease holder has taken ``starting`` off the lists but not yet claimed its row; the
    # job of ``lost`` never reached Redis (its web process died after writing the row).
    redis_client.delete(keys.rq_queue(user), keys.rq_job(str(lost)))
    redis_client.set(keys.lease(user), "test:worker")
    with app.app_context():
        assert reconcile(redis_client) == 1
    assert queue_of(redis_client, user) == [str(lost)]
    assert starting  # still queued, still has its job hash: the holder will run it


def replay_first(execute, rows):
    """``session.execute`` whose first call returns ``rows`` (a read taken a moment earlier)."""
    calls = []

    def patched(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            return StaleResult(rows)
        return execute(*args, **kwargs)

    return patched


class StaleResult:
    def __init__(self, rows):
        self.rows = rows

    def all(self):
        return self.rows
