"""Lanes: every signed-in user gets a private FIFO queue of requests."""

from __future__ import annotations

import logging

from flask import Flask

from webapp.config import PROJECT_ROOT, Config


def create_app(config: dict | None = None) -> Flask:
    """Build the web app; ``config`` overrides settings read from the environment (tests)."""
    import jobs  # noqa: F401 - registers the job catalogue
    from webapp import db_ping, errors, extensions, session_teardown, system_log
    from webapp.client_address import trust_proxies
    from webapp.extensions import csrf, db, login_manager, migrate, redis_binding, socketio_channel
    from webapp.ids import IdConverter
    from webapp.lanes.end_watcher import EndWatcher
    from webapp.lanes.events import EventPublisher
    from webapp.rate_limits import rate_limits

    settings = Config(**(config or {}))
    app = Flask(__name__, instance_path=str(settings.INSTANCE_DIR))
    app.config.from_object(settings)
    app.url_map.converters["id"] = IdConverter
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    db.init_app(app)
    session_teardown.init_app(app)  # after db.init_app: it must run before Flask-SQLAlchemy's teardown
    with app.app_context():
        if db.engine.dialect.name != "sqlite" and app.config["LANES_DB_PRE_PING"]:  # SQLite files need none
            db_ping.install(db.engine)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"), render_as_batch=True, compare_type=True)
    login_manager.init_app(app)
    csrf.init_app(app)
    redis_binding.init_app(app)
    rate_limits.init_app(app)
    channel = app.extensions["lanes_socketio_channel"] = socketio_channel(app.config)
    app.extensions["lanes_events"] = EventPublisher(app.extensions["lanes_redis"], channel)
    app.extensions["lanes_end_watcher"] = EndWatcher(app.extensions["lanes_redis"], channel)
    errors.init_app(app)
    system_log.init_app(app)

    from webapp import admin, api, auth, console, downloads, health, metrics, realtime, request_body, security_headers

    auth.init_app(app)
    api.init_app(app)
    console.init_app(app)
    downloads.init_app(app)
    admin.init_app(app)
    health.init_app(app)
    metrics.init_app(app)
    realtime.init_app(app)
    security_headers.init_app(app)
    request_body.init_app(app)  # last: it wraps the whole WSGI app, Socket.IO's middleware included
    extensions.login_manager.login_view = "auth.login"
    trust_proxies(app)  # last: it wraps the Socket.IO middleware too
    return app
