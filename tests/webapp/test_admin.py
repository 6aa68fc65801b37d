"""``/admin`` and rq-dashboard at ``/admin/rq``: admins only; what an operator sees there."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from tests.conftest import wait_until
from webapp.lanes import service


@pytest.fixture
def people(make_user):
    return {"alice": make_user("alice"), "root": make_user("root", admin=True)}


def section(html: str, element_id: str) -> str:
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"', html)
    assert match, f"no element #{element_id}"
    return html[match.start(): html.index(f"</{match.group(1)}>", match.end())]


@pytest.mark.parametrize("path", ["/admin", "/admin/rq", "/admin/rq/", "/admin/rq/0/data/queues.json"])
def test_anonymous_visitors_are_sent_to_login(browser, path):
    response = browser.client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login?next=%2Fadmin")


@pytest.mark.parametrize("path", ["/admin", "/admin/rq", "/admin/rq/", "/admin/rq/0/data/queues.json"])
def test_non_admins_get_403(browser, people, path):
    browser.login("alice")
    response = browser.client.get(path)
    assert response.status_code == 403
    assert "This page is for administrators." in response.get_data(as_text=True)


def test_non_admins_cannot_use_rq_dashboard_actions(browser, people):
    browser.login("alice")
    response = browser.client.post(f"/admin/rq/queue/lane:{people['alice']}/queued/empty")
    assert response.status_code == 403


def test_admin_page_shows_lanes_with_work_and_counts(app, browser, people):
    with app.app_context():
        for message in ("a", "b"):
            service.submit_request(people["alice"], "echo", {"message": message})
    browser.login("root")
    response = browser.client.get("/admin")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    lanes = section(html, "active-lanes")
    row = re.search(rf'<tr data-user-id="{people["alice"]}">(.*?)</tr>', lanes, re.S).group(1)
    assert f"lane:{people['alice']}" in row and "alice" in row
    assert '<td data-label="Jobs in queue">2</td>' in row  # two jobs in the queue
    assert "no worker" in row
    assert row.rstrip().endswith('<td data-label="Waiting for a worker">yes</td>')
    # the lane links to its queue in rq-dashboard
    assert f'<a href="/admin/rq/0/view/jobs/lane:{people["alice"]}/queued/8/asc/1">' in row
    assert re.search(r'<tr data-status="queued"><th scope="row">Queued</th><td>2</td>', html)
    assert 'href="/admin/rq/"' in html and 'href="/metrics"' in html
    assert "No RQ workers are running" in html


def test_admin_page_lists_workers_supervisors_and_throughput(app, browser, people, start_worker):
    with app.app_context():
        slow = service.submit_request(people["alice"], "echo", {"message": "slow", "delay_ms": 3000}).request.id
    start_worker()
    browser.login("root")

    def busy_worker_row():
        html = browser.client.get("/admin").get_data(as_text=True)
        if 'id="workers"' not in html:
            return None
        for pid, row in re.findall(r'<tr data-pid="(\d+)">(.*?)</tr>', section(html, "workers"), re.S):
            cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
            current_job = f'<a href="/admin/requests/{slow}">#{slow}</a>'  # links to the request
            if cells[1:] == [pid, "busy", f"lane:{people['alice']}", current_job]:
                return html
        return None

    html = wait_until(busy_worker_row, timeout=20, message="the lane worker, busy with the request, on the admin page")
    supervisors = section(html, "supervisors")
    assert supervisors.count("<li>") == 1 and "heartbeat" in supervisors
    lane_row = re.search(rf'<tr data-user-id="{people["alice"]}">(.*?)</tr>', section(html, "active-lanes"), re.S)
    assert "no worker" not in lane_row.group(1)  # its lease holder is named
    assert lane_row.group(1).rstrip().endswith('<td data-label="Waiting for a worker">no</td>')  # served

    def finished_counted():
        page = browser.client.get("/admin").get_data(as_text=True)
        return re.search(r'<tr data-status="finished"><th scope="row">Finished</th><td>1</td>', page) and page

    page = wait_until(finished_counted, timeout=20, message="the finished request counted")
    per_minute = [int(n) for n in re.findall(r'<tr data-count="(\d+)">', section(page, "finished-per-minute"))]
    assert len(per_minute) == 60 and sum(per_minute) == 1
    detail = browser.client.get(f"/admin/requests/{slow}").get_data(as_text=True)  # where "current job" led
    assert "Finished" in detail and "alice" in detail and "slow" in detail


def test_rq_dashboard_renders_for_admins_and_lists_the_lane(app, browser, people):
    with app.app_context():
        service.submit_request(people["alice"], "echo", {"message": "hi"})
    browser.login("root")
    assert browser.client.get("/admin/rq").headers["Location"] == "/admin/rq/"
    page = browser.client.get("/admin/rq/")
    assert page.status_code == 200
    assert "RQ-dashboard" in page.get_data(as_text=True)
    queues = browser.client.get("/admin/rq/0/data/queues.json")
    assert queues.status_code == 200
    listed = {queue["name"]: queue["count"] for queue in queues.get_json()["queues"]}
    assert listed[f"lane:{people['alice']}"] == 1
    assert browser.client.get("/admin/rq/static/css/main.css").status_code == 200  # assets served locally


def test_rq_dashboard_actions_work_for_admins_from_its_own_pages(app, browser, people):
    with app.app_context():
        service.submit_request(people["alice"], "echo", {"message": "hi"})
    browser.login("root")
    # What the dashboard's own buttons send: a POST whose Origin is this site.
    response = browser.client.post(
        f"/admin/rq/queue/lane:{people['alice']}/compact", headers={"Origin": "http://localhost"}
    )
    assert response.status_code == 200
    assert response.get_json() == {"status": "OK"}


def test_the_rq_dashboard_has_no_default_queue_and_leads_back_to_admin(app, browser, people, redis_client):
    with app.app_context():
        service.submit_request(people["alice"], "echo", {"message": "hi"})
    browser.login("root")
    jobs = browser.client.get("/admin/rq/0/view/jobs", follow_redirects=True)
    html = jobs.get_data(as_text=True)
    assert jobs.status_code == 200
    assert jobs.request.path == f"/admin/rq/0/view/jobs/lane:{people['alice']}/queued/8/asc/1"
    assert "default" not in re.sub(r"<script.*?</script>", "", html, flags=re.S)  # no phantom queue named
    assert redis_client.smembers("rq:queues") == {f"rq:queue:lane:{people['alice']}".encode()}
    for page in (html, browser.client.get("/admin/rq/").get_data(as_text=True)):
        assert '<a class="navbar-brand" href="/admin" id="lanes-admin-link">' in page
        assert "result_ttl=0" in page

    redis_client.flushdb()  # no lane at all: the Jobs tab shows the (empty) queue list instead
    empty = browser.client.get("/admin/rq/0/view/jobs")
    assert empty.status_code == 302 and empty.headers["Location"] == "/admin/rq/"


def test_admin_explains_rq_dashboard_and_links_grafana_when_set(app, settings, browser, people):
    browser.login("root")
    html = browser.client.get("/admin").get_data(as_text=True)
    explained = section(html, "rq-explained")
    assert "result_ttl=0" in explained and "Finished" in explained and "default" in explained
    assert 'id="grafana-link"' not in html
    app.config["LANES_GRAFANA_URL"] = "http://127.0.0.1:3000/d/lanes"
    html = browser.client.get("/admin").get_data(as_text=True)
    assert '<a class="button" href="http://127.0.0.1:3000/d/lanes" id="grafana-link"' in html
    app.config["LANES_GRAFANA_URL"] = "javascript:alert(1)"
    assert 'id="grafana-link"' not in browser.client.get("/admin").get_data(as_text=True)


def test_overview_json_counts_per_minute_from_the_request_log(app, browser, people):
    from datetime import timedelta

    from webapp.admin.charts import percentile
    from webapp.extensions import db
    from webapp.models import LaneRequest, utcnow

    now = utcnow().replace(second=30, microsecond=0)
    minute_ago = now - timedelta(minutes=1)
    with app.app_context():
        ids = [service.submit_request(people["alice"], "echo", {"message": str(n)}).request.id for n in range(6)]
        ids.append(service.submit_request(people["root"], "echo", {"message": "root"}).request.id)
        # alice: five ended a minute ago (4 finished, 1 failed) after waiting 1..5 s and running 2..10 s
        for n, request_id in enumerate(ids[:5], start=1):
            row = db.session.get(LaneRequest, request_id)
            row.created_at = minute_ago - timedelta(seconds=20)
            row.started_at = row.created_at + timedelta(seconds=n)
            row.ended_at = row.started_at + timedelta(seconds=2 * n)
            row.status = "failed" if n == 5 else "finished"
        # alice's sixth runs now; root's waits
        running = db.session.get(LaneRequest, ids[5])
        running.status, running.started_at = "started", now - timedelta(seconds=1)
        db.session.commit()
    browser.login("root")
    response = browser.client.get("/admin/overview.json")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    series = body["series"]
    assert len(series["minutes"]) == 60 and all(b - a == 60 for a, b in pairwise(series["minutes"]))
    at = series["minutes"].index(int(minute_ago.replace(second=0).timestamp()))
    assert (series["finished"][at], series["failed"][at]) == (4, 1)
    assert sum(series["finished"]) == 4 and sum(series["failed"]) == 1
    assert series["run_p50"][at] == 6.0 and series["run_p95"][at] == round(percentile([2, 4, 6, 8, 10], 0.95), 3)
    waits = [w for w in series["wait_p50"] if w is not None]
    assert 3.0 in waits  # the five started a minute ago waited 1..5 s: median 3
    assert series["lanes_with_work"][-1] == 2  # alice (running) and root (waiting)
    assert series["lanes_running"][-1] == 1
    assert series["lanes_with_work"][0] == 0
    assert body["counts_last_hour"]["finished"] == 4
    assert {lane["username"] for lane in body["lanes"]} == {"alice", "root"}
    assert all(lane["url"].startswith("/admin/rq/0/view/jobs/lane:") for lane in body["lanes"])
    alice = browser.client.get("/admin/overview.json")
    browser.logout()
    browser.login("alice")
    assert browser.client.get("/admin/overview.json").status_code == 403
    assert browser.client.get(f"/admin/requests/{ids[0]}").status_code == 403
    assert alice.status_code == 200


def test_percentile_interpolates_like_postgresql():
    from webapp.admin.charts import percentile

    assert percentile([], 0.5) is None
    assert percentile([4.0], 0.95) == 4.0
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([10, 20, 30, 40, 50], 0.95) == 48.0
