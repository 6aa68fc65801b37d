"""One user attacks a real gunicorn server; another user must not notice (issue 8, item 1).

The attacker holds 200 long-polls at once, opens 50 requests whose bodies never arrive, and
sends 120 sign-ins with wrong credentials at once (real Argon2 cost: 64 MiB each). Meanwhile the
other user's ``GET /api/v1/lane`` must stay under 1 s at p99 with no 5xx, and the web process
under 600 MB. Each attack also gets the answer it should: 429 beyond the long-poll cap, 408 for
a body that stalls, 401/429 (or 503 with Retry-After) for the sign-ins — never a 500.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.conftest import wait_until

LONG_POLLS, STALLED_BODIES, FAILED_SIGN_INS = 200, 50, 120
BODY_SECONDS = 5


def worker_pid(master_pid: int) -> int:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def stalled_body(url: str, token: str) -> socket.socket:
    """A POST that announces 1,000 bytes of body, sends 9, and then sends nothing more."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        (f"POST /api/v1/requests HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
         "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"type\":").encode()
    )
    return sock


def status_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def test_one_users_attack_leaves_another_user_fast(start_web, make_user, make_token):
    web = start_web(LANES_WEB_THREADS="500", LANES_BODY_SECONDS=str(BODY_SECONDS))
    attacker, victim = make_token(make_user("mallory")), make_token(make_user("victor"))
    attacker_headers = {"Authorization": f"Bearer {attacker}"}
    victim_headers = {"Authorization": f"Bearer {victim}"}
    # No worker runs: the attacker's request stays queued, so every long-poll waits its full time.
    queued = requests.post(f"{web.url}/api/v1/requests", json={"type": "echo", "payload": {"message": "x"}},
                           headers=attacker_headers, timeout=10)
    assert queued.status_code == 202
    poll_url = f"{web.url}/api/v1/requests/{queued.json()['id']}?wait=10"
    lane_url = f"{web.url}/api/v1/lane"
    assert requests.get(lane_url, headers=victim_headers, timeout=10).status_code == 200  # warm

    pid = worker_pid(web.process.pid)
    stop = threading.Event()
    peak_mb = [rss_mb(pid)]
    victim_calls: list[tuple[int, float]] = []

    def watch_memory():
        while not stop.is_set():
            peak_mb.append(rss_mb(pid))
            stop.wait(0.2)

    def victim_loop():
        session = requests.Session()
        while not stop.is_set():
            started = time.monotonic()
            try:
                status = session.get(lane_url, headers=victim_headers, timeout=10).status_code
            except requests.RequestException:
                status = 0
            victim_calls.append((status, time.monotonic() - started))
            stop.wait(0.05)

    def long_poll(_):
        return requests.get(poll_url, headers=attacker_headers, timeout=40).status_code

    def failed_sign_in(index):
        response = requests.post(f"{web.url}/api/v1/tokens", timeout=60,
                                 json={"username": f"ghost{index}", "password": "not the password"})
        return response.status_code, response.headers.get("Retry-After")

    watchers = [threading.Thread(target=watch_memory), threading.Thread(target=victim_loop)]
    for thread in watchers:
        thread.start()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=LONG_POLLS + FAILED_SIGN_INS) as pool:
        sockets = [stalled_body(web.url, attacker) for _ in range(STALLED_BODIES)]
        poll_futures = [pool.submit(long_poll, index) for index in range(LONG_POLLS)]
        sign_in_futures = [pool.submit(failed_sign_in, index) for index in range(FAILED_SIGN_INS)]
        poll_statuses = [future.result() for future in poll_futures]
        sign_in_results = [future.result() for future in sign_in_futures]
        stalled_statuses = [status_line(sock) for sock in sockets]
    attack_seconds = time.monotonic() - started
    time.sleep(0.5)
    stop.set()
    for thread in watchers:
        thread.join(timeout=15)

    # The attacker got clear answers, never a 500.
    assert poll_statuses.count(200) <= 10 and poll_statuses.count(429) >= LONG_POLLS - 10, poll_statuses
    assert set(poll_statuses) <= {200, 429}
    assert all(" 408 " in line for line in stalled_statuses), stalled_statuses
    sign_in_statuses = [status for status, _ in sign_in_results]
    assert set(sign_in_statuses) <= {401, 429, 503}, sign_in_statuses
    assert sign_in_statuses.count(401) <= 100  # the per-address limit, never overrun
    assert all(retry for status, retry in sign_in_results if status in (429, 503))

    # The other user did not notice.
    statuses = [status for status, _ in victim_calls]
    latencies = sorted(seconds for _, seconds in victim_calls)
    assert len(victim_calls) >= 20, f"only {len(victim_calls)} victim calls in {attack_seconds:.1f}s"
    assert set(statuses) == {200}, statuses
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    assert p99 < 1.0, f"victim p99 {p99:.3f}s over {len(latencies)} calls"
    assert max(peak_mb) < 600, f"web process peaked at {max(peak_mb):.0f} MB"
    print(f"attack {attack_seconds:.1f}s; victim {len(latencies)} calls, p50 {latencies[len(latencies) // 2]:.3f}s "
          f"p99 {p99:.3f}s; peak RSS {max(peak_mb):.0f} MB; sign-ins {sorted(set(sign_in_statuses))} "
          f"401x{sign_in_statuses.count(401)} 429x{sign_in_statuses.count(429)} 503x{sign_in_statuses.count(503)}")

    # And afterwards everything answers as before.
    wait_until(lambda: requests.get(lane_url, headers=victim_headers, timeout=5).status_code == 200, timeout=10)
