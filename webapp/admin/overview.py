"""What the admin page shows, read from Redis and the database: lanes, workers, supervisors, throughput."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from rq import Worker
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.lanes import keys
from webapp.lanes.rq_adapter import current_job_id
from webapp.models import STATUSES, LaneRequest, User, utcnow


@dataclass
class ActiveLane:
    user_id: int
    username: str
    queued: int  # jobs waiting in the RQ queue
    waiting_since: float | None  # in the ready index since (epoch seconds); None when not waiting
    lease_holder: str | None  # which supervisor's worker serves it

    @property
    def waiting_for_worker(self) -> bool:
        """Ready (it has work) but no worker holds its lease: capacity is short, or one is starting."""
        return self.waiting_since is not None and self.lease_holder is None


@dataclass
class WorkerRow:
    name: str
    pid: int | None
    state: str
    queues: list[str]
    current_job: str | None


@dataclass
class Overview:
    lanes: list[ActiveLane] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    supervisors: list[tuple[str, float]] = field(default_factory=list)  # (id, seconds since heartbeat)
    counts_last_hour: dict[str, int] = field(default_factory=dict)


def read_overview(connection: redis.Redis) -> Overview:
    """Everything the admin page shows, in a handful of round trips."""
    now = time.time()
    overview = Overview()
    overview.lanes = active_lanes(connection)
    overview.workers = [
        WorkerRow(
            name=worker.name, pid=worker.pid, state=str(worker.get_state()), queues=worker.queue_names(),
            current_job=current_job_id(worker),
        )
        for worker in sorted(Worker.all(connection=connection), key=lambda w: w.name)
    ]
    overview.supervisors = [
        (member.decode(), now - score) for member, score in connection.zrange(keys.SUPERVISORS, 0, -1, withscores=True)
    ]
    overview.counts_last_hour = counts_by_status(utcnow() - timedelta(hours=1))
    return overview


def active_lanes(connection: redis.Redis) -> list[ActiveLane]:
    """Lanes waiting for a worker (the ready index) or served by one (a lease), with their owners."""
    ready = {int(member): score for member, score in connection.zrange(keys.READY, 0, -1, withscores=True)}
    known = {int(member) for member in connection.smembers(keys.KNOWN)}
    user_ids = sorted(ready.keys() | known)
    with connection.pipeline(transaction=False) as pipe:
        for user_id in user_ids:
            pipe.get(keys.lease(user_id))
            pipe.llen(keys.rq_queue(user_id))
        replies = pipe.execute()
    holders, lengths = replies[0::2], replies[1::2]
    names = dict(db.session.execute(select(User.id, User.username).where(User.id.in_(user_ids))).all())
    lanes = []
    for user_id, holder, length in zip(user_ids, holders, lengths, strict=True):
        if holder is None and user_id not in ready:
            continue  # known but idle: no worker and nothing waiting
        lanes.append(
            ActiveLane(
                user_id=user_id, username=names.get(user_id, "(deleted user)"), queued=length,
                waiting_since=ready.get(user_id), lease_holder=holder.decode() if holder else None,
            )
        )
    return lanes


def counts_by_status(since: datetime) -> dict[str, int]:
    """Requests submitted since ``since``, counted by their current status."""
    rows = db.session.execute(
        select(LaneRequest.status, func.count()).where(LaneRequest.created_at >= since).group_by(LaneRequest.status)
    ).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: count for status, count in rows})
    return counts
