"""The console: the schema-built submit form, the lane view, cancel buttons, request pages, history."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from jobs.registry import JobType, all_job_types
from tests.conftest import wait_until
from webapp.console.forms import PayloadForm
from webapp.extensions import db
from webapp.lanes import service
from webapp.models import LaneRequest, utcnow


@pytest.fixture
def alice(make_user, browser):
    user_id = make_user("alice")
    browser.login("alice")
    return user_id


def submit(browser, type_name="echo", **fields):
    """Post the console's submit form as a browser would, with its CSRF token."""
    data = {"type": type_name, "csrf_token": browser.csrf("/console")}
    data.update({f"payload-{name}": value for name, value in fields.items()})
    return browser.client.post("/console/requests", data=data)


def rows(app, user_id=None):
    with app.app_context():
        query = select(LaneRequest).order_by(LaneRequest.id)
        if user_id is not None:
            query = query.where(LaneRequest.user_id == user_id)
        found = db.session.scalars(query).all()
        db.session.expunge_all()
        return found


def set_row(app, request_id, **values):
    """Move a request along as a worker would (the tests that need a real worker start one)."""
    with app.app_context():
        row = db.session.get(LaneRequest, request_id)
        for name, value in values.items():
            setattr(row, name, value)
        db.session.commit()


def console_html(browser, query="") -> str:
    response = browser.client.get("/console" + query)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def section(html: str, element_id: str) -> str:
    """The HTML of the element with this id (up to its closing tag of the same name)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"', html)
    assert match, f"no element #{element_id}"
    tag = match.group(1)
    end = html.index(f"</{tag}>", match.end())
    return html[match.start(): end]


def test_root_sends_people_to_the_console_or_to_login(browser, make_user):
    assert browser.client.get("/").headers["Location"] == "/auth/login"
    make_user("alice")
    browser.login("alice")
    assert browser.client.get("/").headers["Location"] == "/console"


def test_console_requires_login(browser):
    response = browser.client.get("/console")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login?next=")


def test_console_builds_the_echo_form_from_its_schema(browser, alice):
    html = console_html(browser)
    for job_type in all_job_types():
        assert f'<option value="{job_type.name}"' in html
    form = section(html, "submit-form")
    # message: string, maxLength 10000 > 200 → a required textarea
    assert re.search(r'<textarea[^>]*id="payload-message"[^>]*maxlength="10000"', form)
    assert re.search(r'<textarea[^>]*id="payload-message"[^>]*required', form)
    assert '<label for="payload-message">Message <span class="required"' in form
    # delay_ms: integer 0..60000, default 0 → a number input with its bounds, filled in, optional
    delay = re.search(r'<input[^>]*id="payload-delay_ms"[^>]*>', form).group(0)
    assert 'type="number"' in delay and 'min="0"' in delay and 'max="60000"' in delay and 'value="0"' in delay
    assert "required" not in delay
    assert 'name="csrf_token"' in form


def test_unknown_job_type_in_the_query_is_404(browser, alice):
    response = browser.client.get("/console?type=nope")
    assert response.status_code == 404
    assert "There is no job type named &#39;nope&#39;." in response.get_data(as_text=True)


def test_submitting_echo_queues_it_and_shows_its_position(app, browser, alice):
    response = submit(browser, message="hello there", delay_ms="250")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console?type=echo"
    [row] = rows(app)
    assert (row.user_id, row.type, row.status, row.payload) == (
        alice, "echo", "queued", {"message": "hello there", "delay_ms": 250}
    )
    html = console_html(browser)
    assert f"Request #{row.id} queued (position 1)." in html

    submit(browser, message="second")
    second = rows(app)[-1]
    html = console_html(browser)
    assert f"Request #{second.id} queued (position 2)." in html
    pending = section(html, "pending")
    assert re.search(rf'<li class="request queued pending" id="request-{row.id}" data-request-id="{row.id}"'
                     rf'[^>]*data-position="1"', pending)
    assert re.search(rf'data-request-id="{second.id}"[^>]*data-position="2"', pending)
    assert pending.index(f'data-request-id="{row.id}"') < pending.index(f'data-request-id="{second.id}"')
    assert "message: second" in pending
    assert section(html, "lane-length").endswith(">2")


def test_empty_optional_fields_are_left_out_of_the_payload(app, browser, alice):
    assert submit(browser, message="no delay", delay_ms="").status_code == 302
    assert rows(app)[0].payload == {"message": "no delay"}


def test_a_word_for_an_integer_is_a_form_error_and_nothing_is_written(app, browser, alice):
    response = submit(browser, message="keep me", delay_ms="abc")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Not a valid integer value." in section(html, "payload-delay_ms-errors")
    assert re.search(r'<input[^>]*id="payload-delay_ms"[^>]*value="abc"', html)  # what was typed is kept
    assert re.search(r'<textarea[^>]*id="payload-message"[^>]*>\s*keep me</textarea>', html)
    assert rows(app) == []


def test_a_value_the_schema_refuses_is_shown_next_to_its_field(app, browser, alice):
    response = submit(browser, message="too slow", delay_ms="70000")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "70000 is greater than the maximum of 60000" in section(html, "payload-delay_ms-errors")
    assert 'value="70000"' in html
    assert rows(app) == []


def test_nul_characters_are_refused_next_to_the_field(app, browser, alice):
    response = submit(browser, message="a\x00b")
    assert response.status_code == 422
    assert "NUL characters are not allowed" in section(response.get_data(as_text=True), "payload-message-errors")
    assert rows(app) == []


def test_a_long_lane_lists_the_next_hundred_and_counts_the_rest(app, browser, alice):
    with app.app_context():
        made = [LaneRequest(user_id=alice, type="echo", payload={"message": f"m{n}"}, status="queued")
                for n in range(105)]
        db.session.add_all(made)
        db.session.commit()
        ids = [row.id for row in made]
    html = console_html(browser)
    listed = re.findall(r'data-request-id="(\d+)" data-status="queued" data-type="echo" data-position="(\d+)"',
                        section(html, "pending"))
    assert listed == [(str(request_id), str(n)) for n, request_id in enumerate(ids[:100], start=1)]
    assert "… and 5 more waiting" in html
    assert section(html, "pending-count").endswith(">105")


def test_a_missing_required_field_is_named(app, browser, alice):
    response = submit(browser, message="", delay_ms="5")
    assert response.status_code == 422
    assert "required field" in section(response.get_data(as_text=True), "payload-message-errors")
    assert rows(app) == []


def test_submit_without_csrf_token_is_400_and_writes_nothing(app, browser, alice):
    response = browser.client.post("/console/requests", data={"type": "echo", "payload-message": "x"})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert rows(app) == []


def test_an_unknown_type_posted_is_refused_with_a_message(app, browser, alice):
    response = submit(browser, "no.such.type", message="x")
    assert response.status_code == 422
    assert "Unknown job type: &#39;no.such.type&#39;." in section(response.get_data(as_text=True), "submit-form")
    assert rows(app) == []


def test_a_full_lane_refuses_with_429_and_keeps_the_form(app, browser, alice):
    app.config["LANES_MAX_PENDING"] = 1
    assert submit(browser, message="first").status_code == 302
    response = submit(browser, message="one too many")
    html = response.get_data(as_text=True)
    assert response.status_code == 429
    assert "already holds 1 pending requests (limit 1)" in section(html, "submit-form")
    assert "one too many</textarea>" in html
    assert len(rows(app)) == 1


def test_cancel_button_cancels_a_queued_request(app, browser, alice):
    submit(browser, message="never mind")
    [row] = rows(app)
    html = console_html(browser)
    item = section(html, f"request-{row.id}")
    assert f'action="/console/requests/{row.id}/cancel"' in item and 'name="csrf_token"' in item

    response = browser.client.post(
        f"/console/requests/{row.id}/cancel", data={"csrf_token": browser.csrf("/console"), "next": "/console"}
    )
    assert response.status_code == 302 and response.headers["Location"] == "/console"
    assert rows(app)[0].status == "canceled"
    html = console_html(browser)
    assert f"Request #{row.id} canceled." in html
    assert f'data-request-id="{row.id}"' not in section(html, "pending")
    result = section(html, "results")
    assert f'data-request-id="{row.id}" data-status="canceled"' in result
    assert "Canceled before it started." in result

    again = browser.client.post(f"/console/requests/{row.id}/cancel", data={"csrf_token": browser.csrf("/console")})
    assert again.status_code == 302
    assert "was not canceled: The request has already ended (canceled)." in console_html(browser)


def test_cancel_needs_csrf_and_only_works_on_your_own_requests(app, browser, alice, make_user):
    submit(browser, message="mine")
    [row] = rows(app)
    assert browser.client.post(f"/console/requests/{row.id}/cancel").status_code == 400
    assert rows(app)[0].status == "queued"

    make_user("mallory")
    browser.logout()
    browser.login("mallory")
    response = browser.client.post(f"/console/requests/{row.id}/cancel", data={"csrf_token": browser.csrf("/console")})
    assert response.status_code == 404
    assert rows(app)[0].status == "queued"


def test_running_request_shows_with_a_progress_bar(app, browser, alice):
    submit(browser, message="busy")
    [row] = rows(app)
    set_row(app, row.id, status="started", started_at=utcnow(), attempts=1, progress=40, progress_message="Sleeping")
    running = section(console_html(browser), "running")
    assert f'data-request-id="{row.id}"' in running
    assert '<div class="progress" data-progress="40">' in running
    assert re.search(r'<progress max="100" value="40"', running)
    assert "Sleeping" in running
    assert f'action="/console/requests/{row.id}/cancel"' in running  # echo is cancelable while running


def test_results_are_in_plain_words(app, browser, alice):
    for message in ("ok", "broken"):
        submit(browser, message=message)
    ok, broken = rows(app)
    set_row(app, ok.id, status="finished", result={"message": "ok"}, ended_at=utcnow(), attempts=1)
    set_row(app, broken.id, status="failed", error_code="timeout", error_message="It ran out of time.",
            ended_at=utcnow(), attempts=1)
    results = section(console_html(browser), "results")
    assert "message: ok" in section(results, f"request-{ok.id}")
    assert "It ran out of time. (timeout)" in section(results, f"request-{broken.id}")
    assert "Cancel" not in results


def test_request_detail_shows_everything(app, browser, alice):
    submit(browser, message="<b>details</b>", delay_ms="7")
    [row] = rows(app)
    set_row(app, row.id, status="finished", attempts=1, started_at=utcnow(), ended_at=utcnow(),
            result={"download": f"/downloads/{row.id}", "rows": 3})
    response = browser.client.get(f"/console/requests/{row.id}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f"Request #{row.id}" in html and "Finished" in html
    assert "&#34;message&#34;: &#34;&lt;b&gt;details&lt;/b&gt;&#34;" in section(html, "payload")  # escaped JSON
    assert "&#34;delay_ms&#34;: 7" in section(html, "payload")
    assert "&#34;rows&#34;: 3" in section(html, "result")
    assert f'<a class="button" id="download" href="/downloads/{row.id}">' in html


def test_request_detail_of_a_failed_request_shows_the_error(app, browser, alice):
    submit(browser, message="x")
    [row] = rows(app)
    set_row(app, row.id, status="failed", error_code="worker_lost", error_message="The worker died.", attempts=3)
    html = browser.client.get(f"/console/requests/{row.id}").get_data(as_text=True)
    error = section(html, "error")
    assert "The worker died." in error and "worker_lost" in error


def test_another_users_request_is_404(app, browser, alice, make_user):
    submit(browser, message="private")
    [row] = rows(app)
    make_user("mallory")
    browser.logout()
    browser.login("mallory")
    response = browser.client.get(f"/console/requests/{row.id}")
    assert response.status_code == 404
    assert "private" not in response.get_data(as_text=True)
    assert browser.client.get("/console/requests/999999").status_code == 404
    assert browser.client.get("/console/requests/abc").status_code == 404
    assert browser.client.get(f"/console/requests/{2**63}").status_code == 404  # past any BIGINT id


def test_history_pages_back_50_at_a_time(app, browser, alice):
    with app.app_context():
        made = [LaneRequest(user_id=alice, type="echo", payload={"message": f"m{n}"}, status="finished",
                            result={"message": f"m{n}"}, attempts=1) for n in range(120)]
        db.session.add_all(made)
        db.session.commit()
        ids = [row.id for row in made]
    html = browser.client.get("/console/history").get_data(as_text=True)
    shown = [int(found) for found in re.findall(r'<tr class="request [a-z]+" data-request-id="(\d+)"', html)]
    assert shown == ids[::-1][:50]
    older = re.search(r'<a href="([^"]+)" id="older"', html).group(1).replace("&amp;", "&")
    assert older == f"/console/history?before={ids[70]}"

    html = browser.client.get(older).get_data(as_text=True)
    shown = [int(found) for found in re.findall(r'data-request-id="(\d+)"', section(html, "history"))]
    assert shown == ids[::-1][50:100]
    older = re.search(r'<a href="([^"]+)" id="older"', html).group(1)
    html = browser.client.get(older).get_data(as_text=True)
    shown = [int(found) for found in re.findall(r'data-request-id="(\d+)"', section(html, "history"))]
    assert shown == ids[::-1][100:]
    assert 'id="older"' not in html and 'id="newest"' in html


def test_history_filters_by_status_and_type(app, browser, alice):
    with app.app_context():
        ids = [service.submit_request(alice, "echo", {"message": f"m{n}"}).request.id for n in range(4)]
        service.cancel_request(alice, ids[1])
        service.cancel_request(alice, ids[3])
    html = browser.client.get("/console/history?status=canceled").get_data(as_text=True)
    assert re.findall(r'data-request-id="(\d+)"', section(html, "history")) == [str(ids[3]), str(ids[1])]
    assert '<option value="canceled" selected>' in html
    html = browser.client.get("/console/history?status=queued&type=echo").get_data(as_text=True)
    assert re.findall(r'data-request-id="(\d+)"', section(html, "history")) == [str(ids[2]), str(ids[0])]
    html = browser.client.get("/console/history?status=finished").get_data(as_text=True)
    assert "No requests match these filters." in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=bogus", "Unknown status &#39;bogus&#39;"),
        ("type=nope", "Unknown job type &#39;nope&#39;."),
        ("before=abc", "The page cursor &#39;before&#39; must be a request id"),
        ("before=-3", "The page cursor &#39;before&#39; must be a request id"),
        ("before=99999999999999999999999", "The page cursor &#39;before&#39; must be a request id"),
        ("before=%C2%B2", "The page cursor &#39;before&#39; must be a request id"),  # "²" is a digit to str.isdigit
    ],
)
def test_bad_history_filters_are_a_400_page(browser, alice, query, message):
    response = browser.client.get(f"/console/history?{query}")
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_a_submitted_request_runs_and_its_result_shows_on_the_console(app, browser, alice, start_worker):
    start_worker()
    submit(browser, message="through the lane")
    [row] = rows(app)

    def finished_on_page():
        results = section(console_html(browser), "results")
        return f'data-request-id="{row.id}" data-status="finished"' in results and results

    results = wait_until(finished_on_page, timeout=20, message="the result on the console")
    assert "message: through the lane" in results


class TestPayloadFormTypes:
    """The form builder handles every schema type a job type may use, not only echo's."""

    job_type = JobType(
        name="test.kinds", title="Kinds", func=None, timeout=1, cancelable=False, validator=None,
        schema={
            "type": "object",
            "properties": {
                "format": {"type": "string", "enum": ["csv", "json"], "default": "json"},
                "level": {"type": "integer", "enum": [1, 2, 3]},
                "ratio": {"type": "number", "minimum": 0},
                "memo": {"type": "string", "maxLength": 200},
                "flag": {"type": "boolean"},
                "tags": {"type": "array"},
            },
            "required": ["format"],
        },
    )

    def form(self, app, **fields):
        with app.test_request_context():
            form = PayloadForm(self.job_type, MultiDict({f"payload-{k}": v for k, v in fields.items()}))
            return form, form.payload()

    def test_values_are_converted_to_the_schema_types(self, app):
        form, payload = self.form(app, format="csv", level="2", ratio="0.5", memo="hi", flag="y", tags='["a"]')
        assert payload == {"format": "csv", "level": 2, "ratio": 0.5, "memo": "hi", "flag": True, "tags": ["a"]}

    def test_empty_optional_fields_are_omitted(self, app):
        _, payload = self.form(app, format="json", level="", ratio="", memo="", tags="")
        assert payload == {"format": "json", "flag": False}

    def test_bad_values_become_field_errors(self, app):
        form, payload = self.form(app, format="xml", level="9", ratio="lots", tags="[unclosed")
        assert payload is None
        assert form.fields["format"].errors and form.fields["level"].errors
        assert form.fields["ratio"].errors == ["Not a valid float value."]
        assert form.fields["tags"].errors == ["Enter valid JSON."]

    def test_an_infinite_number_is_refused_next_to_its_field(self, app):
        from jsonschema import Draft202012Validator

        job_type = JobType(**{**vars(self.job_type), "validator": Draft202012Validator(self.job_type.schema)})
        for typed in ("1e400", "inf", "nan"):
            _, payload = self.form(app, format="csv", ratio=typed)  # the form takes whatever float() takes
            assert job_type.payload_errors(payload) == {"ratio": "must be a finite number"}, typed

    def test_json_that_no_database_could_store_is_a_field_error(self, app):
        for typed, reason in (('["a\\ud800"]', "unpaired surrogate"), ("[NaN]", "NaN is not a JSON value")):
            form, payload = self.form(app, format="json", tags=typed)
            assert payload is None
            [error] = form.fields["tags"].errors
            assert error.startswith("Enter valid JSON: ") and reason in error

    def test_widgets_follow_the_schema(self, app):
        with app.test_request_context():
            form = PayloadForm(self.job_type)
            assert '<option selected value="json">' in str(form.fields["format"]())
            assert form.fields["format"].render_kw == {"required": True}
            assert str(form.fields["memo"]()).startswith("<input")  # maxLength 200: one line
            assert str(form.fields["tags"]()).startswith("<textarea")



def test_pages_say_503_when_the_database_is_down(settings, browser, make_user):
    from webapp import create_app

    make_user("alice")
    browser.login("alice")
    broken = create_app({**settings, "SQLALCHEMY_DATABASE_URI": "postgresql://nobody@127.0.0.1:1/none"})
    client = broken.test_client()
    client.set_cookie("session", browser.client.get_cookie("session").value)
    response = client.get("/console")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "unavailable" in response.get_data(as_text=True).lower()


def test_run_again_prefills_the_form_from_ones_own_request_only(app, browser, alice, make_user):
    submit(browser, "ledger.deposit", amount="1234567", memo="rent")
    [row] = rows(app)
    set_row(app, row.id, status="finished", result={"balance": 1234567}, started_at=utcnow(), ended_at=utcnow(),
            attempts=1)
    detail = browser.client.get(f"/console/requests/{row.id}").get_data(as_text=True)
    assert f'href="/console?rerun={row.id}"' in detail
    assert "<dd>1,234,567</dd>" in section(detail, "result-fields")  # grouped
    assert "waited " in section(detail, "durations") and " · ran " in section(detail, "durations")
    html = console_html(browser, f"?rerun={row.id}")
    assert f"Filled in from <a href=\"/console/requests/{row.id}\">request #{row.id}</a>" in html
    assert '<option value="ledger.deposit" selected>' in html
    assert re.search(r'<input[^>]*id="payload-amount"[^>]*value="1234567"', html)
    assert re.search(r'<input[^>]*id="payload-memo"[^>]*value="rent"', html)
    assert len(rows(app)) == 1  # opening the form submitted nothing
    history = browser.client.get("/console/history").get_data(as_text=True)
    assert f'href="/console?rerun={row.id}"' in history and 'data-relative' in history

    make_user("mallory")
    browser.logout()
    browser.login("mallory")
    assert browser.client.get(f"/console?rerun={row.id}").status_code == 404
    assert browser.client.get("/console?rerun=abc").status_code == 404


def test_flash_about_a_request_names_it_for_the_live_layer(app, browser, alice):
    response = submit(browser, message="flashy")
    [row] = rows(app)
    html = browser.client.get(response.headers["Location"]).get_data(as_text=True)
    assert re.search(rf'<p class="flash flash-success" data-request-id="{row.id}" data-status="queued">'
                     rf"Request #{row.id} queued \(position 1\)\.</p>", html)


def test_the_request_page_shows_its_log(app, browser, alice):
    from webapp.lanes.request_logs import RequestLogWriter

    submit(browser, message="logged")
    [row] = rows(app)
    with app.app_context():
        RequestLogWriter(row.id, alice)("<b>step one</b>")
    html = browser.client.get(f"/console/requests/{row.id}").get_data(as_text=True)
    log = section(html, "log-lines")
    assert "&lt;b&gt;step one&lt;/b&gt;" in log and 'class="log-at"' in log
    assert "No log lines yet" in html  # the placeholder is there, hidden while lines exist
