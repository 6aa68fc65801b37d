"""Reading request bodies safely, for every route: a deadline, and truncation or bad framing as a 4xx.

gunicorn hands the app a blocking socket: a client that announces a ``Content-Length`` and then
stalls (or trickles a byte now and then) would hold a thread for as long as it likes. Here each
body must arrive within ``LANES_BODY_SECONDS`` of the request's start: a watchdog thread shuts
the reading side of a socket whose deadline passed, which wakes the blocked read, and the reader
answers 408. A body that ends before its ``Content-Length`` is a 400, and so is malformed chunked
framing (gunicorn raises its own parse errors from inside ``read``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time

from flask import Flask
from werkzeug.exceptions import BadRequest, ClientDisconnected, RequestEntityTooLarge, RequestTimeout

log = logging.getLogger(__name__)


# The watchdog wakes at most this often under load, and deals with every deadline due by then at
# once (not one wake-up per request): a deadline fires up to this much late.
BATCH_SECONDS = 0.25


class Watchdog:
    """Shuts the read side of sockets whose body deadline passed; one thread per process."""

    def __init__(self):
        self.lock = threading.Condition()
        self.heap: list[tuple[float, int, Deadline]] = []
        self.counter = itertools.count()
        self.thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, seconds: float) -> Deadline:
        deadline = Deadline(sock, time.monotonic() + seconds)
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="lanes-body-deadline", daemon=True)
                self.thread.start()
            heapq.heappush(self.heap, (deadline.at, next(self.counter), deadline))
            if self.heap[0][2] is deadline:  # the earliest now: the thread may sleep past it
                self.lock.notify()
        return deadline

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self.heap:
                    self.lock.wait()
                left = self.heap[0][0] - time.monotonic()
                if left > 0:
                    self.lock.wait(max(left, BATCH_SECONDS))
                    continue
                now, due = time.monotonic(), []
                while self.heap and self.heap[0][0] <= now:
                    due.append(heapq.heappop(self.heap)[2])
            for deadline in due:
                deadline.expire()


class Deadline:
    def __init__(self, sock: socket.socket, at: float):
        self.sock, self.at = sock, at
        self.lock = threading.Lock()
        self.done = False
        self.expired = False

    def disarm(self) -> None:
        with self.lock:
            self.done = True

    def expire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.expired = True
        try:
            self.sock.shutdown(socket.SHUT_RD)  # wakes a read blocked on this socket
        except OSError:
            pass  # already closed


class GuardedInput:
    """``wsgi.input`` with the deadline, the announced length and framing errors enforced."""

    def __init__(self, stream, expected: int | None, deadline: Deadline | None, limit: int):
        self.stream, self.expected, self.deadline, self.limit = stream, expected, deadline, limit
        self.received = 0

    def _checked(self, read, *args) -> bytes:
        try:
            data = read(*args)
        except (OSError, ValueError) as problem:
            self._timed_out()
            raise BadRequest("The request body could not be read.") from problem
        except Exception as problem:  # gunicorn's InvalidChunkSize, ChunkMissingTerminator, NoMoreData...
            if type(problem).__module__.startswith("gunicorn."):
                self._timed_out()
                raise BadRequest(f"The request body is malformed: {problem}.") from None
            raise
        self.received += len(data)
        if self.received > self.limit:
            # A chunked body has no Content-Length to refuse up front; Werkzeug would silently cut
            # a form at its limit, and half a form must not be acted on.
            raise RequestEntityTooLarge(f"The body may have at most {self.limit} bytes.")
        if self.expected is not None and self.received >= self.expected and self.deadline:
            self.deadline.disarm()
        if not data and (not args or args[0] != 0):  # end of the stream, not an empty read
            self._timed_out()
            if self.expected is not None and self.received < self.expected:
                raise ClientDisconnected("The request body ended before its Content-Length.")
        return data

    def _timed_out(self) -> None:
        if self.deadline is not None and self.deadline.expired:
            raise RequestTimeout("The request body did not arrive in time.")

    def read(self, *args) -> bytes:
        return self._checked(self.stream.read, *args)

    def readline(self, *args) -> bytes:
        return self._checked(self.stream.readline, *args)

    def readlines(self, *_args):
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")


class BodyGuard:
    """WSGI middleware around the whole app (Socket.IO's polling posts included)."""

    def __init__(self, wsgi_app, config):
        self.wsgi_app, self.config = wsgi_app, config
        self.watchdog = Watchdog()

    def __call__(self, environ, start_response):
        expected = _content_length(environ)
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not expected and not chunked:
            return self.wsgi_app(environ, start_response)
        sock = environ.get("gunicorn.socket")
        seconds = self.config["LANES_BODY_SECONDS"]
        deadline = self.watchdog.arm(sock, seconds) if isinstance(sock, socket.socket) else None
        environ["wsgi.input"] = GuardedInput(environ["wsgi.input"], expected, deadline, self.config["LANES_MAX_BODY"])
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            if deadline is not None:
                deadline.disarm()


def _content_length(environ) -> int | None:
    value = environ.get("CONTENT_LENGTH")
    return int(value) if value and value.isdigit() else None


def init_app(app: Flask) -> None:
    """Wrap the app (call last, outside Socket.IO's middleware too)."""
    app.wsgi_app = BodyGuard(app.wsgi_app, app.config)
