"""Presence: whether a user still has a live web session or Socket.IO connection."""

from __future__ import annotations

import time

import redis

from webapp.lanes import keys

SOCKET_TTL_SECONDS = 90  # a socket entry outlives its web process by at most this long


def touch_session(connection: redis.Redis, user_id: int, session_id: str, idle_minutes: int) -> None:
    """Mark a web session as active for the next ``idle_minutes``."""
    connection.zadd(keys.presence(user_id), {f"web:{session_id}": time.time() + idle_minutes * 60})


def end_session(connection: redis.Redis, user_id: int, session_id: str) -> None:
    connection.zrem(keys.presence(user_id), f"web:{session_id}")


def touch_socket(connection: redis.Redis, user_id: int, socket_id: str) -> None:
    """Mark a Socket.IO connection as open; renewed while it stays open."""
    connection.zadd(keys.presence(user_id), {f"sio:{socket_id}": time.time() + SOCKET_TTL_SECONDS})


def touch_sockets(connection: redis.Redis, sockets: list[tuple[str, int]]) -> None:
    """Renew many open connections (socket id, user id) in one round trip."""
    expires = time.time() + SOCKET_TTL_SECONDS
    with connection.pipeline(transaction=False) as pipe:
        for socket_id, user_id in sockets:
            pipe.zadd(keys.presence(user_id), {f"sio:{socket_id}": expires})
        pipe.execute()


def end_socket(connection: redis.Redis, user_id: int, socket_id: str) -> None:
    connection.zrem(keys.presence(user_id), f"sio:{socket_id}")


def is_present(connection: redis.Redis, user_id: int) -> bool:
    return connection.zcount(keys.presence(user_id), time.time(), "+inf") > 0
