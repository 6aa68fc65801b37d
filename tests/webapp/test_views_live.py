"""Issue 9 in a real browser (Debian's Chromium through Playwright) against gunicorn and worker.py:
live request pages, readable times, Run again, request logs, live admin charts, keyboard and phone."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, wait_until
from tests.webapp.conftest import CHROMIUM, FLAGS
from tests.webapp.test_console_live import signed_in_page, submit_echo
from webapp.lanes.service import submit_request

DESKTOP = {"width": 1366, "height": 800}
PHONE = {"width": 390, "height": 844}
# What another helper's strict policy will look like: no inline script at all.
STRICT_CSP = ("default-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
              "style-src 'self' 'unsafe-inline'")


@pytest.fixture(scope="module")
def strict_chromium(chromium):
    """A second browser of the same Playwright, for pages served under STRICT_CSP.

    The policy is added by intercepting the page's response (``route.fulfill``); Chromium then no
    longer counts the page as loopback-served and its Local Network Access check refuses the
    page's WebSocket to 127.0.0.1. Only that check is turned off here; the policy is enforced.
    """
    browser = chromium.browser_type.launch(
        executable_path=CHROMIUM, args=[*FLAGS, "--disable-features=LocalNetworkAccessChecks"]
    )
    yield browser
    browser.close()


def submit_as(app, user_id, type_name, payload):
    with app.app_context():
        return submit_request(user_id, type_name, payload).request.id


def count_requests(app):
    from webapp.extensions import db
    from webapp.models import LaneRequest

    with app.app_context():
        count = db.session.query(LaneRequest).count()
        db.session.rollback()
        return count


def sign_in(browser, web, username, viewport=DESKTOP, csp=False):
    """A signed-in page of its own context; with ``csp`` our pages are served under STRICT_CSP."""
    context = browser.new_context(viewport=viewport)
    if csp:
        def with_policy(route):
            if route.request.resource_type != "document":
                route.continue_()  # the policy is the page's; its fetches go out untouched
                return
            response = route.fetch()
            route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_CSP})

        context.route(re.compile(r"^http://127\.0\.0\.1:\d+/(console|admin|api/v1/docs)"), with_policy)
    page = context.new_page()
    page.goto(f"{web.url}/auth/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/console.*"))
    return page


def watch_errors(page):
    """JavaScript errors and CSP refusals the page reports, collected for the test to assert on."""
    problems = []
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}") if message.type == "error" else None)
    return problems


def wait_for_js(page, expression: str, timeout: float):
    """Poll a page expression from here: Playwright's wait_for_function evaluates strings with eval,
    which a strict policy (rightly) refuses."""
    return wait_until(lambda: page.evaluate(expression), timeout=timeout, message=expression)


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_the_request_page_follows_a_request_live_with_times_and_log(strict_chromium, live, make_user, app):
    user = make_user("alice")
    blocker = submit_as(app, user, "echo", {"message": "first", "delay_ms": 5000})
    primes = submit_as(app, user, "primes.count", {"limit": 100_000_000})
    page = sign_in(strict_chromium, live, "alice", csp=True)
    problems = watch_errors(page)

    # primes.count waits behind the echo; its page, open from before it starts, will gain log lines live.
    logs = page.context.new_page()
    problems += watch_errors(logs)
    logs.goto(f"{live.url}/console/requests/{primes}")
    logs.wait_for_selector("#live-status[data-state=live]")
    logs.evaluate("""() => {
        window.__notReloaded = true;
        window.__appended = [];
        new MutationObserver(() => window.__appended.push(document.getElementById('request').dataset.status))
            .observe(document.getElementById('log-lines'), {childList: true});
    }""")
    assert logs.get_attribute("#request", "data-status") == "queued"
    assert re.fullmatch(r"waited \d+\.\d s", logs.inner_text("#durations"))

    # The echo runs for 5 s: its page shows it running, with durations that grow.
    page.goto(f"{live.url}/console/requests/{blocker}")
    page.wait_for_selector("#live-status[data-state=live]")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector("#request[data-status=started] #durations .durations", timeout=15000)

    def ran_seconds():
        text = page.inner_text("#durations")
        match = re.fullmatch(r"waited (\d+\.\d) s · ran (\d+\.\d) s", text)
        assert match, text
        return float(match.group(2))

    first = ran_seconds()
    wait_until(lambda: ran_seconds() >= first + 0.5, timeout=3, message="the run time to grow on screen")

    def shown_progress():
        return int(page.get_attribute("#request-state .progress", "data-progress") or 0)

    progress = shown_progress()
    wait_until(lambda: shown_progress() > progress, timeout=3, message="the progress bar to move in place")
    assert re.fullmatch(r"\d+%", page.inner_text("#request-state .progress-value"))
    page.wait_for_selector("#request[data-status=finished]", timeout=15000)
    assert page.get_attribute("#request-state", "data-status") == "finished"
    assert "Finished" in page.text_content("#request-state .status")
    assert re.fullmatch(r"waited \d+\.\d s · ran [45]\.\d s", page.inner_text("#durations"))
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"

    # primes.count's page went from queued to running to finished, its log growing while it ran.
    logs.wait_for_selector("#request[data-status=finished]", timeout=30000)
    wait_for_js(logs, "document.querySelectorAll('#log-lines li').length === 50", timeout=10)
    lines = logs.locator("#log-lines .log-text").all_inner_texts()
    assert lines[0].startswith("Counting primes up to 100,000,000")
    assert lines[-1] == "Done: 5,761,455 primes up to 100,000,000."
    appended = logs.evaluate("window.__appended")
    assert len([status for status in appended if status != "finished"]) >= 10, appended  # live, not at the end
    assert logs.inner_text("#result-fields dd") == "5,761,455"  # grouped
    waited = re.fullmatch(r"waited (\d+\.\d) s · ran \d+\.\d s", logs.inner_text("#durations"))
    assert waited and float(waited.group(1)) >= 4.0, logs.inner_text("#durations")  # behind the 5 s echo
    assert logs.evaluate("window.__notReloaded === true")
    assert not problems, problems


def test_flash_messages_follow_the_request(chromium, live, make_user):
    make_user("alice")
    page = signed_in_page(chromium, live, "alice")
    submit_echo(page, "followed", delay_ms=1500)
    flash = page.locator(".flashes .flash[data-request-id]")
    wait_until(lambda: flash.inner_text().endswith("finished."), timeout=15, message="the flash to say finished")
    assert re.fullmatch(r"Request #\d+ finished\.", flash.inner_text())
    assert page.evaluate("window.__notReloaded === true")


def test_run_again_prefills_the_form_and_submits_only_on_click(strict_chromium, live, make_user, app):
    user = make_user("alice")
    request_id = submit_as(app, user, "ledger.deposit", {"amount": 1234567, "memo": "rent"})
    page = sign_in(strict_chromium, live, "alice", csp=True)
    page.goto(f"{live.url}/console/requests/{request_id}")
    page.wait_for_selector("#request[data-status=finished]", timeout=15000)
    assert page.inner_text("#result-fields dd") == "1,234,567"
    assert page.inner_text("#payload-fields").replace("\n", " ").replace("\t", " ").count("1,234,567") == 1
    before = count_requests(app)
    page.click("#request-state .run-again")
    page.wait_for_url(re.compile(rf".*/console\?rerun={request_id}$"))
    assert page.input_value("#job-type") == "ledger.deposit"
    assert page.input_value("[name=payload-amount]") == "1234567"
    assert page.input_value("[name=payload-memo]") == "rent"
    assert "Filled in from request #" in page.inner_text("#rerun-note")
    page.wait_for_timeout(500)
    assert count_requests(app) == before  # nothing was submitted by opening the form
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector(".flashes .flash[data-request-id]", timeout=10000)
    wait_until(lambda: count_requests(app) == before + 1, timeout=5, message="the new request")


def test_arrow_keys_on_the_job_type_keep_focus_and_submit_returns_focus(chromium, live, make_user):
    make_user("alice")
    page = sign_in(chromium, live, "alice")
    page.wait_for_selector("#live-status[data-state=live]")
    page.evaluate("window.__notReloaded = true")
    assert page.is_hidden("#type-picker button[type=submit]")
    page.focus("#job-type")
    first = page.get_attribute("#submit-form", "data-job-type")
    page.keyboard.press("ArrowDown")
    wait_for_js(page, f"document.getElementById('submit-form').dataset.jobType !== '{first}'", timeout=5)
    second = page.get_attribute("#submit-form", "data-job-type")
    assert page.evaluate("document.activeElement.id") == "job-type"
    assert page.input_value("#job-type") == second
    page.keyboard.press("ArrowDown")
    wait_for_js(page, f"document.getElementById('submit-form').dataset.jobType !== '{second}'", timeout=5)
    assert page.evaluate("document.activeElement.id") == "job-type"
    assert page.url.endswith(f"type={page.input_value('#job-type')}")
    assert page.evaluate("window.__notReloaded === true"), "changing the type reloaded the page"

    # After a submit with an error, focus is on the field at fault; after a good one, on the form's first field.
    # A page of its own for the deposit form: choosing it in the picker could leave the swap of a
    # form the picker already showed in flight, replacing the field after it was filled.
    page.goto(f"{live.url}/console?type=ledger.deposit")
    page.wait_for_selector("#submit-form[data-job-type='ledger.deposit']")
    page.evaluate("window.__notReloaded = true")
    page.fill("[name=payload-amount]", "0")
    page.evaluate("document.querySelector('[name=payload-amount]').removeAttribute('min')")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#submit-form [aria-invalid=true]", timeout=10000)
    assert page.evaluate("document.activeElement.name") == "payload-amount"
    page.fill("[name=payload-amount]", "5")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector(".flashes .flash[data-request-id]", timeout=10000)
    assert page.evaluate("document.getElementById('submit-form').contains(document.activeElement)")
    assert page.evaluate("document.activeElement.name") == "payload-amount"
    assert page.evaluate("window.__notReloaded === true")


def test_times_are_relative_with_the_exact_time_on_hover(chromium, live, make_user, app):
    user = make_user("alice")
    request_id = submit_as(app, user, "echo", {"message": "timed", "delay_ms": 200})
    page = sign_in(chromium, live, "alice")
    page.wait_for_selector(f"#results #request-{request_id}.finished", timeout=15000)
    for path in ("/console", "/console/history", f"/console/requests/{request_id}"):
        page.goto(f"{live.url}{path}")
        stamp = page.locator("time[data-relative]").first
        wait_for_js(page, "document.querySelector('time[data-relative]').hasAttribute('data-exact')", timeout=5)
        assert re.fullmatch(r"just now|\d+ s ago", stamp.inner_text()), (path, stamp.inner_text())
        title = stamp.get_attribute("title")
        assert re.search(r"\d{1,2}:\d{2}:\d{2}", title) and title.endswith("UTC)"), title
        assert re.search(r"waited \d+\.\d s · ran 0\.\d s", page.inner_text("body")), path


def test_admin_charts_draw_real_traffic_and_change_without_reload(strict_chromium, live, make_user, app, tmp_path):
    alice, bob = make_user("alice"), make_user("bob")
    make_user("root", admin=True)
    for n in range(4):
        submit_as(app, alice, "echo", {"message": f"a{n}", "delay_ms": 100})
        submit_as(app, bob, "echo", {"message": f"b{n}", "delay_ms": 150})
    failing = submit_as(app, alice, "ledger.withdraw", {"amount": 10})
    page = sign_in(strict_chromium, live, "root", viewport=DESKTOP, csp=True)
    problems = watch_errors(page)
    wait_until(lambda: count_ended(app) == 9, timeout=30, message="the first traffic to end")
    page.goto(f"{live.url}/admin")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector("#updated[data-state=live]", timeout=15000)
    for name in ("throughput", "wait", "run", "lanes"):
        figure = page.locator(f"[data-chart={name}]")
        assert figure.locator("canvas").count() == 1, name
        assert float(figure.get_attribute("data-total")) > 0, name
    assert page.get_attribute("[data-chart=throughput]", "data-total") == "9"  # 8 finished + 1 failed
    assert page.inner_text("#tile-failed") == "1"
    assert re.fullmatch(r"Live: updated \d+ s ago \(every 5 s\)\.", page.inner_text("#updated"))
    shot = Path(os.environ.get("LANES_ADMIN_SCREENSHOT", tmp_path / "admin.png"))

    # More traffic: the charts and tiles change on their own, and a running job shows as a link.
    slow = submit_as(app, bob, "echo", {"message": "slow", "delay_ms": 9000})
    for n in range(3):
        submit_as(app, alice, "echo", {"message": f"more {n}"})
    wait_for_js(page, "document.querySelector('[data-chart=throughput]').dataset.total === '12'", timeout=30)
    page.wait_for_selector(f"#workers a[href='/admin/requests/{slow}']", timeout=15000)
    assert page.inner_text("#tile-finished") == "11"
    page.screenshot(path=str(shot), full_page=True)
    page.click(f"#workers a[href='/admin/requests/{slow}']")
    page.wait_for_selector("#request h1")
    assert f"Request #{slow}" in page.inner_text("#request h1") and "bob" in page.inner_text(".facts")
    with app.app_context():
        from webapp.extensions import db
        from webapp.models import LaneRequest

        assert db.session.get(LaneRequest, failing).error_code == "insufficient_funds"
    assert not problems, problems


def count_ended(app):
    from webapp.extensions import db
    from webapp.models import TERMINAL_STATUSES, LaneRequest

    with app.app_context():
        count = db.session.query(LaneRequest).filter(LaneRequest.status.in_(TERMINAL_STATUSES)).count()
        db.session.rollback()
        return count


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1366x800", "390x844"])
def test_no_page_scrolls_sideways(chromium, live, make_user, app, viewport):
    user = make_user("alice", admin=True)
    ids = [submit_as(app, user, "echo", {"message": "a fairly long message " * 8, "delay_ms": 50}) for _ in range(3)]
    ids.append(submit_as(app, user, "report.export", {"format": "csv"}))
    page = sign_in(chromium, live, "alice", viewport=viewport)
    wait_until(lambda: count_ended(app) == 4, timeout=30, message="the requests to end")
    for path in ("/console", "/console/history", f"/console/requests/{ids[0]}", f"/console/requests/{ids[-1]}",
                 "/admin"):
        page.goto(f"{live.url}{path}")
        page.wait_for_load_state("load")
        if path == "/admin":
            page.wait_for_selector("[data-chart=throughput] canvas", timeout=15000)
        assert no_sideways_scroll(page), (path, page.evaluate("document.documentElement.scrollWidth"))
    if viewport == PHONE:  # tables are stacked rows there: each cell names its column
        page.goto(f"{live.url}/console/history")
        assert page.evaluate("getComputedStyle(document.querySelector('#history tbody tr')).display") == "block"
        assert page.evaluate("getComputedStyle(document.querySelector('#history thead')).position") == "absolute"


def test_the_api_reference_renders_from_vendored_files_under_a_strict_policy(strict_chromium, live, make_user):
    make_user("alice")
    page = sign_in(strict_chromium, live, "alice", csp=True)
    problems = watch_errors(page)
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{live.url}/api/v1/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/requests/{id}/rerun']", timeout=20000)
    assert page.locator(".opblock-summary-path[data-path='/requests/{id}/logs']").count() == 1
    assert page.locator(".opblock").count() == 11  # every operation of the document
    assert all(url.startswith(live.url) or url.startswith("data:") for url in requested), requested
    assert not problems, problems
