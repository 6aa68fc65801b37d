"""``/admin``: the operator's live view of lanes, workers, supervisors and the last hour (admins only)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import wraps

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select

from webapp import errors, system_log
from webapp.admin.charts import WINDOW_MINUTES, per_minute
from webapp.admin.overview import Overview, read_overview
from webapp.api import query_parameters as query
from webapp.auth.accounts import end_sessions
from webapp.extensions import db, get_redis, login_manager
from webapp.ids import MAX_ID
from webapp.lanes import request_logs
from webapp.lanes.representation import iso
from webapp.models import LaneRequest, SystemEvent, User, UserSession, utcnow

EVENTS_PER_PAGE = 50

bp = Blueprint("admin", __name__, url_prefix="/admin")

POLL_SECONDS = 5  # how often the page asks for fresh numbers (static/js/admin.js reads it from the page)


def refuse_unless_admin():
    """Anonymous visitors go to the login page; signed-in non-admins get 403. None lets an admin through."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not current_user.is_admin:
        raise errors.Forbidden("This page is for administrators.")
    return None


def admin_required(view):
    @wraps(view)
    def guarded(*args, **kwargs):
        return refuse_unless_admin() or view(*args, **kwargs)

    return guarded


def grafana_url() -> str | None:
    """``LANES_GRAFANA_URL`` when it is a web address (never a ``javascript:`` link)."""
    url = current_app.config.get("LANES_GRAFANA_URL") or ""
    return url if url.startswith(("http://", "https://")) else None


@bp.get("")
@admin_required
def index():
    now = utcnow()
    return render_template(
        "admin/index.html", overview=read_overview(get_redis()), series=per_minute(now), generated_at=iso(now),
        minutes=WINDOW_MINUTES, poll_seconds=POLL_SECONDS, grafana_url=grafana_url(),
    )


@bp.get("/overview.json")
@admin_required
def overview_json():
    """What the page shows, for its live refresh: lanes, workers, supervisors, counts and the chart series."""
    overview = read_overview(get_redis())
    now = utcnow()
    response = jsonify(generated_at=iso(now), **overview_body(overview), series=per_minute(now))
    response.headers["Cache-Control"] = "no-store"
    return response


def overview_body(overview: Overview) -> dict:
    return {
        "lanes": [
            {
                "user_id": lane.user_id, "username": lane.username, "lane": f"lane:{lane.user_id}",
                "queued": lane.queued, "lease_holder": lane.lease_holder,
                "waiting_for_worker": lane.waiting_for_worker, "url": lane_url(lane.user_id),
            }
            for lane in overview.lanes
        ],
        "workers": [
            {
                "name": worker.name, "pid": worker.pid, "state": worker.state, "queues": worker.queues,
                "current_job": worker.current_job,
                "current_job_url": request_url(worker.current_job) if worker.current_job else None,
            }
            for worker in overview.workers
        ],
        "supervisors": [{"id": supervisor, "heartbeat_age": round(age, 1)} for supervisor, age in overview.supervisors],
        "counts_last_hour": overview.counts_last_hour,
    }


def lane_url(user_id: int) -> str:
    """The lane's queue in rq-dashboard (what waits in it now)."""
    return url_for(
        "rq_dashboard.jobs_overview", instance_number=0, queue_name=f"lane:{user_id}", registry_name="queued",
        per_page=8, order="asc", page=1,
    )


@bp.context_processor
def links():
    return {"lane_url": lane_url, "request_url": request_url}


@bp.app_template_filter("minute_utc")
def minute_utc(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%H:%M")


def request_url(job_id: str) -> str:
    return url_for("admin.request_detail", request_id=job_id) if job_id.isdigit() else url_for(
        "rq_dashboard.job_view", instance_number=0, job_id=job_id
    )


@bp.get("/requests/<id:request_id>")
@admin_required
def request_detail(request_id: int):
    """Any user's request, read-only, with its log: where the admin page's "current job" links lead."""
    row = db.session.get(LaneRequest, request_id)
    if row is None:
        raise errors.NotFound("No such request.")
    owner = db.session.get(User, row.user_id)
    return render_template(
        "admin/request.html", row=row, owner=owner, log=request_logs.read_log(row), lane_url=lane_url(row.user_id),
    )


@bp.get("/rq")
@admin_required
def rq_dashboard_without_slash():
    """The dashboard lives at ``/admin/rq/``; the address without the slash leads there too."""
    return redirect(url_for("rq_dashboard.queues_overview"))


@bp.get("/events")
@admin_required
def events():
    """The system log, newest first, filtered by kind (prefix) and by who it names."""
    kind, name = query.text("kind", 64), query.text("name", 64)
    before = query.integer("before", None, 1, MAX_ID)
    statement = select(SystemEvent)
    if kind:
        statement = statement.where(SystemEvent.kind.startswith(kind, autoescape=True))
    if name:
        statement = statement.where((SystemEvent.actor == name) | (SystemEvent.subject == name))
    if before is not None:
        statement = statement.where(SystemEvent.id < before)
    rows = list(db.session.scalars(statement.order_by(SystemEvent.id.desc()).limit(EVENTS_PER_PAGE + 1)))
    next_cursor = rows[EVENTS_PER_PAGE - 1].id if len(rows) > EVENTS_PER_PAGE else None
    return render_template(
        "admin/events.html", events=rows[:EVENTS_PER_PAGE], kind=kind, name=name, before=before,
        next_cursor=next_cursor,
    )


@bp.get("/users")
@admin_required
def users():
    """Users with their open browser sessions, each with a "sign out everywhere" button."""
    open_sessions = (
        select(UserSession.user_id, func.count().label("open"))
        .where(UserSession.ended_at.is_(None)).group_by(UserSession.user_id).subquery()
    )
    rows = db.session.execute(
        select(User, func.coalesce(open_sessions.c.open, 0))
        .outerjoin(open_sessions, open_sessions.c.user_id == User.id).order_by(User.username)
    ).all()
    return render_template("admin/users.html", rows=rows, form=FlaskForm())


@bp.post("/users/<id:user_id>/sign-out")
@admin_required
def sign_out_everywhere(user_id: int):
    """End every browser session of a user (their open Socket.IO connections close within seconds)."""
    if not FlaskForm().validate_on_submit():
        abort(400)
    user = db.session.get(User, user_id)
    if user is None:
        raise errors.NotFound("No such user.")
    ended = end_sessions(user.id)
    system_log.record("admin.sign_out_everywhere", subject=user.username, details={"sessions_ended": ended})
    flash(f"Signed {user.username} out everywhere ({ended} session(s) ended).", "success")
    return redirect(url_for("admin.users"))
