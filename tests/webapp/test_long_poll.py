"""``GET /api/v1/requests/<id>?wait=`` answers as the request ends: woken by its end event.

The waits here would last a minute if the long-poll only re-read the database on its usual
schedule; ending within seconds shows the event woke it.
"""

from __future__ import annotations

import threading

import pytest

from tests.conftest import wait_until
from webapp.extensions import db
from webapp.lanes import service
from webapp.models import LaneRequest

REQUESTS = "/api/v1/requests"


def submit(api, message="hi"):
    response = api.post(REQUESTS, json={"type": "echo", "payload": {"message": message}})
    assert response.status_code == 202
    return response.get_json()["id"]


class LongPoll(threading.Thread):
    """``GET ?wait=`` in a thread of its own, as a script blocked on it would be."""

    def __init__(self, api, request_id: int, seconds: int = 30):
        super().__init__(daemon=True)
        self.api, self.path, self.response = api, f"{REQUESTS}/{request_id}?wait={seconds}", None

    def run(self):
        self.response = self.api.get(self.path)

    def answer(self, within: float = 10):
        self.join(within)
        assert not self.is_alive(), f"the long-poll was still waiting after {within} s"
        assert self.response.status_code == 200
        return self.response.get_json()


def waiting_for(app, request_id: int) -> bool:
    watcher = app.extensions["lanes_end_watcher"]
    return watcher.subscribed.is_set() and request_id in watcher.waiters


@pytest.fixture
def slow_recheck(monkeypatch):
    monkeypatch.setattr(service, "WAIT_RECHECK_SECONDS", 60)


def test_canceling_a_queued_request_answers_its_long_poll_at_once(app, api, slow_recheck):
    request_id = submit(api)
    poll = LongPoll(api, request_id)
    poll.start()
    wait_until(lambda: waiting_for(app, request_id), message="the long-poll to be waiting")

    assert api.delete(f"{REQUESTS}/{request_id}").status_code == 200

    body = poll.answer()
    assert body["id"] == request_id and body["status"] == "canceled"


def test_a_worker_finishing_the_request_answers_its_long_poll(app, api, slow_recheck):
    request_id = submit(api)
    poll = LongPoll(api, request_id)
    poll.start()
    wait_until(lambda: waiting_for(app, request_id), message="the long-poll to be waiting")

    with app.app_context():  # what a lane worker does: commit the outcome, then announce it
        from webapp.lanes.execution import run_request

        run_request(request_id, api.user_id)

    body = poll.answer()
    assert body["status"] == "finished" and body["result"] == {"message": "hi"}


def test_an_end_whose_event_was_lost_is_still_seen(app, api, monkeypatch):
    monkeypatch.setattr(service, "WAIT_RECHECK_SECONDS", 0.3)
    request_id = submit(api)
    poll = LongPoll(api, request_id)
    poll.start()
    wait_until(lambda: waiting_for(app, request_id), message="the long-poll to be waiting")

    with app.app_context():  # the row ends, but pub/sub drops the announcement
        db.session.get(LaneRequest, request_id).status = "canceled"
        db.session.commit()

    assert poll.answer()["status"] == "canceled"


def test_other_requests_events_and_foreign_messages_do_not_end_a_wait(app, api, slow_recheck):
    waited, other = submit(api, "waited"), submit(api, "other")
    poll = LongPoll(api, waited, seconds=2)
    poll.start()
    wait_until(lambda: waiting_for(app, waited), message="the long-poll to be waiting")
    watcher = app.extensions["lanes_end_watcher"]
    watcher.dispatch(b"\x80\x04not json: Socket.IO's own pickled messages")
    watcher.dispatch(b'{"event": "request.finished", "data": "no body"}')
    watcher.dispatch(b'{"event": "request.finished", "data": [{"id": [1, 2]}]}')
    assert watcher.subscribed.is_set(), "the listener is still listening"
    app.extensions["lanes_events"].emit(api.user_id, ("request.progress", {"id": waited, "progress": 50}))
    assert api.delete(f"{REQUESTS}/{other}").status_code == 200

    body = poll.answer()
    assert (body["id"], body["status"]) == (waited, "queued"), "answered when its 2 s were up, still queued"


def pubsub_clients(connection) -> set[int]:
    return {client["id"] for client in connection.client_list(_type="pubsub")}


def test_a_long_poll_still_wakes_after_the_event_channel_dropped(app, api, redis_client, slow_recheck):
    before = pubsub_clients(redis_client)
    first = submit(api, "first")
    poll = LongPoll(api, first, seconds=2)
    poll.start()
    wait_until(lambda: waiting_for(app, first), message="the long-poll to be waiting")
    listeners = pubsub_clients(redis_client) - before
    assert listeners, "the web process subscribed to the event channel"
    assert poll.answer()["status"] == "queued"

    for client_id in listeners:  # a network blip between this web process and Redis
        redis_client.client_kill_filter(_id=client_id)
    wait_until(lambda: pubsub_clients(redis_client) - before - listeners, message="the listener to resubscribe")
    second = submit(api, "second")
    poll = LongPoll(api, second)
    poll.start()
    wait_until(lambda: waiting_for(app, second), message="the second long-poll to be waiting")

    assert api.delete(f"{REQUESTS}/{second}").status_code == 200
    assert poll.answer()["status"] == "canceled"
