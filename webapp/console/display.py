"""How requests read on the pages: results and errors in plain words, times, pretty JSON."""

from __future__ import annotations

import json
from datetime import datetime

from flask import Flask
from markupsafe import Markup, escape

from jobs.registry import get_job_type
from webapp.models import CANCELED, FAILED, FINISHED, QUEUED, STARTED, LaneRequest

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


def fields_in_words(values) -> str:
    """``{"message": "hi", "delay_ms": 0}`` → ``message: hi, delay_ms: 0``."""
    if not isinstance(values, dict):
        return json.dumps(values, ensure_ascii=False)
    parts = []
    for key, value in values.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}: {shown}")
    return ", ".join(parts)


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
    """A UTC timestamp as a ``<time>`` element (machine-readable, plainly written)."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    iso = value.isoformat().replace("+00:00", "Z")
    return Markup(f'<time datetime="{escape(iso)}">{escape(value.strftime("%Y-%m-%d %H:%M:%S"))} UTC</time>')


def init_app(app: Flask) -> None:
    app.add_template_filter(fields_in_words)
    app.add_template_filter(pretty_json)
    app.add_template_filter(when)
    app.add_template_global(outcome_in_words)
    app.add_template_global(download_link)
    app.add_template_global(can_cancel)
    app.add_template_global(STATUS_WORDS, "status_words")
