"""A lane is fenced by the database: a second lane worker can neither claim nor record while the first lives.

Redis leases can vanish (FLUSHDB, a restart without persistence) while a lane worker runs. The
database fence decides: these tests take Redis out of the picture and check what a user would
notice — a request that ran once, with one effect, in order.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import update

from tests.conftest import requests_of, wait_until
from webapp.extensions import db
from webapp.lanes.execution import PlumbingFailure, claim_next, execute
from webapp.lanes.fence import LaneFence
from webapp.lanes.lane_worker import serve_lane
from webapp.lanes.lease import LaneLease
from webapp.lanes.service import submit_request
from webapp.models import LaneOwner, LaneRequest, LedgerAccount


def fence(app, user_id: int, holder: str, seconds: float = 15) -> LaneFence:
    with app.app_context():
        return LaneFence(db.engine, user_id, holder, seconds)


def test_only_the_fence_holder_claims_and_a_live_fence_cannot_be_taken(app, make_user):
    user = make_user("olga")
    first, second = fence(app, user, "worker:a"), fence(app, user, "worker:b")
    with app.app_context():
        request_id = submit_request(user, "echo", {"message": "once"}).request.id

        assert claim_next(user, "worker:a") is None, "nobody holds the fence yet: nothing may be claimed"
        assert first.acquire()
        assert not second.acquire(), "a live fence was taken over"
        assert claim_next(user, "worker:b") is None, "a worker without the fence claimed a request"

        row, _lane = claim_next(user, "worker:a")
        assert (row.id, row.status, row.attempts) == (request_id, "started", 1)

        first.release()
        assert second.acquire(), "a released fence is free for the next worker at once"
        assert claim_next(user, "worker:a") is None, "the old holder claimed after letting go"


def test_a_lapsed_fence_goes_to_the_next_worker_and_the_old_one_cannot_renew(app, make_user):
    user = make_user("pia")
    old, new = fence(app, user, "worker:old", seconds=0.5), fence(app, user, "worker:new")
    with app.app_context():
        assert old.acquire()
        assert not new.acquire()
        time.sleep(0.8)  # the old holder stopped renewing (frozen, or cut off from the database)
        assert new.acquire()
        assert not old.renew(), "a lapsed holder renewed a fence another worker holds"


def test_an_outcome_from_a_worker_that_lost_its_lane_is_dropped_with_its_effects(app, make_user, monkeypatch):
    """Worker A runs a deposit; its fence lapses and B re-claims the request. A's outcome and
    its deposit are both dropped: the user's balance moves once, by B's run."""
    user = make_user("quinn")
    a, b = fence(app, user, "worker:a"), fence(app, user, "worker:b")
    monkeypatch.setattr(app.extensions["lanes_events"], "emit_along", lambda *args, **kwargs: [])
    with app.app_context():
        request_id = submit_request(user, "ledger.deposit", {"amount": 40}).request.id
        assert a.acquire()
        row_a, lane_a = claim_next(user, "worker:a")  # A's copy of the row, as A's own process holds it
        lapse(app, user)  # A stopped renewing (frozen, or cut off from the database) past its expiry
        assert b.acquire(), "A's fence lapsed"
        row_b, lane_b = claim_next(user, "worker:b")
        assert row_b.id == request_id and row_b.attempts == 2, "B re-runs the request A was running"
        assert row_a.attempts == 1

        with pytest.raises(PlumbingFailure):
            execute(row_a, lane_a)
        execute(row_b, lane_b)

        final = db.session.get(LaneRequest, request_id)
        assert (final.status, final.attempts, final.result) == ("finished", 2, {"balance": 40})
        assert db.session.get(LedgerAccount, user).balance == 40, "the deposit was applied twice"


def lapse(app, user_id: int) -> None:
    """Let the lane's fence run out now, as it does once its holder stops renewing it."""
    with app.app_context():
        db.session.execute(update(LaneOwner).where(LaneOwner.user_id == user_id).values(expires_ms=0))
        db.session.commit()


def test_a_redis_flush_mid_job_with_two_supervisors_never_runs_a_request_twice(app, make_user, start_worker,
                                                                              redis_client):
    user = make_user("rosa")
    with app.app_context():
        slow = submit_request(user, "echo", {"message": "slow", "delay_ms": 5000}).request.id
        after = [submit_request(user, "echo", {"message": f"after {n}"}).request.id for n in range(3)]
    settings = {"LANES_LEASE_SECONDS": "3", "LANES_RECONCILE_SECONDS": "1", "LANES_IDLE_SECONDS": "3"}
    start_worker(**settings)
    start_worker(**settings)
    wait_until(lambda: requests_of(app, user)[0].status == "started", timeout=20, message="the slow request to start")

    redis_client.flushdb()  # every lease, queue and index gone while the slow job runs

    def all_finished():
        found = requests_of(app, user)
        return found if all(row.status == "finished" for row in found) else None

    found = {row.id: row for row in wait_until(all_finished, timeout=40, message="every request to finish")}
    assert found[slow].attempts == 1, "the running request was claimed again while its worker lived"
    order = [slow, *after]
    for earlier, later in zip(order, order[1:], strict=False):
        assert found[later].started_at >= found[earlier].ended_at, "a lane ran two requests at once, or out of order"


def test_a_worker_waits_for_a_fence_still_held_and_then_runs_the_lane(app, make_user, redis_client, monkeypatch):
    # After a Redis flush a new worker takes the lane's lease while the previous one still runs its
    # job under the fence: the new one must wait for that fence, not give the lane up after one
    # renewal period (and be forked again and again while the job runs).
    user = make_user("wanda")
    with app.app_context():
        waiting = submit_request(user, "echo", {"message": "after the previous job"}).request.id
    previous = fence(app, user, "worker:previous")
    with app.app_context():
        assert previous.acquire()
    monkeypatch.setitem(app.config, "LANES_LEASE_SECONDS", 0.6)  # renewals every 0.2 s while it waits
    monkeypatch.setitem(app.config, "LANES_IDLE_SECONDS", 1)
    lease = LaneLease(redis_client, user, "test:new", seconds=10)
    assert lease.acquire()
    previous_job_ends = threading.Timer(1.5, previous.release)  # several renewal periods later
    previous_job_ends.start()
    try:
        serve_lane(app, user, lease)  # in this process: returns once the lane has been idle 1 s
    finally:
        previous_job_ends.join()

    row = {row.id: row for row in requests_of(app, user)}[waiting]
    assert (row.status, row.attempts) == ("finished", 1), "the new worker gave the lane up instead of waiting"
