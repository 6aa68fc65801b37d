"""rq-dashboard, mounted at ``/admin/rq`` for admins only."""

from __future__ import annotations

import rq_dashboard
from flask import Flask

from webapp.admin.routes import refuse_unless_admin
from webapp.extensions import csrf

URL_PREFIX = "/admin/rq"


def mount_rq_dashboard(app: Flask) -> None:
    """Register the dashboard blueprint behind the admin check, on the app's Redis."""
    app.config["RQ_DASHBOARD_REDIS_URL"] = app.config["REDIS_URL"]
    # The blueprint is one object shared by every app built in this process, and Flask forbids
    # adding hooks to a blueprint once registered: so the guard goes on this app, keyed by the
    # blueprint's name, which is what ``blueprint.before_request`` would do. Listed before the
    # blueprint's own hooks, it runs first.
    app.before_request_funcs.setdefault(rq_dashboard.blueprint.name, []).append(refuse_unless_admin)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rq_dashboard.web.setup_rq_connection(app)
    # Its delete/requeue buttons post without our CSRF token; only admins reach them.
    csrf.exempt(rq_dashboard.blueprint)
