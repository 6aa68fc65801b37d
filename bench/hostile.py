"""``python -m bench.hostile``: one user attacks Lanes while another measures what they notice.

The attacker holds 200 long-polls at once, opens 50 requests whose bodies never arrive, and sends
120 sign-ins with wrong credentials at once (real Argon2 cost). Meanwhile the other user calls
``GET /api/v1/lane`` in a loop. Target (issue 8): their p99 under 1 s, no 5xx, and the web process
under 600 MB. Uses ``DATABASE_URL`` / ``REDIS_URL`` like ``make bench`` (scratch ones when unset);
exits 0 whenever it ran, whether or not the target was met.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psutil
import requests

TARGET_P99_SECONDS, TARGET_RSS_MB = 1.0, 600


@dataclass
class Attack:
    long_polls: int = 200
    stalled_bodies: int = 50
    failed_sign_ins: int = 120
    poll_seconds: int = 10
    baseline_seconds: float = 3.0


@dataclass
class Outcome:
    seconds: float = 0.0
    poll_statuses: list[int] = field(default_factory=list)
    stalled_statuses: list[int] = field(default_factory=list)
    sign_in_statuses: list[tuple[int, str | None]] = field(default_factory=list)  # (status, Retry-After)
    victim_calls: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds)
    baseline_calls: list[tuple[int, float]] = field(default_factory=list)  # the victim alone, just before
    peak_rss_mb: float = 0.0
    web_cpu_seconds: float = 0.0  # user + system CPU of the web process during the attack

    @property
    def victim_latencies(self) -> list[float]:
        return sorted(seconds for _, seconds in self.victim_calls)

    def victim_percentile(self, share: float) -> float:
        return _percentile(self.victim_latencies, share)

    def baseline_percentile(self, share: float) -> float:
        return _percentile(sorted(seconds for _, seconds in self.baseline_calls), share)

    @property
    def victim_5xx(self) -> int:
        return sum(1 for status, _ in self.victim_calls if status >= 500 or status == 0)

    def met(self) -> bool:
        return (self.victim_5xx == 0 and self.victim_percentile(0.99) < TARGET_P99_SECONDS
                and self.peak_rss_mb < TARGET_RSS_MB)


def _percentile(latencies: list[float], share: float) -> float:
    return latencies[min(len(latencies) - 1, int(len(latencies) * share))] if latencies else float("nan")


def stalled_body(url: str, token: str) -> socket.socket:
    """A POST that announces 1,000 bytes of body, sends 9, and then nothing more."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(
        (f"POST /api/v1/requests HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
         "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"type\":").encode()
    )
    return sock


def response_status(sock: socket.socket) -> int:
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def run(url: str, attacker_token: str, victim_token: str, web_pid: int, attack: Attack | None = None) -> Outcome:
    """Run the attack against the server at ``url`` (gunicorn worker ``web_pid``) and measure the victim."""
    attack = attack or Attack()
    attacker = {"Authorization": f"Bearer {attacker_token}"}
    victim = {"Authorization": f"Bearer {victim_token}"}
    queued = requests.post(f"{url}/api/v1/requests", json={"type": "echo", "payload": {"message": "x",
                           "delay_ms": 60_000}}, headers=attacker, timeout=10)
    queued.raise_for_status()
    poll_url = f"{url}/api/v1/requests/{queued.json()['id']}?wait={attack.poll_seconds}"
    lane_url = f"{url}/api/v1/lane"
    requests.get(lane_url, headers=victim, timeout=10).raise_for_status()  # warm

    outcome, stop = Outcome(), threading.Event()
    process = psutil.Process(web_pid)
    outcome.peak_rss_mb = process.memory_info().rss / 2**20

    def watch_memory():
        while not stop.is_set():
            outcome.peak_rss_mb = max(outcome.peak_rss_mb, process.memory_info().rss / 2**20)
            stop.wait(0.2)

    def victim_loop(calls: list, until: threading.Event):
        session = requests.Session()
        while not until.is_set():
            started = time.monotonic()
            try:
                status = session.get(lane_url, headers=victim, timeout=10).status_code
            except requests.RequestException:
                status = 0
            calls.append((status, time.monotonic() - started))
            until.wait(0.05)

    # How fast the victim is on this machine right now, before any attack (a shared machine's
    # load shows here, and so a reader can tell the attack's effect from the machine's).
    baseline_over = threading.Event()
    threading.Timer(attack.baseline_seconds, baseline_over.set).start()
    victim_loop(outcome.baseline_calls, baseline_over)

    def long_poll(_):
        return requests.get(poll_url, headers=attacker, timeout=attack.poll_seconds + 30).status_code

    def failed_sign_in(index):
        response = requests.post(f"{url}/api/v1/tokens", timeout=120,
                                 json={"username": f"ghost{index}", "password": "not the password"})
        return response.status_code, response.headers.get("Retry-After")

    cpu_before = sum(process.cpu_times()[:2])
    watchers = [threading.Thread(target=watch_memory),
                threading.Thread(target=victim_loop, args=(outcome.victim_calls, stop))]
    for thread in watchers:
        thread.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=max(1, attack.long_polls + attack.failed_sign_ins)) as pool:
            sockets = [stalled_body(url, attacker_token) for _ in range(attack.stalled_bodies)]
            polls = [pool.submit(long_poll, index) for index in range(attack.long_polls)]
            sign_ins = [pool.submit(failed_sign_in, index) for index in range(attack.failed_sign_ins)]
            outcome.poll_statuses = [future.result() for future in polls]
            outcome.sign_in_statuses = [future.result() for future in sign_ins]
            outcome.stalled_statuses = [response_status(sock) for sock in sockets]
        outcome.seconds = time.monotonic() - started
        outcome.web_cpu_seconds = sum(process.cpu_times()[:2]) - cpu_before
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in watchers:
            thread.join(timeout=15)
        requests.delete(f"{url}/api/v1/requests/{queued.json()['id']}", headers=attacker, timeout=10)
    return outcome


def report(outcome: Outcome) -> str:
    def counts(statuses):
        return ", ".join(f"{status}×{statuses.count(status)}" for status in sorted(set(statuses)))

    latencies = outcome.victim_latencies
    lines = [
        f"attack lasted {outcome.seconds:.1f} s; the web process used {outcome.web_cpu_seconds:.1f} s of CPU",
        f"attacker long-polls:       {counts(outcome.poll_statuses)}",
        f"attacker stalled bodies:   {counts(outcome.stalled_statuses)}",
        f"attacker failed sign-ins:  {counts([status for status, _ in outcome.sign_in_statuses])}",
        f"victim alone, just before: {len(outcome.baseline_calls)} calls, p50 "
        f"{outcome.baseline_percentile(0.5) * 1000:.0f} ms, p99 {outcome.baseline_percentile(0.99) * 1000:.0f} ms "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)",
        f"victim GET /api/v1/lane:   {len(latencies)} calls, p50 {outcome.victim_percentile(0.5) * 1000:.0f} ms, "
        f"p99 {outcome.victim_percentile(0.99) * 1000:.0f} ms, 5xx or failed: {outcome.victim_5xx} "
        f"(target p99 < {TARGET_P99_SECONDS * 1000:.0f} ms, none)",
        f"web process peak memory:   {outcome.peak_rss_mb:.0f} MB (target < {TARGET_RSS_MB} MB)",
        f"target {'met' if outcome.met() else 'NOT met'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--long-polls", type=int, default=200)
    parser.add_argument("--stalled-bodies", type=int, default=50)
    parser.add_argument("--failed-sign-ins", type=int, default=120)
    arguments = parser.parse_args(argv)
    from bench.stack import Stack, StackError

    stack = Stack()
    try:
        stack.start(worker=False)  # nothing runs the attacker's request: its long-polls wait their full time
        web = stack.start_web()
        attacker, victim = stack.new_user("attacker"), stack.new_user("victim")
        outcome = run(web.url, attacker.token, victim.token, web.worker_process().pid,
                      Attack(arguments.long_polls, arguments.stalled_bodies, arguments.failed_sign_ins))
        print(report(outcome))
        return 0
    except StackError as problem:
        print(f"bench.hostile: could not start Lanes: {problem}", file=sys.stderr)
        return 1
    finally:
        for problem in stack.close():
            print(f"bench.hostile: cleanup: {problem}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
