"""A request whose database connection is dropped after its view answered still gets that answer."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from webapp.extensions import db


def test_a_connection_dropped_after_the_view_answered_is_not_a_500(app, client, make_user, make_token):
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            pytest.skip("PostgreSQL drops connections; an SQLite file does not")
        admin_dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    token = make_token(make_user("tess"))
    dropped = []

    @app.after_request
    def drop_the_connection(response):
        # As PostgreSQL stopping (immediate) between the view's answer and the request's ROLLBACK.
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            dropped.append(admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0])
        return response

    response = client.get("/api/v1/lane", headers={"Authorization": f"Bearer {token}"})

    assert dropped == [True]
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert "length" in response.get_json()
