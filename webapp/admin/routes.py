"""``/admin``: the operator's view of lanes, workers, supervisors and throughput (admins only)."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select

from webapp import errors, system_log
from webapp.admin.overview import THROUGHPUT_MINUTES, read_overview
from webapp.api import query_parameters as query
from webapp.auth.accounts import end_sessions
from webapp.extensions import db, get_redis, login_manager
from webapp.ids import MAX_ID
from webapp.models import SystemEvent, User, UserSession

EVENTS_PER_PAGE = 50

bp = Blueprint("admin", __name__, url_prefix="/admin")


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


@bp.get("")
@admin_required
def index():
    return render_template("admin/index.html", overview=read_overview(get_redis()), minutes=THROUGHPUT_MINUTES)


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
