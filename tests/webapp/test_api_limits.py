"""API v1 under pressure: a full lane, the submit rate limit (429), and Redis down (503)."""

import pytest
from sqlalchemy import func, select

from webapp.rate_limits import rate_limits

ECHO = {"type": "echo", "payload": {"message": "hi"}}


@pytest.fixture
def app_with(app, settings):
    """Build another app on the same database and Redis (emptied by ``app``) with settings overridden."""
    from webapp import create_app
    from webapp.extensions import db

    built = []

    def build(**overrides):
        other = create_app({**settings, **overrides})
        built.append(other)
        return other

    yield build
    for other in built:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def request_rows(app) -> int:
    from webapp.extensions import db
    from webapp.models import LaneRequest

    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(LaneRequest))


def test_a_full_lane_is_429_lane_full(app_with, make_user, make_token):
    client = app_with(LANES_MAX_PENDING=2).test_client()
    headers = bearer(make_token(make_user("alice")))
    for _ in range(2):
        assert client.post("/api/v1/requests", json=ECHO, headers=headers).status_code == 202
    full = client.post("/api/v1/requests", json=ECHO, headers=headers)
    assert full.status_code == 429
    error = full.get_json()["error"]
    assert error["code"] == "lane_full"
    assert error["details"] == {"pending": 2, "limit": 2}
    assert int(full.headers["Retry-After"]) >= 1

    # Canceling one frees a place.
    pending = client.get("/api/v1/lane", headers=headers).get_json()["pending"]
    assert client.delete(f"/api/v1/requests/{pending[0]}", headers=headers).status_code == 200
    assert client.post("/api/v1/requests", json=ECHO, headers=headers).status_code == 202


def test_submitting_too_fast_is_429_rate_limited_with_retry_after(app_with, make_user, make_token):
    client = app_with(LANES_SUBMIT_RATE="3/minute").test_client()
    alice, bob = bearer(make_token(make_user("alice"))), bearer(make_token(make_user("bob")))
    for _ in range(3):
        assert client.post("/api/v1/requests", json=ECHO, headers=alice).status_code == 202
    limited = client.post("/api/v1/requests", json=ECHO, headers=alice)
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert client.get("/api/v1/lane", headers=alice).get_json()["length"] == 3
    # The limit is per user.
    assert client.post("/api/v1/requests", json=ECHO, headers=bob).status_code == 202


def test_redis_down_is_503_and_nothing_is_written(app, app_with, make_user, make_token):
    client = app_with(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    headers = bearer(make_token(make_user("alice")))
    response = client.post("/api/v1/requests", json=ECHO, headers=headers)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "service_unavailable"
    assert response.headers["Retry-After"]
    assert request_rows(app) == 0


def test_redis_failing_at_enqueue_is_503_and_the_row_is_taken_back(app, app_with, make_user, make_token,
                                                                     monkeypatch):
    """Redis is down when the job is enqueued, after the row was written: nothing may stay acknowledged."""
    client = app_with(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    headers = bearer(make_token(make_user("alice")))
    monkeypatch.setattr(rate_limits, "hit", lambda *names: True)  # let the submit reach the enqueue
    response = client.post("/api/v1/requests", json=ECHO, headers=headers)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "service_unavailable"
    assert request_rows(app) == 0
    monkeypatch.undo()

    # The same token on a healthy app still works: the failure left nothing half-done.
    healthy = app.test_client()
    assert healthy.get("/api/v1/lane", headers=headers).get_json()["length"] == 0
    assert healthy.post("/api/v1/requests", json=ECHO, headers=headers).status_code == 202
