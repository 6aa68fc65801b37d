"""``python -m bench.web_costs [N]``: what the web process's CPU per submit is made of, without a profiler.

Three figures, each the CPU time of N calls divided by N (no profiler attached, so they add up the
way the real process spends them):

- **HTTP server floor**: gunicorn with the launcher's worker class, threads and access log, serving
  a WSGI app that only answers (``bench.bare_wsgi``), hit over keep-alive from 16 client threads;
  the gunicorn worker's CPU.
- **Flask floor**: Lanes' app called as WSGI in this process for an unknown ``/api/v1`` path (every
  middleware, hook and error handler, no view, no database).
- **Flask submit**: the same for ``POST /api/v1/requests`` with a bearer token: sign-in check, rate
  limit, lock, insert, commit, the Redis transaction and the answer.

What the bench's throughput run measures beyond these is gunicorn's share of a submit's larger
request and answer, and relaying the events of every request to the Socket.IO clients and the
long-poll watcher. Uses ``DATABASE_URL`` / ``REDIS_URL`` like ``make bench``.
"""

from __future__ import annotations

import argparse
import io
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

CLIENT_THREADS = 16


def hammer(url: str, count: int) -> None:
    """``count`` GETs of ``url`` from ``CLIENT_THREADS`` keep-alive clients."""
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(count):
        work.put(index)

    def client() -> None:
        with requests.Session() as session:
            session.trust_env = False
            while True:
                try:
                    work.get_nowait()
                except queue.Empty:
                    return
                session.get(url, timeout=30).raise_for_status()

    threads = [threading.Thread(target=client) for _ in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def http_server_floor(count: int) -> float:
    """CPU ms per request of gunicorn (the launcher's flags) serving an app that only answers."""
    from bench.stack import HOST, free_loopback_port
    from webapp.launcher import Launcher

    port = free_loopback_port()
    command = Launcher(HOST, port).web_command(access_log="/dev/null")
    command[-1] = "bench.bare_wsgi:app"
    server = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://{HOST}:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("gunicorn did not answer within 30 s") from None
                time.sleep(0.1)
        worker = psutil.Process(server.pid).children()[0]
        hammer(url, min(count, 200))  # threads started, connections open
        before = sum(worker.cpu_times()[:2])
        hammer(url, count)
        return 1000 * (sum(worker.cpu_times()[:2]) - before) / count
    finally:
        server.terminate()
        server.wait(30)


class InProcess:
    """Lanes' Flask app called as WSGI in this process (no HTTP server, no profiler)."""

    def __init__(self, stack, lanes: int):
        from webapp import create_app

        self.users = stack.new_users("costs", lanes)
        self.app = create_app({"INSTANCE_DIR": stack.instance_dir, "REDIS_URL": stack.redis_url,
                               "LANES_SUBMIT_RATE": "1000000/minute"})
        self.statuses: list[str] = []

    def environ(self, token: str, method: str, path: str, body: bytes = b"") -> dict:
        return {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "5000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:5000", "HTTP_AUTHORIZATION": f"Bearer {token}", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }

    def call(self, environ: dict) -> None:
        answer = self.app(environ, lambda status, _headers, _exc_info=None: self.statuses.append(status))
        try:
            b"".join(answer)
        finally:
            getattr(answer, "close", lambda: None)()

    def cpu_ms(self, count: int, method: str, path: str, body: bytes, expected: str) -> float:
        """CPU ms per call (this process), after a warm-up; every answer must have status ``expected``."""
        for index in range(20):
            self.call(self.environ(self.users[index % len(self.users)].token, method, path, body))
        self.statuses.clear()
        began = time.process_time()
        for index in range(count):
            self.call(self.environ(self.users[index % len(self.users)].token, method, path, body))
        spent = time.process_time() - began
        wrong = [status for status in self.statuses if not status.startswith(expected)]
        if wrong:
            raise SystemExit(f"{method} {path} answered {wrong[0]} (expected {expected})")
        return 1000 * spent / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web_costs", description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=1000, help="calls of each kind (default 1000)")
    args = parser.parse_args(argv)
    if not 10 <= args.count <= 20000:
        parser.error("count must be 10..20000")

    from bench.stack import Stack

    stack = Stack()
    try:
        stack.start(worker=False)  # submits stay queued: no lane worker takes CPU from this process
        app = InProcess(stack, lanes=10)
        body = json.dumps({"type": "echo", "payload": {"message": "bench"}}).encode()
        figures = [
            ("HTTP server floor (gunicorn, the launcher's flags; a bare WSGI app)", http_server_floor(args.count)),
            ("Flask floor (Lanes' app, an unknown /api/v1 path: 404)",
             app.cpu_ms(args.count, "GET", "/api/v1/no-such-thing", b"", "404")),
            ("Flask submit (POST /api/v1/requests, bearer token: 202)",
             app.cpu_ms(args.count, "POST", "/api/v1/requests", body, "202")),
        ]
    finally:
        for problem in stack.close():
            print(f"bench.web_costs: {problem}", file=sys.stderr)
    print(f"CPU per call, {args.count} calls each (no profiler):")
    for name, value in figures:
        print(f"  {name:72s} {value:6.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
