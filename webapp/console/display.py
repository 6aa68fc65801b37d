"""How requests read on the pages: results and errors in plain words, times, pretty JSON."""

from __future__ import annotations

import json
from datetime import datetime

from flask import Flask
from markupsafe import Markup, escape

from jobs.registry import get_job_type
from webapp.models import CANCELED, FAILED, FINISHED, QUEUED, STARTED, TERMINAL_STATUSES, LaneRequest, utcnow

SUMMARY_LENGTH = 160

STATUS_WORDS = {
    QUEUED: "Queued",
    STARTED: "Running",
    FINISHED: "Finished",
    FAILED: "Failed",
    CANCELED: "Canceled",
}


def shorten(text: str, length: int = SUMMARY_LENGTH) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def value_in_words(value) -> str:
    """A JSON value as people read it: text as is, whole numbers grouped (5,761,455), the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return json.dumps(value, ensure_ascii=False)


def fields_in_words(values) -> str:
    """``{"message": "hi", "count": 5761455}`` → ``message: hi, count: 5,761,455``."""
    if not isinstance(values, dict):
        return value_in_words(values)
    return ", ".join(f"{key}: {value_in_words(value)}" for key, value in values.items())


def outcome_in_words(row: LaneRequest, position: int | None = None) -> str:
    """What became of a request, as a person would say it."""
    if row.status == FINISHED:
        result = {key: value for key, value in (row.result or {}).items() if key != "download"}
        return shorten(fields_in_words(result)) if result else "Done."
    if row.status == FAILED:
        error = row.error or {"code": "job_error", "message": ""}
        return shorten(f"{error['message'] or 'It failed.'} ({error['code']})")
    if row.status == CANCELED:
        return "Canceled before it finished." if row.started_at else "Canceled before it started."
    if row.status == STARTED:
        return f"Running (attempt {row.attempts})." if row.attempts > 1 else "Running…"
    return f"Waiting, position {position}." if position else "Waiting."


def download_link(row: LaneRequest) -> str | None:
    """The result's download path, when it has one of ours (a local absolute path)."""
    path = (row.result or {}).get("download") if isinstance(row.result, dict) else None
    if isinstance(path, str) and path.startswith("/") and not path.startswith("//"):
        return path
    return None


def can_cancel(row: LaneRequest) -> bool:
    """Whether a cancel button makes sense: queued, or running and of a cancelable type."""
    if row.status == QUEUED:
        return True
    job_type = get_job_type(row.type)
    return row.status == STARTED and job_type is not None and job_type.cancelable


def pretty_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def when(value: datetime | None) -> Markup:
    """A UTC timestamp as a ``<time>`` element; the browser shows it relative ("2 min ago"), exact on hover."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    iso = value.isoformat().replace("+00:00", "Z")
    exact = escape(value.strftime("%Y-%m-%d %H:%M:%S")) + " UTC"
    return Markup(f'<time datetime="{escape(iso)}" title="{exact}" data-relative>{exact}</time>')


def duration_in_words(seconds: float) -> str:
    """``4.3 s``, ``2 min 5 s``, ``1 h 3 min`` (static/js/lanes.js writes the same while it ticks)."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def durations(row: LaneRequest) -> Markup:
    """How long a request waited and ran ("waited 4.3 s · ran 5.0 s"), as of now while it is pending.

    The browser keeps the numbers moving from the data attributes while the request is pending.
    """
    now = utcnow()
    waited_until = row.started_at or row.ended_at or now
    parts = [f"waited {duration_in_words((waited_until - row.created_at).total_seconds())}"]
    if row.started_at is not None:
        parts.append(f"ran {duration_in_words(((row.ended_at or now) - row.started_at).total_seconds())}")
    elif row.ended_at is not None:
        parts.append("never ran")
    stamps = {"created": row.created_at, "started": row.started_at, "ended": row.ended_at}
    attributes = " ".join(
        f'data-{name}="{escape(value.isoformat().replace("+00:00", "Z")) if value else ""}"'
        for name, value in stamps.items()
    )
    return Markup(f'<span class="durations" {attributes}>{escape(" · ".join(parts))}</span>')


def can_run_again(row: LaneRequest) -> bool:
    """Whether "Run again" is offered: the request has ended and its job type still exists."""
    return row.status in TERMINAL_STATUSES and get_job_type(row.type) is not None


def init_app(app: Flask) -> None:
    app.add_template_filter(fields_in_words)
    app.add_template_filter(pretty_json)
    app.add_template_filter(when)
    app.add_template_filter(value_in_words)
    app.add_template_global(durations)
    app.add_template_global(can_run_again)
    app.add_template_global(outcome_in_words)
    app.add_template_global(download_link)
    app.add_template_global(can_cancel)
    app.add_template_global(STATUS_WORDS, "status_words")
