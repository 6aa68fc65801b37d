"""Body limits on every route, spoken over raw sockets to a real gunicorn server (issue 8, items 1 and 4).

A 300 MB form post is refused before it is read, chunked bodies too; a body that ends before its
Content-Length, malformed chunked framing, and a body that stalls or trickles past the deadline
all get a 4xx, never a 500 and never a thread held for long.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import WebProcess, worker_env

BODY_SECONDS = 2


@pytest.fixture(scope="module")
def web(settings, migrated, tmp_path_factory):
    """One server for the module: these requests need no users, and starting gunicorn is slow."""
    process = WebProcess(worker_env(settings, LANES_BODY_SECONDS=str(BODY_SECONDS)),
                         tmp_path_factory.mktemp("web") / "web.log")
    yield process
    process.stop()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=20)


def head(path: str, url: str, headers: dict) -> bytes:
    host = url.removeprefix("http://")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1])


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("path", ["/auth/login", "/console/requests", "/auth/logout", "/api/v1/tokens"])
def test_a_300_mb_post_is_refused_before_it_is_read(web, path):
    sock = connect(web.url)
    started = time.monotonic()
    headers = {**(JSON if path.startswith("/api/") else FORM), "Content-Length": str(300 * 1024 * 1024)}
    sock.sendall(head(path, web.url, headers) + b"username=" + b"a" * 1000)
    assert status_of(sock) == 413
    assert time.monotonic() - started < BODY_SECONDS  # answered at once, not after reading or waiting


@pytest.mark.parametrize("path", ["/auth/login", "/api/v1/tokens"])
def test_a_chunked_body_over_the_limit_is_413_not_cut_short(web, path):
    sock = connect(web.url)
    sock.sendall(head(path, web.url, {**(JSON if path.startswith("/api/") else FORM), "Transfer-Encoding": "chunked"}))
    chunk = b"a" * 16384
    try:
        for _ in range(8):  # 128 KiB, twice LANES_MAX_BODY
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server may answer and close before we finish sending
    assert status_of(sock) == 413


@pytest.mark.parametrize("path,headers", [("/auth/login", FORM), ("/api/v1/tokens", JSON)])
def test_a_body_shorter_than_its_content_length_is_400(web, path, headers):
    sock = connect(web.url)
    body = b'{"username": "alice", "pass' if headers is JSON else b"username=alice&password=corr"
    sock.sendall(head(path, web.url, {**headers, "Content-Length": str(len(body) + 50)}) + body)
    sock.shutdown(socket.SHUT_WR)  # the client is done: the body ends early
    assert status_of(sock) == 400


@pytest.mark.parametrize("framing", [b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabcdefgh\r\n0\r\n\r\n", b"3\r\nabc"])
def test_malformed_chunked_framing_is_400(web, framing):
    sock = connect(web.url)
    sock.sendall(head("/api/v1/tokens", web.url, {**JSON, "Transfer-Encoding": "chunked"}) + framing)
    if framing.endswith(b"abc"):
        sock.shutdown(socket.SHUT_WR)  # truncated inside the chunked stream
    assert status_of(sock) == 400


@pytest.mark.parametrize("path,headers", [("/auth/login", FORM), ("/api/v1/tokens", JSON)])
def test_a_stalled_body_gets_408_at_the_deadline(web, path, headers):
    sock = connect(web.url)
    started = time.monotonic()
    sock.sendall(head(path, web.url, {**headers, "Content-Length": "1000"}) + b"{")
    assert status_of(sock) == 408
    assert BODY_SECONDS - 0.5 < time.monotonic() - started < BODY_SECONDS + 3


def test_a_trickled_body_gets_408_at_the_deadline_not_later(web):
    """One byte every 0.3 s keeps each read alive; the deadline is for the whole body."""
    sock = connect(web.url)
    started = time.monotonic()
    sock.sendall(head("/api/v1/tokens", web.url, {**JSON, "Content-Length": "1000"}))
    try:
        while time.monotonic() - started < BODY_SECONDS + 4:
            sock.sendall(b" ")
            time.sleep(0.3)
            sock.setblocking(False)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # the server answered
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
    except OSError:
        pass
    assert status_of(sock) == 408
    assert time.monotonic() - started < BODY_SECONDS + 3
