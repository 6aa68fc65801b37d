"""The lane service: submit, read, list and cancel requests. Routes and sockets call only this."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import Integer, bindparam, func, insert, literal, literal_column, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from jobs.registry import get_job_type
from webapp import errors
from webapp.extensions import db, get_redis
from webapp.ids import parse_id
from webapp.lanes import ambiguity, keys, ready_index, rq_adapter
from webapp.lanes.representation import lane_event, request_object
from webapp.models import (
    CANCELED,
    PENDING_STATUSES,
    QUEUED,
    STARTED,
    STATUSES,
    LaneRequest,
    User,
    is_pending,
    utcnow,
)
from webapp.rate_limits import rate_limits

IDEMPOTENCY_WINDOW = timedelta(hours=24)
WAIT_RECHECK_SECONDS = 2.0  # a long-poll re-reads its row this often even without an end event
WAIT_RECHECK_UNSUBSCRIBED_SECONDS = 0.2  # ... and this often while the event channel is down


# Built once (statement construction costs more than the query): a lane's pending, queued, running id.
LANE_COUNTS = select(
    func.count(),
    func.count().filter(LaneRequest.status == QUEUED),
    func.max(LaneRequest.id).filter(LaneRequest.status == STARTED),
).where(LaneRequest.user_id == bindparam("lane_user"), is_pending(LaneRequest.status))


def _insert_under_limit():
    """Built once: insert a queued row unless the lane holds ``limit`` pending ones, and return its id
    with the lane as it was before (pending, queued, running) — one statement, one round trip."""
    table = LaneRequest.__table__
    other = LaneRequest.__table__.alias("other")
    in_lane = (other.c.user_id == bindparam("lane_user")) & is_pending(other.c.status)
    pending = select(func.count()).where(in_lane).scalar_subquery()
    source = select(
        bindparam("lane_user"), bindparam("type"), bindparam("payload", type_=table.c.payload.type),
        literal(QUEUED), literal(0), bindparam("key"), bindparam("digest"),
        bindparam("created_at", type_=table.c.created_at.type),
    ).where(pending < bindparam("limit"))
    return insert(table).from_select(
        ["user_id", "type", "payload", "status", "attempts", "idempotency_key", "body_digest", "created_at"], source,
    ).returning(
        table.c.id,
        _others_in_lane("count(*)", "IN ('queued', 'started')", "pending_before"),
        _others_in_lane("count(*)", "= 'queued'", "queued_before"),
        _others_in_lane("max(other.id)", "= 'started'", "running"),
    )


def _others_in_lane(aggregate: str, status: str, name: str):
    """For RETURNING: an aggregate over the lane's other rows, the inserted one left out, so that it
    reads the same whether the database evaluates it before the insert (PostgreSQL) or after (SQLite).
    Written as SQL because SQLAlchemy's SQLite compiler strips table names inside RETURNING."""
    table = LaneRequest.__tablename__
    return literal_column(
        f"(SELECT {aggregate} FROM {table} AS other WHERE other.user_id = {table}.user_id"
        f" AND other.status {status} AND other.id != {table}.id)",
        type_=Integer,
    ).label(name)


INSERT_UNDER_LIMIT = _insert_under_limit()
LOCK_USER = select(User.id).where(User.id == bindparam("lane_user")).with_for_update()
# SQLite has no row locks: a no-op write takes the database's write lock for the transaction.
LOCK_USER_SQLITE = update(User).where(User.id == bindparam("lane_user")).values(id=User.id)


def lock_lane(connection, user_id: int) -> None:
    """Hold the user's row until the transaction ends: a user's submits check their limit one at a time."""
    sqlite = connection.dialect.name == "sqlite"
    connection.execute(LOCK_USER_SQLITE if sqlite else LOCK_USER, {"lane_user": user_id})


@dataclass
class Submitted:
    request: LaneRequest
    position: int | None
    created: bool  # False when an Idempotency-Key replayed an earlier request


def publisher():
    return current_app.extensions["lanes_events"]


def submit_request(user_id: int, type_name: str, payload, idempotency_key: str | None = None) -> Submitted:
    """Validate, write the row (queued), enqueue it in the user's lane, announce it."""
    job_type = get_job_type(type_name) if isinstance(type_name, str) else None
    if job_type is None:
        raise errors.UnknownJobType(f"Unknown job type: {type_name!r}.", details={"type": type_name})
    problems = job_type.payload_errors(payload)
    if problems:
        raise errors.InvalidPayload(details={"fields": problems})

    digest = None
    if idempotency_key is not None:
        digest = hashlib.sha256(json.dumps([type_name, payload], sort_keys=True).encode()).hexdigest()
        earlier = _idempotent_replay(user_id, idempotency_key, digest)
        if earlier is not None:
            return earlier

    if not rate_limits.hit("submit", str(user_id)):
        retry = rate_limits.retry_after("submit", str(user_id))
        raise errors.RateLimited(details={"retry_after": retry}, headers={"Retry-After": str(retry)})

    created_at = utcnow()
    # Core statements on the session's connection (its transaction): the ORM's execute path costs
    # more than the statements, and no ORM object is wanted here.
    connection = db.session.connection()
    lock_lane(connection, user_id)  # this user's submits one at a time, so no burst passes LANES_MAX_PENDING
    limit = current_app.config["LANES_MAX_PENDING"]
    try:
        inserted = connection.execute(INSERT_UNDER_LIMIT, {
            "lane_user": user_id, "type": type_name, "payload": payload, "key": idempotency_key,
            "digest": digest, "created_at": created_at, "limit": limit,
        }).first()
        if inserted is None:
            pending = connection.execute(LANE_COUNTS, {"lane_user": user_id}).one()[0]
            db.session.rollback()
            raise errors.LaneFull(
                f"Your lane already holds {pending} pending requests (limit {limit}).",
                details={"pending": pending, "limit": limit}, headers={"Retry-After": "1"},
            )
        commit_or_resolve(inserted.id)
    except IntegrityError:
        # Another submit with the same Idempotency-Key won the race.
        db.session.rollback()
        earlier = _idempotent_replay(user_id, idempotency_key, digest)
        if earlier is None:
            raise
        return earlier
    pending, queued, running = inserted.pending_before, inserted.queued_before, inserted.running
    row = LaneRequest(
        id=inserted.id, user_id=user_id, type=type_name, payload=payload, status=QUEUED, attempts=0,
        idempotency_key=idempotency_key, body_digest=digest, created_at=created_at, progress=None,
    )

    position = queued + 1
    announcements = (
        ("request.queued", request_object(row, position)),
        # Derived from the count taken before the insert: no second query on the hot path.
        ("lane.updated", lane_event(user_id, pending + 1, running)),
    )
    try:
        _enqueue(row, announcements)
    except errors.UNAVAILABLE:
        # Nothing may be acknowledged: take the row back (the reconciler would run it), unless a lane
        # worker already claimed it, in which case it runs and the answer is that it was accepted.
        taken_back = db.session.execute(
            LaneRequest.__table__.delete()
            .where(LaneRequest.id == row.id, LaneRequest.status == QUEUED)
            .returning(LaneRequest.id)
        ).first()
        db.session.commit()
        if taken_back is not None:
            raise
    return Submitted(row, position, True)


def commit_or_resolve(request_id: int) -> None:
    """Commit the submit's transaction; when the connection breaks during COMMIT, find out whether it landed.

    Returns normally when the row is committed, raises ``ServiceUnavailable`` when it is not and never
    will be: so a 503 means nothing was done, and a client may safely retry without an Idempotency-Key.
    """
    session = db.session
    backend = ambiguity.backend_of(session)
    try:
        session.commit()
    except (OperationalError, InterfaceError) as problem:
        session.rollback()
        if backend is None or not ambiguity.committed(db.engine, backend, LaneRequest.__table__, request_id):
            raise errors.ServiceUnavailable(
                "The database did not take the request; nothing was queued.", headers={"Retry-After": "1"}
            ) from problem


def _idempotent_replay(user_id: int, key: str, digest: str) -> Submitted | None:
    row = db.session.scalar(
        select(LaneRequest).where(LaneRequest.user_id == user_id, LaneRequest.idempotency_key == key)
    )
    if row is None:
        return None
    if row.created_at < utcnow() - IDEMPOTENCY_WINDOW:
        row.idempotency_key = None  # expired: the key is free for a new request
        db.session.commit()
        return None
    if row.body_digest != digest:
        raise errors.IdempotencyConflict(details={"request_id": row.id})
    return Submitted(row, position_of(row), False)


def _enqueue(row: LaneRequest, announcements) -> None:
    """Put the request in its lane, nudge the supervisors and announce it, in one Redis transaction.

    Being one transaction, the announcement is out before any worker can see the job.
    """
    connection = get_redis()
    with connection.pipeline() as pipe:
        pipe.multi()  # RQ's enqueue_call insists on an explicit MULTI when given a used pipeline
        rq_adapter.add_job(connection, pipe, row.id, row.user_id, row.type)
        ready_index.mark_unless_served(pipe, row.user_id)
        publisher().add_to(pipe, row.user_id, *announcements)
        pipe.execute()


def get_request(user_id: int, request_id) -> LaneRequest:
    """The user's request, or ``NotFound`` (also for another user's id)."""
    request_id = parse_id(request_id)
    row = db.session.get(LaneRequest, request_id) if request_id is not None else None
    if row is None or row.user_id != user_id:
        raise errors.NotFound("No such request.")
    return row


def position_of(row: LaneRequest) -> int | None:
    if row.status != QUEUED:
        return None
    earlier = db.session.scalar(
        select(func.count()).where(
            LaneRequest.user_id == row.user_id, LaneRequest.status == QUEUED, LaneRequest.id < row.id
        )
    )
    return earlier + 1


def positions_of(user_id: int) -> dict[int, int]:
    """Positions of all the user's queued requests, in one query."""
    ids = db.session.scalars(
        select(LaneRequest.id)
        .where(LaneRequest.user_id == user_id, LaneRequest.status == QUEUED)
        .order_by(LaneRequest.id)
    )
    return {request_id: index for index, request_id in enumerate(ids, start=1)}


def wait_for_request(user_id: int, request_id, seconds: float) -> LaneRequest:
    """Long-poll: return the request once it has ended, or when ``seconds`` have passed.

    Woken by the request's end event; the row is re-read then, and every few seconds regardless
    (sooner while the event channel is down), since pub/sub may drop a message. Between reads it
    holds no database connection, and one user holds at most ``LANES_MAX_LONG_POLLS`` at once
    in this process (429 beyond).
    """
    deadline = time.monotonic() + seconds
    watcher = current_app.extensions["lanes_end_watcher"]
    parsed_id = parse_id(request_id)
    with long_poll_slot(user_id):
        # Watching before each read: an end between the read and the wait still wakes us. (An id that
        # names no request of this user is watched for nothing: the first read raises NotFound.)
        with watcher.watch(parsed_id) as ended:
            while True:
                ended.clear()
                # populate_existing: read the row afresh (the worker's commit), not the session's copy.
                row = db.session.get(LaneRequest, parsed_id, populate_existing=True) if parsed_id else None
                if row is None or row.user_id != user_id:
                    raise errors.NotFound("No such request.")
                db.session.commit()  # end the transaction: the connection goes back to the pool while we wait
                left = deadline - time.monotonic()
                if row.status not in PENDING_STATUSES or left <= 0:
                    return row
                recheck = WAIT_RECHECK_SECONDS if watcher.subscribed.is_set() else WAIT_RECHECK_UNSUBSCRIBED_SECONDS
                ended.wait(min(left, recheck))


_long_polls: dict[int, int] = {}
_long_polls_lock = threading.Lock()


@contextmanager
def long_poll_slot(user_id: int):
    """One of the user's ``LANES_MAX_LONG_POLLS`` long-polls in this process, or ``RateLimited``."""
    limit = current_app.config["LANES_MAX_LONG_POLLS"]
    with _long_polls_lock:
        if _long_polls.get(user_id, 0) >= limit:
            raise errors.RateLimited(
                f"At most {limit} long-polls (?wait=) at once per user; wait for one to return.",
                details={"limit": limit}, headers={"Retry-After": "1"},
            )
        _long_polls[user_id] = _long_polls.get(user_id, 0) + 1
    try:
        yield
    finally:
        with _long_polls_lock:
            _long_polls[user_id] -= 1
            if not _long_polls[user_id]:
                del _long_polls[user_id]


@dataclass
class Page:
    requests: list[LaneRequest]
    positions: dict[int, int]
    next_cursor: int | None


def list_requests(user_id: int, *, status=None, type_name=None, limit=50, before=None) -> Page:
    """The user's requests, newest first, ``limit`` per page, before the cursor (a request id)."""
    if status is not None and status not in STATUSES:
        raise errors.InvalidRequest(f"status must be one of {', '.join(STATUSES)}.", details={"status": status})
    query = select(LaneRequest).where(LaneRequest.user_id == user_id)
    if status:
        query = query.where(LaneRequest.status == status)
    if type_name:
        query = query.where(LaneRequest.type == type_name)
    if before is not None:
        query = query.where(LaneRequest.id < before)
    rows = list(db.session.scalars(query.order_by(LaneRequest.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    positions = positions_of(user_id) if any(r.status == QUEUED for r in rows) else {}
    return Page(rows, positions, rows[-1].id if more else None)


def lane_state(user_id: int) -> dict:
    """The lane as the database knows it: ``{"name","length","running","pending"}``."""
    rows = db.session.execute(
        select(LaneRequest.id, LaneRequest.status)
        .where(LaneRequest.user_id == user_id, is_pending(LaneRequest.status))
        .order_by(LaneRequest.id)
    ).all()
    running = next((r.id for r in rows if r.status == STARTED), None)
    pending = [r.id for r in rows if r.status == QUEUED]
    return {"name": keys.lane_name(user_id), "length": len(rows), "running": running, "pending": pending}


def lane_summary(user_id: int) -> dict:
    """``lane_event`` as the database has it now, in one aggregate query."""
    length, _queued, running = db.session.execute(LANE_COUNTS, {"lane_user": user_id}).one()
    return lane_event(user_id, length, running)


def cancel_request(user_id: int, request_id) -> tuple[LaneRequest, bool]:
    """Cancel a request. Returns (row, done): done is False when a running job was asked to stop."""
    row = get_request(user_id, request_id)
    if row.status == QUEUED:
        # Only if still queued: a worker claiming it at the same moment wins or loses as a whole.
        canceled = db.session.scalar(
            update(LaneRequest)
            .where(LaneRequest.id == row.id, LaneRequest.status == QUEUED)
            .values(status=CANCELED, ended_at=utcnow(), error_code=None)
            .returning(LaneRequest),
            execution_options={"populate_existing": True},
        )
        lane = lane_summary(user_id) if canceled is not None else None
        db.session.commit()
        if canceled is not None:
            with get_redis().pipeline() as pipe:
                rq_adapter.forget_job(pipe, canceled.user_id, canceled.id)
                pipe.execute()
            publisher().emit(user_id, ("request.canceled", request_object(canceled)), ("lane.updated", lane))
            return canceled, True
        db.session.refresh(row)  # it started (or ended) meanwhile
    if row.status == STARTED:
        job_type = get_job_type(row.type)
        if job_type is None or not job_type.cancelable:
            raise errors.NotCancelable(f"A running {row.type} request cannot be canceled.")
        get_redis().set(keys.cancel_flag(row.id), "1", ex=3600)
        return row, False
    raise errors.NotCancelable(f"The request has already ended ({row.status}).", details={"status": row.status})
