"""``/admin``: the operator's view of lanes, workers, supervisors and throughput (admins only)."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user

from webapp import errors
from webapp.admin.overview import THROUGHPUT_MINUTES, read_overview
from webapp.extensions import get_redis, login_manager

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
