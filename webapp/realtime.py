"""Socket.IO: who may connect (session cookie or API token), rooms, and presence.

Each connection joins only its own user's room. Events are published by the lane service and
the lane workers through the Redis message queue (webapp/lanes/events.py); this process's
Socket.IO server listens on the same channel and delivers them to its own connections.
"""

from __future__ import annotations

import logging
import threading

import socketio as socketio_lib
from flask import Flask, current_app, request, session
from flask_login import current_user
from flask_socketio import join_room
from sqlalchemy import select

from webapp.auth.accounts import user_for_token
from webapp.extensions import db, get_redis, socketio
from webapp.lanes import presence
from webapp.lanes.cleanup import delete_lane_if_gone
from webapp.lanes.events import user_room
from webapp.models import ApiToken, UserSession
from webapp.redis_client import redis_client

log = logging.getLogger(__name__)

RENEW_SECONDS = presence.SOCKET_TTL_SECONDS / 3
ENDED_CHECK_SECONDS = 2.0  # an ended session's or revoked token's sockets close within about this


class Connections:
    """This process's open connections (socket id → user id), kept present in Redis while open,
    and what authenticated each one (a browser session id or an API token id)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_sid: dict[str, int] = {}
        self.credentials: dict[str, tuple[str, str | int]] = {}  # socket id -> ("session", sid) | ("token", id)
        self.renewer_started = False

    def add(self, sid: str, user_id: int, credential: tuple[str, str | int]) -> None:
        with self.lock:
            self.by_sid[sid] = user_id
            self.credentials[sid] = credential

    def remove(self, sid: str) -> int | None:
        with self.lock:
            self.credentials.pop(sid, None)
            return self.by_sid.pop(sid, None)

    def snapshot(self) -> list[tuple[str, int]]:
        with self.lock:
            return list(self.by_sid.items())

    def credential_snapshot(self) -> list[tuple[str, tuple[str, str | int]]]:
        with self.lock:
            return list(self.credentials.items())


class LanesRedisManager(socketio_lib.RedisManager):
    """python-socketio's Redis message queue, connected by Lanes' one client factory.

    python-socketio reads a ``redis+sentinel://`` URL in another layout (db before service) than
    the rest of Lanes, so the connection is built here; its listener calls this again after a
    failure, and so follows a Sentinel failover to the new primary.
    """

    def _handle_emit(self, message) -> None:
        """Emit a message's events in order: the first as python-socketio would, then those that
        rode with it (``more``; see ``webapp.lanes.events``)."""
        super()._handle_emit(message)
        for event, data in message.get("more") or ():
            super()._handle_emit({**message, "event": event, "data": [data]})

    def _redis_connect(self) -> None:
        # No read timeout: the listener blocks on the subscription between events.
        self.redis = redis_client(self.redis_url, socket_connect_timeout=5)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True


def init_app(app: Flask) -> None:
    channel = app.extensions["lanes_socketio_channel"]
    socketio.init_app(
        app,
        async_mode="threading",
        # Explicit: for a unix:// URL Flask-SocketIO would otherwise choose the Kombu manager.
        client_manager=LanesRedisManager(app.config["REDIS_URL"], channel=channel),
        ping_interval=25,
        ping_timeout=20,
        logger=False,
        engineio_logger=False,
    )
    app.extensions["lanes_connections"] = Connections()


def _authenticated_user(auth) -> tuple[int, tuple[str, str | int]] | None:
    """(user id, what proves it) for a signed-in session (checked server-side) or a valid token."""
    try:
        if current_user.is_authenticated and "sid" in session:
            return current_user.id, ("session", session["sid"])
        if isinstance(auth, dict) and isinstance(auth.get("token"), str):
            found = user_for_token(auth["token"])
            if found:
                return found[0].id, ("token", found[1].id)
        return None
    finally:
        db.session.remove()


@socketio.on("connect")
def on_connect(auth=None):
    found = _authenticated_user(auth)
    if found is None:
        raise ConnectionRefusedError("unauthorized")
    user_id, credential = found
    join_room(user_room(user_id))
    connections: Connections = current_app.extensions["lanes_connections"]
    connections.add(request.sid, user_id, credential)
    presence.touch_socket(get_redis(), user_id, request.sid)
    _start_renewer(current_app._get_current_object(), connections)
    return True


@socketio.on("disconnect")
def on_disconnect(*_args):
    connections: Connections = current_app.extensions["lanes_connections"]
    user_id = connections.remove(request.sid)
    if user_id is None:
        return
    connection = get_redis()
    presence.end_socket(connection, user_id, request.sid)
    # Closing the last tab of a signed-out user lets their empty lane go.
    delete_lane_if_gone(connection, user_id)


def _start_renewer(app: Flask, connections: Connections) -> None:
    with connections.lock:
        if connections.renewer_started:
            return
        connections.renewer_started = True
    socketio.start_background_task(_renew_presence, app, connections)
    socketio.start_background_task(_close_ended, app, connections)


def _renew_presence(app: Flask, connections: Connections) -> None:
    """Keep open connections present; an entry outlives a dead web process by at most its TTL."""
    connection = app.extensions["lanes_redis"]
    while True:
        socketio.sleep(RENEW_SECONDS)
        try:
            presence.touch_sockets(connection, connections.snapshot())
        except Exception:  # noqa: BLE001 - Redis blips must not end the renewer
            log.warning("could not renew socket presence", exc_info=True)


def _close_ended(app: Flask, connections: Connections) -> None:
    """Every ``ENDED_CHECK_SECONDS``: disconnect sockets whose session ended or whose token was revoked."""
    while True:
        socketio.sleep(ENDED_CHECK_SECONDS)
        try:
            with app.app_context():
                ended = ended_connections(connections.credential_snapshot())
                db.session.remove()
            for socket_id in ended:
                log.info("closing Socket.IO connection %s: its session ended or its token was revoked", socket_id)
                socketio.server.disconnect(socket_id, namespace="/")
        except Exception:  # noqa: BLE001 - a database blip must not end the checker
            log.warning("could not check open connections' credentials", exc_info=True)


def ended_connections(credentials: list[tuple[str, tuple[str, str | int]]]) -> list[str]:
    """The socket ids among ``credentials`` whose session or token is no longer valid (two queries)."""
    session_ids = {value for _, (kind, value) in credentials if kind == "session"}
    token_ids = {value for _, (kind, value) in credentials if kind == "token"}
    live_sessions = set(db.session.scalars(
        select(UserSession.id).where(UserSession.id.in_(session_ids), UserSession.ended_at.is_(None))
    )) if session_ids else set()
    live_tokens = set(db.session.scalars(
        select(ApiToken.id).where(ApiToken.id.in_(token_ids), ApiToken.revoked_at.is_(None))
    )) if token_ids else set()
    return [
        socket_id for socket_id, (kind, value) in credentials
        if (kind == "session" and value not in live_sessions) or (kind == "token" and value not in live_tokens)
    ]
