"""Authentication: browser sessions (Flask-Login), API tokens, the ``flask user`` CLI."""

from __future__ import annotations

import time

from flask import Flask, session
from flask_login import current_user, logout_user

from webapp.extensions import db, get_redis, login_manager
from webapp.lanes import presence
from webapp.models import User

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
    return db.session.get(User, int(user_id))


def keep_session_alive() -> None:
    """End sessions idle longer than ``LANES_SESSION_IDLE_MINUTES``; mark the others present."""
    if not current_user.is_authenticated or "sid" not in session:
        return
    from flask import current_app

    idle_minutes = current_app.config["LANES_SESSION_IDLE_MINUTES"]
    now = time.time()
    seen = session.get("seen", now)
    if now - seen > idle_minutes * 60:
        logout_user()
        session.clear()
        return
    if now - seen >= TOUCH_EVERY_SECONDS:  # not on every request: a minute's precision is plenty
        session["seen"] = now
        presence.touch_session(get_redis(), current_user.id, session["sid"], idle_minutes)
