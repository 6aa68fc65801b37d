"""Live events, published through the Socket.IO Redis message queue to the user's room."""

from __future__ import annotations

import logging

import socketio

log = logging.getLogger(__name__)


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


class EventPublisher:
    """Publishes events from any process (web or worker) without a Socket.IO server."""

    def __init__(self, redis_url: str, channel: str):
        # Passed explicitly: given a unix:// URL, Flask-SocketIO would pick the Kombu manager.
        self.manager = socketio.RedisManager(redis_url, channel=channel, write_only=True)

    def emit(self, user_id: int, event: str, data: dict) -> None:
        """Send ``event`` to the user's connections; a lost event is logged, never fatal."""
        try:
            self.manager.emit(event, data, room=user_room(user_id), namespace="/")
        except Exception:  # noqa: BLE001 - live updates are best effort; the row is the truth
            log.warning("could not publish %s for user %s", event, user_id, exc_info=True)
