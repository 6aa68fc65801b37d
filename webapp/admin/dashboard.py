"""rq-dashboard, mounted at ``/admin/rq`` for admins only."""

from __future__ import annotations

import rq_dashboard
from flask import Flask, redirect, request, url_for
from rq import Queue

from webapp.admin.routes import refuse_unless_admin
from webapp.extensions import csrf, get_redis

URL_PREFIX = "/admin/rq"


def mount_rq_dashboard(app: Flask) -> None:
    """Register the dashboard blueprint behind the admin check, on the app's Redis."""
    app.config["RQ_DASHBOARD_REDIS_URL"] = app.config["REDIS_URL"]
    # The blueprint is one object shared by every app built in this process, and Flask forbids
    # adding hooks to a blueprint once registered: so the guard goes on this app, keyed by the
    # blueprint's name, which is what ``blueprint.before_request`` would do. Listed before the
    # blueprint's own hooks, it runs first.
    app.before_request_funcs.setdefault(rq_dashboard.blueprint.name, []).extend(
        [refuse_unless_admin, jobs_of_a_real_queue]
    )
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rq_dashboard.web.setup_rq_connection(app)
    # Its delete/requeue buttons post without our CSRF token; only admins reach them.
    csrf.exempt(rq_dashboard.blueprint)


def jobs_of_a_real_queue():
    """rq-dashboard's "Jobs" tab without a queue shows RQ's ``default`` queue, which Lanes never uses
    (a phantom queue in the list). Send it to the first lane's jobs instead, or to the queue list."""
    if request.endpoint != "rq_dashboard.jobs_overview" or request.view_args.get("queue_name") is not None:
        return None
    instance = request.view_args.get("instance_number", 0)
    names = sorted(queue.name for queue in Queue.all(connection=get_redis()))
    if not names:
        return redirect(url_for("rq_dashboard.queues_overview", instance_number=instance))
    return redirect(url_for(
        "rq_dashboard.jobs_overview", instance_number=instance, queue_name=names[0], registry_name="queued",
        per_page=8, order="asc", page=1,
    ))
