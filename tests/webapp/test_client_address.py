"""The client address that rate limits use: the peer's, or what a trusted proxy reports (ProxyFix)."""

from __future__ import annotations

import pytest

from webapp import create_app


def failed_sign_ins_until_throttled(client, peer: str, forwarded: str | None) -> list[int]:
    """Statuses of four wrong-password attempts (other names each time: only the address limit counts)."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return [
        client.post("/api/v1/tokens", json={"username": f"nobody{n}", "password": "wrong password"},
                    headers=headers, environ_base={"REMOTE_ADDR": peer}).status_code
        for n in range(4)
    ]


@pytest.fixture
def behind_proxy(app, settings):
    """The app as a load balancer's backend: one trusted proxy, three failed sign-ins per address."""
    proxied = create_app({**settings, "LANES_TRUSTED_PROXIES": 1, "LANES_LOGIN_RATE_ADDRESS": "3/15minutes"})
    return proxied.test_client()


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_one_throttled(behind_proxy, make_user):
    make_user("alice")
    proxy = "127.0.0.10"
    assert failed_sign_ins_until_throttled(behind_proxy, proxy, "127.0.0.2") == [401, 401, 401, 429]
    # Another client behind the same proxy is not throttled for it, and signs in.
    assert failed_sign_ins_until_throttled(behind_proxy, proxy, "127.0.0.3")[0] == 401
    ok = behind_proxy.post("/api/v1/tokens", json={"username": "alice", "password": "correct horse battery"},
                           headers={"X-Forwarded-For": "127.0.0.4"}, environ_base={"REMOTE_ADDR": proxy})
    assert ok.status_code == 201, ok.get_json()


def test_a_client_cannot_escape_the_throttle_by_sending_its_own_forwarded_header(behind_proxy):
    proxy = "127.0.0.10"
    assert failed_sign_ins_until_throttled(behind_proxy, proxy, "127.0.0.2")[-1] == 429
    # The proxy appends the real peer to whatever the client sent; only that last entry is trusted.
    spoofed = behind_proxy.post("/api/v1/tokens", json={"username": "x", "password": "wrong password"},
                                headers={"X-Forwarded-For": "127.0.0.99, 127.0.0.2"},
                                environ_base={"REMOTE_ADDR": proxy})
    assert spoofed.status_code == 429 and spoofed.headers["Retry-After"]


def test_without_a_trusted_proxy_the_header_is_ignored(app, settings):
    direct = create_app({**settings, "LANES_LOGIN_RATE_ADDRESS": "3/15minutes"}).test_client()
    statuses = [
        direct.post("/api/v1/tokens", json={"username": f"nobody{n}", "password": "wrong password"},
                    headers={"X-Forwarded-For": f"127.0.0.{20 + n}"}, environ_base={"REMOTE_ADDR": "127.0.0.5"})
        .status_code
        for n in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
