"""The request and lane objects of the API and of live events (docs/api.md)."""

from __future__ import annotations

from datetime import datetime

from webapp.lanes import keys
from webapp.models import LaneRequest, error_object


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def request_object(row: LaneRequest, position: int | None = None) -> dict:
    """The public shape of a request; ``position`` is its 1-based place among the queued.

    ``row`` is a ``LaneRequest`` or a Core row of its table's columns (what the lane worker reads)."""
    return {
        "id": row.id,
        "type": row.type,
        "payload": row.payload,
        "status": row.status,
        "position": position if row.status == "queued" else None,
        "result": row.result,
        "error": error_object(row.error_code, row.error_message),
        "progress": row.progress,
        "attempts": row.attempts,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
    }


def lane_event(user_id: int, length: int, running: int | None) -> dict:
    """The ``lane.updated`` event body: length (queued + running) and the running request's id."""
    return {"name": keys.lane_name(user_id), "length": length, "running": running}
