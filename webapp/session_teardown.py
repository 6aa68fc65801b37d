"""The end of a request's database session: a connection the database dropped meanwhile is no 500.

Flask-SQLAlchemy ends each request by removing its session, which rolls back what the view left
open. When PostgreSQL went away after the view had made its answer (a restart, an immediate
shutdown), that ROLLBACK fails and Flask-SQLAlchemy lets the error escape its teardown: gunicorn
then answers 500 instead of the answer already made. Nothing waits on that ROLLBACK (the server
discards a dropped connection's transaction), so here the session is removed first, and a failure
that SQLAlchemy recognised as a lost connection (and so invalidated it) is only logged.
"""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy.exc import DBAPIError

from webapp.extensions import db

log = logging.getLogger(__name__)


def remove_session(_error=None) -> None:
    try:
        db.session.remove()
    except DBAPIError as problem:
        if not problem.connection_invalidated:
            raise
        log.warning("the database dropped a connection as a request ended; its answer stands: %s", problem.orig)
        db.session.remove()  # the invalidated connection is not rolled back again


def init_app(app: Flask) -> None:
    # Teardowns run last-registered first: this one runs before Flask-SQLAlchemy's (which then finds
    # no session left to remove).
    app.teardown_appcontext(remove_session)
