"""primes.count: exact counts, progress on the row while it runs, prompt cancelation."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import wait_until

BIG = 10**8
PRIMES_UP_TO_BIG = 5_761_455


def test_counts_the_primes_up_to_the_limit(make_user, lane_of, start_worker):
    lane = lane_of(make_user("alice"))
    expected = {2: 1, 3: 2, 10: 4, 100: 25, 7919: 1000, 10**6: 78_498, 10**7: 664_579}
    ids = [lane.submit("primes.count", {"limit": limit}) for limit in expected]
    start_worker()

    rows = lane.wait_ended(ids)
    assert [(row.status, row.result) for row in rows] == [("finished", {"count": n}) for n in expected.values()]
    assert all(row.progress == 100 for row in rows)


def test_counts_match_a_plain_sieve_across_segment_boundaries():
    from jobs.primes import SEGMENT_ODDS, sieve_segments

    top = 4 * SEGMENT_ODDS + 10
    is_prime = bytearray(b"\x01") * (top + 1)
    is_prime[0:2] = b"\x00\x00"
    for number in range(2, int(top**0.5) + 1):
        if is_prime[number]:
            is_prime[number * number :: number] = bytes(len(range(number * number, top + 1, number)))
    for edge in (2 * SEGMENT_ODDS, 4 * SEGMENT_ODDS):
        for limit in range(edge - 3, edge + 4):
            segments = list(sieve_segments(limit))
            assert sum(found for found, _ in segments) == sum(is_prime[: limit + 1]), limit
            assert segments[-1][1] == limit  # the last progress report covers the whole range


def test_progress_is_stored_on_the_row_while_it_runs(make_user, lane_of, start_worker):
    lane = lane_of(make_user("alice"))
    ids = [lane.submit("primes.count", {"limit": BIG}) for _ in range(3)]
    start_worker()

    def running_with_progress():
        return next(
            (row for row in lane.rows(ids) if row.status == "started" and row.progress and 0 < row.progress < 100),
            None,
        )

    running = wait_until(running_with_progress, 30, interval=0.01, message="a primes.count with partial progress")
    assert running.progress_message.endswith(f"of {BIG:,}")
    rows = lane.wait_ended(ids)
    assert [(row.status, row.result, row.progress) for row in rows] == [
        ("finished", {"count": PRIMES_UP_TO_BIG}, 100)
    ] * 3


def test_a_running_count_can_be_canceled_and_ends_within_a_second(app, make_user, lane_of, start_worker):
    from webapp.errors import NotCancelable
    from webapp.lanes.service import cancel_request

    user_id = make_user("alice")
    lane = lane_of(user_id)
    # A count of 10^8 takes well under a second here, so queue several and cancel whichever is
    # running; one that finishes before the cancel arrives is simply passed over.
    ids = [lane.submit("primes.count", {"limit": BIG}) for _ in range(3)]
    after = lane.submit("primes.count", {"limit": 100})
    start_worker()

    canceled = None
    deadline = time.monotonic() + 30
    while canceled is None and time.monotonic() < deadline:
        running = next((row for row in lane.rows(ids) if row.status == "started"), None)
        if running is None:
            time.sleep(0.005)
            continue
        with app.app_context():
            try:
                _, done = cancel_request(user_id, running.id)
            except NotCancelable:
                continue  # it finished first
            asked_at = datetime.now(UTC)
        assert done is False  # a running job is asked to stop, not stopped on the spot
        row = lane.wait_ended([running.id])[0]
        if row.status == "canceled":
            canceled = row
            assert row.ended_at - asked_at < timedelta(seconds=1)
    assert canceled is not None, "no running primes.count could be canceled"
    assert canceled.result is None and canceled.error_code is None

    rows = lane.wait_ended([*ids, after])
    others = [row for row in rows if row.id != canceled.id]
    assert all(row.status == "finished" for row in others)
    assert rows[-1].result == {"count": 25}  # the lane goes on after a cancel


@pytest.mark.parametrize("payload", [{"limit": 1}, {"limit": BIG + 1}, {"limit": "10"}, {}, {"limit": 10, "x": 1}])
def test_limits_outside_the_range_are_refused(app, make_user, payload):
    from webapp.errors import InvalidPayload
    from webapp.lanes.service import submit_request

    user_id = make_user("alice")
    with app.app_context(), pytest.raises(InvalidPayload):
        submit_request(user_id, "primes.count", payload)
