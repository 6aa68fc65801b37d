"""Per-user FIFO across several supervisors, and lanes of different users running side by side."""

from __future__ import annotations

import random

from tests.conftest import requests_of, wait_until
from webapp.lanes.service import submit_request


def test_each_users_requests_run_in_order_with_two_supervisors(app, make_user, start_worker):
    users = [make_user(f"user{n}") for n in range(4)]
    rng = random.Random(7)
    start_worker()
    start_worker()  # a second supervisor competes for the same lanes
    submitted = {user: [] for user in users}
    with app.app_context():
        for round_ in range(12):
            for user in users:
                message = f"{user}-{round_}"
                row = submit_request(user, "echo", {"message": message, "delay_ms": rng.choice([0, 5, 20])}).request
                submitted[user].append((row.id, message))

    def finished():
        rows = requests_of(app, users)
        return rows if all(row.status == "finished" for row in rows) else None

    rows = wait_until(finished, timeout=60, message="all requests to finish")
    by_user = {user: [row for row in rows if row.user_id == user] for user in users}
    for user, expected in submitted.items():
        ran = sorted(by_user[user], key=lambda row: row.started_at)
        assert [(row.id, row.result["message"]) for row in ran] == expected
        for earlier, later in zip(ran, ran[1:], strict=False):
            assert later.started_at >= earlier.ended_at, f"request {later.id} started before {earlier.id} ended"
        assert all(row.attempts == 1 for row in ran)


def test_lanes_of_different_users_run_at_the_same_time(app, make_user, start_worker):
    users = [make_user(f"para{n}") for n in range(3)]
    with app.app_context():
        for user in users:
            submit_request(user, "echo", {"message": "slow", "delay_ms": 1500})
    start_worker()

    def finished():
        rows = requests_of(app, users)
        return rows if all(row.status == "finished" for row in rows) else None

    rows = wait_until(finished, timeout=30, message="the three slow requests")
    latest_start = max(row.started_at for row in rows)
    earliest_end = min(row.ended_at for row in rows)
    assert latest_start < earliest_end, "the three lanes did not overlap: they ran one after another"
