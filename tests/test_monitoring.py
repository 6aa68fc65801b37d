"""monitoring/: promtool accepts the Prometheus config and rules and their unit tests pass; the
rules and the Grafana dashboards only use metrics that the web process and the supervisors export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from tests.conftest import ROOT

MONITORING = ROOT / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus" / "prometheus.yml"
RULE_FILES = sorted((MONITORING / "prometheus" / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((MONITORING / "prometheus" / "tests").glob("*.yml"))
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))

REQUIRED_ALERTS = {
    "LanesWebDown", "LanesWorkerDown", "LanesHigh5xxRate", "LanesLanesWaiting", "LanesLaneWorkerCrashes",
    "LanesJobFailureRatio", "LanesReconcilerRepairing", "LanesSlowQueue",
}

# PromQL, taken apart just enough to find the metric names: what is left once strings, label
# matchers, ranges, grouping clauses and dashboard variables are gone, and that is no function
# call or keyword, is a metric name.
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{[^{}]*\}")
RANGES = re.compile(r"\[[^\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
INTERVALS = re.compile(r"\$__(?:rate_)?interval\b|\$\{__(?:rate_)?interval\}")
IDENTIFIER = re.compile(r"(?<![\w:.])[a-zA-Z_:][\w:]*(?![\w:]|\s*\()")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
JOB_LABEL = re.compile(r'\bjob\s*(?:=|=~)\s*"([^"]*)"')
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\w+)$", re.MULTILINE)


def metric_names(expr: str) -> set[str]:
    stripped = STRINGS.sub(" ", VARIABLES.sub(" ", expr))
    stripped = GROUPING.sub(" ", RANGES.sub(" ", MATCHERS.sub(" ", stripped)))
    return {name for name in IDENTIFIER.findall(stripped) if name.lower() not in KEYWORDS}


def exposed_names(exposition: str) -> set[str]:
    """Series names a scrape of this text exposition yields (a histogram's come with suffixes)."""
    names = set()
    for name, kind in TYPE_LINE.findall(exposition):
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def worker_exposition() -> str:
    """What a supervisor's metrics port describes: every metric of webapp.lanes.worker_metrics."""
    from webapp.lanes import worker_metrics

    registry = CollectorRegistry()
    for value in vars(worker_metrics).values():
        if isinstance(value, MetricWrapperBase):
            registry.register(value)
    return generate_latest(registry).decode()


def load_yaml(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in load_yaml(path)["groups"] for rule in group["rules"]]


def dashboards() -> list[dict]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARDS]


def dashboard_panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included; rows themselves are left out."""
    panels = []
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []) if panel.get("type") == "row" else [panel])
    return panels


def dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (f"{dashboard['title']} / {panel['title']}", target["expr"])
        for dashboard in dashboards() for panel in dashboard_panels(dashboard) for target in panel["targets"]
    ]


# -- promtool ---------------------------------------------------------------------------------


def prometheus_program(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; missing, a failure in CI and a skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install prometheus; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    return prometheus_program("promtool")


def run_promtool(promtool: str, *args) -> str:
    result = subprocess.run([promtool, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    assert "SUCCESS" in output, output
    return output


def test_prometheus_config_is_valid_and_loads_every_rule_file(promtool):
    assert RULE_FILES, "no monitoring/prometheus/rules/*.yml"
    output = run_promtool(promtool, "check", "config", PROMETHEUS_YML)
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output, output
    assert "FAILED" not in output, output


def test_rule_files_are_valid(promtool):
    output = run_promtool(promtool, "check", "rules", *RULE_FILES)
    assert f"SUCCESS: {len(rules())} rules found" in output, output


def test_dashboard_queries_are_valid_promql(promtool, tmp_path):
    """promtool parses each dashboard query as a rule, Grafana's variables filled in."""
    queries = [
        {"record": f"dashboard_query_{number}", "expr": VARIABLES.sub("1", INTERVALS.sub("1m", expr))}
        for number, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": queries}]}), encoding="utf-8")
    output = run_promtool(promtool, "check", "rules", path)
    assert f"SUCCESS: {len(queries)} rules found" in output, output


def test_rule_unit_tests_pass(promtool):
    assert RULE_TEST_FILES, "no monitoring/prometheus/tests/*.yml"
    output = run_promtool(promtool, "test", "rules", *RULE_TEST_FILES)
    assert "FAILED" not in output, output


# -- what the rules and dashboards say --------------------------------------------------------


def test_every_alert_is_labelled_documented_and_unit_tested():
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert REQUIRED_ALERTS <= set(alerts), f"missing alerts: {REQUIRED_ALERTS - set(alerts)}"
    runbook = (MONITORING / "README.md").read_text(encoding="utf-8")

    cases = [case for path in RULE_TEST_FILES for group in load_yaml(path)["tests"]
             for case in group.get("alert_rule_test", [])]
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert alert["annotations"]["summary"].strip(), name
        assert alert["annotations"]["description"].strip(), name
        assert name in runbook, f"{name} has no runbook entry in monitoring/README.md"
        expectations = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == name]
        assert True in expectations, f"no unit test where {name} fires"
        assert False in expectations, f"no unit test where {name} stays quiet"


def test_dashboards_parse_and_have_panels_with_queries():
    assert DASHBOARDS, "no monitoring/grafana/dashboards/*.json"
    uids = [dashboard["uid"] for dashboard in dashboards()]
    assert len(set(uids)) == len(uids), f"dashboard uids repeat: {uids}"
    for dashboard in dashboards():
        assert dashboard["uid"] and dashboard["title"], dashboard.get("title")
        variables = {variable["name"] for variable in dashboard.get("templating", {}).get("list", [])}
        panels = dashboard_panels(dashboard)
        assert panels, dashboard["title"]
        for panel in panels:
            where = f"{dashboard['title']} / {panel.get('title')}"
            assert panel["title"] and panel["targets"], where
            assert all(target["expr"].strip() for target in panel["targets"]), where
            uid = panel["datasource"]["uid"]
            assert uid == "prometheus" or VARIABLES.fullmatch(uid) and uid.strip("${}") in variables, where


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards():
    provisioning = MONITORING / "grafana" / "provisioning"
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert (source["uid"], source["type"]) == ("prometheus", "prometheus")
    assert source["url"] == "http://127.0.0.1:9090"
    (provider,) = load_yaml(provisioning / "dashboards" / "lanes.yml")["providers"]
    assert provider["type"] == "file"
    assert (ROOT / provider["options"]["path"]).resolve() == (MONITORING / "grafana" / "dashboards").resolve()


def test_queries_use_only_metrics_that_lanes_exports(client):
    """A metric renamed in the code (or misspelt here) breaks this test."""
    web_exposition = client.get("/metrics").get_data(as_text=True)
    exported = exposed_names(web_exposition) | exposed_names(worker_exposition())
    assert {"flask_http_request_total", "flask_http_request_duration_seconds_bucket", "lanes_jobs_total",
            "lanes_job_queue_wait_seconds_bucket", "lanes_waiting_lanes"} <= exported
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    known = exported | recorded | {"up"}

    exprs = [(rule.get("record") or rule["alert"], rule["expr"]) for rule in rules()] + dashboard_exprs()
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: found no metric in {expr!r}"
        assert names <= known, f"{where}: unknown metrics {sorted(names - known)} in {expr!r}"

    # The unit tests feed series under the names that are really scraped.
    for path in RULE_TEST_FILES:
        for group in load_yaml(path)["tests"]:
            for series in group["input_series"]:
                name = series["series"].split("{", 1)[0].strip()
                assert name in exported | {"up"}, f"{path.name} ({group.get('name')}): unknown series {name}"


def test_job_labels_name_scrape_jobs():
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS_YML)["scrape_configs"]}
    assert jobs == {"lanes-web", "lanes-worker"}
    exprs = [rule["expr"] for rule in rules()] + [expr for _, expr in dashboard_exprs()]
    for expr in exprs:
        for value in JOB_LABEL.findall(expr):
            assert set(value.split("|")) <= jobs, expr


def test_metric_names_are_found_in_promql():
    expr = ('sum by (type, le) (rate(lanes_job_duration_seconds_bucket{job=~"lanes-.*", le!="+Inf"}'
            '[$__rate_interval] offset 5m)) / on() group_left count(up == 1) * $max_workers '
            'and ignoring (instance) job:flask_http_request:rate5m > bool 1e3')
    assert metric_names(expr) == {"lanes_job_duration_seconds_bucket", "up", "job:flask_http_request:rate5m"}
