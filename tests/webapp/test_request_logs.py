"""Request logs (``ctx.log``) and "run again": stored bounded, emitted live, read back by the API."""

from __future__ import annotations

import json

import pytest

from tests.conftest import wait_until
from webapp.extensions import db
from webapp.lanes.events import events_in
from webapp.lanes.execution import run_request
from webapp.lanes.request_logs import LIMIT_REACHED, MAX_LINE_LENGTH, MAX_LINES, RequestLogWriter
from webapp.lanes.service import submit_request
from webapp.models import LaneRequest, RequestLogLine

REQUESTS = "/api/v1/requests"


@pytest.fixture
def published(lane_app):
    """The messages published on the app's Socket.IO channel, read as (event, data)."""
    pubsub = lane_app.extensions["lanes_redis"].pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(lane_app.extensions["lanes_socketio_channel"])
    pubsub.get_message(timeout=1)  # reads the subscription's confirmation: from here on, nothing is missed

    def read(timeout: float = 2.0) -> list[tuple[str, dict]]:
        events = []
        while (message := pubsub.get_message(timeout=timeout)) is not None:
            events.extend(events_in(json.loads(message["data"])))
            timeout = 0.2
        return events

    yield read
    pubsub.close()


def _user(lane_app, name="alice"):
    from webapp.auth.accounts import create_user

    with lane_app.app_context():
        return create_user(name, "correct horse battery", is_admin=False).id


def test_a_log_keeps_at_most_1000_lines_of_at_most_1000_characters(lane_app, published):
    user_id = _user(lane_app)
    with lane_app.app_context():
        request_id = submit_request(user_id, "echo", {"message": "x"}).request.id
        published()  # queued, lane.updated
        write = RequestLogWriter(request_id, user_id)
        write("a\x00b")
        write("y" * 5000)
        for number in range(MAX_LINES + 20):
            write(f"line {number}")
        stored = db.session.scalars(
            db.select(RequestLogLine.text).where(RequestLogLine.request_id == request_id).order_by(RequestLogLine.id)
        ).all()
        # a writer for a re-run continues the same log, and the limit still holds
        RequestLogWriter(request_id, user_id)("after a crash")
        assert db.session.scalar(
            db.select(db.func.count()).where(RequestLogLine.request_id == request_id)
        ) == MAX_LINES
    assert len(stored) == MAX_LINES
    assert stored[0] == "a\ufffdb"
    assert len(stored[1]) == MAX_LINE_LENGTH and stored[1].endswith("…")
    assert stored[2] == "line 0" and stored[-2] == f"line {MAX_LINES - 4}"
    assert stored[-1] == LIMIT_REACHED
    assert all(len(text) <= MAX_LINE_LENGTH for text in stored)
    events = [data for event, data in published() if event == "request.log"]
    assert len(events) == MAX_LINES
    assert events[0]["id"] == request_id and events[0]["text"] == "a\ufffdb" and events[0]["at"].endswith("Z")
    assert events[-1]["text"] == LIMIT_REACHED


def test_report_export_and_primes_count_log_what_they_do(lane_app, published):
    user_id = _user(lane_app)
    with lane_app.app_context():
        for message in ("one", "two"):
            submit_request(user_id, "echo", {"message": message})
        primes = submit_request(user_id, "primes.count", {"limit": 3_000_000}).request.id
        export = submit_request(user_id, "report.export", {"format": "csv"}).request.id
        run_request(export, user_id)
        rows = {row.id: row for row in db.session.scalars(db.select(LaneRequest))}
        logs = {
            request_id: db.session.scalars(
                db.select(RequestLogLine.text)
                .where(RequestLogLine.request_id == request_id)
                .order_by(RequestLogLine.id)
            ).all()
            for request_id in (primes, export)
        }
    assert rows[primes].status == "finished" and rows[export].status == "finished", rows[export].error
    assert logs[primes][0].startswith("Counting primes up to 3,000,000")
    assert any(line.startswith("Segment 2 of 2: checked up to 3,000,000") for line in logs[primes])
    assert logs[primes][-1] == "Done: 216,816 primes up to 3,000,000."
    assert logs[export][0] == f"Exporting 4 requests (up to #{export}) as CSV."
    assert logs[export][-1].startswith("Rendered 4 rows:") and "saving the file" in logs[export][-1]
    events = published()
    live = [(data["id"], data["text"]) for event, data in events if event == "request.log"]
    assert live == [(primes, text) for text in logs[primes]] + [(export, text) for text in logs[export]]
    # Each job logs as it starts: its lines follow its request.started, whose replies it waited for.
    order = [(event, data["id"]) for event, data in events if event in ("request.started", "request.log")]
    for request_id in (primes, export):
        assert order.index(("request.started", request_id)) < order.index(("request.log", request_id))


def test_the_api_pages_a_log_oldest_first(api, app, start_worker):
    submitted = api.post(REQUESTS, json={"type": "primes.count", "payload": {"limit": 5_000_000}}).get_json()
    logs = f"{REQUESTS}/{submitted['id']}/logs"
    first = api.get(logs).get_json()
    assert first == {"lines": [], "next": 0}  # queued: nothing yet, but more will come
    start_worker()
    wait_until(lambda: api.get(f"{REQUESTS}/{submitted['id']}?wait=5").get_json()["status"] == "finished",
               timeout=30, message="primes.count to finish")

    whole = api.get(logs).get_json()
    texts = [line["text"] for line in whole["lines"]]
    assert texts[0].startswith("Counting primes up to 5,000,000") and texts[-1].startswith("Done: 348,513 primes")
    assert whole["next"] is None  # ended and read to the end
    assert all(line["at"].endswith("Z") for line in whole["lines"])

    paged, cursor = [], None
    for _ in range(len(texts) + 1):
        page = api.get(logs, query_string={"limit": 2, **({"after": cursor} if cursor is not None else {})}).get_json()
        assert len(page["lines"]) <= 2
        paged += [line["text"] for line in page["lines"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert paged == texts


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=abc", "after=-1"])
def test_a_bad_log_query_is_400(api, query):
    request_id = api.post(REQUESTS, json={"type": "echo", "payload": {"message": "x"}}).get_json()["id"]
    response = api.get(f"{REQUESTS}/{request_id}/logs?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_another_users_log_and_rerun_are_404(api, client, make_user, make_token):
    from tests.conftest import ApiClient

    bob = ApiClient(client, make_token(make_user("bob")), None)
    request_id = api.post(REQUESTS, json={"type": "echo", "payload": {"message": "mine"}}).get_json()["id"]
    for response in (bob.get(f"{REQUESTS}/{request_id}/logs"), bob.post(f"{REQUESTS}/{request_id}/rerun"),
                     api.post(f"{REQUESTS}/999999/rerun"), api.post(f"{REQUESTS}/abc/rerun")):
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"
    assert api.get(f"{REQUESTS}?limit=200").get_json()["requests"][0]["id"] == request_id  # nothing added


def test_rerun_is_a_new_request_with_the_same_type_and_payload(api):
    original = api.post(REQUESTS, json={"type": "ledger.deposit", "payload": {"amount": 5, "memo": "m"}}).get_json()
    api.delete(f"{REQUESTS}/{original['id']}")
    response = api.post(f"{REQUESTS}/{original['id']}/rerun")
    assert response.status_code == 202
    again = response.get_json()
    assert again["id"] != original["id"]
    assert (again["type"], again["payload"]) == ("ledger.deposit", {"amount": 5, "memo": "m"})
    assert again["status"] == "queued"
    assert response.headers["Location"] == f"{REQUESTS}/{again['id']}"

    keyed = api.post(f"{REQUESTS}/{original['id']}/rerun", headers={"Idempotency-Key": "again-1"})
    replay = api.post(f"{REQUESTS}/{original['id']}/rerun", headers={"Idempotency-Key": "again-1"})
    assert keyed.status_code == 202 and replay.status_code == 200
    assert replay.get_json()["id"] == keyed.get_json()["id"]
    other = api.post(REQUESTS, json={"type": "echo", "payload": {"message": "x"}},
                     headers={"Idempotency-Key": "again-1"})
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "idempotency_conflict"
    bad_key = api.post(f"{REQUESTS}/{original['id']}/rerun", headers={"Idempotency-Key": "é"})
    assert bad_key.status_code == 400
    ids = [row["id"] for row in api.get(REQUESTS).get_json()["requests"]]
    assert ids == [keyed.get_json()["id"], again["id"], original["id"]]
