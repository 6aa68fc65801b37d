"""The two clients a script uses: the JSON API over a keep-alive session, and live events over Socket.IO."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import engineio
import requests
import socketio

TERMINAL_EVENTS = ("request.finished", "request.failed", "request.canceled")
CONNECT_TIMEOUT_SECONDS = 30


class SubmitRefused(RuntimeError):
    """``POST /api/v1/requests`` answered something other than 202."""


@dataclass
class Submitted:
    request_id: int
    began: float  # time.perf_counter() when the call started
    returned: float  # ... and when its answer had been read
    wall_returned: float  # time.time() at return, to compare with the row's timestamps

    @property
    def seconds(self) -> float:
        return self.returned - self.began

    @property
    def wall_began(self) -> float:
        return self.wall_returned - self.seconds


class ApiClient:
    """``/api/v1`` with a bearer token, over one keep-alive connection (a ``requests.Session``)."""

    def __init__(self, base_url: str, token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # never through a proxy from the environment
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def submit(self, type_name: str, payload: dict, token: str | None = None) -> Submitted:
        """Submit a request (as the user of ``token`` when given); ``SubmitRefused`` unless 202."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        began = time.perf_counter()
        response = self.session.post(
            f"{self.base_url}/api/v1/requests", json={"type": type_name, "payload": payload}, headers=headers,
            timeout=30,
        )
        body = response.json()
        returned, wall = time.perf_counter(), time.time()
        if response.status_code != 202:
            raise SubmitRefused(f"submit answered {response.status_code}: {body.get('error', body)}")
        return Submitted(body["id"], began, returned, wall)

    def wait(self, request_id: int, seconds: int) -> dict:
        """``GET /api/v1/requests/<id>?wait=<seconds>``: the request once it ended (or the time ran out)."""
        response = self.session.get(f"{self.base_url}/api/v1/requests/{request_id}", params={"wait": seconds},
                                    timeout=seconds + 30)
        body = response.json()
        if response.status_code != 200:
            raise RuntimeError(f"wait answered {response.status_code}: {body.get('error', body)}")
        return body

    def close(self) -> None:
        self.session.close()


class InlineEngineIOClient(engineio.Client):
    """python-engineio's client, calling the message handler in the thread that read the message.

    The stock client starts a new thread for every message it receives (so that a handler may wait
    for another message); this bench's handlers only note an arrival, so a thread per event would
    be the load generator's own cost, counted in every turnaround and in the machine's CPU.
    """

    def _trigger_event(self, event, *args, **kwargs):
        if event == "message":
            kwargs["run_async"] = False
        return super()._trigger_event(event, *args, **kwargs)


class EventClient(socketio.Client):
    """python-socketio's client on ``InlineEngineIOClient``: events are handled as they are read."""

    def _engineio_client_class(self):
        return InlineEngineIOClient


class LiveEvents:
    """A Socket.IO client (token auth, WebSocket transport) noting when each request's events arrive."""

    RECORDED = ("request.started", *TERMINAL_EVENTS)

    def __init__(self, base_url: str, token: str, record: bool = True):
        self.base_url = base_url
        self.token = token
        self.arrivals: dict[tuple[str, int], tuple[float, float, dict]] = {}
        self.counts: dict[str, int] = {}
        self.changed = threading.Condition()
        # Not handling SIGINT: clients are created in pool threads, and the bench cleans up itself.
        self.client = EventClient(reconnection=False, handle_sigint=False)
        if record:
            for name in self.RECORDED:
                self.client.on(name, self._recorder(name))

    def connect(self) -> LiveEvents:
        self.client.connect(
            self.base_url, auth={"token": self.token}, transports=["websocket"], wait_timeout=CONNECT_TIMEOUT_SECONDS
        )
        return self

    @property
    def connected(self) -> bool:
        return self.client.connected

    def _recorder(self, name: str):
        def record(data):
            arrived, wall = time.perf_counter(), time.time()
            if not isinstance(data, dict) or not isinstance(data.get("id"), int):
                return
            with self.changed:
                self.arrivals[(name, data["id"])] = (arrived, wall, data)
                self.counts[name] = self.counts.get(name, 0) + 1
                self.changed.notify_all()

        return record

    def arrival(self, name: str, request_id: int, timeout: float) -> tuple[float, float, dict] | None:
        """(perf_counter, time.time(), event body) of ``name`` for the request; None after ``timeout``."""
        with self.changed:
            self.changed.wait_for(lambda: (name, request_id) in self.arrivals, timeout)
            return self.arrivals.get((name, request_id))

    def end_of(self, request_id: int, timeout: float) -> tuple[str, float, float, dict] | None:
        """The request's terminal event (name, perf_counter, time.time(), body); None after ``timeout``."""
        def ended():
            return next(((name, *self.arrivals[(name, request_id)]) for name in TERMINAL_EVENTS
                         if (name, request_id) in self.arrivals), None)

        with self.changed:
            self.changed.wait_for(ended, timeout)
            return ended()

    def wait_for_count(self, name: str, count: int, timeout: float) -> int:
        """Wait until ``count`` events called ``name`` have arrived; how many did."""
        with self.changed:
            self.changed.wait_for(lambda: self.counts.get(name, 0) >= count, timeout)
            return self.counts.get(name, 0)

    def close(self) -> None:
        try:
            self.client.disconnect()
        except (socketio.exceptions.SocketIOError, OSError):
            pass  # already gone: the server stopped first
