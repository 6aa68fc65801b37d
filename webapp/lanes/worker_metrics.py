"""Prometheus metrics of the worker side, served on each supervisor's metrics port.

Lane workers are forked children, so the metrics use prometheus_client's multiprocess mode:
``worker.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before anything imports
prometheus_client, every process writes its samples there, and the supervisor serves the sum.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server

log = logging.getLogger(__name__)

LANE_WORKERS = Gauge("lanes_supervisor_lane_workers", "Lane workers this supervisor runs now",
                     multiprocess_mode="livesum")
READY_LANES = Gauge("lanes_ready_lanes", "Lanes with work, served or waiting (cluster-wide)",
                    multiprocess_mode="livemax")
WAITING_LANES = Gauge("lanes_waiting_lanes", "Lanes with work and no worker (cluster-wide)",
                      multiprocess_mode="livemax")
WORKER_STARTS = Counter("lanes_lane_worker_starts_total", "Lane workers forked")
WORKER_EXITS = Counter("lanes_lane_worker_exits_total", "Lane workers reaped, by outcome", ["outcome"])
REPAIRS = Counter("lanes_reconciler_requeued_total", "Requests re-enqueued from the database")
LANES_DELETED = Counter("lanes_lanes_deleted_total", "Empty lanes of absent users deleted by the sweep")

JOBS = Counter("lanes_jobs_total", "Requests that ended, by job type and final status", ["type", "status"])
JOB_DURATION = Histogram(
    "lanes_job_duration_seconds", "Time a job ran (started to ended)", ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
JOB_WAIT = Histogram(
    "lanes_job_queue_wait_seconds", "Time a request waited in its lane before it started", ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)


def start_series(job_types: list[str]) -> None:
    """Create every labelled series at 0, so ``increase()`` sees their first events."""
    for outcome in ("clean", "crashed"):
        WORKER_EXITS.labels(outcome)
    for job_type in job_types:
        for status in ("finished", "failed", "canceled"):
            JOBS.labels(job_type, status)


def serve(port: int, host: str) -> bool:
    """Serve the metrics of this supervisor and its lane workers; False if the port is taken."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry  # noqa: N811 - single-process fallback
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("supervisor: metrics port %d unavailable (%s); carrying on without it", port, exc)
        return False
    log.info("supervisor: metrics on %s:%d", host, port)
    return True


def process_exited(pid: int) -> None:
    """Drop a dead process's live gauges (its counters stay in the totals)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


def job_ended(job_type: str, status: str, started_at, ended_at, created_at) -> None:
    JOBS.labels(job_type, status).inc()
    if started_at and ended_at:
        JOB_DURATION.labels(job_type).observe(max(0.0, (ended_at - started_at).total_seconds()))
    if started_at and created_at:
        JOB_WAIT.labels(job_type).observe(max(0.0, (started_at - created_at).total_seconds()))
