"""Checking a pooled database connection before use (SQLAlchemy's pre-ping), except for a web
request whose connection came back to the pool less than a second ago.

A ping is a round trip, and a web request may check a connection out twice (its sign-in check
ends its transaction before the body is read): under load, pinging connections that were in use
a moment ago was a fifth of a submit's database round trips. A connection that died within that
second (the database restarted) fails its request with the usual 503 and ``Retry-After``, and
SQLAlchemy then replaces every connection opened before the failure. Everywhere else (the CLI, a
request's connection idle for longer) every checkout is pinged, as ``pool_pre_ping`` does; a newly
opened connection needs no ping. worker.py pings nothing (``LANES_DB_PRE_PING``): its lane workers
retry what a dead connection failed.
"""

from __future__ import annotations

import time

from flask import has_request_context
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

RECENT_SECONDS = 1.0
_RETURNED_AT = "lanes_returned_at"
_FRESH = "lanes_fresh"


def install(engine: Engine) -> None:
    """Ping ``engine``'s connections on checkout as described above (instead of ``pool_pre_ping``)."""
    dialect = engine.dialect

    @event.listens_for(engine, "connect")
    def connected(_dbapi_connection, record) -> None:
        record.info[_FRESH] = True

    @event.listens_for(engine, "checkin")
    def checked_in(_dbapi_connection, record) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection, record, _proxy) -> None:
        if record.info.pop(_FRESH, False):
            return
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is not None and time.monotonic() - returned_at < RECENT_SECONDS and has_request_context():
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                # As pool_pre_ping: this connection and every older one are replaced; the pool retries.
                raise exc.InvalidatePoolError() from error
            raise
