"""The system log (``system_events``): sign-ins, sign-outs, tokens, users, admin actions, worker events.

``record(kind, ...)`` only puts the event on an in-process queue and returns: a background thread
writes queued events in batches on its own connection, so no caller waits for the database (and a
flood of failed sign-ins holds one connection, not one each). Events still queued when the process
exits normally are written then. Never pass a secret (password, token) in any field.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from datetime import timedelta

import click
from flask import Flask, current_app, has_app_context, has_request_context
from flask.cli import AppGroup
from sqlalchemy import delete, insert

from webapp.models import SystemEvent, utcnow

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000  # beyond this a flood is dropped (and logged) rather than held in memory
BATCH = 500
PRUNE_EVERY_SECONDS = 3600
IDLE_EXIT_SECONDS = 30  # an idle writer thread ends (and its app can be collected)
FIELD_LIMITS = {"kind": 64, "actor": 64, "subject": 200, "address": 64}


class EventWriter:
    """One per process: drains the queue into ``system_events``; prunes old rows now and then."""

    def __init__(self, app: Flask):
        self.app = app
        self.events: queue.Queue[dict] = queue.Queue(QUEUE_LIMIT)
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.idle = threading.Condition()
        self.pending = 0
        self.last_prune = 0.0

    def put(self, row: dict) -> None:
        with self.idle:
            self.pending += 1
        try:
            self.events.put_nowait(row)
        except queue.Full:
            with self.idle:
                self.pending -= 1
            log.warning("system log queue full; dropped %s", row["kind"])
        self._start_in_this_process()  # after the put: a writer that just quit for idleness is replaced

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is written; False if that took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.idle:
            while self.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True

    def _start_in_this_process(self) -> None:
        with self.lock:
            if self.pid == os.getpid():
                return
            self.pid = os.getpid()
        threading.Thread(target=self._run, name="lanes-system-log", daemon=True).start()

    def reset_after_fork(self) -> None:
        """In a forked child: fresh locks and queue (the parent's thread, and its events, stay the parent's)."""
        self.events = queue.Queue(QUEUE_LIMIT)
        self.lock = threading.Lock()
        self.idle = threading.Condition()
        self.pending = 0
        self.pid = None

    def _run(self) -> None:
        while True:
            try:
                batch = [self.events.get(timeout=IDLE_EXIT_SECONDS)]
            except queue.Empty:
                with self.lock:
                    if not self.events.empty():
                        continue
                    self.pid = None  # the next put starts a writer again
                    return
            while len(batch) < BATCH:
                try:
                    batch.append(self.events.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[dict]) -> None:
        try:
            with self.app.app_context():
                from webapp.extensions import db

                with db.engine.begin() as connection:
                    connection.execute(insert(SystemEvent.__table__), batch)
                if time.monotonic() - self.last_prune > PRUNE_EVERY_SECONDS:
                    self.last_prune = time.monotonic()
                    prune(self.app.config["LANES_EVENT_RETENTION_DAYS"])
        except Exception:  # noqa: BLE001 - the log must never take its process down
            log.warning("could not write %d system events", len(batch), exc_info=True)
        finally:
            with self.idle:
                self.pending -= len(batch)
                self.idle.notify_all()


_writers: weakref.WeakSet[EventWriter] = weakref.WeakSet()


def init_app(app: Flask) -> None:
    writer = app.extensions["lanes_system_log"] = EventWriter(app)
    _writers.add(writer)
    app.cli.add_command(events_cli)


events_cli = AppGroup("events", help="The system log.")


@events_cli.command("prune")
@click.option("--days", type=click.IntRange(min=0), default=None,
              help="Keep this many days (default: LANES_EVENT_RETENTION_DAYS).")
def prune_events(days: int | None) -> None:
    """Delete system events older than the retention period."""
    keep = current_app.config["LANES_EVENT_RETENTION_DAYS"] if days is None else days
    click.echo(f"Deleted {prune(keep)} system events older than {keep} days.")


def _reset_after_fork() -> None:
    for writer in list(_writers):
        writer.reset_after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


def flush_all(timeout: float = 5.0) -> None:
    """Write what every app of this process has queued (before ``os._exit``, which skips atexit)."""
    for writer in list(_writers):
        if writer.pid == os.getpid():
            writer.flush(timeout=timeout)


atexit.register(flush_all)


def record(kind: str, *, actor: str | None = None, subject: str | None = None,
           address: str | None = None, details: dict | None = None, app: Flask | None = None) -> None:
    """Log one event (e.g. ``record("sign_in.failed", actor="alice")``) without waiting for the database.

    Inside a web request the address defaults to the client's and the actor to the signed-in user.
    """
    if app is None:
        if not has_app_context():
            log.warning("system event %s outside an app; not recorded", kind)
            return
        app = current_app._get_current_object()
    if has_request_context():
        if address is None:
            from webapp.client_address import client_address

            address = client_address()
        if actor is None:
            from flask_login import current_user

            if current_user and current_user.is_authenticated:
                actor = current_user.username
    row = {"at": utcnow(), "kind": kind, "actor": actor, "subject": subject, "address": address, "details": details}
    for field, limit in FIELD_LIMITS.items():
        if isinstance(row[field], str):
            row[field] = row[field][:limit]
    app.extensions["lanes_system_log"].put(row)


def flush(timeout: float = 5.0) -> bool:
    """Write what is queued now (tests, CLI commands)."""
    return current_app.extensions["lanes_system_log"].flush(timeout)


def prune(retention_days: int) -> int:
    """Delete events older than ``retention_days``; returns how many went. Needs an app context."""
    from webapp.extensions import db

    cutoff = utcnow() - timedelta(days=retention_days)
    with db.engine.begin() as connection:
        result = connection.execute(delete(SystemEvent.__table__).where(SystemEvent.__table__.c.at < cutoff))
    return result.rowcount or 0
