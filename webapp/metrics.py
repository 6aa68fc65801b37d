"""Prometheus ``/metrics`` for the web process (prometheus-flask-exporter's default names).

Label values stay bounded whatever clients send: paths are grouped by URL rule (an unknown path
is one "None" series) and any method outside HTTP's usual ones is counted as ``OTHER``. When
``LANES_METRICS_TOKEN`` is set, ``/metrics`` wants ``Authorization: Bearer <that token>``.
"""

import hmac
from functools import wraps

from flask import Flask, current_app, request
from prometheus_flask_exporter import PrometheusMetrics

from webapp import errors

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def init_app(app: Flask) -> None:
    metrics = PrometheusMetrics.for_app_factory(group_by="url_rule", metrics_decorator=token_required)
    metrics.init_app(app)
    app.extensions["lanes_prometheus"] = metrics

    @app.before_request
    def collapse_unknown_methods():
        # Routing already answered 405 for it; only the label changes.
        if request.method not in KNOWN_METHODS:
            request.method = "OTHER"


def token_required(view):
    @wraps(view)
    def guarded(*args, **kwargs):
        expected = current_app.config["LANES_METRICS_TOKEN"]
        if expected:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
                raise errors.Unauthorized(
                    "Send Authorization: Bearer <LANES_METRICS_TOKEN>.",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        return view(*args, **kwargs)

    return guarded
