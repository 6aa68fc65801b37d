"""Headers, hosts and metrics on a real gunicorn server (issue 8, items 6 and 7).

Every response carries a Content-Security-Policy without inline script and with
``frame-ancestors 'none'``, ``X-Content-Type-Options`` and ``Referrer-Policy``; pages have no inline
script or style for it to refuse. HSTS comes with ``LANES_SECURE_COOKIES``; a forged Host is refused
when ``LANES_TRUSTED_HOSTS`` is set. ``/metrics`` wants ``LANES_METRICS_TOKEN`` when set and
collapses unknown methods into one label value.
"""

from __future__ import annotations

import re
import socket

import requests

from tests.conftest import PASSWORD, csrf_token_from


def directives(policy: str) -> dict[str, str]:
    return {part.split()[0]: part.strip() for part in policy.split(";") if part.strip()}


def signed_in(url: str, username: str) -> requests.Session:
    browser = requests.Session()
    token = csrf_token_from(browser.get(f"{url}/auth/login", timeout=10).text)
    assert browser.post(f"{url}/auth/login", data={"username": username, "password": PASSWORD, "csrf_token": token},
                        timeout=10).status_code == 200
    return browser


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
INLINE_STYLE = re.compile(r"<[^>]+\sstyle\s*=", re.I)


def test_every_response_has_the_headers_and_no_page_needs_inline_script(start_web, make_user, make_token):
    make_user("root", admin=True)
    token = make_token(make_user("alice"))
    web = start_web()
    browser = signed_in(web.url, "root")
    pages = ["/console", "/console/history", "/settings/tokens", "/admin", "/admin/events", "/admin/users"]
    responses = [browser.get(f"{web.url}{path}", timeout=10) for path in pages]
    responses += [
        requests.get(f"{web.url}/auth/login", timeout=10),
        requests.get(f"{web.url}/api/v1/lane", headers={"Authorization": f"Bearer {token}"}, timeout=10),
        requests.get(f"{web.url}/api/v1/nowhere", timeout=10),
        requests.get(f"{web.url}/healthz", timeout=10),
    ]
    for response in responses:
        where = response.url
        policy = directives(response.headers["Content-Security-Policy"])
        assert policy["script-src"] == "script-src 'self'", where
        assert policy["frame-ancestors"] == "frame-ancestors 'none'", where
        assert policy["object-src"] == "object-src 'none'", where
        assert response.headers["X-Content-Type-Options"] == "nosniff", where
        assert response.headers["Referrer-Policy"] == "same-origin", where
        assert "Strict-Transport-Security" not in response.headers, where  # not without LANES_SECURE_COOKIES
        if response.headers["Content-Type"].startswith("text/html"):
            assert response.status_code in (200, 404), where
            assert not INLINE_SCRIPT.search(response.text), where
            assert not INLINE_HANDLER.search(response.text), where
            assert not INLINE_STYLE.search(response.text), where
    assert [r.status_code for r in responses[:len(pages)]] == [200] * len(pages)


def test_hsts_behind_https_and_a_forged_host_is_refused(start_web):
    web = start_web(LANES_SECURE_COOKIES="1", LANES_TRUSTED_HOSTS="127.0.0.1, lanes.example")
    response = requests.get(f"{web.url}/auth/login", timeout=10)
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    forged = requests.get(f"{web.url}/console", headers={"Host": "evil.example"}, allow_redirects=False, timeout=10)
    assert forged.status_code == 400
    assert "evil.example" not in forged.headers.get("Location", "")
    trusted = requests.get(f"{web.url}/console", headers={"Host": "lanes.example"}, allow_redirects=False, timeout=10)
    assert trusted.status_code == 302 and trusted.headers["Location"].startswith("/auth/login")


def test_metrics_need_the_token_and_unknown_methods_are_one_label(start_web):
    web = start_web(LANES_METRICS_TOKEN="scrape-secret-1")
    assert requests.get(f"{web.url}/metrics", timeout=10).status_code == 401
    wrong = requests.get(f"{web.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    host, port = web.url.removeprefix("http://").split(":")
    for method in ("FOOBAR", "XYZZY", "PROPFIND"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"{method} /console HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            assert sock.recv(100).split(b" ")[1] == b"405"
    scraped = requests.get(f"{web.url}/metrics", headers={"Authorization": "Bearer scrape-secret-1"}, timeout=10)
    assert scraped.status_code == 200
    assert 'method="OTHER"' in scraped.text
    for method in ("FOOBAR", "XYZZY", "PROPFIND"):
        assert f'method="{method}"' not in scraped.text
