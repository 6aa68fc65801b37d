"""API v1 authentication: POST /tokens, DELETE /tokens/current, and 401 on everything else."""

import json

from sqlalchemy import select

from tests.conftest import PASSWORD

LANE = "/api/v1/lane"


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


def test_password_exchange_gives_a_working_token(client, make_user):
    make_user("bob")
    response = client.post("/api/v1/tokens", json={"username": "bob", "password": PASSWORD, "name": "laptop"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"token", "id", "name", "created_at"}
    assert body["name"] == "laptop"
    assert body["created_at"].endswith("Z")
    assert len(body["token"]) >= 32

    lane = client.get(LANE, headers={"Authorization": f"Bearer {body['token']}"})
    assert lane.status_code == 200
    assert lane.get_json()["pending"] == []


def test_token_is_stored_only_as_a_hash(app, client, make_user):
    from webapp.extensions import db
    from webapp.models import ApiToken

    make_user("bob")
    plain = client.post("/api/v1/tokens", json={"username": "bob", "password": PASSWORD}).get_json()["token"]
    with app.app_context():
        stored = db.session.scalars(select(ApiToken.token_hash)).all()
    assert stored and plain not in stored


def test_using_a_token_records_when_it_was_last_used(app, api):
    from webapp.extensions import db
    from webapp.models import ApiToken

    assert api.get(LANE).status_code == 200
    with app.app_context():
        assert db.session.scalars(select(ApiToken.last_used_at)).one() is not None


def test_wrong_password_is_401_invalid_credentials(client, make_user):
    make_user("bob")
    response = client.post("/api/v1/tokens", json={"username": "bob", "password": "not the password"})
    assert response.status_code == 401
    assert error_code(response) == "invalid_credentials"
    unknown = client.post("/api/v1/tokens", json={"username": "nobody", "password": PASSWORD})
    assert unknown.status_code == 401
    assert error_code(unknown) == "invalid_credentials"
    impossible = client.post("/api/v1/tokens", json={"username": "b\x00b", "password": PASSWORD})
    assert impossible.status_code == 401  # no account can have that name: not looked up at all
    assert error_code(impossible) == "invalid_credentials"
    named = client.post("/api/v1/tokens", json={"username": "bob", "password": PASSWORD, "name": "a\x00b"})
    assert named.status_code == 400
    assert named.get_json()["error"]["details"]["fields"] == {"name": "must not contain control characters"}


def test_token_request_body_is_checked(client, make_user):
    make_user("bob")
    missing = client.post("/api/v1/tokens", json={"username": "bob"})
    assert missing.status_code == 400
    assert error_code(missing) == "invalid_request"
    assert missing.get_json()["error"]["details"]["fields"] == {"password": "required field"}

    wrong_type = client.post("/api/v1/tokens", json={"username": "bob", "password": 12345678})
    assert wrong_type.status_code == 400
    assert "password" in wrong_type.get_json()["error"]["details"]["fields"]

    malformed = client.post("/api/v1/tokens", data="{username", content_type="application/json")
    assert malformed.status_code == 400
    assert error_code(malformed) == "invalid_json"

    for field in ("username", "password"):  # an unpaired surrogate escape cannot reach the database
        body = json.dumps({"username": "bob", "password": PASSWORD, "name": "n", field: "SURROGATE"})
        surrogate = client.post("/api/v1/tokens", data=body.replace("SURROGATE", "x\\ud800"),
                                content_type="application/json")
        assert surrogate.status_code == 400, field
        assert error_code(surrogate) == "invalid_json"

    form = client.post("/api/v1/tokens", data={"username": "bob", "password": PASSWORD})
    assert form.status_code == 415
    assert error_code(form) == "unsupported_media_type"


def test_failed_logins_are_throttled_even_for_the_right_password(client, make_user):
    make_user("bob")
    for _ in range(10):
        failed = client.post("/api/v1/tokens", json={"username": "bob", "password": "wrong password"})
        assert failed.status_code == 401
    throttled = client.post("/api/v1/tokens", json={"username": "bob", "password": PASSWORD})
    assert throttled.status_code == 429
    assert error_code(throttled) == "rate_limited"
    assert int(throttled.headers["Retry-After"]) >= 1


def test_no_token_is_401(client):
    response = client.get(LANE)
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_invalid_token_and_other_schemes_are_401(client):
    for header in ("Bearer lanes_not-a-real-token", "Basic Ym9iOnBhc3N3b3Jk", "Bearer ", "lanes_x"):
        response = client.get(LANE, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert error_code(response) == "unauthorized"


def test_revoking_the_current_token_makes_it_401(api):
    assert api.get(LANE).status_code == 200
    revoked = api.delete("/api/v1/tokens/current")
    assert revoked.status_code == 204
    assert revoked.get_data() == b""

    after = api.get(LANE)
    assert after.status_code == 401
    assert error_code(after) == "unauthorized"
    assert api.delete("/api/v1/tokens/current").status_code == 401


def test_revoking_one_token_keeps_the_others(client, make_user, make_token):
    user_id = make_user("bob")
    first, second = make_token(user_id, "first"), make_token(user_id, "second")
    assert client.delete("/api/v1/tokens/current", headers={"Authorization": f"Bearer {first}"}).status_code == 204
    assert client.get(LANE, headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_a_session_cookie_does_not_authenticate_the_api(client, make_user):
    user_id = make_user("bob")
    with client.session_transaction() as session:  # what Flask-Login stores after a sign-in
        session["_user_id"] = str(user_id)
        session["_fresh"] = True
    response = client.get(LANE)
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
    submit = client.post("/api/v1/requests", json={"type": "echo", "payload": {"message": "hi"}})
    assert submit.status_code == 401


def test_every_authenticated_endpoint_refuses_without_a_token(client):
    calls = [
        ("get", "/api/v1/job-types"), ("get", "/api/v1/requests"), ("post", "/api/v1/requests"),
        ("get", "/api/v1/requests/1"), ("delete", "/api/v1/requests/1"), ("get", "/api/v1/lane"),
        ("delete", "/api/v1/tokens/current"),
    ]
    for method, path in calls:
        response = getattr(client, method)(path)
        assert response.status_code == 401, (method, path)
        assert error_code(response) == "unauthorized"
    assert client.get("/api/v1/openapi.json").status_code == 200
