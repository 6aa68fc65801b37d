"""Sessions that really end, on a real gunicorn server (issue 8, item 2).

A cookie saved before sign-out, a password change or an admin's "sign out everywhere" no longer
opens a page afterwards, and the Socket.IO connections of an ended session or a revoked token
are closed by the server within a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys

import requests
import socketio

from tests.conftest import FAST_ARGON2, PASSWORD, ROOT, csrf_token_from, wait_until, worker_env

NEW_PASSWORD = "violet tugboat orchard"


def sign_in(url: str, username: str, password: str = PASSWORD) -> requests.Session:
    browser = requests.Session()
    token = csrf_token_from(browser.get(f"{url}/auth/login", timeout=10).text)
    response = browser.post(f"{url}/auth/login", data={"username": username, "password": password, "csrf_token": token},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    return browser


def opens_console(url: str, cookie: str) -> bool:
    """Whether a browser holding only this session cookie gets the console (not sent to sign in)."""
    response = requests.get(f"{url}/console", cookies={"session": cookie}, allow_redirects=False, timeout=10)
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


def sign_out(url: str, browser: requests.Session) -> None:
    token = csrf_token_from(browser.get(f"{url}/console", timeout=10).text)
    assert browser.post(f"{url}/auth/logout", data={"csrf_token": token}, allow_redirects=False,
                        timeout=10).status_code == 302


def live_socket(url: str, *, cookie: str | None = None, token: str | None = None) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    client.connect(url, headers={"Cookie": f"session={cookie}"} if cookie else {},
                   auth={"token": token} if token else None, transports=["websocket"], wait_timeout=10)
    assert client.connected
    return client


def test_a_cookie_saved_before_sign_out_is_dead_after_it_and_its_socket_closes(start_web, make_user):
    make_user("alice")
    web = start_web()
    browser = sign_in(web.url, "alice")
    saved = browser.cookies["session"]
    other_device = sign_in(web.url, "alice")
    assert opens_console(web.url, saved)
    client = live_socket(web.url, cookie=saved)
    try:
        sign_out(web.url, browser)
        assert not opens_console(web.url, saved)  # replaying the old cookie does not bring the session back
        wait_until(lambda: not client.connected, timeout=6, message="the ended session's socket to close")
        assert opens_console(web.url, other_device.cookies["session"])  # signing out ends this session only
    finally:
        client.disconnect()


def test_a_password_change_ends_every_session_of_that_user(app, settings, start_web, make_user):
    make_user("alice")
    make_user("bob")
    web = start_web()
    laptop, phone = sign_in(web.url, "alice"), sign_in(web.url, "alice")
    bystander = sign_in(web.url, "bob")
    client = live_socket(web.url, cookie=phone.cookies["session"])
    try:
        env = worker_env(settings, **FAST_ARGON2)
        env.pop("FLASK_APP", None)
        flask = os.path.join(os.path.dirname(sys.executable), "flask")
        changed = subprocess.run(
            [flask, "--app", "wsgi", "user", "set-password", "alice", "--password-stdin"],
            input=NEW_PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
        )
        assert changed.returncode == 0, changed.stderr
        assert "ended 2 browser session(s)" in changed.stdout
        assert not opens_console(web.url, laptop.cookies["session"])
        assert not opens_console(web.url, phone.cookies["session"])
        assert opens_console(web.url, bystander.cookies["session"])
        wait_until(lambda: not client.connected, timeout=6, message="the socket of a changed password to close")
        old = requests.post(f"{web.url}/api/v1/tokens", json={"username": "alice", "password": PASSWORD}, timeout=10)
        assert old.status_code == 401
        assert sign_in(web.url, "alice", NEW_PASSWORD).get(f"{web.url}/console", timeout=10).status_code == 200
    finally:
        client.disconnect()


def test_set_password_refuses_a_common_password_and_an_unknown_user(settings, make_user):
    make_user("alice")
    env = worker_env(settings, **FAST_ARGON2)
    env.pop("FLASK_APP", None)
    flask = os.path.join(os.path.dirname(sys.executable), "flask")

    def set_password(name, password):
        return subprocess.run([flask, "--app", "wsgi", "user", "set-password", name, "--password-stdin"],
                              input=password + "\n", capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)

    common = set_password("alice", "password1234")
    assert common.returncode != 0 and "Choose a less common password." in common.stderr
    unknown = set_password("nobody", NEW_PASSWORD)
    assert unknown.returncode != 0 and "No user named 'nobody'." in unknown.stderr


def test_an_admin_signs_a_user_out_everywhere(start_web, make_user):
    alice = make_user("alice")
    make_user("root", admin=True)
    web = start_web()
    victim = sign_in(web.url, "alice")
    client = live_socket(web.url, cookie=victim.cookies["session"])
    try:
        admin = sign_in(web.url, "root")
        page = admin.get(f"{web.url}/admin/users", timeout=10)
        assert page.status_code == 200 and 'data-username="alice"' in page.text
        response = admin.post(f"{web.url}/admin/users/{alice}/sign-out",
                              data={"csrf_token": csrf_token_from(page.text)}, timeout=10)
        assert response.status_code == 200 and "Signed alice out everywhere (1 session(s) ended)." in response.text
        assert not opens_console(web.url, victim.cookies["session"])
        wait_until(lambda: not client.connected, timeout=6, message="the signed-out user's socket to close")
        assert opens_console(web.url, admin.cookies["session"])
        forged = admin.post(f"{web.url}/admin/users/{alice}/sign-out", data={}, timeout=10)
        assert forged.status_code == 400  # no CSRF token, no action
    finally:
        client.disconnect()


def test_a_revoked_tokens_socket_is_closed(start_web, make_user, make_token):
    user = make_user("alice")
    token, other = make_token(user, "script"), make_token(user, "other script")
    web = start_web()
    revoked, kept = live_socket(web.url, token=token), live_socket(web.url, token=other)
    try:
        response = requests.delete(f"{web.url}/api/v1/tokens/current", headers={"Authorization": f"Bearer {token}"},
                                   timeout=10)
        assert response.status_code == 204
        wait_until(lambda: not revoked.connected, timeout=6, message="the revoked token's socket to close")
        assert kept.connected
    finally:
        revoked.disconnect()
        kept.disconnect()
