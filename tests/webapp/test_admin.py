"""``/admin`` and rq-dashboard at ``/admin/rq``: admins only; what an operator sees there."""

from __future__ import annotations

import re

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
    assert "<td>2</td>" in row  # two jobs in the queue
    assert "no worker" in row
    assert row.rstrip().endswith("<td>yes</td>")  # waiting for a worker
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
            cells = re.findall(r"<td>(.*?)</td>", row, re.S)
            if cells[1:] == [pid, "busy", f"lane:{people['alice']}", str(slow)]:
                return html
        return None

    html = wait_until(busy_worker_row, timeout=20, message="the lane worker, busy with the request, on the admin page")
    supervisors = section(html, "supervisors")
    assert supervisors.count("<li>") == 1 and "heartbeat" in supervisors
    lane_row = re.search(rf'<tr data-user-id="{people["alice"]}">(.*?)</tr>', section(html, "active-lanes"), re.S)
    assert "no worker" not in lane_row.group(1)  # its lease holder is named
    assert lane_row.group(1).rstrip().endswith("<td>no</td>")  # served, so not waiting for a worker

    def finished_counted():
        page = browser.client.get("/admin").get_data(as_text=True)
        return re.search(r'<tr data-status="finished"><th scope="row">Finished</th><td>1</td>', page) and page

    page = wait_until(finished_counted, timeout=20, message="the finished request counted")
    per_minute = [int(n) for n in re.findall(r'<tr data-count="(\d+)">', section(page, "finished-per-minute"))]
    assert len(per_minute) == 15 and sum(per_minute) == 1


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
