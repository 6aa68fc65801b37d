"""SPEC §3.6: once a user is gone (signed out, no open socket) and their lane is empty, no key names it."""

from __future__ import annotations

from rq import Worker

from tests.conftest import csrf_token_from, wait_until
from tests.webapp.test_realtime import Listener
from tests.worker.test_lane_worker import lane_keys
from webapp.extensions import db
from webapp.models import LaneRequest


def submit_from_console(browser, message: str):
    token = csrf_token_from(browser.client.get("/console").get_data(as_text=True))
    response = browser.client.post(
        "/console/requests",
        data={"csrf_token": token, "type": "echo", "payload-message": message, "payload-delay_ms": "0"},
    )
    assert response.status_code == 302


def all_finished(app, user_id):
    with app.app_context():
        statuses = [row.status for row in db.session.query(LaneRequest).filter_by(user_id=user_id)]
        db.session.rollback()
        return statuses and all(status == "finished" for status in statuses)


def test_signing_out_deletes_the_empty_lane(app, browser, make_user, start_worker, redis_client):
    user = make_user("alice")
    browser.login("alice")
    submit_from_console(browser, "one")
    submit_from_console(browser, "two")
    start_worker(LANES_IDLE_SECONDS="1")
    wait_until(lambda: all_finished(app, user), message="both requests to finish")
    wait_until(lambda: not Worker.all(connection=redis_client), timeout=10, message="the idle worker to exit")
    assert lane_keys(redis_client, user), "the lane of a signed-in user must stay"

    browser.logout()
    # At once when the lane worker is gone; if it is still letting go of its lease, as it does.
    wait_until(lambda: not lane_keys(redis_client, user), timeout=3, message="the lane to be deleted on sign-out")
    assert browser.client.get("/console").status_code == 302  # signed out indeed


def test_pending_requests_still_run_after_sign_out_and_then_the_lane_goes(
    app, browser, make_user, start_worker, redis_client
):
    user = make_user("bob")
    browser.login("bob")
    submit_from_console(browser, "after I leave")
    browser.logout()
    assert lane_keys(redis_client, user), "a lane with work is not deleted"
    start_worker(LANES_IDLE_SECONDS="1")
    wait_until(lambda: all_finished(app, user), message="the request to run after sign-out")
    # Within LANES_IDLE_SECONDS + 5 s of the lane being empty, it is deleted.
    wait_until(lambda: not lane_keys(redis_client, user), timeout=6, message="the lane to be deleted")


def test_an_open_socket_keeps_the_lane_until_the_last_tab_closes(
    app, browser, make_user, make_token, start_web, start_worker, redis_client
):
    user = make_user("carol")
    web = start_web()
    listener = Listener(web.url, make_token(user))
    browser.login("carol")
    submit_from_console(browser, "hi")
    start_worker(LANES_IDLE_SECONDS="1")
    wait_until(lambda: all_finished(app, user), message="the request to finish")
    browser.logout()
    wait_until(lambda: not Worker.all(connection=redis_client), timeout=10, message="the idle worker to exit")
    assert lane_keys(redis_client, user), "an open Socket.IO connection makes the user present"
    listener.close()
    wait_until(lambda: not lane_keys(redis_client, user), timeout=6, message="the lane to go with the last socket")
