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

    def emit_ahead(self, user_id: int, events, bookkeeping=None) -> RepliesLater:
        """``emit_along``, but only the sending: the replies are read by ``RepliesLater.results``.

        A lane worker announces a start this way and runs the job while Redis answers, instead of
        waiting a round trip first. The commands reach Redis before anything sent after them on
        any connection, as they are on the wire before the caller goes on.
        """
        with self.connection.pipeline(transaction=False) as pipe:  # a command builder here: never executed
            self.add_to(pipe, user_id, *events)
            if bookkeeping is not None:
                bookkeeping(pipe)
            commands = [args for args, _options in pipe.command_stack]
        names = [event for event, _ in events]
        pool, connection = self.connection.connection_pool, None
        try:
            connection = pool.get_connection()  # connects, if it must
            connection.send_packed_command(connection.pack_commands(commands))
        except redis.exceptions.RedisError:
            if connection is not None:
                connection.disconnect()
                pool.release(connection)
            log.warning("could not publish %s for user %s", names, user_id, exc_info=True)
            return RepliesLater(None, None, 0, 0, names)
        return RepliesLater(pool, connection, len(commands), 1 if events else 0, names)


class RepliesLater:
    """Commands already sent on a connection held for their replies; ``results`` reads them (once:
    later calls return the same).

    Until then the connection is out of the pool: nothing else can read these replies by mistake.
    ``drop`` (for a caller that no longer wants them) closes it instead of leaving replies unread.
    """

    def __init__(self, pool, connection, count: int, skip: int, names: list[str]):
        self.pool, self.connection, self.count, self.skip, self.names = pool, connection, count, skip, names
        self.read: list | None = None

    def results(self) -> list | None:
        """The bookkeeping commands' replies, or None when Redis failed (or refused a command: logged)."""
        if self.connection is None:
            return self.read
        self.read = self._read()
        return self.read

    def _read(self) -> list | None:
        replies: list | None = []
        try:
            for _ in range(self.count):
                try:
                    replies.append(self.connection.read_response())
                except redis.exceptions.ResponseError as error:
                    replies.append(error)
        except redis.exceptions.RedisError:
            log.warning("could not publish %s (no reply)", self.names, exc_info=True)
            replies = None
        finally:
            if replies is None or len(replies) < self.count:  # failed, or cut short (a job's timeout)
                self.connection.disconnect()  # unread replies must never reach the pool's next user
            self._give_back()
        if any(isinstance(reply, redis.exceptions.ResponseError) for reply in replies):
            log.warning("could not publish %s: %s", self.names, replies)
            return None
        return replies[self.skip:]

    def drop(self) -> None:
        """Give the connection back closed, its replies unread (the caller no longer wants them)."""
        if self.connection is not None:
            self.connection.disconnect()
            self._give_back()

    def _give_back(self) -> None:
        self.pool.release(self.connection)
        self.connection = None


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
