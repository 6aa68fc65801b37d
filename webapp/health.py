"""``/healthz`` (the process answers) and ``/readyz`` (its database and Redis answer)."""

from flask import Flask, jsonify
from sqlalchemy import text

from webapp.extensions import db, get_redis


def init_app(app: Flask) -> None:
    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        checks = {}
        try:
            db.session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            db.session.rollback()
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            get_redis().ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["redis"] = f"unavailable: {type(exc).__name__}"
        ready = all(value == "ok" for value in checks.values())
        return jsonify(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503
