"""A 503 from submit means nothing was done: a commit whose answer was lost is resolved before answering.

The connection breaking during COMMIT leaves the outcome unknown to the web process. Lanes ends the
old server process, waits for it to be gone, then looks: the request exists (202, and it runs), or it
does not and never will (503, and a retry without an Idempotency-Key cannot double anything).
"""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from webapp.extensions import db
from webapp.models import LaneRequest

REQUESTS = "/api/v1/requests"


@pytest.fixture
def postgres_only(settings):
    if not settings["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("an interrupted COMMIT is resolved on PostgreSQL (CI sets TEST_DATABASE_URL)")


def lost_answer(real_commit, lands: bool):
    """A ``Session.commit`` whose connection breaks before PostgreSQL's answer arrives."""

    def commit(session):
        if lands:
            real_commit(session)  # the server committed ...
        else:
            session.rollback()  # ... or never got the COMMIT
        raise OperationalError("COMMIT", {}, psycopg.OperationalError("server closed the connection unexpectedly"))

    return commit


def count_rows(app) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(LaneRequest))
        db.session.rollback()
        return count


def submit_once_with(monkeypatch, app, api, lands: bool):
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    real_commit = Session.commit
    inserted, intercepted = [], []

    def note_insert(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO LANE_REQUESTS"):
            inserted.append(statement)

    def patched(session):
        if inserted and not intercepted:  # only the submit's own commit loses its answer
            intercepted.append(session)
            return lost_answer(real_commit, lands)(session)
        return real_commit(session)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", note_insert)
    monkeypatch.setattr(Session, "commit", patched)
    try:
        return api.post(REQUESTS, json={"type": "ledger.deposit", "payload": {"amount": 10}})
    finally:
        event.remove(engine, "before_cursor_execute", note_insert)
        assert intercepted, "the submit's commit was not intercepted"


def test_a_commit_that_landed_is_acknowledged(postgres_only, app, api, monkeypatch, redis_client):
    response = submit_once_with(monkeypatch, app, api, lands=True)

    assert response.status_code == 202, response.get_data(as_text=True)
    request_id = response.get_json()["id"]
    assert count_rows(app) == 1
    assert api.get(f"{REQUESTS}/{request_id}").status_code == 200
    assert str(request_id).encode() in redis_client.lrange(f"rq:queue:lane:{api.user_id}", 0, -1), \
        "an acknowledged request must be queued in its lane"


def test_a_commit_that_did_not_land_is_a_503_and_nothing_exists(postgres_only, app, api, monkeypatch, redis_client):
    response = submit_once_with(monkeypatch, app, api, lands=False)

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "service_unavailable"
    assert response.headers["Retry-After"]
    assert count_rows(app) == 0, "a 503 left a request behind, which the reconciler would run"
    assert redis_client.llen(f"rq:queue:lane:{api.user_id}") == 0
