"""API v1 requests without a worker: submit, read, list, cancel, the lane, and every bad input."""

import io

import pytest

REQUESTS = "/api/v1/requests"


def error_of(response) -> dict:
    return response.get_json()["error"]


def submit(api, message="hi", **kw):
    return api.post(REQUESTS, json={"type": "echo", "payload": {"message": message}}, **kw)


# --- submitting ---------------------------------------------------------------------------

def test_submit_is_202_with_the_request_object_and_location(api):
    response = submit(api, "hello")
    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"id", "type", "payload", "status", "position", "result", "error", "progress",
                         "attempts", "created_at", "started_at", "ended_at"}
    assert body["type"] == "echo"
    assert body["payload"] == {"message": "hello"}
    assert body["status"] == "queued"
    assert body["position"] == 1
    assert body["result"] is None and body["error"] is None
    assert body["attempts"] == 0
    assert body["created_at"].endswith("Z") and body["started_at"] is None
    assert response.headers["Location"] == f"/api/v1/requests/{body['id']}"
    assert api.get(response.headers["Location"]).get_json() == body


def test_job_types_lists_the_catalogue(api):
    response = api.get("/api/v1/job-types")
    assert response.status_code == 200
    types = {jt["name"]: jt for jt in response.get_json()["job_types"]}
    assert types["echo"]["cancelable"] is True
    assert types["echo"]["title"]
    assert types["echo"]["schema"]["properties"]["message"]["type"] == "string"


@pytest.mark.parametrize(
    "data, message_part",
    [("{", "not valid JSON"), ('{"type": "echo",}', "not valid JSON"), ("", "empty"),
     ('{"type": NaN}', "NaN"), ("[" * 100000, "acceptable"), ('{"payload": {"delay_ms": 1' + "0" * 5000 + "}}",
     "acceptable"), ('{"type": "echo", "payload": {"message": "a\\ud800b"}}', "unpaired surrogate"),
     ('{"type": 1e400, "payload": {}}', "too large")],
    ids=["truncated", "trailing-comma", "empty", "nan", "too-deep", "huge-number", "lone-surrogate", "overflow"],
)
def test_malformed_json_is_400_invalid_json(app, api, data, message_part):
    if len(data) > app.config["LANES_MAX_BODY"]:
        data = data[: app.config["LANES_MAX_BODY"]]
    response = api.post(REQUESTS, data=data, content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"
    assert message_part in error_of(response)["message"]


def test_a_lone_surrogate_is_refused_and_the_console_keeps_working(api, browser):
    """Stored, an unpaired surrogate could be rendered by no page (UTF-8 cannot encode it)."""
    refused = api.post(REQUESTS, data='{"type": "echo", "payload": {"message": "\\udfff"}}',
                       content_type="application/json")
    assert refused.status_code == 400
    assert api.get(REQUESTS).get_json()["requests"] == []
    assert browser.login("alice").status_code == 302
    assert browser.client.get("/console").status_code == 200


def test_invalid_utf8_is_400_invalid_json(api):
    response = api.post(REQUESTS, data=b'{"type": "echo", "payload": {"message": "\xff"}}',
                        content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


@pytest.mark.parametrize("body", ["[1, 2]", '"echo"', "42", "null"], ids=["array", "string", "number", "null"])
def test_a_body_that_is_not_an_object_is_400(api, body):
    response = api.post(REQUESTS, data=body, content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request"


def test_missing_type_or_payload_is_400_naming_the_field(api):
    no_type = api.post(REQUESTS, json={"payload": {"message": "hi"}})
    assert no_type.status_code == 400
    assert error_of(no_type)["code"] == "invalid_request"
    assert error_of(no_type)["details"]["fields"] == {"type": "required field"}

    no_payload = api.post(REQUESTS, json={"type": "echo"})
    assert no_payload.status_code == 400
    assert error_of(no_payload)["details"]["fields"] == {"payload": "required field"}

    extra = api.post(REQUESTS, json={"type": "echo", "payload": {"message": "hi"}, "priority": 1})
    assert extra.status_code == 400
    assert error_of(extra)["details"]["fields"] == {"priority": "unknown field"}
    assert api.get("/api/v1/lane").get_json()["length"] == 0


def test_a_body_that_is_not_json_is_415(api):
    form = api.post(REQUESTS, data={"type": "echo"})
    assert form.status_code == 415
    assert error_of(form)["code"] == "unsupported_media_type"
    text = api.post(REQUESTS, data='{"type": "echo", "payload": {}}', content_type="text/plain")
    assert text.status_code == 415
    none = api.post(REQUESTS)
    assert none.status_code == 415


def test_a_body_over_the_limit_is_413(app, api):
    limit = app.config["LANES_MAX_BODY"]
    big = {"type": "echo", "payload": {"message": "x" * limit}}
    response = api.post(REQUESTS, json=big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert error_of(response)["details"]["limit"] == limit


def test_a_body_over_the_limit_without_content_length_is_413(app, api):
    """A chunked upload has no Content-Length: the bytes actually read are what count."""
    limit = app.config["LANES_MAX_BODY"]
    raw = b'{"type": "echo", "payload": {"message": "' + b"x" * limit + b'"}}'
    response = api.post(
        REQUESTS, input_stream=io.BytesIO(raw), content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert api.get("/api/v1/lane").get_json()["length"] == 0


def test_a_body_just_under_the_limit_is_accepted(app, api):
    limit = app.config["LANES_MAX_BODY"]
    envelope = len('{"type": "echo", "payload": {"message": ""}}')
    message = "x" * min(10000, limit - envelope)
    response = api.post(REQUESTS, data=f'{{"type": "echo", "payload": {{"message": "{message}"}}}}',
                        content_type="application/json")
    assert response.status_code == 202


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({"type": "no.such.type", "payload": {}}, "unknown_job_type", None),
        ({"type": 7, "payload": {}}, "unknown_job_type", None),
        ({"type": "echo", "payload": {"message": 5}}, "invalid_payload", "message"),
        ({"type": "echo", "payload": {}}, "invalid_payload", "message"),
        ({"type": "echo", "payload": {"message": "hi", "colour": "red"}}, "invalid_payload", "colour"),
        ({"type": "echo", "payload": {"message": "a\x00b"}}, "invalid_payload", "message"),
        ({"type": "echo", "payload": {"message": "hi", "delay_ms": 60001}}, "invalid_payload", "delay_ms"),
        ({"type": "echo", "payload": ["message", "hi"]}, "invalid_payload", ""),
        ({"type": "echo", "payload": "hi"}, "invalid_payload", ""),
    ],
    ids=["unknown-type", "type-not-string", "wrong-type", "missing-field", "unknown-field", "nul-char",
         "out-of-range", "payload-array", "payload-string"],
)
def test_bad_type_or_payload_is_422(api, body, code, field):
    response = api.post(REQUESTS, json=body)
    assert response.status_code == 422
    assert error_of(response)["code"] == code
    if field is not None:
        assert field in error_of(response)["details"]["fields"]
    assert api.get("/api/v1/lane").get_json()["length"] == 0


# --- idempotency --------------------------------------------------------------------------

def test_idempotent_replay_returns_the_same_request_with_200(api):
    first = submit(api, "once", headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202
    again = submit(api, "once", headers={"Idempotency-Key": "order-42"})
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert api.get("/api/v1/lane").get_json()["pending"] == [first.get_json()["id"]]


def test_same_idempotency_key_with_another_body_is_409(api):
    assert submit(api, "once", headers={"Idempotency-Key": "order-42"}).status_code == 202
    conflict = submit(api, "twice", headers={"Idempotency-Key": "order-42"})
    assert conflict.status_code == 409
    assert error_of(conflict)["code"] == "idempotency_conflict"
    assert api.get("/api/v1/lane").get_json()["length"] == 1


def test_idempotency_keys_are_per_user(api, client, make_user, make_token):
    mine = submit(api, "same", headers={"Idempotency-Key": "k"}).get_json()
    other_token = make_token(make_user("bob"))
    theirs = client.post(REQUESTS, json={"type": "echo", "payload": {"message": "same"}},
                         headers={"Authorization": f"Bearer {other_token}", "Idempotency-Key": "k"})
    assert theirs.status_code == 202
    assert theirs.get_json()["id"] != mine["id"]


@pytest.mark.parametrize("key", ["k" * 256, "", "caf\u00e9"], ids=["too-long", "empty", "non-ascii"])
def test_a_bad_idempotency_key_is_400(api, key):
    response = submit(api, headers={"Idempotency-Key": key})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request"
    assert submit(api, headers={"Idempotency-Key": "k" * 255}).status_code == 202


# --- reading ------------------------------------------------------------------------------

def test_another_users_request_is_404(api, client, make_user, make_token):
    request_id = submit(api).get_json()["id"]
    bob = {"Authorization": f"Bearer {make_token(make_user('bob'))}"}
    for method in (client.get, client.delete):
        response = method(f"{REQUESTS}/{request_id}", headers=bob)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"
    assert api.get(f"{REQUESTS}/{request_id}").get_json()["status"] == "queued"


@pytest.mark.parametrize("request_id", ["999999", "abc", "0", "-1", "99999999999999999999999"])
def test_unknown_request_is_404(api, request_id):
    response = api.get(f"{REQUESTS}/{request_id}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize("wait", ["99", "30.5", "-1", "abc", "nan", "inf", ""])
def test_wait_out_of_range_is_400(api, wait):
    request_id = submit(api).get_json()["id"]
    response = api.get(f"{REQUESTS}/{request_id}?wait={wait}")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request"
    assert error_of(response)["details"]["parameter"] == "wait"


def test_wait_on_a_pending_request_returns_it_after_the_wait(api):
    request_id = submit(api).get_json()["id"]
    response = api.get(f"{REQUESTS}/{request_id}?wait=0.3")
    assert response.status_code == 200
    assert response.get_json()["status"] == "queued"
    assert response.get_json()["position"] == 1


# --- listing and the lane -----------------------------------------------------------------

def test_pending_requests_show_their_positions_and_the_lane_in_order(api):
    ids = [submit(api, f"m{i}").get_json()["id"] for i in range(4)]

    lane = api.get("/api/v1/lane")
    assert lane.status_code == 200
    assert lane.get_json() == {"name": f"lane:{api.user_id}", "length": 4, "running": None, "pending": ids}

    listed = api.get(REQUESTS).get_json()
    assert [r["id"] for r in listed["requests"]] == ids[::-1]
    assert [r["position"] for r in listed["requests"]] == [4, 3, 2, 1]
    assert listed["next"] is None
    assert api.get(f"{REQUESTS}/{ids[2]}").get_json()["position"] == 3

    assert api.delete(f"{REQUESTS}/{ids[0]}").status_code == 200
    assert api.get(f"{REQUESTS}/{ids[2]}").get_json()["position"] == 2
    assert api.get("/api/v1/lane").get_json()["pending"] == ids[1:]


def test_the_lane_of_a_new_user_is_empty_not_missing(api):
    response = api.get("/api/v1/lane")
    assert response.status_code == 200
    assert response.get_json() == {"name": f"lane:{api.user_id}", "length": 0, "running": None, "pending": []}


def test_pagination_walks_every_request_newest_first(api):
    ids = [submit(api, f"m{i}").get_json()["id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        query = f"?limit=2&before={cursor}" if cursor else "?limit=2"
        page = api.get(REQUESTS + query)
        assert page.status_code == 200
        body = page.get_json()
        seen += [r["id"] for r in body["requests"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == ids[::-1]


def test_listing_filters_by_status_and_type(api):
    ids = [submit(api, f"m{i}").get_json()["id"] for i in range(3)]
    api.delete(f"{REQUESTS}/{ids[1]}")
    canceled = api.get(f"{REQUESTS}?status=canceled").get_json()["requests"]
    assert [r["id"] for r in canceled] == [ids[1]]
    assert canceled[0]["position"] is None
    assert [r["id"] for r in api.get(f"{REQUESTS}?status=queued").get_json()["requests"]] == [ids[2], ids[0]]
    assert len(api.get(f"{REQUESTS}?type=echo&status=").get_json()["requests"]) == 3
    assert api.get(f"{REQUESTS}?type=ledger.deposit").get_json()["requests"] == []


def test_listing_shows_only_my_requests(api, client, make_user, make_token):
    submit(api)
    bob = {"Authorization": f"Bearer {make_token(make_user('bob'))}"}
    assert client.get(REQUESTS, headers=bob).get_json() == {"requests": [], "next": None}


@pytest.mark.parametrize(
    "query, parameter",
    [("limit=abc", "limit"), ("limit=0", "limit"), ("limit=201", "limit"), ("limit=-5", "limit"),
     ("limit=2.5", "limit"), ("before=abc", "before"), ("before=0", "before"), ("before=-3", "before"),
     ("before=99999999999999999999", "before"), ("status=done", "status"), ("type=a%00b", "type")],
)
def test_bad_list_parameters_are_400(api, query, parameter):
    response = api.get(f"{REQUESTS}?{query}")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request"
    assert error_of(response)["details"]["parameter"] == parameter


def test_limit_bounds_are_accepted(api):
    for limit in (1, 200):
        assert api.get(f"{REQUESTS}?limit={limit}").status_code == 200


# --- canceling ----------------------------------------------------------------------------

def test_cancel_queued_is_200_canceled_and_twice_is_409(api):
    request_id = submit(api).get_json()["id"]
    response = api.delete(f"{REQUESTS}/{request_id}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "canceled"
    assert body["position"] is None and body["ended_at"].endswith("Z")
    assert api.get("/api/v1/lane").get_json()["length"] == 0

    again = api.delete(f"{REQUESTS}/{request_id}")
    assert again.status_code == 409
    assert error_of(again)["code"] == "not_cancelable"


def test_cancel_unknown_is_404(api):
    response = api.delete(f"{REQUESTS}/424242")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


# --- unknown paths and methods ------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/api/v2/requests", "/api/v1/requests/1/extra"])
def test_unknown_api_paths_are_json_404(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response.is_json
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize(
    "method, path",
    [("put", "/api/v1/requests"), ("post", "/api/v1/lane"), ("delete", "/api/v1/job-types"),
     ("get", "/api/v1/tokens"), ("post", "/api/v1/requests/1"), ("patch", "/api/v1/requests/1")],
)
def test_wrong_methods_are_json_405(api, method, path):
    response = getattr(api.client, method)(path, headers={"Authorization": f"Bearer {api.token}"})
    assert response.status_code == 405
    assert response.is_json
    assert error_of(response)["code"] == "method_not_allowed"
    assert response.headers["Allow"]
