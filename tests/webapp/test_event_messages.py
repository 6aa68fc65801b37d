"""The events of one change go out as one pub/sub message, and every reader gets them back in order."""

from __future__ import annotations

import json

from webapp.lanes.events import events_in, user_room


def test_the_events_of_one_change_are_one_message_read_back_in_order(app):
    publisher = app.extensions["lanes_events"]
    pubsub = app.extensions["lanes_redis"].pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(app.extensions["lanes_socketio_channel"])
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    try:
        publisher.emit(7, ("request.finished", {"id": 41}), ("lane.updated", {"length": 0, "running": None}))
        publisher.emit(7, ("request.progress", {"id": 42, "progress": 50}))
        first, second = (json.loads(pubsub.get_message(timeout=2)["data"]) for _ in range(2))
        assert pubsub.get_message(timeout=0.3) is None, "one message per emit, not one per event"
    finally:
        pubsub.close()

    assert events_in(first) == [("request.finished", {"id": 41}), ("lane.updated", {"length": 0, "running": None})]
    assert events_in(second) == [("request.progress", {"id": 42, "progress": 50})]
    # python-socketio's fields name the first event and the room, so its own emit path can read it.
    assert (first["method"], first["event"], first["data"], first["room"]) == (
        "emit", "request.finished", [{"id": 41}], user_room(7))
    assert "more" not in second


def test_a_message_python_socketio_published_reads_as_its_one_event():
    # What python-socketio's RedisManager.emit publishes (no "more").
    message = {"method": "emit", "event": "server.notice", "data": [{"text": "hi"}], "namespace": "/",
               "room": "user:1", "skip_sid": None, "callback": None, "host_id": "x"}
    assert events_in(message) == [("server.notice", {"text": "hi"})]


def test_anything_else_on_the_channel_reads_as_no_events():
    assert events_in({"method": "disconnect", "sid": "abc"}) == []
    assert events_in(["emit"]) == []
    assert events_in({"method": "emit", "event": 3, "data": []}) == []
