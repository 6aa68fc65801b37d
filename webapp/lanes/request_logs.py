"""Request logs: the lines a job writes with ``ctx.log``, kept with the request and streamed live.

Bounded per request: at most ``MAX_LINES`` lines of at most ``MAX_LINE_LENGTH`` characters. A line
is stored on its own connection, outside the job's transaction (like progress), so it survives a
job that fails and rolls its own writes back: the log says what happened up to the failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, insert, select

from webapp.extensions import db
from webapp.lanes.representation import iso
from webapp.models import PENDING_STATUSES, LaneRequest, RequestLogLine, utcnow

MAX_LINES = 1000
MAX_LINE_LENGTH = 1000
LIMIT_REACHED = f"(log limit reached: a request keeps at most {MAX_LINES:,} lines; later lines are dropped)"


def bounded_line(text: object) -> str:
    """A line as stored: text, one line, no NUL (PostgreSQL refuses it), at most ``MAX_LINE_LENGTH``."""
    line = str(text).replace("\x00", "\ufffd").rstrip("\n")
    if len(line) > MAX_LINE_LENGTH:
        line = line[: MAX_LINE_LENGTH - 1] + "…"
    return line


class RequestLogWriter:
    """Appends a running request's log lines and emits each as ``request.log``; one per job run.

    The count of stored lines is read once (a re-run after a crash continues the same log), then
    kept here: only the one lane worker running the request writes to its log.
    """

    def __init__(self, request_id: int, user_id: int):
        self.request_id = request_id
        self.user_id = user_id
        self._stored: int | None = None

    def __call__(self, text: object) -> None:
        if self._stored is not None and self._stored >= MAX_LINES:
            return
        at = utcnow()
        # On its own connection, never the job's session: on SQLite a job that has written holds
        # the write lock, and a line must not wait for the job it describes (so log before writing).
        with db.engine.begin() as connection:
            if self._stored is None:
                self._stored = connection.scalar(
                    select(func.count()).where(RequestLogLine.request_id == self.request_id)
                )
                if self._stored >= MAX_LINES:
                    return
            line = bounded_line(text) if self._stored < MAX_LINES - 1 else LIMIT_REACHED
            connection.execute(insert(RequestLogLine).values(request_id=self.request_id, at=at, text=line))
        self._stored += 1
        current_app.extensions["lanes_events"].emit(
            self.user_id, ("request.log", {"id": self.request_id, "at": iso(at), "text": line})
        )


@dataclass
class LogPage:
    lines: list[dict]
    next_cursor: int | None


def read_log(row: LaneRequest, limit: int = MAX_LINES, after: int | None = None) -> LogPage:
    """A page of a request's log, oldest first, after the cursor.

    ``next_cursor`` is where to continue: null once everything was read and the request has
    ended (while it runs, more lines may come, so a reader can keep following from there).
    """
    query = select(RequestLogLine.id, RequestLogLine.at, RequestLogLine.text).where(
        RequestLogLine.request_id == row.id
    )
    if after is not None:
        query = query.where(RequestLogLine.id > after)
    rows = db.session.execute(query.order_by(RequestLogLine.id).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    lines = [{"at": iso(line.at), "text": line.text} for line in rows]
    if more or row.status in PENDING_STATUSES:
        return LogPage(lines, rows[-1].id if rows else (after or 0))
    return LogPage(lines, None)
