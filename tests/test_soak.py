"""``make soak`` in short: two minutes of mixed traffic under every kind of fault, and nothing violated;
and half a minute of Sentinel failovers (``--sentinel``), nothing violated either.

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
# Two failovers (one per 12 s of the run after its warm-up), setup and drain: about a minute.
SENTINEL_SECONDS = 30
SENTINEL_RUN_LIMIT_SECONDS = SENTINEL_SECONDS + 300
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


def run_soak(tmp_path: Path, arguments: list[str], limit_seconds: float) -> tuple[dict, str, int]:
    """Run ``python -m bench.soak`` with ``arguments``: (its JSON report, its output, its exit status)."""
    missing = servers_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the soak needs its own servers: {missing}")
        pytest.skip(missing)
    results = tmp_path / "soak.json"
    env = {key: value for key, value in os.environ.items() if key not in {"SOAK_SECONDS", "SOAK_SEED", "SOAK_SENTINEL"}}
    soak = subprocess.Popen(
        [sys.executable, "-m", "bench.soak", *arguments, "--json", str(results)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        stdout, _ = soak.communicate(timeout=limit_seconds)
    except subprocess.TimeoutExpired:
        soak.terminate()  # SIGTERM: the soak stops its servers and processes before it exits
        stdout, _ = soak.communicate(timeout=120)
    output = stdout[-8000:]
    assert results.exists(), f"the soak did not get to judge (exit {soak.returncode}):\n{output}"
    return json.loads(results.read_text()), output, soak.returncode


@pytest.mark.timeout(RUN_LIMIT_SECONDS + 180)
def test_two_minutes_of_faults_lose_duplicate_reorder_and_overlap_nothing(tmp_path):
    report, output, status = run_soak(tmp_path, ["--seconds", str(SECONDS), "--seed", str(SEED)], RUN_LIMIT_SECONDS)

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
    assert status == 0 and "PASS: no violation." in output, output

    # It stopped what it started.
    settings = report["settings"]
    assert not answers(settings["redis_port"]) and not answers(settings["postgres_port"])
    assert not Path(settings["scratch"]).exists()


@pytest.mark.timeout(SENTINEL_RUN_LIMIT_SECONDS + 180)
def test_sentinel_failovers_lose_duplicate_reorder_and_overlap_nothing(tmp_path):
    arguments = ["--sentinel", "--faults", "sentinel_failover", "--seconds", str(SENTINEL_SECONDS), "--seed", str(SEED)]
    report, output, status = run_soak(tmp_path, arguments, SENTINEL_RUN_LIMIT_SECONDS)

    # Two failovers: the second promotes the server the first one killed, which had rejoined as replica.
    failovers = [fault for fault in report["fault_log"] if fault["kind"] == "sentinel_failover"]
    assert [(fault["skipped"], fault["error"]) for fault in failovers] == [("", "")] * 2, output
    first, second = (fault["extra"] for fault in failovers)
    assert (second["old_primary"], second["new_primary"]) == (first["new_primary"], first["old_primary"]), output
    # Lanes with work moved again after each (how fast is the soak's table, not this test's concern).
    assert all(fault["recovery_s"] is not None and not fault["censored"] for fault in failovers), output
    totals = report["totals"]
    assert totals["unaudited"] == 0 and totals["acknowledged"] >= 50, output
    violations = {kind: totals[kind] for kind in ("lost", "duplicated", "concurrent", "reordered", "ledger",
                                                  "failed", "http_500", "bad_answer", "ambiguous_503")}
    assert violations == dict.fromkeys(violations, 0), output
    assert status == 0 and "PASS: no violation." in output, output
    settings = report["settings"]
    assert settings["sentinel"] and not any(answers(port) for port in settings["redis_ports"]), output
    assert not Path(settings["scratch"]).exists()
