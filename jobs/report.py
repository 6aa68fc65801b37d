"""``report.export``: the user's request history as a CSV or JSON file kept in the database.

The file is an ``ExportFile`` row keyed by the export's request id, so any web host can serve
it at ``/downloads/<request id>`` and a re-run replaces it instead of adding a second one.
It is rendered batch by batch into a spooled temporary file (memory stays bounded however long
the history), then kept if the user's exports stay within ``LANES_EXPORT_QUOTA_BYTES``; exports
older than ``LANES_EXPORT_TTL_DAYS`` expire (refused for download, deleted at the user's next export
or by the supervisors' hourly sweep, ``webapp.lanes.cleanup.delete_expired_exports``).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from jobs.context import JobContext, JobFailed
from jobs.registry import job_type
from webapp.lanes.representation import iso
from webapp.models import ExportFile, LaneRequest, export_cutoff, utcnow

BATCH_SIZE = 500
COLUMNS = (
    "id", "type", "status", "created_at", "started_at", "ended_at", "attempts",
    "payload", "result", "error_code", "error_message",
)
TIMESTAMPS = ("created_at", "started_at", "ended_at")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
READ_SHARE = 90  # percent of the progress bar spent reading; the rest is rendering and saving
SPOOL_BYTES = 1024 * 1024  # rendered output beyond this goes to a temporary file, not memory
DEFAULT_TTL_DAYS, DEFAULT_QUOTA_BYTES = 7, 50 * 1024 * 1024


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
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        output = io.TextIOWrapper(spool, encoding="utf-8", newline="")
        render = _CsvRenderer(output) if file_format == "csv" else _JsonRenderer(output)
        rows = 0
        for batch in _history_batches(ctx.session, ctx.user_id, ctx.request_id):
            ctx.check_canceled()
            for row in batch:
                render.add(_record(row))
            rows += len(batch)
            ctx.log(f"Read requests #{batch[0].id} to #{batch[-1].id} ({rows:,} of {total:,}).")
            ctx.progress(READ_SHARE * rows / max(total, 1), f"read {rows:,} of {total:,} requests")
        ctx.check_canceled()
        render.finish(rows)
        output.flush()
        size = spool.tell()
        # Progress and log lines are written on their own connection; with SQLite's single writer they
        # must come before this transaction starts writing, or they would wait on our lock.
        ctx.log(f"Rendered {rows:,} rows: {size:,} bytes of {file_format.upper()}; saving the file.")
        _make_room(ctx, size)
        ctx.progress(READ_SHARE + 5, "saving the file", force=True)
        spool.seek(0)
        _save(ctx, file_format, spool.read(), rows)
        output.detach()
    return {"download": f"/downloads/{ctx.request_id}", "rows": rows}


def _make_room(ctx: JobContext, size: int) -> None:
    """Drop the user's expired exports; fail if this one would take them over their quota."""
    ttl_days = ctx.settings.get("LANES_EXPORT_TTL_DAYS", DEFAULT_TTL_DAYS)
    quota = ctx.settings.get("LANES_EXPORT_QUOTA_BYTES", DEFAULT_QUOTA_BYTES)
    ctx.session.execute(delete(ExportFile).where(
        ExportFile.user_id == ctx.user_id, ExportFile.created_at < export_cutoff(ttl_days)
    ))
    used = ctx.session.scalar(
        select(func.coalesce(func.sum(func.length(ExportFile.content)), 0))
        .where(ExportFile.user_id == ctx.user_id, ExportFile.request_id != ctx.request_id)
    )
    if used + size > quota:
        raise JobFailed(
            "job_error",
            f"This export ({size:,} bytes) would take your stored exports to {used + size:,} bytes, over the "
            f"quota of {quota:,}; older exports expire after {ttl_days} days.",
        )


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


class _CsvRenderer:
    """One row per request under a header; payload and result are JSON text, absent values empty."""

    def __init__(self, output):
        self.writer = csv.writer(output)
        self.writer.writerow(COLUMNS)

    def add(self, record: dict) -> None:
        self.writer.writerow([_csv_cell(record[column]) for column in COLUMNS])

    def finish(self, rows: int) -> None:
        pass


def _csv_cell(value) -> str | int:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


class _JsonRenderer:
    """``{"exported_at", "rows", "requests": [...]}``, written one request at a time."""

    def __init__(self, output):
        self.output, self.first = output, True
        output.write('{"exported_at": ' + json.dumps(iso(utcnow())) + ', "requests": [')

    def add(self, record: dict) -> None:
        self.output.write(("\n " if self.first else ",\n ") + json.dumps(record))
        self.first = False

    def finish(self, rows: int) -> None:
        self.output.write(f'\n], "rows": {rows}}}\n')


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
