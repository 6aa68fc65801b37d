"""Running one request: claim its row, run its job type, record the outcome, announce it.

``run_request`` is the function every RQ job in a lane calls. It runs in the lane worker's own
process. The database row is the truth: a request runs only if it can be claimed from
``queued`` (or re-claimed from ``started`` after a crash), and always after every older
pending request of the same user, so a lane stays FIFO even when Redis lost or reordered jobs.
"""

from __future__ import annotations

import logging

from flask import current_app
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty
from sqlalchemy import Integer, bindparam, case, literal_column, select, update

from jobs.context import JobCanceled, JobContext, JobFailed
from jobs.registry import get_job_type
from webapp.extensions import db, get_redis
from webapp.lanes import keys
from webapp.lanes.representation import request_object
from webapp.lanes.service import lane_event
from webapp.lanes.worker_metrics import job_ended
from webapp.models import CANCELED, FAILED, FINISHED, PENDING_STATUSES, STARTED, LaneRequest, utcnow

log = logging.getLogger(__name__)


def run_request(request_id: int, user_id: int) -> None:
    """Run the user's pending requests up to and including ``request_id``, oldest first."""
    while True:
        claimed = claim_next(user_id, request_id)
        if claimed is None:
            return
        row, lane = claimed
        if row.status == FAILED:  # crashed too often: given up as worker_lost
            announce(row, lane)
        else:
            execute(row, lane)
        if row.id >= request_id:
            return


def _others_pending():
    """For RETURNING: how many of the lane's other requests are pending (the updated row aside).

    Each worker statement returns its row and this count together, so the ``lane.updated`` that
    follows costs no second query. Leaving the updated row out makes the count the same whether
    the database evaluates it before the change (PostgreSQL) or after it (SQLite). Written as SQL
    because SQLAlchemy's SQLite compiler strips table names inside RETURNING, which would lose
    the correlation between the alias and the updated row.
    """
    table = LaneRequest.__tablename__
    statuses = ", ".join(f"'{status}'" for status in PENDING_STATUSES)
    return literal_column(
        f"(SELECT count(*) FROM {table} AS other WHERE other.user_id = {table}.user_id"
        f" AND other.status IN ({statuses}) AND other.id != {table}.id)",
        type_=Integer,
    )


def _claim_statement():
    """Built once: the oldest pending row of a lane (id <= up_to) becomes started, or worker_lost."""
    oldest = (
        select(LaneRequest.id)
        .where(
            LaneRequest.user_id == bindparam("lane_user"),
            LaneRequest.status.in_(PENDING_STATUSES),
            LaneRequest.id <= bindparam("up_to"),
        )
        .order_by(LaneRequest.id)
        .limit(1)
        .scalar_subquery()
    )
    given_up = (LaneRequest.status == STARTED) & (LaneRequest.attempts >= bindparam("max_attempts"))
    now = bindparam("now", type_=LaneRequest.started_at.type)
    return (
        update(LaneRequest)
        .where(LaneRequest.id == oldest)
        .values(
            status=case((given_up, FAILED), else_=STARTED),
            error_code=case((given_up, "worker_lost"), else_=None),
            error_message=case((given_up, bindparam("lost_message")), else_=None),
            ended_at=case((given_up, now), else_=None),
            started_at=case((given_up, LaneRequest.started_at), else_=now),
            attempts=case((given_up, LaneRequest.attempts), else_=LaneRequest.attempts + 1),
            progress=case((given_up, LaneRequest.progress), else_=0),
            progress_message=case((given_up, LaneRequest.progress_message), else_=None),
        )
        .returning(LaneRequest, _others_pending())
    )


CLAIM = _claim_statement()
RECORD_OUTCOME = (
    update(LaneRequest)
    .where(LaneRequest.id == bindparam("outcome_id"))
    .values(
        status=bindparam("outcome"), result=bindparam("outcome_result", type_=LaneRequest.result.type),
        error_code=bindparam("outcome_code"), error_message=bindparam("outcome_message"),
        ended_at=bindparam("outcome_at", type_=LaneRequest.ended_at.type),
        progress=case((bindparam("outcome") == FINISHED, 100), else_=LaneRequest.progress),
    )
    .returning(LaneRequest, _others_pending())
)
REFRESH = {"populate_existing": True}


def claim_next(user_id: int, up_to: int) -> tuple[LaneRequest, dict] | None:
    """Mark the user's oldest pending request (id <= up_to) as started, in one statement.

    A row found already ``started`` was interrupted by a crash: it is re-run first, or failed
    with ``worker_lost`` once it has been started ``LANES_MAX_ATTEMPTS`` times. Returns the row
    and the lane's summary after the change (one transaction), or None.
    """
    max_attempts = current_app.config["LANES_MAX_ATTEMPTS"]
    claimed = db.session.execute(
        CLAIM,
        {
            "lane_user": user_id, "up_to": up_to, "max_attempts": max_attempts, "now": utcnow(),
            "lost_message": f"The worker running this request was lost {max_attempts} times.",
        },
        execution_options=REFRESH,
    ).first()
    db.session.commit()
    if claimed is None:
        return None
    row, others = claimed
    running = row.status == STARTED
    return row, lane_event(user_id, others + running, row.id if running else None)


def execute(row: LaneRequest, lane: dict) -> None:
    """Run a claimed request's job and record how it ended."""
    announce(row, lane)

    job_type = get_job_type(row.type)
    redis = get_redis()
    context = JobContext(
        user_id=row.user_id,
        request_id=row.id,
        session=db.session,
        attempt=row.attempts,
        settings=current_app.config,
        report_progress=lambda percent, message: report_progress(row, percent, message),
        cancel_requested=lambda: bool(redis.exists(keys.cancel_flag(row.id))),
    )
    status, result, error_code, error_message = FINISHED, None, None, None
    try:
        if job_type is None:
            raise JobFailed("job_error", f"Job type {row.type!r} is not installed on this worker.")
        with UnixSignalDeathPenalty(job_type.timeout, JobTimeoutException, job_id=str(row.id)):
            result = job_type.func(context, dict(row.payload))
    except JobFailed as failure:
        status, error_code, error_message = FAILED, failure.code, failure.message
    except JobCanceled:
        status = CANCELED
    except JobTimeoutException:
        status, error_code = FAILED, "timeout"
        error_message = f"The job ran longer than its {job_type.timeout} s limit."
    except Exception as exc:  # noqa: BLE001 - any bug in a job fails that request, not the lane
        log.exception("request %s (%s) raised", row.id, row.type)
        status, error_code = FAILED, "job_error"
        error_message = f"The job failed unexpectedly ({type(exc).__name__})."
    if status != FINISHED:
        db.session.rollback()  # a failed or canceled job leaves no partial writes

    # The job's own writes and the outcome commit together, so a re-run never doubles them.
    row, others = db.session.execute(
        RECORD_OUTCOME,
        {
            "outcome_id": row.id, "outcome": status, "outcome_result": result, "outcome_code": error_code,
            "outcome_message": error_message, "outcome_at": utcnow(),
        },
        execution_options=REFRESH,
    ).one()
    db.session.commit()
    announce(row, lane_event(row.user_id, others, None))
    if status == CANCELED:
        redis.delete(keys.cancel_flag(row.id))
    job_ended(row.type, status, row.started_at, row.ended_at, row.created_at)


def announce(row: LaneRequest, lane: dict) -> None:
    """Emit the row's current state (``request.<status>``) and the lane's summary, in one round trip."""
    current_app.extensions["lanes_events"].emit(
        row.user_id, (f"request.{row.status}", request_object(row)), ("lane.updated", lane)
    )


def report_progress(row: LaneRequest, percent: int, message: str) -> None:
    """Store progress on the row (outside the job's transaction) and emit it live."""
    with db.engine.begin() as connection:
        connection.execute(
            update(LaneRequest)
            .where(LaneRequest.id == row.id)
            .values(progress=percent, progress_message=message[:200] or None)
        )
    current_app.extensions["lanes_events"].emit(
        row.user_id, ("request.progress", {"id": row.id, "progress": percent, "message": message})
    )
