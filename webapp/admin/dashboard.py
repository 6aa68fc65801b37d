"""rq-dashboard, mounted at ``/admin/rq`` for admins only, held to the app's rules.

Its action buttons post without our CSRF token, so every state-changing route instead must be a
POST from this very site (``Origin``, else ``Referer``, naming this host): another site cannot
make an admin's browser delete or requeue jobs. Its GET route that requeues is refused (405).
Each action goes into the system log, and RQ's own errors become 404/409 instead of 500.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import rq_dashboard
from flask import Flask, redirect, request, url_for
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError

from webapp import errors, system_log
from webapp.admin.routes import refuse_unless_admin
from webapp.extensions import csrf, get_redis

URL_PREFIX = "/admin/rq"
ACTIONS = {
    "rq_dashboard.delete_job_view", "rq_dashboard.requeue_job_view", "rq_dashboard.requeue_all",
    "rq_dashboard.empty_queue", "rq_dashboard.compact_queue",
}


def mount_rq_dashboard(app: Flask) -> None:
    """Register the dashboard blueprint behind the admin check, on the app's Redis."""
    app.config["RQ_DASHBOARD_REDIS_URL"] = app.config["REDIS_URL"]
    # The blueprint is one object shared by every app built in this process, and Flask forbids
    # adding hooks to a blueprint once registered: so the guards go on this app, keyed by the
    # blueprint's name, which is what ``blueprint.before_request`` would do. Listed before the
    # blueprint's own hooks, they run first.
    app.before_request_funcs.setdefault(rq_dashboard.blueprint.name, []).extend(
        [refuse_unless_admin, guard_actions, jobs_of_a_real_queue]
    )
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rq_dashboard.web.setup_rq_connection(app)
    # Its buttons post without our CSRF token: guard_actions checks the origin instead.
    csrf.exempt(rq_dashboard.blueprint)

    @app.errorhandler(NoSuchJobError)
    def no_such_job(_error):
        return errors.error_response(errors.NotFound("No such job."))

    @app.errorhandler(InvalidJobOperation)
    def invalid_job_operation(error):
        conflict = errors.LanesError(f"The job cannot be changed that way: {error}.")
        conflict.status = 409
        return errors.error_response(conflict)


def guard_actions():
    """State-changing dashboard routes: POST only, from this site only; logged."""
    if request.endpoint not in ACTIONS:
        return None
    if request.method != "POST":
        raise errors.MethodNotAllowed("This action needs a POST.", headers={"Allow": "POST"})
    if not same_origin():
        raise errors.Forbidden("This action must come from this site's own pages.")
    system_log.record(
        "admin.rq_dashboard", subject=request.path[len(URL_PREFIX):],
        details={"action": request.endpoint.split(".", 1)[1], **(request.view_args or {})},
    )
    return None


def same_origin() -> bool:
    """Whether the browser says this request comes from a page of this host (Origin, else Referer)."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    parts = urlsplit(source)
    return f"{parts.scheme}://{parts.netloc}" == request.host_url.rstrip("/")


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
