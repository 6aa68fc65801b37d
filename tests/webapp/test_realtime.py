"""Live events over Socket.IO: token auth for scripts, refused strangers, one room per user."""

from __future__ import annotations

import threading
import time

import pytest
import socketio

from tests.conftest import wait_until
from webapp.lanes.service import submit_request


class Listener:
    """A python-socketio client that records every event it receives."""

    EVENTS = ("request.queued", "request.started", "request.progress", "request.finished",
              "request.failed", "request.canceled", "lane.updated")

    def __init__(self, url: str, token: str | None):
        self.events: list[tuple[str, dict, float]] = []
        self.lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        for name in self.EVENTS:
            self.client.on(name, self._recorder(name))
        self.client.connect(url, auth={"token": token} if token else None, transports=["websocket"],
                            wait_timeout=10)

    def _recorder(self, name):
        def record(data):
            with self.lock:
                self.events.append((name, data, time.monotonic()))
        return record

    def names_for(self, request_id: int) -> list[str]:
        with self.lock:
            return [name for name, data, _ in self.events if isinstance(data, dict) and data.get("id") == request_id]

    def close(self):
        self.client.disconnect()


def test_a_script_with_a_token_sees_its_request_move_through_every_state(
    app, make_user, make_token, start_web, start_worker
):
    user = make_user("alice")
    web = start_web()
    listener = Listener(web.url, make_token(user))
    try:
        start_worker()
        with app.app_context():
            request_id = submit_request(user, "echo", {"message": "live"}).request.id
        wait_until(lambda: "request.finished" in listener.names_for(request_id), timeout=30,
                   message="request.finished over Socket.IO")
        assert listener.names_for(request_id) == ["request.queued", "request.started", "request.finished"]
        finished = [data for name, data, _ in listener.events if name == "request.finished"][0]
        assert finished["result"] == {"message": "live"} and finished["status"] == "finished"

        def last_lane_update():
            updates = [data for name, data, _ in listener.events if name == "lane.updated"]
            return updates[-1] if updates and updates[-1]["running"] is None else None

        # Published right after request.finished, in the same pipeline; it may arrive a moment later.
        last = wait_until(last_lane_update, timeout=10, message="the lane.updated that follows request.finished")
        assert last["length"] == 0 and last["running"] is None
    finally:
        listener.close()


def test_connections_without_valid_credentials_are_refused(app, make_user, start_web):
    make_user("alice")
    web = start_web()
    for auth in (None, "not-a-token", "\ud800 no UTF-8 can encode this"):
        with pytest.raises(socketio.exceptions.ConnectionError):
            Listener(web.url, auth)
    assert "Traceback" not in web.output(), "a refused connection is not an error on the server"


def test_a_user_never_receives_another_users_events(app, make_user, make_token, start_web, start_worker):
    alice, bob = make_user("alice"), make_user("bob")
    web = start_web()
    alice_listener = Listener(web.url, make_token(alice))
    bob_listener = Listener(web.url, make_token(bob))
    try:
        start_worker()
        with app.app_context():
            alice_request = submit_request(alice, "echo", {"message": "for alice only"}).request.id
            bob_request = submit_request(bob, "echo", {"message": "for bob"}).request.id
        wait_until(lambda: "request.finished" in alice_listener.names_for(alice_request), timeout=15)
        wait_until(lambda: "request.finished" in bob_listener.names_for(bob_request), timeout=15)
        assert bob_listener.names_for(alice_request) == []
        assert alice_listener.names_for(bob_request) == []
        assert "for alice only" not in repr(bob_listener.events)
    finally:
        alice_listener.close()
        bob_listener.close()


def test_an_open_socket_keeps_its_user_present(app, make_user, make_token, start_web, redis_client):
    from webapp.lanes import presence

    user = make_user("alice")
    web = start_web()
    listener = Listener(web.url, make_token(user))
    wait_until(lambda: presence.is_present(redis_client, user), message="the socket to count as presence")
    listener.close()
    wait_until(lambda: not presence.is_present(redis_client, user), message="presence to end with the socket")
