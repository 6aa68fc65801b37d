"""Long-polls that wake when their request ends, instead of polling the database.

One pub/sub subscription per web process listens on the deployment's event channel (the one
``EventPublisher`` writes and Socket.IO reads) and wakes the threads waiting for a request when
its ``request.finished``, ``request.failed`` or ``request.canceled`` passes by. The database stays
the truth: a woken waiter re-reads the row, and a waiter re-reads it anyway every few seconds in
case pub/sub lost the message (it delivers at most once).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from webapp.lanes.events import events_in
from webapp.models import TERMINAL_STATUSES

log = logging.getLogger(__name__)

END_EVENTS = frozenset(f"request.{status}" for status in TERMINAL_STATUSES)  # events are named request.<status>
RETRY_SECONDS = 1.0


class EndWatcher:
    """Wakes waiters when a request's end event is published; starts listening on first use."""

    def __init__(self, connection: redis.Redis, channel: str):
        self.connection = connection
        self.channel = channel
        self.lock = threading.Lock()
        self.waiters: dict[int, set[threading.Event]] = {}
        self.subscribed = threading.Event()
        self.listener_pid: int | None = None  # a forked child does not inherit the listener thread

    @contextmanager
    def watch(self, request_id: int | None) -> Iterator[threading.Event]:
        """An event set when ``request_id`` ends; watch before reading the row, so no end is missed."""
        self._listen_in_this_process()
        ended = threading.Event()
        with self.lock:
            self.waiters.setdefault(request_id, set()).add(ended)
        try:
            yield ended
        finally:
            with self.lock:
                waiting = self.waiters.get(request_id)
                if waiting is not None:
                    waiting.discard(ended)
                    if not waiting:
                        del self.waiters[request_id]

    def _listen_in_this_process(self) -> None:
        with self.lock:
            if self.listener_pid == os.getpid():
                return
            self.listener_pid = os.getpid()
            self.waiters.clear()
            self.subscribed.clear()
        threading.Thread(target=self._listen, name="lanes-end-watcher", daemon=True).start()

    def _listen(self) -> None:
        while True:
            pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self.subscribed.set()
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    if message is not None:
                        self.dispatch(message["data"])
            except Exception as problem:  # noqa: BLE001 - the listener must outlive any one failure
                self.subscribed.clear()  # waiters re-read their rows more often meanwhile
                level = logging.WARNING if isinstance(problem, redis.exceptions.RedisError) else logging.ERROR
                log.log(level, "end watcher: lost the event channel; retrying in %s s", RETRY_SECONDS, exc_info=True)
                threading.Event().wait(RETRY_SECONDS)
            finally:
                pubsub.close()

    def dispatch(self, data: bytes) -> None:
        """Wake whoever waits for the request this published message ends."""
        try:
            message = json.loads(data)
        except (TypeError, ValueError):
            return  # not one of ours: Socket.IO's own messages are pickled
        for event, body in events_in(message):
            if event in END_EVENTS and isinstance(body, dict) and isinstance(body.get("id"), int):
                self.wake(body["id"])

    def wake(self, request_id: int) -> None:
        """Set the events of everyone waiting for ``request_id``."""
        with self.lock:
            waiting = list(self.waiters.get(request_id, ()))
        for ended in waiting:
            ended.set()
