"""Helpers for job tests: submit through the lane service, read rows back fresh, wait for outcomes."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until


class Lane:
    """One user's lane as a test drives it: submit requests, then read their rows back."""

    def __init__(self, app, user_id: int):
        self.app, self.user_id = app, user_id

    def submit(self, type_name: str, payload: dict) -> int:
        from webapp.lanes.service import submit_request

        with self.app.app_context():
            return submit_request(self.user_id, type_name, payload).request.id

    def rows(self, ids: list[int]) -> list:
        """The rows of ``ids``, in that order, read in a fresh session (detached, safe to inspect)."""
        from webapp.extensions import db
        from webapp.models import LaneRequest

        with self.app.app_context():
            found = {row.id: row for row in db.session.query(LaneRequest).filter(LaneRequest.id.in_(ids))}
            db.session.expunge_all()
        return [found[request_id] for request_id in ids]

    def row(self, request_id: int):
        return self.rows([request_id])[0]

    def wait_ended(self, ids: list[int], timeout: float = 30) -> list:
        """Wait until every request of ``ids`` is finished, failed or canceled; their rows."""

        def ended():
            rows = self.rows(ids)
            return rows if all(row.status in ("finished", "failed", "canceled") for row in rows) else None

        return wait_until(ended, timeout, message=f"requests {ids} to end")


@pytest.fixture
def lane_of(app):
    return lambda user_id: Lane(app, user_id)
