"""Sign-in, sign-out and sign-up pages, as a person in a browser uses them."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, csrf_token_from


def is_signed_in(browser) -> bool:
    response = browser.client.get("/console")
    return response.status_code == 200


def test_login_page_has_labelled_fields_and_csrf(browser):
    page = browser.client.get("/auth/login")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<label for="username">' in html and '<label for="password">' in html
    assert csrf_token_from(html)
    assert 'href="/auth/register"' not in html  # sign-up is off by default (LANES_ALLOW_SIGNUP)


def test_right_password_signs_in_and_lands_on_the_console(browser, make_user):
    make_user("alice")
    response = browser.login("alice")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console"
    console = browser.client.get("/console").get_data(as_text=True)
    assert '<strong id="current-user">alice</strong>' in console


def test_wrong_password_shows_the_form_again_with_401(browser, make_user):
    make_user("alice")
    response = browser.login("alice", "not the password")
    html = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "Wrong user name or password." in html
    assert 'value="alice"' in html  # the typed name is kept
    assert not is_signed_in(browser)


def test_a_user_name_no_account_can_have_is_just_a_wrong_sign_in(browser, make_user):
    make_user("alice")
    for name in ("ali\x00ce", "Alice Smith", "a" * 64):
        response = browser.login(name, PASSWORD)
        assert response.status_code == 401, name
        assert "Wrong user name or password." in response.get_data(as_text=True)
    assert not is_signed_in(browser)


def test_login_post_without_csrf_token_is_refused(browser, make_user):
    make_user("alice")
    response = browser.client.post("/auth/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert not is_signed_in(browser)


def test_ten_failures_throttle_the_account_even_for_the_right_password(browser, make_user):
    make_user("alice")
    for _ in range(10):
        assert browser.login("alice", "wrong password").status_code == 401
    response = browser.login("alice", PASSWORD)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    assert not is_signed_in(browser)


def test_anonymous_visitor_is_sent_to_login_and_back_afterwards(browser, make_user):
    make_user("alice")
    response = browser.client.get("/console/history")
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=%2Fconsole%2Fhistory"
    login_page = browser.client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'action="/auth/login?next=/console/history"' in login_page
    response = browser.client.post(
        "/auth/login?next=%2Fconsole%2Fhistory",
        data={"username": "alice", "password": PASSWORD, "csrf_token": csrf_token_from(login_page)},
    )
    assert response.headers["Location"] == "/console/history"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/", "/\\evil.example/", "/%5Cevil.example/", "/%09/evil.example/",
     "/%0A/evil.example", "%20//evil.example/", "/console%0D%0ASet-Cookie:x=1"],
    ids=["absolute", "scheme-relative", "backslash", "encoded-backslash", "tab", "newline", "leading-space",
         "header-injection"],
)
def test_login_ignores_a_next_pointing_elsewhere(browser, make_user, target):
    # Browsers read "/\\host" as "//host" and drop tabs and newlines from URLs: each of these leaves the site.
    make_user("alice")
    token = browser.csrf()
    response = browser.client.post(
        f"/auth/login?next={target}", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
    )
    assert response.headers["Location"] == "/console"


def test_every_page_has_a_logout_button_that_posts_with_csrf(browser, make_user):
    make_user("alice")
    browser.login("alice")
    html = browser.client.get("/console").get_data(as_text=True)
    form_start = html.index('id="logout-form"')
    form = html[html.rindex("<form", 0, form_start): html.index("</form>", form_start)]
    assert 'method="post"' in form and 'action="/auth/logout"' in form
    assert 'name="csrf_token"' in form


def test_logout_without_csrf_is_400_and_keeps_the_session(browser, make_user):
    make_user("alice")
    browser.login("alice")
    response = browser.client.post("/auth/logout")
    assert response.status_code == 400
    assert is_signed_in(browser)
    assert browser.client.get("/auth/logout").status_code == 405  # a link can't sign anyone out
    assert is_signed_in(browser)


def test_logout_with_csrf_signs_out(browser, make_user):
    make_user("alice")
    browser.login("alice")
    response = browser.logout()
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login"
    assert "You are signed out." in browser.client.get("/auth/login").get_data(as_text=True)
    assert not is_signed_in(browser)


@pytest.fixture
def signup_on(app):
    app.config["LANES_ALLOW_SIGNUP"] = True


def test_signup_is_off_by_default(app, browser):
    assert app.config["LANES_ALLOW_SIGNUP"] is False
    assert browser.client.get("/auth/register").status_code == 404


def test_register_creates_the_account_and_signs_in(browser, signup_on):
    page = browser.client.get("/auth/register")
    assert page.status_code == 200
    response = browser.client.post(
        "/auth/register",
        data={
            "username": "new.user-1", "password": PASSWORD, "confirm": PASSWORD,
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/console"
    assert '<strong id="current-user">new.user-1</strong>' in browser.client.get("/console").get_data(as_text=True)


def register(browser, username, password=PASSWORD, confirm=None):
    token = browser.csrf("/auth/register")
    return browser.client.post(
        "/auth/register",
        data={"username": username, "password": password, "confirm": confirm or password, "csrf_token": token},
    )


def test_register_enforces_the_user_name_rules(browser, make_user, signup_on):
    make_user("taken")
    rules = "User names are 3 to 32 characters of a-z, 0-9, &#39;_&#39;, &#39;.&#39; and &#39;-&#39;."
    for name in ["Alice", "has space", "ab", "x" * 33, "semi;colon"]:
        response = register(browser, name)
        assert response.status_code == 400, name
        assert rules in response.get_data(as_text=True), name
    taken = register(browser, "taken")
    assert taken.status_code == 400
    assert "is taken" in taken.get_data(as_text=True)
    assert not is_signed_in(browser)


def test_register_checks_the_passwords(browser, signup_on):
    differ = register(browser, "bob", PASSWORD, "something else")
    assert differ.status_code == 400
    assert "Passwords differ." in differ.get_data(as_text=True)
    short = register(browser, "bob", "short")
    assert short.status_code == 400
    assert "Passwords need at least 12 characters." in short.get_data(as_text=True)
    for common in ["password1234", "qwertyuiop12", "bobbobbobbob"]:  # long enough, but among the first guesses
        refused = register(browser, "bob", common)
        assert refused.status_code == 400, common
        assert "Choose a less common password." in refused.get_data(as_text=True), common
    assert not is_signed_in(browser)


def test_register_is_throttled_per_address(app, browser, signup_on):
    app.config["LANES_SIGNUP_RATE"] = "3/hour"
    for index in range(3):
        assert register(browser, f"taken{index}", "short").status_code == 400  # refused, but counted
    throttled = register(browser, "newname", PASSWORD)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert "Too many sign-ups" in throttled.get_data(as_text=True)
    assert not is_signed_in(browser)


def test_register_is_404_when_signup_is_off(app, browser):
    app.config["LANES_ALLOW_SIGNUP"] = False
    assert browser.client.get("/auth/register").status_code == 404
    token = browser.csrf("/auth/login")
    assert browser.client.post("/auth/register", data={"username": "bob", "csrf_token": token}).status_code == 404
    assert 'href="/auth/register"' not in browser.client.get("/auth/login").get_data(as_text=True)


def test_admin_link_only_for_admins(browser, make_user):
    make_user("alice")
    make_user("root", admin=True)
    browser.login("alice")
    assert 'href="/admin"' not in browser.client.get("/console").get_data(as_text=True)
    browser.logout()
    browser.login("root")
    assert 'href="/admin"' in browser.client.get("/console").get_data(as_text=True)
