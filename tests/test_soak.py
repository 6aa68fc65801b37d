"""``make soak`` in short: two minutes of mixed traffic under every kind of fault, and nothing violated.

The soak starts its own PostgreSQL cluster and redis-server (it stops, kills, flushes and
freezes them), gunicorn and two supervisors, so it needs Debian's PostgreSQL server programs
and a redis-server; in CI their absence fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SEED = 20261203
SECONDS = 120
# Setup, 120 s of traffic, up to 60 s of retries and 180 s of drain, and the stops: within this.
RUN_LIMIT_SECONDS = SECONDS + 420
FAULT_KINDS = ["lane_worker_kill", "supervisor_kill", "web_kill", "redis_flushall", "redis_restart",
               "redis_refuse", "redis_freeze", "postgres_stop"]


def servers_missing() -> str | None:
    from bench.soak.servers import ServerError, postgres_bin_dir, redis_server_binary

    try:
        postgres_bin_dir()
        redis_server_binary()
    except ServerError as problem:
        return str(problem)
    return None


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.timeout(RUN_LIMIT_SECONDS + 180)
def test_two_minutes_of_faults_lose_duplicate_reorder_and_overlap_nothing(tmp_path):
    missing = servers_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the soak needs its own servers: {missing}")
        pytest.skip(missing)
    results = tmp_path / "soak.json"
    env = {key: value for key, value in os.environ.items() if key not in {"SOAK_SECONDS", "SOAK_SEED"}}
    soak = subprocess.Popen(
        [sys.executable, "-m", "bench.soak", "--seconds", str(SECONDS), "--seed", str(SEED), "--json", str(results)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        stdout, _ = soak.communicate(timeout=RUN_LIMIT_SECONDS)
    except subprocess.TimeoutExpired:
        soak.terminate()  # SIGTERM: the soak stops its servers and processes before it exits
        stdout, _ = soak.communicate(timeout=120)
    output = stdout[-8000:]
    assert results.exists(), f"the soak did not get to judge (exit {soak.returncode}):\n{output}"
    report = json.loads(results.read_text())

    fired = {row["kind"]: row["count"] for row in report["faults"]}
    assert {kind: fired.get(kind, 0) for kind in FAULT_KINDS if fired.get(kind, 0) < 1} == {}, output
    assert all(row["errors"] == 0 for row in report["faults"]), output
    totals = report["totals"]
    assert totals["unaudited"] == 0, output  # the audit saw every start, so its verdict covers every run
    assert totals["acknowledged"] >= 300, output  # 8 users for two minutes, faults and all
    assert totals["finished"] >= totals["acknowledged"] - totals["worker_lost"] - totals["failed"], output

    # The verdict: nothing lost, duplicated, overlapping, reordered, off the ledger, failed or 500.
    violations = {kind: totals[kind] for kind in ("lost", "duplicated", "concurrent", "reordered", "ledger",
                                                  "failed", "http_500", "bad_answer", "ambiguous_503")}
    assert violations == dict.fromkeys(violations, 0), output
    assert soak.returncode == 0, output
    assert "PASS: no violation." in stdout

    # It stopped what it started.
    settings = report["settings"]
    assert not answers(settings["redis_port"]) and not answers(settings["postgres_port"])
    assert not Path(settings["scratch"]).exists()
