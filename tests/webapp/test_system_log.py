"""The system log (issue 8, items 8 and 5), through a real gunicorn server and real workers.

Sign-ins, sign-outs, tokens, users, admin actions (rq-dashboard's included), worker crashes,
takeovers and deleted lanes land in ``system_events`` with who, what, from where and when, never a
secret; ``/admin/events`` pages and filters them; ``flask events prune`` bounds them. rq-dashboard's
actions are POST-only, same-origin only, and its errors are clear 4xx.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import timedelta

import requests
from sqlalchemy import insert, select

from tests.conftest import FAST_ARGON2, PASSWORD, ROOT, csrf_token_from, wait_until, worker_env
from tests.worker.test_recovery import busy_worker_pid
from webapp.extensions import db
from webapp.lanes.service import submit_request
from webapp.models import SystemEvent, utcnow


def events(app, **where) -> list[SystemEvent]:
    with app.app_context():
        query = select(SystemEvent).order_by(SystemEvent.id)
        for field, value in where.items():
            query = query.where(getattr(SystemEvent, field) == value)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        db.session.remove()
        return rows


def kinds(app) -> list[str]:
    return [event.kind for event in events(app)]


def sign_in(url: str, username: str, password: str = PASSWORD, expect: int = 302) -> requests.Session:
    browser = requests.Session()
    token = csrf_token_from(browser.get(f"{url}/auth/login", timeout=10).text)
    response = browser.post(f"{url}/auth/login", data={"username": username, "password": password, "csrf_token": token},
                            allow_redirects=False, timeout=10)
    assert response.status_code == expect
    return browser


def test_who_did_what_from_where_and_never_a_secret(app, start_web, make_user):
    make_user("root", admin=True)
    make_user("alice")
    web = start_web()
    sign_in(web.url, "alice", "not her password", expect=401)
    alice = sign_in(web.url, "alice")
    created = requests.post(f"{web.url}/api/v1/tokens", json={"username": "alice", "password": PASSWORD,
                                                               "name": "laptop"}, timeout=10)
    assert created.status_code == 201
    plain = created.json()["token"]
    assert requests.delete(f"{web.url}/api/v1/tokens/current", headers={"Authorization": f"Bearer {plain}"},
                           timeout=10).status_code == 204
    alice.post(f"{web.url}/auth/logout", data={"csrf_token": csrf_token_from(alice.get(f"{web.url}/console").text)},
               timeout=10)
    expected = {"user.created", "sign_in.failed", "sign_in.ok", "token.created", "token.revoked", "sign_out"}
    wait_until(lambda: expected <= set(kinds(app)), timeout=10, message=f"{expected} in the system log")

    failed = events(app, kind="sign_in.failed")[0]
    assert (failed.actor, failed.address, failed.details) == ("alice", "127.0.0.1", {"via": "web"})
    revoked = events(app, kind="token.revoked")[0]
    assert (revoked.actor, revoked.subject, revoked.address) == ("alice", "laptop", "127.0.0.1")
    assert events(app, kind="sign_out")[0].actor == "alice"
    for event in events(app):
        text = repr((event.kind, event.actor, event.subject, event.address, event.details))
        assert PASSWORD not in text and plain not in text and "not her password" not in text

    root = sign_in(web.url, "root")
    page = root.get(f"{web.url}/admin/events", timeout=10)
    assert page.status_code == 200
    shown = re.findall(r'data-kind="([^"]+)"', page.text)
    assert expected <= set(shown)
    only_tokens = re.findall(r'data-kind="([^"]+)"', root.get(f"{web.url}/admin/events?kind=token.", timeout=10).text)
    assert sorted(only_tokens) == ["token.created", "token.revoked"]
    about_root = root.get(f"{web.url}/admin/events?name=root", timeout=10).text
    assert "sign_in.ok" in about_root and "token.created" not in about_root
    assert requests.get(f"{web.url}/admin/events", allow_redirects=False, timeout=10).status_code == 302
    assert alice.get(f"{web.url}/admin/events", allow_redirects=False, timeout=10).status_code == 302  # signed out
    make_user("bob")
    bob = sign_in(web.url, "bob")
    assert bob.get(f"{web.url}/admin/events", timeout=10).status_code == 403


def test_the_events_page_pages_newest_first(app, start_web, make_user):
    make_user("root", admin=True)
    with app.app_context():
        db.session.execute(insert(SystemEvent), [
            {"at": utcnow(), "kind": "test.filler", "subject": f"item {index}"} for index in range(70)
        ])
        db.session.commit()
    web = start_web()
    root = sign_in(web.url, "root")
    first = root.get(f"{web.url}/admin/events?kind=test.", timeout=10).text
    subjects = re.findall(r"<td>(item \d+)</td>", first)
    assert subjects == [f"item {index}" for index in range(69, 19, -1)]
    older = re.search(r'href="([^"]+)" id="older"', first).group(1).replace("&amp;", "&")
    second = root.get(f"{web.url}{older}", timeout=10).text
    assert re.findall(r"<td>(item \d+)</td>", second) == [f"item {index}" for index in range(19, -1, -1)]
    assert 'id="older"' not in second
    bad = root.get(f"{web.url}/admin/events?before=abc", timeout=10)
    assert bad.status_code == 400


def test_events_prune_keeps_the_retention_period(app, settings):
    now = utcnow()
    with app.app_context():
        db.session.execute(insert(SystemEvent), [
            {"at": now - timedelta(days=100), "kind": "test.ancient"},
            {"at": now - timedelta(days=40), "kind": "test.old"},
            {"at": now - timedelta(days=1), "kind": "test.recent"},
        ])
        db.session.commit()
    flask = os.path.join(os.path.dirname(sys.executable), "flask")

    def prune(**env):
        full = worker_env(settings, **FAST_ARGON2, **env)
        full.pop("FLASK_APP", None)
        return subprocess.run([flask, "--app", "wsgi", "events", "prune"], capture_output=True, text=True, cwd=ROOT,
                              env=full, timeout=60)

    default = prune()
    assert default.returncode == 0, default.stderr
    assert "Deleted 1 system events older than 90 days." in default.stdout
    assert [k for k in kinds(app) if k.startswith("test.")] == ["test.old", "test.recent"]
    shorter = prune(LANES_EVENT_RETENTION_DAYS="30")
    assert "Deleted 1 system events older than 30 days." in shorter.stdout
    assert [k for k in kinds(app) if k.startswith("test.")] == ["test.recent"]


def test_worker_crashes_takeovers_and_deleted_lanes_are_logged(app, make_user, start_worker, redis_client):
    user = make_user("alice")
    with app.app_context():
        submit_request(user, "echo", {"message": "interrupted", "delay_ms": 3000})
    start_worker(LANES_IDLE_SECONDS="1")
    os.kill(wait_until(lambda: busy_worker_pid(redis_client), message="a lane worker running the job"), signal.SIGKILL)
    # The crash, the next worker putting the interrupted request back, and (alice is not signed in)
    # the lane's deletion once it is empty.
    wait_until(lambda: {"worker.crashed", "lane.taken_over", "lane.deleted"} <= set(kinds(app)), timeout=30,
               message="worker events in the system log")
    lane = f"lane:{user}"
    assert events(app, kind="worker.crashed")[0].subject == lane
    assert events(app, kind="lane.taken_over")[0].subject == lane
    assert events(app, kind="lane.deleted")[-1].subject == lane


def test_rq_dashboard_actions_are_post_only_same_origin_and_logged(app, start_web, make_user):
    user = make_user("alice")
    make_user("root", admin=True)
    with app.app_context():
        submit_request(user, "echo", {"message": "hi"})
    web = start_web()
    root = sign_in(web.url, "root")
    compact = f"{web.url}/admin/rq/queue/lane:{user}/compact"
    assert root.get(f"{web.url}/admin/rq/requeue/lane:{user}", timeout=10).status_code == 405  # no GET that acts
    assert root.post(compact, timeout=10).status_code == 403  # no Origin, no Referer
    assert root.post(compact, headers={"Origin": "http://evil.example"}, timeout=10).status_code == 403
    assert root.post(compact, headers={"Referer": "http://evil.example/x"}, timeout=10).status_code == 403
    same = root.post(compact, headers={"Origin": web.url}, timeout=10)
    assert same.status_code == 200 and same.json() == {"status": "OK"}
    missing = root.post(f"{web.url}/admin/rq/job/no-such-job/requeue", headers={"Origin": web.url}, timeout=10)
    assert missing.status_code == 404
    alice = sign_in(web.url, "alice")
    assert alice.post(compact, headers={"Origin": web.url}, timeout=10).status_code == 403  # admins only
    wait_until(lambda: len(events(app, kind="admin.rq_dashboard")) == 2, timeout=10, message="dashboard actions logged")
    logged = events(app, kind="admin.rq_dashboard")
    assert [(e.actor, e.details["action"]) for e in logged] == [("root", "compact_queue"), ("root", "requeue_job_view")]
