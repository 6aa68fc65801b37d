"""The live console in a real browser (Debian's Chromium driven by Playwright): no reload needed."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.conftest import PASSWORD, wait_until
from webapp.lanes.service import submit_request


def signed_in_page(chromium, web, username):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{web.url}/auth/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.url}/console*")
    page.wait_for_selector("#live-status[data-state=live]")
    page.evaluate("window.__notReloaded = true")
    return page


def submit_echo(page, message, delay_ms=0):
    page.fill("[name=payload-message]", message)
    page.fill("[name=payload-delay_ms]", str(delay_ms))
    page.evaluate("document.querySelectorAll('.flashes').forEach(el => el.dataset.old = '1')")
    page.click("#submit-form button[type=submit]")
    # The new flash names the request; it follows the request, so it may already say it runs or finished.
    page.wait_for_selector(".flashes:not([data-old]) .flash[data-request-id]", timeout=10000)
    flash = page.inner_text(".flashes:not([data-old]) .flash[data-request-id]")
    assert re.fullmatch(r"Request #\d+ (queued \(position \d+\)|is running|finished)\.", flash), flash


def test_requests_finish_in_order_on_screen_without_a_reload(chromium, live, make_user, tmp_path):
    make_user("alice")
    page = signed_in_page(chromium, live, "alice")
    for n in range(3):
        submit_echo(page, f"hello {n}", delay_ms=600)
    page.wait_for_selector("#running .progress", timeout=10000)
    page.wait_for_selector("#pending li[data-position='1']", timeout=10000)
    shot = Path(os.environ.get("LANES_SCREENSHOT", tmp_path / "console.png"))
    page.screenshot(path=str(shot), full_page=True)

    try:
        # Polled from here: the page's Content-Security-Policy refuses the eval that wait_for_function uses.
        wait_until(lambda: page.evaluate("document.querySelectorAll('#results li.finished').length") == 3,
                   timeout=20, message="three finished requests on screen")
    except Exception:
        print(page.inner_html("#main"))
        raise
    results = page.locator("#results li").all_inner_texts()
    assert "hello 2" in results[0] and "hello 1" in results[1] and "hello 0" in results[2], results
    assert page.locator("#pending li").count() == 0
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def test_the_progress_bar_moves_and_a_running_job_can_be_canceled(chromium, live, make_user):
    make_user("alice")
    page = signed_in_page(chromium, live, "alice")
    submit_echo(page, "long wait", delay_ms=8000)
    page.wait_for_selector("#running progress[value]", timeout=10000)
    seen = set()

    def progress_moved():
        value = page.get_attribute("#running .progress", "data-progress")
        if value:
            seen.add(int(value))
        return len(seen) >= 3

    wait_until(progress_moved, timeout=10, message="the progress bar to move")
    page.click("#running .cancel-form button")
    page.wait_for_selector("#results li.canceled", timeout=5000)
    assert page.locator("#running li").count() == 0
    assert page.evaluate("window.__notReloaded === true")


def test_a_second_users_page_stays_untouched(chromium, live, make_user, app):
    make_user("alice")
    make_user("bob")
    alice = signed_in_page(chromium, live, "alice")
    bob = signed_in_page(chromium, live, "bob")
    bob.evaluate("""() => {
        window.__events = 0;
        window.lanesSocket.onAny(() => { window.__events += 1; });
    }""")
    before = bob.inner_html("#lane")
    submit_echo(alice, "only for alice", delay_ms=300)
    alice.wait_for_selector("#results li.finished", timeout=15000)
    assert bob.evaluate("window.__events") == 0
    assert bob.inner_html("#lane") == before
    assert "only for alice" not in bob.content()


def test_after_a_connection_blip_the_view_catches_up(chromium, live, make_user, app):
    user = make_user("alice")
    page = signed_in_page(chromium, live, "alice")
    page.evaluate("window.lanesSocket.disconnect()")
    page.wait_for_selector("#live-status[data-state=offline]")
    with app.app_context():
        request_id = submit_request(user, "echo", {"message": "while offline"}).request.id
    wait_until(lambda: _finished(app, request_id), timeout=15, message="the request to finish while offline")
    assert page.locator(f"#request-{request_id}").count() == 0
    page.evaluate("window.lanesSocket.connect()")
    page.wait_for_selector(f"#results #request-{request_id}.finished", timeout=10000)
    assert page.evaluate("window.__notReloaded === true")


def _finished(app, request_id):
    from webapp.extensions import db
    from webapp.models import LaneRequest

    with app.app_context():
        status = db.session.get(LaneRequest, request_id).status
        db.session.rollback()
        return status == "finished"


