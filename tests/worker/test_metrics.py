"""Operators' numbers: each supervisor's metrics port and the web process's /metrics."""

from __future__ import annotations

import re
import urllib.request

from sqlalchemy import func, select

from tests.conftest import free_port, wait_until
from webapp.extensions import db
from webapp.lanes.service import submit_request
from webapp.models import LaneRequest


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample in Prometheus text format (None when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
        if found == wanted:
            return float(match.group(3))
    return None


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def finished_count(app, user) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count()).where(LaneRequest.user_id == user, LaneRequest.status == "finished")
        )
        db.session.rollback()
        return count


def test_supervisor_metrics_count_jobs_run_by_its_lane_workers(app, make_user, start_worker):
    user = make_user("alice")
    port = free_port()
    start_worker(LANES_WORKER_METRICS_PORT=port)
    with app.app_context():
        for n in range(3):
            submit_request(user, "echo", {"message": str(n)})
    wait_until(lambda: finished_count(app, user) == 3, timeout=20, message="three finished requests")

    def totals():
        text = scrape(port)
        return text if sample(text, "lanes_jobs_total", type="echo", status="finished") == 3 else None

    text = wait_until(totals, message="job counters on the metrics port")
    assert sample(text, "lanes_job_duration_seconds_count", type="echo") == 3
    assert sample(text, "lanes_lane_worker_starts_total") >= 1


def test_a_taken_metrics_port_is_logged_and_not_fatal(app, make_user, start_worker):
    port = free_port()
    supervisors = [start_worker(LANES_WORKER_METRICS_PORT=port) for _ in range(2)]
    wait_until(lambda: any("unavailable" in s.output() for s in supervisors), message="one to log the taken port")
    assert sum("unavailable" in s.output() for s in supervisors) == 1
    assert all(s.process.poll() is None for s in supervisors), "a supervisor died over its metrics port"
    assert "lanes_supervisor_lane_workers" in scrape(port)


def test_web_metrics_use_the_exporters_default_names(start_web):
    web = start_web()
    urllib.request.urlopen(f"{web.url}/healthz", timeout=5).read()
    with urllib.request.urlopen(f"{web.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert sample(text, "flask_http_request_total", method="GET", status="200") >= 1
    assert "flask_http_request_duration_seconds_bucket" in text
