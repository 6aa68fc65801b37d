"""The peers' side of the bench: the same trivial task for Celery and for RQ, and a gate.

Celery's worker imports this module (``celery -A bench.peer_tasks``) and RQ's worker finds the
functions by their dotted path. Both read the broker from ``BENCH_PEER_REDIS_URL``: the Redis that
Lanes uses in the same run. The task returns when it ran, so that a drain is timed by the
worker's own clock, as Lanes' drain is timed by its rows' ``ended_at``.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

GATE_SECONDS = 300  # a gate that is never opened lets the worker go after this long
GATE_POLL_SECONDS = 2

REDIS_URL = os.environ.get("BENCH_PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-peer-celery")

celery_app = Celery("bench_peer", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(
    task_default_queue=CELERY_QUEUE,
    result_expires=600,  # the bench deletes its results; this is the safety net
    worker_enable_remote_control=False,  # no pidbox keys or fan-out traffic in the shared Redis
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


def echo(message: str) -> dict:
    """The trivial task: returns its message and when it ran."""
    return {"message": message, "at": time.time()}


def gate(key: str) -> float:
    """Hold the worker until ``key`` is pushed (the bench queues a backlog meanwhile); returns when it opened."""
    connection = redis.Redis.from_url(REDIS_URL)
    connection.lpush(f"{key}:entered", "1")
    deadline = time.monotonic() + GATE_SECONDS
    # Short blocking reads: a long one would outlive redis-py's socket timeout on a busy machine.
    while connection.blpop([key], timeout=GATE_POLL_SECONDS) is None and time.monotonic() < deadline:
        pass
    connection.close()
    return time.time()


celery_echo = celery_app.task(name="bench.echo")(echo)
celery_gate = celery_app.task(name="bench.gate")(gate)
