"""Pooled connections are pinged before use, except a web request's that was in use a moment ago."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from webapp import db_ping
from webapp.extensions import db


@pytest.fixture
def pings(app, monkeypatch):
    """The pings sent from now on; the pool starts empty (the next connection is a fresh one)."""
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            pytest.skip("SQLite connections are not pinged")
        dialect_class = type(db.engine.dialect)
        db.engine.dispose()
    sent = []
    original = dialect_class.do_ping

    def counting(self, dbapi_connection):
        sent.append(dbapi_connection)
        return original(self, dbapi_connection)

    monkeypatch.setattr(dialect_class, "do_ping", counting)
    return sent


def use_twice(app) -> None:
    for _ in range(2):
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))


def test_a_request_does_not_ping_a_connection_returned_a_moment_ago(app, pings):
    with app.test_request_context():
        use_twice(app)
    assert pings == []  # the first was new, the second back for less than RECENT_SECONDS


def test_a_request_pings_a_connection_idle_for_longer(app, pings, monkeypatch):
    monkeypatch.setattr(db_ping, "RECENT_SECONDS", 0.0)
    with app.test_request_context():
        use_twice(app)
    assert len(pings) == 1


def test_outside_requests_every_reused_connection_is_pinged(app, pings):
    with app.app_context():
        use_twice(app)
    assert len(pings) == 1


def test_a_connection_that_died_in_the_pool_is_replaced_before_use(app, pings, monkeypatch):
    monkeypatch.setattr(db_ping, "RECENT_SECONDS", 0.0)
    with app.test_request_context():
        with db.engine.connect() as connection:
            dead = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        outside_the_pool = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(outside_the_pool, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (dead,))
        with db.engine.connect() as connection:
            alive = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    assert alive != dead
    assert pings  # the ping found it dead; no error reached the caller
