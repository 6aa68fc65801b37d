"""What the supervisors sweep: lanes whose user is gone (every Redis key naming one, in one atomic
step), and report exports past their expiry."""

from __future__ import annotations

import redis
from flask import has_app_context
from sqlalchemy import delete

from webapp import system_log
from webapp.extensions import db
from webapp.lanes import keys
from webapp.lanes.rq_adapter import wipe_lane_if_gone
from webapp.models import ExportFile, export_cutoff


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


def delete_expired_exports(ttl_days: int) -> int:
    """Delete every user's exports older than ``ttl_days`` (already refused for download); how many.

    A user's own next export deletes theirs too; this sweep is for those who never export again."""
    deleted = db.session.execute(delete(ExportFile).where(ExportFile.created_at < export_cutoff(ttl_days))).rowcount
    db.session.commit()
    return deleted
