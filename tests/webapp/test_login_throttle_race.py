"""Failed sign-in limits that a parallel burst cannot overrun, on a real gunicorn server (issue 8, item 3).

Each attempt takes its place under the limits before its password is checked, so 40 wrong
passwords sent at once for one account get at most 10 checks, and 120 from one address at most
100. The system log shows how many were really checked (``sign_in.failed``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, select

from tests.conftest import FAST_ARGON2, PASSWORD, wait_until
from webapp.extensions import db
from webapp.models import SystemEvent

FAST = {**FAST_ARGON2, "LANES_WEB_THREADS": "200"}  # the cost of a check is not what this is about


def sign_in(url: str, username: str, password: str) -> int:
    return requests.post(f"{url}/api/v1/tokens", json={"username": username, "password": password},
                         timeout=60).status_code


def logged(app, kind: str) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(SystemEvent).where(SystemEvent.kind == kind))
        db.session.remove()
        return count


def test_forty_wrong_passwords_at_once_get_at_most_ten_checks(app, start_web, make_user):
    make_user("alice")
    web = start_web(**FAST)
    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(lambda _: sign_in(web.url, "alice", "wrong password"), range(40)))
    assert statuses.count(401) == 10, statuses
    assert statuses.count(429) == 30, statuses
    wait_until(lambda: logged(app, "sign_in.failed") == 10 and logged(app, "sign_in.throttled") == 30, timeout=10,
               message="10 checked and 30 throttled sign-ins in the system log")
    assert sign_in(web.url, "alice", PASSWORD) == 429  # while throttled even the right password is refused


def test_one_hundred_twenty_at_once_from_one_address_get_at_most_one_hundred_checks(app, start_web):
    web = start_web(**FAST)
    with ThreadPoolExecutor(max_workers=120) as pool:
        statuses = list(pool.map(lambda index: sign_in(web.url, f"ghost{index}", "wrong password"), range(120)))
    assert statuses.count(401) == 100, statuses
    assert statuses.count(429) == 20, statuses
    wait_until(lambda: logged(app, "sign_in.failed") == 100, timeout=10, message="100 checked sign-ins logged")


def test_successful_sign_ins_do_not_count(start_web, make_user):
    make_user("alice")
    web = start_web(**FAST)
    # One after another: an attempt holds its place only while it is being checked.
    assert {sign_in(web.url, "alice", PASSWORD) for _ in range(20)} == {201}
    for _ in range(9):
        assert sign_in(web.url, "alice", "wrong password") == 401
    assert sign_in(web.url, "alice", PASSWORD) == 201  # 9 failures: still under the limit of 10
    assert sign_in(web.url, "alice", "wrong password") == 401  # the 10th failure is checked...
    assert sign_in(web.url, "alice", "wrong password") == 429  # ...the 11th is not
