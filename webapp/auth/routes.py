"""Sign-in, sign-out and sign-up pages."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from webapp import errors, system_log
from webapp.auth import accounts
from webapp.auth.accounts import AccountError, authenticate, create_user
from webapp.auth.forms import LoginForm, LogoutForm, RegisterForm
from webapp.auth.throttle import take_places
from webapp.client_address import client_address
from webapp.extensions import get_redis
from webapp.lanes import keys, presence
from webapp.lanes.cleanup import delete_lane_if_gone

bp = Blueprint("auth", __name__, url_prefix="/auth")


def start_session(user) -> None:
    """A fresh session on every sign-in (no fixation), marked present for the lane cleanup."""
    session.clear()
    login_user(user)
    session["sid"] = accounts.start_session(user)
    session["seen"] = time.time()
    presence.touch_session(get_redis(), user.id, session["sid"], current_app.config["LANES_SESSION_IDLE_MINUTES"])


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else the console.

    Browsers read a backslash as a slash ("/\\evil.example" goes to another host) and drop tabs
    and newlines; control characters could not go into a ``Location`` header anyway.
    """
    if (target and target.startswith("/") and not target.startswith("//") and "\\" not in target
            and target.isprintable() and not urlsplit(target).netloc):
        return target
    return url_for("console.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("console.index"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = authenticate(form.username.data, form.password.data, client_address())
        except errors.InvalidCredentials:
            form.password.errors.append("Wrong user name or password.")
            status = 401
        except errors.RateLimited as throttled:
            form.password.errors.append("Too many failed sign-ins. Try again in a few minutes.")
            status = 429
            return render_template("auth/login.html", form=form), status, throttled.headers
        else:
            start_session(user)
            return redirect(safe_next(request.args.get("next")))
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
def logout():
    form = LogoutForm()
    if not form.validate_on_submit():
        abort(400)
    if current_user.is_authenticated:
        user_id = current_user.id
        connection = get_redis()
        if "sid" in session:
            accounts.end_sessions(user_id, session_id=session["sid"])  # the saved cookie stops working too
            presence.end_session(connection, user_id, session["sid"])
        system_log.record("sign_out", actor=current_user.username)
        delete_lane_if_gone(connection, user_id)  # only if empty, unserved and no other session
        logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/register", methods=["GET", "POST"])
def register():
    if not current_app.config["LANES_ALLOW_SIGNUP"]:
        abort(404)
    if current_user.is_authenticated:
        return redirect(url_for("console.index"))
    form = RegisterForm()
    status = 200
    if form.validate_on_submit():
        # Per address, counted before anything is looked up: names cannot be probed faster than this.
        attempt = take_places([(keys.signups(client_address()), current_app.config["LANES_SIGNUP_RATE"])])
        if attempt.refused:
            form.username.errors.append("Too many sign-ups from your address. Try again later.")
            system_log.record("sign_up.throttled")
            return render_template("auth/register.html", form=form), 429, {"Retry-After": str(attempt.retry_after)}
        try:
            user = create_user(form.username.data.strip(), form.password.data)
        except AccountError as problem:
            form.username.errors.append(str(problem))
            status = 400
        else:
            start_session(user)
            flash("Welcome to Lanes.", "info")
            return redirect(url_for("console.index"))
    elif request.method == "POST":
        status = 400
    return render_template("auth/register.html", form=form), status
