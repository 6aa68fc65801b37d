"""``report.export``: the user's request history as a CSV or JSON file kept in the database.

The file is an ``ExportFile`` row keyed by the export's request id, so any web host can serve
it at ``/downloads/<request id>`` and a re-run replaces it instead of adding a second one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from jobs.context import JobContext
from jobs.registry import job_type
from webapp.lanes.representation import iso
from webapp.models import ExportFile, LaneRequest, utcnow

BATCH_SIZE = 500
COLUMNS = (
    "id", "type", "status", "created_at", "started_at", "ended_at", "attempts",
    "payload", "result", "error_code", "error_message",
)
TIMESTAMPS = ("created_at", "started_at", "ended_at")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
READ_SHARE = 90  # percent of the progress bar spent reading; the rest is rendering and saving


@job_type(
    "report.export",
    title="Export your request history",
    schema={
        "properties": {
            "format": {"type": "string", "enum": ["csv", "json"], "default": "csv", "title": "Format"},
        },
        "required": ["format"],
    },
    timeout=300,
    cancelable=True,
)
def export(ctx: JobContext, payload: dict) -> dict:
    file_format = payload["format"]
    # The history up to and including this export: later submissions are not history yet.
    total = ctx.session.scalar(
        select(func.count()).where(LaneRequest.user_id == ctx.user_id, LaneRequest.id <= ctx.request_id)
    )
    ctx.log(f"Exporting {total:,} requests (up to #{ctx.request_id}) as {file_format.upper()}.")
    records: list[dict] = []
    for batch in _history_batches(ctx.session, ctx.user_id, ctx.request_id):
        ctx.check_canceled()
        records.extend(_record(row) for row in batch)
        ctx.log(f"Read requests #{batch[0].id} to #{batch[-1].id} ({len(records):,} of {total:,}).")
        ctx.progress(READ_SHARE * len(records) / max(total, 1), f"read {len(records):,} of {total:,} requests")
    ctx.check_canceled()
    content = _render_csv(records) if file_format == "csv" else _render_json(records)
    # Progress and log lines are written on their own connection; with SQLite's single writer they
    # must come before this transaction starts writing, or they would wait on our lock.
    ctx.log(f"Rendered {len(records):,} rows: {len(content):,} bytes of {file_format.upper()}; saving the file.")
    ctx.progress(READ_SHARE + 5, "saving the file", force=True)
    _save(ctx, file_format, content, len(records))
    return {"download": f"/downloads/{ctx.request_id}", "rows": len(records)}


def _history_batches(session: Session, user_id: int, up_to: int) -> Iterator[list[Row]]:
    """The user's requests, oldest first, ``BATCH_SIZE`` at a time (keyset paging by id)."""
    after = 0
    while True:
        batch = session.execute(
            select(*(getattr(LaneRequest, column) for column in COLUMNS))
            .where(LaneRequest.user_id == user_id, LaneRequest.id > after, LaneRequest.id <= up_to)
            .order_by(LaneRequest.id)
            .limit(BATCH_SIZE)
        ).all()
        if not batch:
            return
        yield batch
        after = batch[-1].id


def _record(row: Row) -> dict:
    record = dict(row._mapping)
    for column in TIMESTAMPS:
        record[column] = iso(record[column])
    return record


def _render_csv(records: list[dict]) -> bytes:
    """One row per request under a header; payload and result are JSON text, absent values empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for record in records:
        writer.writerow([_csv_cell(record[column]) for column in COLUMNS])
    return buffer.getvalue().encode()


def _csv_cell(value) -> str | int:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _render_json(records: list[dict]) -> bytes:
    document = {"exported_at": iso(utcnow()), "rows": len(records), "requests": records}
    return json.dumps(document, indent=1).encode()


def _save(ctx: JobContext, file_format: str, content: bytes, rows: int) -> None:
    """Write the export's file, replacing the one an earlier run of the same request left."""
    export_file = ctx.session.get(ExportFile, ctx.request_id)
    if export_file is None:
        export_file = ExportFile(request_id=ctx.request_id, user_id=ctx.user_id)
        ctx.session.add(export_file)
    export_file.filename = f"lanes-history-{ctx.request_id}.{file_format}"
    export_file.content_type = CONTENT_TYPES[file_format]
    export_file.content = content
    export_file.rows = rows
    export_file.created_at = utcnow()
    ctx.session.flush()
