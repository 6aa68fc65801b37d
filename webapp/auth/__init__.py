"""Authentication: browser sessions (Flask-Login), API tokens, the ``flask user`` CLI."""

from __future__ import annotations

import time

from flask import Flask, request, session
from flask_login import current_user, logout_user
from sqlalchemy import select

from webapp.extensions import db, get_redis, login_manager
from webapp.lanes import presence
from webapp.models import User, UserSession

TOUCH_EVERY_SECONDS = 60


def init_app(app: Flask) -> None:
    from webapp.auth.cli import user_cli
    from webapp.auth.routes import bp

    app.register_blueprint(bp)
    app.cli.add_command(user_cli)
    login_manager.login_message_category = "info"
    app.before_request(keep_session_alive)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The cookie's user, only while its server-side session (``sid``) has not been ended."""
    sid = session.get("sid")
    if not isinstance(sid, str) or not user_id.isdigit():
        return None
    return db.session.scalar(
        select(User).join(UserSession, UserSession.user_id == User.id)
        .where(User.id == int(user_id), UserSession.id == sid, UserSession.ended_at.is_(None))
    )


def keep_session_alive() -> None:
    """End sessions idle longer than ``LANES_SESSION_IDLE_MINUTES``; mark the others present."""
    if request.blueprint == "api":
        return  # the API never reads the session cookie (bearer tokens only): nothing to keep alive
    signed_in = current_user.is_authenticated
    # The user is loaded: end that transaction now, so no request holds a pooled connection
    # while it reads a slow body or waits for something else.
    db.session.commit()
    if not signed_in:
        if "_user_id" in session:  # a cookie whose session was ended (sign-out elsewhere, password change)
            session.clear()
        return
    if "sid" not in session:
        return
    from flask import current_app

    idle_minutes = current_app.config["LANES_SESSION_IDLE_MINUTES"]
    now = time.time()
    seen = session.get("seen", now)
    if now - seen > idle_minutes * 60:
        from webapp.auth.accounts import end_sessions

        end_sessions(current_user.id, session_id=session["sid"])
        logout_user()
        session.clear()
        return
    if now - seen >= TOUCH_EVERY_SECONDS:  # not on every request: a minute's precision is plenty
        session["seen"] = now
        presence.touch_session(get_redis(), current_user.id, session["sid"], idle_minutes)
