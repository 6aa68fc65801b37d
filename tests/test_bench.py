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

SCENARIOS = ["warm", "cold", "throughput", "idle"]


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
        capture_output=True, text=True, timeout=150,
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


def test_worker_stages_serves_the_jobs_and_reports_every_stage(bench_database, redis_url):
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "LANES_INSTANCE_DIR"}}
    env.update(DATABASE_URL=bench_database, REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
    keys_before = set(redis.Redis.from_url(redis_url).keys("*"))

    done = subprocess.run([sys.executable, "-m", "bench.worker_stages", "5"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    headline, *stages = done.stdout.strip().splitlines()
    assert headline.startswith("Lane worker, 5 echo jobs served back to back: ")
    from bench.worker_stages import STAGES

    assert len(stages) == len(STAGES)
    for line, (stage, _module, _attribute) in zip(stages, STAGES, strict=True):
        assert line.strip().startswith(stage)
        assert float(line.split()[-2]) > 0, f"{stage} was never timed"
    assert set(redis.Redis.from_url(redis_url).keys("*")) <= keys_before
    assert_database_empty(bench_database)
