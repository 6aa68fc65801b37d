"""The admin charts' numbers, per minute over the last hour, from the request log (``lane_requests``).

Per minute: requests finished and failed (by when they ended), run time p50/p95 (of those that
ended), queue wait p50/p95 (of those that started), lanes with work (some request pending during
the minute) and lanes running a job (= busy lane workers). Everything is read from the rows that
ended in the window or are still pending, which the ``ended_at`` and ``status`` indexes find.
PostgreSQL computes the percentiles itself; SQLite (the embedded default) has no
``percentile_cont``, so there the durations are fetched and the same interpolation is done here.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import Float, and_, cast, func, or_, select

from webapp.extensions import db
from webapp.models import FAILED, FINISHED, PENDING_STATUSES, LaneRequest

WINDOW_MINUTES = 60
PERCENTILES = (0.5, 0.95)


def minute_starts(now: datetime, minutes: int = WINDOW_MINUTES) -> list[datetime]:
    """The starts of the last ``minutes`` whole minutes, the current (partial) one last."""
    current = now.replace(second=0, microsecond=0)
    return [current - timedelta(minutes=minutes - 1 - index) for index in range(minutes)]


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks: what PostgreSQL's ``percentile_cont`` returns."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _epoch(column):
    if db.engine.dialect.name == "postgresql":
        return func.extract("epoch", column)
    return (func.julianday(column) - 2440587.5) * 86400.0


def _minute(column):
    """The minute a timestamp falls in, as whole minutes since 1970."""
    if db.engine.dialect.name == "postgresql":
        return func.floor(_epoch(column) / 60)
    return cast(_epoch(column) / 60, db.Integer)  # the values are positive: truncation is floor


def _seconds_between(start, end):
    return cast(_epoch(end) - _epoch(start), Float)


def per_minute(now: datetime, minutes: int = WINDOW_MINUTES) -> dict:
    """The chart series: ``minutes`` (epoch seconds of each minute's start) and one list per measure."""
    starts = minute_starts(now, minutes)
    since, until = starts[0], starts[-1] + timedelta(minutes=1)
    first = int(since.timestamp() // 60)
    index = {first + offset: offset for offset in range(minutes)}
    series = {
        "minutes": [int(start.timestamp()) for start in starts],
        "finished": [0] * minutes, "failed": [0] * minutes,
        "run_p50": [None] * minutes, "run_p95": [None] * minutes,
        "wait_p50": [None] * minutes, "wait_p95": [None] * minutes,
        "lanes_with_work": [0] * minutes, "lanes_running": [0] * minutes,
    }
    created, started, ended = LaneRequest.created_at, LaneRequest.started_at, LaneRequest.ended_at
    in_window = or_(ended >= since, LaneRequest.status.in_(PENDING_STATUSES))
    run = _seconds_between(started, ended)
    wait = _seconds_between(created, started)

    ended_minute = _minute(ended).label("minute")
    counted = db.session.execute(
        select(
            ended_minute,
            func.count().filter(LaneRequest.status == FINISHED),
            func.count().filter(LaneRequest.status == FAILED),
        ).where(ended >= since, ended < until).group_by(ended_minute)
    ).all()
    for minute, finished, failed in counted:
        if int(minute) in index:
            series["finished"][index[int(minute)]] = finished
            series["failed"][index[int(minute)]] = failed

    _percentiles(series, "run", _minute(ended), run, and_(ended >= since, ended < until, started.is_not(None)), index)
    _percentiles(series, "wait", _minute(started), wait, and_(in_window, started >= since, started < until), index)

    # Lanes with a request pending (created, not yet ended) and running during each minute.
    with_work, running = [], []
    for start in starts:
        end = start + timedelta(minutes=1)
        overlaps = or_(ended.is_(None), ended >= start)
        with_work.append(func.count(LaneRequest.user_id.distinct()).filter(and_(created < end, overlaps)))
        running.append(func.count(LaneRequest.user_id.distinct()).filter(and_(started < end, overlaps)))
    counts = db.session.execute(select(*with_work, *running).where(in_window, created < until)).one()
    series["lanes_with_work"] = list(counts[:minutes])
    series["lanes_running"] = list(counts[minutes:])
    return series


def _percentiles(series: dict, name: str, minute, seconds, where, index: dict) -> None:
    """Fill ``<name>_p50`` and ``<name>_p95`` per minute (seconds, rounded to the millisecond)."""
    minute = minute.label("minute")
    if db.engine.dialect.name == "postgresql":
        rows = db.session.execute(
            select(minute, *(func.percentile_cont(q).within_group(seconds) for q in PERCENTILES))
            .where(where).group_by(minute)
        ).all()
        found = {int(row[0]): row[1:] for row in rows}
    else:
        durations: dict[int, list[float]] = {}
        for row_minute, value in db.session.execute(select(minute, seconds).where(where)):
            durations.setdefault(int(row_minute), []).append(value)
        found = {key: [percentile(values, q) for q in PERCENTILES] for key, values in durations.items()}
    for key, values in found.items():
        if key in index:
            for q, value in zip(PERCENTILES, values, strict=True):
                series[f"{name}_p{round(q * 100)}"][index[key]] = None if value is None else round(max(0.0, value), 3)
