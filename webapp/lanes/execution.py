"""Running one request: claim its row, run its job type, record the outcome, announce it.

The database row is the truth: a lane worker claims the oldest pending row of its lane (``queued``,
or ``started`` by a worker that was lost), and only while it holds the lane's database fence, so a
lane stays FIFO and served by one worker even when Redis lost or reordered its jobs and leases. An
outcome is recorded only for the attempt that was claimed (``attempts`` is the row's fencing token),
in the same transaction as the job's own writes, so a re-run never doubles an effect.

A failure of Lanes' own plumbing while a job runs (Redis or the database going away) is not the
job's failure: ``PlumbingFailure`` leaves the row ``started`` for the lane worker to re-claim and
re-run, like a crash, once the plumbing is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import redis
from flask import current_app
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty
from sqlalchemy import Integer, Row, bindparam, case, literal_column, or_, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from jobs.context import JobCanceled, JobContext, JobFailed
from jobs.registry import get_job_type
from webapp.extensions import db, get_redis
from webapp.lanes import keys
from webapp.lanes.fence import held_by
from webapp.lanes.representation import lane_event, request_object
from webapp.lanes.request_logs import RequestLogWriter
from webapp.lanes.worker_metrics import job_ended
from webapp.models import CANCELED, FAILED, FINISHED, PENDING_STATUSES, STARTED, LaneRequest, is_pending, utcnow

log = logging.getLogger(__name__)

# Errors of the plumbing, not of a job: a re-run after recovery is the right answer to them.
PLUMBING_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, DBAPIError)


class PlumbingFailure(Exception):
    """Redis or the database failed under a running request; it stays ``started``, to be re-run."""


TABLE = LaneRequest.__table__


def _others_pending():
    """For RETURNING: how many of the lane's other requests are pending (the updated row aside).

    Each worker statement returns its row and this count together, so the ``lane.updated`` that
    follows costs no second query. Leaving the updated row out makes the count the same whether
    the database evaluates it before the change (PostgreSQL) or after it (SQLite). Written as SQL
    because SQLAlchemy's SQLite compiler strips table names inside RETURNING, which would lose
    the correlation between the alias and the updated row.
    """
    table = TABLE.name
    statuses = ", ".join(f"'{status}'" for status in PENDING_STATUSES)
    return literal_column(
        f"(SELECT count(*) FROM {table} AS other WHERE other.user_id = {table}.user_id"
        f" AND other.status IN ({statuses}) AND other.id != {table}.id)",
        type_=Integer,
    ).label("others")


def _claim_statement():
    """Built once: the oldest pending row of a lane becomes started (or worker_lost), if the fence holds."""
    c = TABLE.c
    oldest = (
        select(c.id)
        .where(
            c.user_id == bindparam("lane_user"), is_pending(c.status),
            or_(c.id <= bindparam("up_to"), c.created_at <= bindparam("settled_before", type_=c.created_at.type)),
        )
        .order_by(c.id)
        .limit(1)
        .scalar_subquery()
    )
    given_up = (c.status == STARTED) & (c.attempts >= bindparam("max_attempts"))
    now = bindparam("now", type_=c.started_at.type)
    return (
        update(TABLE)
        # The status again: a row changed by a concurrent statement is re-checked, not taken blindly.
        .where(c.id == oldest, is_pending(c.status), held_by())
        .values(
            status=case((given_up, FAILED), else_=STARTED),
            error_code=case((given_up, "worker_lost"), else_=None),
            error_message=case((given_up, bindparam("lost_message")), else_=None),
            ended_at=case((given_up, now), else_=None),
            started_at=case((given_up, c.started_at), else_=now),
            attempts=case((given_up, c.attempts), else_=c.attempts + 1),
            progress=case((given_up, c.progress), else_=0),
            progress_message=case((given_up, c.progress_message), else_=None),
        )
        .returning(*c, _others_pending())
    )


# The worker's two statements are Core, not ORM: they return plain rows of the table's columns
# (``representation.request_object`` reads them like a ``LaneRequest``), which costs a fraction of
# the ORM's bulk-update machinery -- the largest share of a lane worker's CPU before.
CLAIM = _claim_statement()
RECORD_OUTCOME = (
    update(TABLE)
    .where(TABLE.c.id == bindparam("outcome_id"), TABLE.c.status == STARTED,
           TABLE.c.attempts == bindparam("outcome_attempt"))
    .values(
        status=bindparam("outcome"), result=bindparam("outcome_result", type_=TABLE.c.result.type),
        error_code=bindparam("outcome_code"), error_message=bindparam("outcome_message"),
        ended_at=bindparam("outcome_at", type_=TABLE.c.ended_at.type),
        progress=case((bindparam("outcome") == FINISHED, 100), else_=TABLE.c.progress),
    )
    .returning(*TABLE.c, _others_pending())
)
NO_LIMIT = 2**63 - 1
SETTLED_ONLY = 0  # as a claim's bound: no id is this small, so only rows pending past SETTLED qualify
SETTLED = timedelta(seconds=1)  # a pending row this old has had its submit's Redis writes done (or undone)


def single_statement_connection():
    """A pooled connection on which each statement commits by itself (autocommit).

    A claim, and the outcome of a job that wrote nothing, are one statement each: run this way they
    cost one round trip instead of three (BEGIN, the statement, COMMIT), and atomicity is the
    statement's own.
    """
    return db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")


HAS_PENDING = select(TABLE.c.id).where(TABLE.c.user_id == bindparam("lane_user"), is_pending(TABLE.c.status)).limit(1)


def has_pending(user_id: int) -> bool:
    """Whether the database holds pending requests of the lane (whatever Redis says)."""
    with single_statement_connection() as connection:
        return connection.execute(HAS_PENDING, {"lane_user": user_id}).first() is not None


def claim_next(user_id: int, holder: str, up_to: int = NO_LIMIT) -> tuple[Row, dict] | None:
    """Mark the lane's oldest pending request as started, in one statement.

    It claims up to the id taken off the lane's queue (``up_to``: a younger row's ``request.queued``
    may not be published yet, as its submit writes Redis after its commit), or any row pending for
    longer than ``SETTLED``, whose submit has long finished (Redis lost its id: a flush, a
    restart, a crash of the worker that had taken it).

    Only ``holder``, holding the lane's fence, can claim. A row found already ``started`` was
    interrupted: it is re-run first, or failed with ``worker_lost`` once it has been started
    ``LANES_MAX_ATTEMPTS`` times. Returns the row (the table's columns) and the lane's summary after
    the change, or None.
    """
    max_attempts = current_app.config["LANES_MAX_ATTEMPTS"]
    now = utcnow()
    with single_statement_connection() as connection:
        row = connection.execute(
            CLAIM,
            {
                "lane_user": user_id, "fence_holder": holder, "up_to": up_to, "max_attempts": max_attempts,
                "now": now, "settled_before": now - SETTLED,
                "lost_message": f"The worker running this request was lost {max_attempts} times.",
            },
        ).first()
    if row is None:
        return None
    running = row.status == STARTED
    return row, lane_event(user_id, row.others + running, row.id if running else None)


Bookkeeping = Callable[[object], None]  # adds Redis commands to the pipeline that carries events
Events = tuple[tuple[str, dict], ...]  # (event name, data) in the order they are published


def execute(row: Row, lane: dict, on_start: Bookkeeping | None = None,
            on_end: Bookkeeping | None = None) -> list | None:
    """Run a claimed request's job, record how it ended, and announce both.

    ``on_start`` and ``on_end`` add the caller's Redis bookkeeping to the pipelines that carry the
    start and end events; returns the results of ``on_end``'s commands (None if Redis failed).
    Raises ``PlumbingFailure``. (The lane worker uses ``run_claimed``, which leaves the end's events
    to ride with the next start.)
    """
    ended, _started = run_claimed(row, lane, on_start)
    return announce_events(row.user_id, ended, on_end)


def run_claimed(row: Row, lane: dict, on_start: Bookkeeping | None = None,
                earlier: Events = ()) -> tuple[Events, list | None]:
    """Announce a claimed request's start, run its job and record how it ended.

    The start is published after ``earlier`` (the previous request's end, not yet published) in the
    same round trip, with ``on_start``'s bookkeeping. Returns the end's events, for the caller to
    publish (with the next start, or alone), and the results of ``on_start``'s commands (None if
    Redis failed). A claimed row that was given up (``worker_lost``) runs nothing: its events are
    returned after ``earlier``, and the results are ``[]``. Raises ``PlumbingFailure``.
    """
    if row.status == FAILED:
        return earlier + events_of(row, lane), []
    # Sent now, read after the outcome: the job runs while Redis answers. Anything the job publishes
    # itself (progress, log lines) waits for these replies first, so it never overtakes the start.
    replies = current_app.extensions["lanes_events"].emit_ahead(row.user_id, earlier + events_of(row, lane), on_start)
    try:
        ended = _run_and_record(row, replies.results)
    except BaseException:
        replies.drop()
        raise
    return ended, replies.results()


def _run_and_record(row: Row, announced: Callable[[], object]) -> Events:
    """Run the claimed request's job and record its outcome: the events that announce the end."""
    status, result, error_code, error_message = run_job(row, announced)
    if status != FINISHED:
        db.session.rollback()  # a failed or canceled job leaves no partial writes
    outcome = {
        "outcome_id": row.id, "outcome_attempt": row.attempts, "outcome": status, "outcome_result": result,
        "outcome_code": error_code, "outcome_message": error_message, "outcome_at": utcnow(),
    }
    try:
        recorded = record_outcome(outcome)
    except SQLAlchemyError as problem:
        db.session.rollback()
        raise PlumbingFailure(f"recording the outcome of request {row.id} failed") from problem
    if recorded is None:
        log.warning("lane %s: request %s was taken over; its outcome here is dropped", row.user_id, row.id)
        raise PlumbingFailure(f"request {row.id} was re-claimed by another lane worker")
    if status == CANCELED:
        _forget_cancel_flag(recorded.id)
    job_ended(recorded.type, status, recorded.started_at, recorded.ended_at, recorded.created_at)
    return events_of(recorded, lane_event(recorded.user_id, recorded.others, None))


def record_outcome(outcome: dict) -> Row | None:
    """Record how the claimed attempt ended; None (and the job's writes undone) if it was re-claimed.

    A job that wrote through the session has its writes and the outcome commit together, so a re-run
    never doubles them; a job that wrote nothing has its outcome recorded in one statement.
    """
    if not db.session().in_transaction():
        with single_statement_connection() as connection:
            return connection.execute(RECORD_OUTCOME, outcome).first()
    recorded = db.session.connection().execute(RECORD_OUTCOME, outcome).first()
    if recorded is None:
        db.session.rollback()  # another lane worker re-claimed the request (this one lost its fence)
        return None
    db.session.commit()
    return recorded


def after(announced: Callable[[], object], publish: Callable) -> Callable:
    """``publish``, called once ``announced()`` has returned: what a job publishes follows its start."""
    def publish_after(*args):
        announced()
        return publish(*args)
    return publish_after


JobOutcome = tuple[str, dict | None, str | None, str | None]  # status, result, error code, error message


def run_job(row: Row, announced: Callable[[], object] = lambda: None) -> JobOutcome:
    """Call the job function in the worker's session: (status, result, error code, error message).

    ``announced`` returns once the request's start is out; the job's own events wait for it."""
    job_type = get_job_type(row.type)
    context = JobContext(
        user_id=row.user_id,
        request_id=row.id,
        session=db.session,
        attempt=row.attempts,
        settings=current_app.config,
        report_progress=after(announced, lambda percent, message: report_progress(row, percent, message)),
        cancel_requested=lambda: cancel_requested(row.id),
        write_log=after(announced, RequestLogWriter(row.id, row.user_id)),  # on its own connection, like progress
    )
    try:
        if job_type is None:
            raise JobFailed("job_error", f"Job type {row.type!r} is not installed on this worker.")
        with UnixSignalDeathPenalty(job_type.timeout, JobTimeoutException, job_id=str(row.id)):
            return FINISHED, job_type.func(context, dict(row.payload)), None, None
    except JobFailed as failure:
        return FAILED, None, failure.code, failure.message
    except JobCanceled:
        return CANCELED, None, None, None
    except JobTimeoutException:
        return FAILED, None, "timeout", f"The job ran longer than its {job_type.timeout} s limit."
    except PLUMBING_ERRORS as problem:
        db.session.rollback()
        raise PlumbingFailure(f"request {row.id} was interrupted by {type(problem).__name__}") from problem
    except Exception as exc:  # noqa: BLE001 - any bug in a job fails that request, not the lane
        log.exception("request %s (%s) raised", row.id, row.type)
        return FAILED, None, "job_error", f"The job failed unexpectedly ({type(exc).__name__})."


def events_of(row: Row, lane: dict) -> Events:
    """The row's current state (``request.<status>``) and the lane's summary, as events."""
    return (f"request.{row.status}", request_object(row)), ("lane.updated", lane)


def announce_events(user_id: int, events: Events, bookkeeping: Bookkeeping | None = None) -> list | None:
    """Publish ``events`` and run ``bookkeeping``'s commands in one round trip; returns the latter's
    results (None if Redis failed: logged, never fatal, the row is the truth)."""
    return current_app.extensions["lanes_events"].emit_along(user_id, events, bookkeeping)


def cancel_requested(request_id: int) -> bool:
    """Whether the request's user asked to cancel it; a Redis blip reads as 'not yet' (asked again soon)."""
    try:
        return bool(get_redis().exists(keys.cancel_flag(request_id)))
    except redis.exceptions.RedisError:
        log.warning("request %s: cancel check failed; will check again", request_id)
        return False


def _forget_cancel_flag(request_id: int) -> None:
    try:
        get_redis().delete(keys.cancel_flag(request_id))
    except redis.exceptions.RedisError:
        pass  # it expires on its own within the hour


def report_progress(row: Row, percent: int, message: str) -> None:
    """Store progress on the row (outside the job's transaction) and emit it live; a blip skips one report."""
    try:
        with db.engine.begin() as connection:
            connection.execute(
                update(LaneRequest)
                .where(LaneRequest.id == row.id)
                .values(progress=percent, progress_message=message[:200] or None)
            )
    except SQLAlchemyError:
        log.warning("request %s: progress not stored (database unavailable)", row.id)
        return
    current_app.extensions["lanes_events"].emit(
        row.user_id, ("request.progress", {"id": row.id, "progress": percent, "message": message})
    )


def run_request(request_id: int, user_id: int) -> None:
    """Run the user's pending requests up to and including ``request_id``, oldest first.

    What an RQ job of a lane names; Lanes' lane workers run their own loop instead. Whoever calls it
    takes the lane's fence for the while, so it never runs beside the lane's worker.
    """
    import uuid

    from webapp.lanes.fence import LaneFence

    fence = LaneFence(db.engine, user_id, f"run_request:{uuid.uuid4().hex}", current_app.config["LANES_LEASE_SECONDS"])
    if not fence.acquire():
        raise RuntimeError(f"lane {user_id} is served by a lane worker")
    try:
        while (claimed := claim_next(user_id, fence.holder, up_to=request_id)) is not None:
            row, lane = claimed
            execute(row, lane)
            if row.id >= request_id:
                return
    finally:
        fence.release()


def compile_ahead() -> None:
    """Run the hot statements once where they change nothing, in the supervisor before it forks.

    SQLAlchemy caches compiled statements per engine, and a forked lane worker inherits that cache;
    compiling a claim costs more than running it, so without this every cold lane paid for it.
    """
    claim_next(0, "")  # nobody holds a fence named '': claims nothing
    record_outcome({"outcome_id": 0, "outcome_attempt": 0, "outcome": FINISHED, "outcome_result": None,
                    "outcome_code": None, "outcome_message": None, "outcome_at": utcnow()})  # no row 0
