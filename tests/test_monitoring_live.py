"""A real Prometheus, with monitoring/'s config and rules, scraping a real web process and
``worker.py`` after some work: every target is up, every rule evaluates, and every panel of
the Grafana dashboards shows data (each query as Grafana would send it, variables filled in).
"""

from __future__ import annotations

import subprocess

import pytest
import requests
import yaml

from tests.conftest import free_port, wait_until
from tests.test_monitoring import (
    INTERVALS,
    PROMETHEUS_YML,
    RULE_FILES,
    VARIABLES,
    dashboard_exprs,
    load_yaml,
    prometheus_program,
)

SCRAPE_SECONDS = 1
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval comes to at this scrape interval, and then some
DASHBOARD_VARIABLES = {"max_workers": "32"}


@pytest.fixture
def prometheus_binary() -> str:
    return prometheus_program("prometheus")


@pytest.fixture
def start_prometheus(prometheus_binary, tmp_path):
    """``start_prometheus(web_target, worker_target)``: monitoring/prometheus with these targets."""
    started = []

    def start(web: str, worker: str) -> str:
        config = load_yaml(PROMETHEUS_YML)
        config["global"].update(scrape_interval=f"{SCRAPE_SECONDS}s", scrape_timeout=f"{SCRAPE_SECONDS}s",
                                evaluation_interval=f"{SCRAPE_SECONDS}s")
        config["rule_files"] = [str(path) for path in RULE_FILES]
        targets = {"lanes-web": web, "lanes-worker": worker}
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")
        process = subprocess.Popen(
            [prometheus_binary, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        url = f"http://127.0.0.1:{port}"

        def ready():
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(ready, timeout=30, message="prometheus to be ready")
        return url

    yield start
    for process, log in started:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query(prometheus: str, expr: str) -> list[dict]:
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def as_grafana_sends_it(expr: str) -> str:
    expr = INTERVALS.sub(RATE_INTERVAL, expr)
    return VARIABLES.sub(lambda found: DASHBOARD_VARIABLES[found.group(0).strip("${}")], expr)


def test_prometheus_scrapes_lanes_and_every_dashboard_panel_shows_data(
    make_user, make_token, start_web, start_worker, start_prometheus
):
    metrics_port = free_port()
    start_worker(LANES_WORKER_METRICS_PORT=str(metrics_port))
    web = start_web()
    prometheus = start_prometheus(web.url.removeprefix("http://"), f"127.0.0.1:{metrics_port}")

    # Some work of every kind: finished, failed and canceled requests.
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {make_token(make_user('mona'))}"

    def submit(type_name, payload):
        response = session.post(f"{web.url}/api/v1/requests", json={"type": type_name, "payload": payload})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait(request_id):
        return session.get(f"{web.url}/api/v1/requests/{request_id}", params={"wait": 30}).json()

    assert [wait(submit("echo", {"message": str(n)}))["status"] for n in range(3)] == ["finished"] * 3
    assert wait(submit("ledger.withdraw", {"amount": 5}))["status"] == "failed"
    slow = submit("echo", {"message": "slow", "delay_ms": 30000})
    wait_until(lambda: session.get(f"{web.url}/api/v1/requests/{slow}").json()["status"] == "started",
               message="the slow request to start")
    assert session.delete(f"{web.url}/api/v1/requests/{slow}").status_code == 202
    assert wait(slow)["status"] == "canceled"

    up = {"lanes-web": "1", "lanes-worker": "1"}
    wait_until(lambda: {s["metric"]["job"]: s["value"][1] for s in query(prometheus, "up")} == up,
               timeout=30, message="both targets to be scraped and up")

    def panels_without_data():
        return [(where, expr) for where, expr in dashboard_exprs()
                if not query(prometheus, as_grafana_sends_it(expr))]

    # Rates need two scrapes after the work, and recorded series a rule evaluation after that.
    wait_until(lambda: not panels_without_data(), timeout=30, interval=1,
               message="every dashboard panel to show data")

    groups = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    evaluated = [rule for group in groups for rule in group["rules"]]
    assert len(evaluated) == sum(len(group["rules"]) for path in RULE_FILES for group in load_yaml(path)["groups"])
    assert [(rule["name"], rule.get("lastError")) for rule in evaluated if rule["health"] != "ok"] == []
    finished = query(prometheus, 'sum(lanes_jobs_total{type="echo", status="finished"})')
    assert float(finished[0]["value"][1]) == 3
