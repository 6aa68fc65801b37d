"""Prometheus ``/metrics`` for the web process (prometheus-flask-exporter's default names)."""

from flask import Flask
from prometheus_flask_exporter import PrometheusMetrics


def init_app(app: Flask) -> None:
    metrics = PrometheusMetrics.for_app_factory(group_by="url_rule")
    metrics.init_app(app)
    app.extensions["lanes_prometheus"] = metrics
