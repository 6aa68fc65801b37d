"""``/settings/tokens``: create a token (shown once), use it on the API, revoke it."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import ApiToken

TOKEN_RE = re.compile(r'id="token-value"[^>]*value="(lanes_[^"]+)"')


@pytest.fixture
def alice(make_user, browser):
    user_id = make_user("alice")
    browser.login("alice")
    return user_id


def create_token(browser, name="laptop script"):
    return browser.client.post("/settings/tokens", data={"name": name, "csrf_token": browser.csrf("/settings/tokens")})


def token_ids(app, user_id):
    with app.app_context():
        return db.session.scalars(select(ApiToken.id).where(ApiToken.user_id == user_id).order_by(ApiToken.id)).all()


def lane_with(client, token):
    return client.get("/api/v1/lane", headers={"Authorization": f"Bearer {token}"})


def test_tokens_page_needs_login(browser):
    response = browser.client.get("/settings/tokens")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login?next=")


def test_created_token_is_shown_once_and_works_on_the_api(app, browser, alice):
    response = create_token(browser)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "no-store" in response.headers["Cache-Control"]
    plain = TOKEN_RE.search(html).group(1)
    assert "shown only this once" in html

    lane = lane_with(browser.client, plain)
    assert lane.status_code == 200
    assert lane.get_json()["name"] == f"lane:{alice}"

    again = browser.client.get("/settings/tokens").get_data(as_text=True)
    assert plain not in again
    assert 'id="token-value"' not in again
    row = re.search(r'<tr data-token-id="\d+" class="active">(.*?)</tr>', again, re.S).group(1)
    assert "laptop script" in row
    assert "never" not in row  # the API call above counts as a use
    assert "<td>no</td>" in row


def test_an_unused_token_reads_never_used(browser, alice):
    create_token(browser, "idle")
    html = browser.client.get("/settings/tokens").get_data(as_text=True)
    row = re.search(r'<tr data-token-id="\d+" class="active">(.*?)</tr>', html, re.S).group(1)
    assert "<td>never</td>" in row


def test_a_token_needs_a_name(app, browser, alice):
    response = create_token(browser, "   ")
    assert response.status_code == 400
    assert "Give the token a name." in response.get_data(as_text=True)
    assert token_ids(app, alice) == []


def test_a_name_with_control_characters_is_refused_next_to_the_field(app, browser, alice):
    for name in ("nul\x00byte", "tab\there"):  # a NUL would not even fit a PostgreSQL text column
        response = create_token(browser, name)
        assert response.status_code == 400
        assert "The name must not contain control characters." in response.get_data(as_text=True)
    assert token_ids(app, alice) == []


def test_creating_a_token_needs_csrf(app, browser, alice):
    response = browser.client.post("/settings/tokens", data={"name": "forged"})
    assert response.status_code == 400
    assert token_ids(app, alice) == []


def test_revoke_stops_the_token(app, browser, alice):
    plain = TOKEN_RE.search(create_token(browser).get_data(as_text=True)).group(1)
    [token_id] = token_ids(app, alice)
    html = browser.client.get("/settings/tokens").get_data(as_text=True)
    assert f'action="/settings/tokens/{token_id}/revoke"' in html

    response = browser.client.post(
        f"/settings/tokens/{token_id}/revoke", data={"csrf_token": browser.csrf("/settings/tokens")}
    )
    assert response.status_code == 302
    html = browser.client.get("/settings/tokens").get_data(as_text=True)
    assert "is revoked" in html
    row = re.search(rf'<tr data-token-id="{token_id}" class="revoked">(.*?)</tr>', html, re.S).group(1)
    assert "<time" in row.split("</td>")[3]  # the revoked column names when
    assert f'action="/settings/tokens/{token_id}/revoke"' not in html
    assert lane_with(browser.client, plain).status_code == 401

    again = browser.client.post(
        f"/settings/tokens/{token_id}/revoke", data={"csrf_token": browser.csrf("/settings/tokens")}
    )
    assert again.status_code == 302
    assert "was already revoked" in browser.client.get("/settings/tokens").get_data(as_text=True)


def test_revoke_needs_csrf(app, browser, alice):
    plain = TOKEN_RE.search(create_token(browser).get_data(as_text=True)).group(1)
    [token_id] = token_ids(app, alice)
    assert browser.client.post(f"/settings/tokens/{token_id}/revoke").status_code == 400
    assert lane_with(browser.client, plain).status_code == 200


def test_another_users_token_is_404_and_untouched(app, browser, alice, make_user, make_token):
    bob = make_user("bob")
    bobs_plain = make_token(bob, "bob's")
    [bobs_id] = token_ids(app, bob)
    html = browser.client.get("/settings/tokens").get_data(as_text=True)
    assert "bob&#39;s" not in html
    response = browser.client.post(
        f"/settings/tokens/{bobs_id}/revoke", data={"csrf_token": browser.csrf("/settings/tokens")}
    )
    assert response.status_code == 404
    assert lane_with(browser.client, bobs_plain).status_code == 200
    response = browser.client.post(
        "/settings/tokens/99999999999999999999/revoke", data={"csrf_token": browser.csrf("/settings/tokens")}
    )
    assert response.status_code == 404
