"""What a job function is given: who it runs for, a database session, progress and cancel."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

PROGRESS_INTERVAL_SECONDS = 0.25
CANCEL_CHECK_INTERVAL_SECONDS = 0.1


class JobFailed(Exception):
    """A failure the user should see, with its error code (e.g. ``insufficient_funds``)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class JobCanceled(Exception):
    """Raised inside a cancelable job once its user asked to cancel it."""


@dataclass
class JobContext:
    """The small world a job runs in; jobs never see Flask, routes or Socket.IO."""

    user_id: int
    request_id: int
    session: Session
    attempt: int = 1
    settings: Mapping[str, Any] = field(default_factory=dict)  # the app's configuration, read-only
    report_progress: Callable[[int, str], None] = lambda percent, message: None
    cancel_requested: Callable[[], bool] = lambda: False
    write_log: Callable[[str], None] = lambda text: None
    _last_progress: float = field(default=0.0, repr=False)
    _last_cancel_check: float = field(default=0.0, repr=False)
    _canceled: bool = field(default=False, repr=False)

    def progress(self, percent: float, message: str = "", force: bool = False) -> None:
        """Report progress (0..100); throttled to one report per 250 ms unless forced.

        Progress is stored on another database connection: on SQLite, report it before the job's
        first write, or the two connections wait on each other.
        """
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_progress = now
        self.report_progress(max(0, min(100, int(percent))), message)

    def log(self, text: str) -> None:
        """Add a line to the request's log, shown live on its page (at most 1,000 lines of 1,000 chars).

        Like progress, stored on another database connection: on SQLite, log before the job's first write.
        """
        self.write_log(str(text))

    def canceled(self) -> bool:
        """Whether the user asked to cancel; cheap to call in a loop (checks every 100 ms)."""
        if self._canceled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL_SECONDS:
            self._last_cancel_check = now
            self._canceled = self.cancel_requested()
        return self._canceled

    def check_canceled(self) -> None:
        if self.canceled():
            raise JobCanceled()

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early to raise ``JobCanceled`` when the user cancels."""
        deadline = time.monotonic() + seconds
        while True:
            self.check_canceled()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, CANCEL_CHECK_INTERVAL_SECONDS))
