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

from webapp.extensions import db
from webapp.lanes import keys
from webapp.lanes.service import add_job, mark_ready
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
    with connection.pipeline(transaction=False) as pipe:
        pipe.lrange(queue_key, 0, -1)
        pipe.lrange(f"{queue_key}:intermediate", 0, -1)
        pipe.exists(keys.lease(user_id))
        pipe.zscore(keys.READY, str(user_id))
        queued, intermediate, leased, ready = pipe.execute()
    in_redis = {job_id.decode() for job_id in queued + intermediate}
    # A started row is being run by the lease holder; without a lease, it was orphaned.
    missing = [row for row in rows if str(row.id) not in in_redis and (row.status == QUEUED or not leased)]
    if not missing and (ready is not None or leased or not in_redis):
        return 0
    with connection.pipeline() as pipe:
        for row in missing:
            add_job(connection, pipe, row.id, user_id, row.type)
        mark_ready(pipe, user_id)
        pipe.execute()
    if missing:
        log.warning("lane %s: re-enqueued %s from the database", user_id, [row.id for row in missing])
    return len(missing)
