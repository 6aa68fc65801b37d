"""The events of one change go out as one pub/sub message, and every reader gets them back in order."""

from __future__ import annotations

import json

import pytest

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


def test_commands_sent_ahead_are_done_before_their_replies_are_read(app):
    publisher, client = app.extensions["lanes_events"], app.extensions["lanes_redis"]
    client.delete("ahead:list")
    client.rpush("ahead:list", "next-id")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(app.extensions["lanes_socketio_channel"])
    pubsub.get_message(timeout=1)
    try:
        replies = publisher.emit_ahead(7, (("request.started", {"id": 5}),), lambda pipe: pipe.lpop("ahead:list"))
        # Sent, not yet read: Redis has already done it all.
        assert events_in(json.loads(pubsub.get_message(timeout=2)["data"])) == [("request.started", {"id": 5})]
        assert client.llen("ahead:list") == 0
        assert replies.results() == [b"next-id"]
        assert replies.results() == [b"next-id"], "read once; asked again, the same"
    finally:
        pubsub.close()
    assert client.ping() and client.rpush("ahead:list", "x") == 1, "the connection went back in step"


def test_replies_never_read_do_not_reach_the_next_user_of_the_connection(app):
    publisher, client = app.extensions["lanes_events"], app.extensions["lanes_redis"]
    client.set("ahead:key", "value")
    for _ in range(3):
        publisher.emit_ahead(7, (), lambda pipe: pipe.get("ahead:key")).drop()
    assert client.get("ahead:key") == b"value"
    assert client.ping()


def test_a_read_cut_short_closes_the_connection(app, monkeypatch):
    """A job's timeout (an exception from a signal handler) can land while the replies are read."""
    from redis.connection import AbstractConnection

    publisher, client = app.extensions["lanes_events"], app.extensions["lanes_redis"]
    client.set("ahead:key", "value")
    replies = publisher.emit_ahead(7, (("request.started", {"id": 5}),), lambda pipe: pipe.get("ahead:key"))
    read_response = AbstractConnection.read_response
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise TimeoutError("the job's time ran out")
        return read_response(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "read_response", interrupted)
    with pytest.raises(TimeoutError):
        replies.results()
    monkeypatch.setattr(AbstractConnection, "read_response", read_response)
    assert client.get("ahead:key") == b"value", "no leftover reply was read as this one's"


def test_redis_down_when_sending_ahead_reads_as_failed(app):
    from tests.conftest import free_port
    from webapp.lanes.events import EventPublisher
    from webapp.redis_client import redis_client

    nowhere = redis_client(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    replies = EventPublisher(nowhere, "channel").emit_ahead(7, (("request.started", {"id": 5}),),
                                                           lambda pipe: pipe.lpop("x"))
    assert replies.results() is None
