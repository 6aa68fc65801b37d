"""Database → Redis repair: every pending request row gets a job in its lane again.

Runs in one supervisor at a time (a lock in Redis), every ``LANES_RECONCILE_SECONDS``. It heals
a web process that died between writing a row and enqueueing it, and a Redis that lost its
data. Re-enqueued jobs go to the back of their lane; the lane worker still runs them in
the original order because it always claims the oldest pending row first.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from itertools import groupby

import redis
from sqlalchemy import select

from webapp import system_log
from webapp.extensions import db
from webapp.lanes import keys
from webapp.lanes.ready_index import mark as mark_ready
from webapp.lanes.rq_adapter import add_job
from webapp.models import PENDING_STATUSES, QUEUED, LaneRequest, utcnow

log = logging.getLogger(__name__)

GRACE = timedelta(seconds=5)  # leave in-flight submits alone


def reconcile(connection: redis.Redis) -> int:
    """Re-enqueue pending rows missing from Redis; returns how many were re-enqueued."""
    rows = db.session.execute(
        select(LaneRequest.user_id, LaneRequest.id, LaneRequest.status, LaneRequest.type)
        .where(LaneRequest.status.in_(PENDING_STATUSES), LaneRequest.created_at < utcnow() - GRACE)
        .order_by(LaneRequest.user_id, LaneRequest.id)
    ).all()
    db.session.commit()
    repaired = 0
    for user_id, group in groupby(rows, key=lambda row: row.user_id):
        repaired += _reconcile_lane(connection, user_id, list(group))
    return repaired


def _reconcile_lane(connection: redis.Redis, user_id: int, rows) -> int:
    queue_key = keys.rq_queue(user_id)
    with connection.pipeline() as pipe:  # one snapshot: an id moving between the lists is seen once
        pipe.lrange(queue_key, 0, -1)
        pipe.lrange(keys.rq_intermediate(user_id), 0, -1)
        pipe.exists(keys.lease(user_id))
        pipe.zscore(keys.READY, str(user_id))
        queued, intermediate, leased, ready = pipe.execute()
    in_redis = {job_id.decode() for job_id in queued + intermediate}
    # Without a lease nothing runs the lane, so every pending row outside its lists is missing.
    # With one, a started row is the holder's, and so is a queued row whose job hash exists: it
    # was dequeued a moment before its row is claimed.
    missing = [row for row in rows if str(row.id) not in in_redis]
    if missing and leased:
        with connection.pipeline(transaction=False) as pipe:
            for row in missing:
                pipe.exists(keys.rq_job(str(row.id)))
            has_job = pipe.execute()
        missing = [row for row, job in zip(missing, has_job, strict=True) if row.status == QUEUED and not job]
    if missing:
        # ``rows`` were read before the snapshot: a row may have started, or even finished,
        # since. Re-adding those would put a second job for them in the lane.
        missing = _still_pending(missing)
    if not missing and (ready is not None or leased or not in_redis):
        return 0
    with connection.pipeline() as pipe:
        pipe.multi()  # RQ's enqueue_call insists on an explicit MULTI when given a used pipeline
        for row in missing:
            add_job(connection, pipe, row.id, user_id, row.type)
        mark_ready(pipe, user_id)
        pipe.execute()
    if missing:
        log.warning("lane %s: re-enqueued %s from the database", user_id, [row.id for row in missing])
        ids = [row.id for row in missing]
        system_log.record("reconciler.repaired", subject=keys.lane_name(user_id), details={"ids": ids})
    return len(missing)


def _still_pending(rows) -> list:
    now = dict(db.session.execute(
        select(LaneRequest.id, LaneRequest.status).where(LaneRequest.id.in_([row.id for row in rows]))
    ).all())
    db.session.commit()
    return [row for row in rows if now.get(row.id) == row.status]


def repair_lane(connection: redis.Redis, user_id: int) -> list[int]:
    """Put back, at the front and in order, every pending request of a lane that has no job in it.

    Called by a lane worker as it takes over a lane (it holds the lease and the fence, so nothing
    else runs it): the ids a lost worker had taken off the queue are gone from Redis.
    """
    rows = db.session.execute(
        select(LaneRequest.id, LaneRequest.type)
        .where(LaneRequest.user_id == user_id, LaneRequest.status.in_(PENDING_STATUSES))
        .order_by(LaneRequest.id)
    ).all()
    db.session.commit()
    queue_key = keys.rq_queue(user_id)
    in_queue = {job_id.decode() for job_id in connection.lrange(queue_key, 0, -1)}
    missing = [row for row in rows if str(row.id) not in in_queue]
    if not missing:
        return []
    with connection.pipeline() as pipe:
        pipe.multi()  # RQ's enqueue_call insists on an explicit MULTI when given a used pipeline
        for row in reversed(missing):
            add_job(connection, pipe, row.id, user_id, row.type, at_front=True)
        pipe.execute()
    if missing:
        log.warning("lane %s: put back interrupted requests %s", user_id, [row.id for row in missing])
        system_log.record("lane.taken_over", subject=keys.lane_name(user_id), details={"ids": [r.id for r in missing]})
    return [row.id for row in missing]
