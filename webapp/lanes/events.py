"""Live events, published into the Socket.IO Redis channel for the user's room.

Any process can publish: web and lane workers alike, without a Socket.IO server. Messages are
written in python-socketio's pub/sub format (what ``RedisManager.emit`` publishes), so that they
can ride in the same Redis transaction as the change they announce: ``request.queued`` is
published before the job becomes visible to a worker, so it can never arrive after ``started``.

The events of one change (a request's start or end, and the ``lane.updated`` that follows it) go
out as one message: python-socketio's emit message for the first, the others under ``more``, which
``realtime.LanesRedisManager`` emits after it, in order. Every web process receives every message
twice (its Socket.IO server and its end watcher each subscribe), so a message per change instead
of one per event halves what relaying costs each of them, and the publishers' commands.
"""

from __future__ import annotations

import json
import logging
import uuid

import redis

log = logging.getLogger(__name__)


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


class EventPublisher:
    """Publishes events to a user's Socket.IO room through the deployment's channel."""

    def __init__(self, connection: redis.Redis, channel: str):
        self.connection = connection
        self.channel = channel
        self.host_id = uuid.uuid4().hex  # a server skips messages carrying its own host id; ours is unique

    def message(self, user_id: int, events) -> str:
        """One pub/sub message carrying ``events`` (``(event, data)`` pairs, at least one) in order."""
        (event, data), *more = events
        body = {
            "method": "emit", "event": event, "data": [data], "binary": False, "namespace": "/",
            "room": user_room(user_id), "skip_sid": None, "callback": None, "host_id": self.host_id,
        }
        if more:
            body["more"] = more
        return json.dumps(body)

    def add_to(self, pipe, user_id: int, *events: tuple[str, dict]) -> None:
        """Queue the publication of ``(event, data)`` pairs (one command) on a pipeline the caller executes."""
        if events:
            pipe.publish(self.channel, self.message(user_id, events))

    def emit(self, user_id: int, *events: tuple[str, dict]) -> None:
        """Publish now, in one round trip; a lost event is logged, never fatal (the row is the truth)."""
        self.emit_along(user_id, events)

    def emit_along(self, user_id: int, events, bookkeeping=None) -> list | None:
        """Publish ``events`` and run the commands ``bookkeeping(pipe)`` adds, in one round trip.

        Returns the results of the bookkeeping commands, or None when Redis failed (logged, never
        fatal: the row is the truth).
        """
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                self.add_to(pipe, user_id, *events)
                if bookkeeping is not None:
                    bookkeeping(pipe)
                return pipe.execute()[1 if events else 0:]
        except redis.exceptions.RedisError:
            log.warning("could not publish %s for user %s", [event for event, _ in events], user_id, exc_info=True)
            return None


def events_in(message) -> list[tuple[str, object]]:
    """The ``(event, data)`` pairs of a published emit message, in order; [] for anything else.

    ``message`` is the decoded JSON of a message on the channel: one of ``EventPublisher``'s, or one
    python-socketio published itself (one event, no ``more``)."""
    if not isinstance(message, dict) or message.get("method") != "emit" or not isinstance(message.get("event"), str):
        return []
    data = message.get("data")
    pairs = [(message["event"], data[0] if isinstance(data, list) and len(data) == 1 else data)]
    more = message.get("more")
    if isinstance(more, list):
        pairs += [(pair[0], pair[1]) for pair in more if isinstance(pair, list) and len(pair) == 2]
    return pairs
