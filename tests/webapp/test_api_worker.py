"""API v1 with a real ``worker.py``: long-polling, and canceling queued and running requests."""

from tests.conftest import wait_until

REQUESTS = "/api/v1/requests"


def submit(api, message, delay_ms=0):
    response = api.post(REQUESTS, json={"type": "echo", "payload": {"message": message, "delay_ms": delay_ms}})
    assert response.status_code == 202
    return response.get_json()["id"]


def test_long_poll_returns_when_the_worker_finishes(api, start_worker):
    request_id = submit(api, "hello", delay_ms=200)
    start_worker()
    response = api.get(f"{REQUESTS}/{request_id}?wait=30")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "finished"
    assert body["result"] == {"message": "hello"}
    assert body["attempts"] == 1
    assert body["position"] is None
    assert body["created_at"] <= body["started_at"] <= body["ended_at"]

    finished = api.delete(f"{REQUESTS}/{request_id}")
    assert finished.status_code == 409
    assert finished.get_json()["error"]["code"] == "not_cancelable"
    assert api.get(f"{REQUESTS}/{request_id}").get_json()["status"] == "finished"


def test_a_canceled_queued_request_never_runs(api, start_worker):
    first = submit(api, "first", delay_ms=100)
    doomed = submit(api, "doomed")
    canceled = api.delete(f"{REQUESTS}/{doomed}")
    assert canceled.status_code == 200
    assert canceled.get_json()["status"] == "canceled"
    last = submit(api, "last")
    assert api.get("/api/v1/lane").get_json()["pending"] == [first, last]

    start_worker()
    assert api.get(f"{REQUESTS}/{last}?wait=30").get_json()["status"] == "finished"
    assert api.get(f"{REQUESTS}/{first}").get_json()["result"] == {"message": "first"}
    never = api.get(f"{REQUESTS}/{doomed}").get_json()
    assert never["status"] == "canceled"
    assert never["attempts"] == 0
    assert never["started_at"] is None and never["result"] is None


def test_canceling_a_running_request_is_202_and_it_ends_canceled(api, start_worker):
    request_id = submit(api, "slow", delay_ms=60000)
    start_worker()
    wait_until(lambda: api.get(f"{REQUESTS}/{request_id}").get_json()["status"] == "started", 30, 0.1,
               "the request to start")
    assert api.get("/api/v1/lane").get_json() == {
        "name": f"lane:{api.user_id}", "length": 1, "running": request_id, "pending": [],
    }

    response = api.delete(f"{REQUESTS}/{request_id}")
    assert response.status_code == 202
    assert response.get_json()["status"] == "started"
    ended = api.get(f"{REQUESTS}/{request_id}?wait=10").get_json()
    assert ended["status"] == "canceled"
    assert ended["result"] is None
    assert api.get("/api/v1/lane").get_json()["running"] is None
