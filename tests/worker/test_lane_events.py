"""The ``lane.updated`` a lane worker announces with each start and end says what the lane holds.

The worker takes the count from the same statement that claims or closes the row, on the
suite's database and on SQLite (what ``make run`` uses without ``DATABASE_URL``).
"""

from __future__ import annotations

import pytest

from webapp.extensions import db
from webapp.lanes.execution import run_request
from webapp.lanes.service import lane_summary, submit_request
from webapp.models import STARTED, LaneRequest


@pytest.fixture
def announced(lane_app, monkeypatch):
    """Every event the worker code publishes, in order, as (event, body)."""
    events = []
    publisher = lane_app.extensions["lanes_events"]

    class NoReplies:
        def results(self):
            return []

        def drop(self):
            pass

    def sent_ahead(_user, pairs, bookkeeping=None):
        events.extend(pairs)
        return NoReplies()

    monkeypatch.setattr(publisher, "emit_along", lambda _user, pairs, bookkeeping=None: events.extend(pairs))
    monkeypatch.setattr(publisher, "emit_ahead", sent_ahead)  # a start, with the job run meanwhile
    return events


def new_user(app, name: str) -> int:
    from webapp.auth.accounts import create_user

    with app.app_context():
        return create_user(name, "correct horse battery").id


def test_start_and_end_announce_the_lane_as_it_is(lane_app, announced):
    user = new_user(lane_app, "ines")
    with lane_app.app_context():
        first, second, third = (submit_request(user, "echo", {"message": str(n)}).request.id for n in range(3))
        del announced[:]  # the submits' own announcements

        run_request(first, user)

        assert [(event, body["id"] if event != "lane.updated" else body) for event, body in announced] == [
            ("request.started", first),
            ("lane.updated", {"name": f"lane:{user}", "length": 3, "running": first}),
            ("request.finished", first),
            ("lane.updated", {"name": f"lane:{user}", "length": 2, "running": None}),
        ]
        assert announced[-1][1] == lane_summary(user), "the worker's count is the database's"
        assert {second, third} == {row.id for row in db.session.query(LaneRequest).filter_by(status="queued")}


def test_a_request_given_up_as_worker_lost_leaves_the_lane_idle(lane_app, announced):
    user = new_user(lane_app, "jude")
    with lane_app.app_context():
        lost, after = (submit_request(user, "echo", {"message": str(n)}).request.id for n in range(2))
        row = db.session.get(LaneRequest, lost)
        row.status, row.attempts = STARTED, lane_app.config["LANES_MAX_ATTEMPTS"]  # its worker kept dying
        db.session.commit()
        del announced[:]

        run_request(lost, user)

        assert announced == [
            ("request.failed", announced[0][1]),
            ("lane.updated", {"name": f"lane:{user}", "length": 1, "running": None}),
        ]
        assert announced[0][1]["error"]["code"] == "worker_lost"
        assert announced[1][1] == lane_summary(user)
