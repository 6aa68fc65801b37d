"""``make bench`` as a smoke run: ``python -m bench --quick`` against the test database and Redis.

It must finish with exit 0, report every measurement as a number, and leave nothing behind:
no users or rows in the database, no keys in Redis, no processes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from tests.conftest import ROOT, fresh_database
from webapp.config import sqlalchemy_url

SCENARIOS = ["celery", "rq", "drain", "warm", "cold", "throughput", "idle", "targets"]
PEER_ROWS = {"burst: N submitted -> all results seen", "drain: backlog of N, gate opened -> last job ran",
             "warm turnaround: submit returned -> result seen"}
TARGET_COUNT = 8


@pytest.fixture
def bench_database(tmp_path):
    """An empty database of its own: PostgreSQL when TEST_DATABASE_URL is set, else SQLite."""
    with fresh_database(tmp_path) as url:
        yield url


def live_processes_with(marker: str) -> list[str]:
    """Processes whose environment holds ``marker`` (everything the bench started inherits it)."""
    needle = marker.encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if needle in (entry / "environ").read_bytes() and state != "Z":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {command}")
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(400)  # the peers start workers of their own: slow on a busy shared machine
def test_a_quick_run_measures_every_scenario_and_leaves_nothing_behind(bench_database, redis_url, tmp_path):
    channel = f"lanes-bench-test-{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "LANES_INSTANCE_DIR", "LANES_SOCKETIO_CHANNEL"}}
    env.update(DATABASE_URL=bench_database, REDIS_URL=redis_url, LANES_SOCKETIO_CHANNEL=channel,
               PYTHONUNBUFFERED="1")
    keys_before = set(redis.Redis.from_url(redis_url).keys("*"))
    results = tmp_path / "latest.json"

    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results", str(results)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=360,
    )

    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Targets met:" in done.stdout
    document = json.loads(results.read_text())
    assert [scenario["name"] for scenario in document["scenarios"]] == SCENARIOS
    for scenario in document["scenarios"]:
        assert scenario["error"] is None, scenario
        assert scenario["measurements"], scenario["name"]
        for measurement in scenario["measurements"]:
            assert is_number(measurement["value"]), (scenario["name"], measurement)
            assert measurement["met"] in (True, False, None)
            for statistic in (measurement["stats"] or {}).values():
                assert is_number(statistic), (scenario["name"], measurement)
    by_name = {s["name"]: {m["name"]: m for m in s["measurements"]} for s in document["scenarios"]}
    for peer in ("celery", "rq"):
        assert PEER_ROWS <= set(by_name[peer]), (peer, sorted(by_name[peer]))
        assert all(by_name[peer][row]["value"] > 0 for row in PEER_ROWS), by_name[peer]
        assert by_name[peer]["  worker Redis commands per job, drain"]["value"] > 0  # counting reached the peer
    assert "Peer: celery " in done.stdout and "Peer: rq " in done.stdout
    # Every target of the issue is judged (met or not) from numbers of this run.
    targets = document["scenarios"][-1]["measurements"]
    judged = [t for t in targets if t["target"]]
    assert len(judged) == TARGET_COUNT and all(t["met"] in (True, False) for t in judged), judged
    assert by_name["targets"]["end-to-end throughput / Celery burst"]["value"] == pytest.approx(
        by_name["throughput"]["end to end (first submit -> last finished event)"]["value"]
        / by_name["celery"]["burst: N submitted -> all results seen"]["value"])
    # The worker side's own statements and commands were counted in its processes, lane workers included.
    drain = by_name["drain"]
    assert drain["requests not finished"]["value"] == 0
    assert drain["  worker side database statements per job"]["value"] >= 1  # at least the claim of each job
    assert drain["  worker side Redis commands per job"]["value"] >= 1
    assert by_name["throughput"]["  web: database statements per request"]["value"] >= 1  # the insert
    assert "load average" in document["environment"] and "at the end" in document["environment"]["load average"]
    missing = [m for s in document["scenarios"] for m in s["measurements"] if "missing" in m["name"]]
    assert missing and all(m["value"] == 0 for m in missing), missing
    assert {"database", "redis", "cpus"} <= set(document["environment"])

    assert live_processes_with(f"LANES_SOCKETIO_CHANNEL={channel}") == []
    assert set(redis.Redis.from_url(redis_url).keys("*")) <= keys_before
    assert_database_empty(bench_database)


def assert_database_empty(url: str) -> None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as connection:
            for table in ("users", "api_tokens", "lane_requests"):
                assert connection.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table
    finally:
        engine.dispose()


def run_bench_tool(module: str, argument: str, bench_database: str, redis_url: str):
    """``python -m <module> <argument>`` on the bench's database and Redis: its completed process."""
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "LANES_INSTANCE_DIR"}}
    env.update(DATABASE_URL=bench_database, REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", module, argument], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_worker_stages_serves_the_jobs_and_reports_every_stage(bench_database, redis_url):
    keys_before = set(redis.Redis.from_url(redis_url).keys("*"))

    done = run_bench_tool("bench.worker_stages", "5", bench_database, redis_url)

    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    headline, header, *stages = done.stdout.strip().splitlines()
    assert headline.startswith("Lane worker, 5 echo jobs served back to back: ")
    assert header.split() == ["stage", "wall", "CPU"]
    from bench.worker_stages import STAGES

    names = list(dict.fromkeys(stage for stage, _module, _attribute in STAGES))  # a stage may wrap two functions
    assert len(stages) == len(names)
    for line, stage in zip(stages, names, strict=True):
        assert line.strip().startswith(stage)
        wall, cpu = float(line.split()[-4]), float(line.split()[-2])
        assert wall > 0 and cpu > 0, f"{stage} was never timed"
    assert set(redis.Redis.from_url(redis_url).keys("*")) <= keys_before
    assert_database_empty(bench_database)


def test_web_costs_splits_a_submit_into_server_floor_flask_floor_and_submit(bench_database, redis_url):
    keys_before = set(redis.Redis.from_url(redis_url).keys("*"))

    done = run_bench_tool("bench.web_costs", "40", bench_database, redis_url)

    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    headline, *lines = done.stdout.strip().splitlines()
    assert headline == "CPU per call, 40 calls each (no profiler):"
    figures = {line.split("(")[0].strip(): float(line.split()[-2]) for line in lines}
    assert list(figures) == ["HTTP server floor", "Flask floor", "Flask submit"]
    assert all(value > 0 for value in figures.values()), figures
    assert figures["Flask submit"] > figures["Flask floor"], "a submit does more than a 404"
    assert set(redis.Redis.from_url(redis_url).keys("*")) <= keys_before
    assert_database_empty(bench_database)


@pytest.mark.timeout(300)
def test_profile_samples_the_lane_workers_while_they_drain(bench_database, redis_url):
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "LANES_INSTANCE_DIR", "LANES_SOCKETIO_CHANNEL"}}
    channel = f"lanes-bench-test-{uuid.uuid4().hex[:8]}"
    env.update(DATABASE_URL=bench_database, REDIS_URL=redis_url, LANES_SOCKETIO_CHANNEL=channel,
               PYTHONUNBUFFERED="1")
    keys_before = set(redis.Redis.from_url(redis_url).keys("*"))

    done = subprocess.run([sys.executable, "-m", "bench.profile", "worker", "--count", "40", "--lanes", "2",
                           "--rate", "500"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)

    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    by_process = done.stdout.split("by process:")[1].split("top ")[0]
    # py-spy followed the lane workers worker.py forked after it attached, and saw Lanes' job path.
    assert "lane workers" in by_process, done.stdout
    totals = done.stdout.split("by total (with callees)")[1]
    assert "LaneWorker.serve (webapp/lanes/lane_worker.py" in totals, done.stdout
    assert live_processes_with(f"LANES_SOCKETIO_CHANNEL={channel}") == []
    assert set(redis.Redis.from_url(redis_url).keys("*")) <= keys_before
    assert_database_empty(bench_database)
