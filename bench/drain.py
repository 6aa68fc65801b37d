"""Lanes' drain: a backlog already queued in several lanes, served by the worker side alone.

worker.py is paused (SIGSTOP) while no lane worker runs; the backlog is submitted in this process
through the lane service (rows, RQ jobs, ready index and nudges, exactly as a web submit writes
them); then worker.py is resumed and the bench waits, polling the database, until every request
has ended. No HTTP and no web process take part, so the CPU, the Redis commands and the database
statements counted meanwhile are the worker side's own (supervisor + lane workers).
"""

from __future__ import annotations

import time

from sqlalchemy import func, select

from bench import counting, cpu_usage
from bench.results import Measurement, ScenarioReport
from bench.stack import Stack

IDLE_WAIT_SECONDS = 30  # lane workers from earlier scenarios go idle after LANES_IDLE_SECONDS
DRAIN_TIMEOUT_SECONDS = 300
POLL_SECONDS = 0.05

# Measurement names the targets refer to.
DRAIN = "drain: worker resumed -> last request ended"
WORKER_CPU = "  worker side CPU per job (supervisor + lane workers)"
WORKER_STATEMENTS = "  worker side database statements per job"
WORKER_COMMANDS = "  worker side Redis commands per job"


def server_commands(connection) -> int:
    """Commands the Redis server has run since its start, by ``INFO commandstats`` (all clients)."""
    return sum(stat["calls"] for stat in connection.info("commandstats").values())


def wait_for_no_lane_workers(stack: Stack) -> None:
    deadline = time.monotonic() + IDLE_WAIT_SECONDS
    while stack.lane_workers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"lane workers still running after {IDLE_WAIT_SECONDS} s: the drain needs none")
        time.sleep(0.2)


def queue_backlog(stack: Stack, user_ids: list[int], count: int) -> None:
    """Submit ``count`` echo requests round-robin over the users' lanes while worker.py is paused.

    worker.py is left paused: the caller resumes it (``stack.resume_worker()``) when it is ready to time.
    """
    from webapp.extensions import db
    from webapp.lanes.service import submit_request

    wait_for_no_lane_workers(stack)
    stack.pause_worker()
    try:
        with stack.app.app_context():
            for index in range(count):
                submit_request(user_ids[index % len(user_ids)], "echo", {"message": "bench"})
            db.session.remove()
    except BaseException:
        stack.resume_worker()
        raise


def wait_until_ended(stack: Stack, user_ids: list[int], count: int) -> None:
    """Poll the database until ``count`` of the users' requests have ended."""
    from webapp.extensions import db
    from webapp.models import LaneRequest

    ended = select(func.count()).where(LaneRequest.user_id.in_(user_ids), LaneRequest.ended_at.is_not(None))
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    with stack.app.app_context():
        try:
            while db.session.scalar(ended) < count:
                db.session.commit()  # a fresh snapshot for the next poll
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the backlog was not drained within {DRAIN_TIMEOUT_SECONDS} s")
                time.sleep(POLL_SECONDS)
        finally:
            db.session.remove()


def lanes_drain(stack: Stack, _web, sizes) -> ScenarioReport:
    from webapp.extensions import db
    from webapp.models import FINISHED, LaneRequest

    n, lanes = sizes.drain_requests, sizes.drain_lanes
    report = ScenarioReport("drain", f"Lanes drain: {n} echo requests already queued in {lanes} lanes, no HTTP")
    ids = [user.id for user in stack.new_users("drain", lanes)]
    queue_backlog(stack, ids, n)
    try:
        counts_before = counting.read(str(stack.worker_counts))
        cpu_before = cpu_usage.snapshot(stack.worker.pid, stack.worker.pid)
        server_before = server_commands(stack.redis)
        resumed = time.time()
    finally:
        stack.resume_worker()
    wait_until_ended(stack, ids, n)
    server_after = server_commands(stack.redis)
    cpu_after = cpu_usage.snapshot(stack.worker.pid, stack.worker.pid)
    counts_after = counting.read(str(stack.worker_counts))
    with stack.app.app_context():
        first_started, last_ended, finished = db.session.execute(
            select(func.min(LaneRequest.started_at), func.max(LaneRequest.ended_at),
                   func.count().filter(LaneRequest.status == FINISHED))
            .where(LaneRequest.user_id.in_(ids))
        ).one()
        db.session.remove()

    last = last_ended.timestamp()
    report.add(Measurement(DRAIN, "jobs/s", n / (last - resumed), note=f"{n} in {last - resumed:.2f} s"))
    report.add(Measurement("  first request started -> last ended", "jobs/s",
                           n / (last - first_started.timestamp()),
                           note=f"the first start came {1000 * (first_started.timestamp() - resumed):.0f} ms "
                                "after the resume"))
    report.add(Measurement("requests not finished", "count", n - finished, target="0", met=finished == n))
    worker_cpu = cpu_usage.per_request_ms(cpu_before, cpu_after, n)[cpu_usage.PARTS[1]]
    report.add(Measurement(WORKER_CPU, "ms", worker_cpu))
    per_job = counting.delta(counts_before, counts_after, n)
    report.add(Measurement(WORKER_STATEMENTS, "/job", per_job["statements"],
                           note=f"+ {per_job['transactions']:.2f} commits/rollbacks per job (each a round trip, "
                                "and psycopg sends a BEGIN before each transaction's first statement)"))
    report.add(Measurement(WORKER_COMMANDS, "/job", per_job["redis_commands"],
                           note=f"{per_job['redis_round_trips']:.2f} round trips per job; sent by worker.py and "
                                "its lane workers (counted in the client)"))
    report.add(Measurement("  Redis server: commands run per job (INFO commandstats)", "/job",
                           (server_after - server_before) / n,
                           note="server-wide: includes commands inside Lua scripts, the bench's polling, "
                                "and any other client of this Redis server"))
    report.notes.append("worker.py was paused (SIGSTOP) with no lane worker running while the backlog was "
                        "submitted through the lane service in the bench process, then resumed (SIGCONT)")
    return report
