"""Deleting a lane whose user is gone: every Redis key naming it, in one atomic step."""

from __future__ import annotations

import redis
from flask import has_app_context

from webapp import system_log
from webapp.lanes import keys
from webapp.lanes.rq_adapter import wipe_lane_if_gone


def delete_lane_if_gone(connection: redis.Redis, user_id: int) -> bool:
    """Delete the lane's keys if it is empty, unleased and its user absent; True if deleted."""
    deleted = wipe_lane_if_gone(connection, user_id)
    if deleted and has_app_context():
        system_log.record("lane.deleted", subject=keys.lane_name(user_id))
    return deleted


def sweep(connection: redis.Redis) -> int:
    """Try to delete every known lane; returns how many were deleted."""
    deleted = 0
    for member in connection.smembers(keys.KNOWN):
        deleted += delete_lane_if_gone(connection, int(member))
    return deleted
