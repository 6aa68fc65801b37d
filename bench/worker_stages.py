"""``python -m bench.worker_stages [N]``: where a lane worker's time goes, stage by stage.

Queues N echo requests for a fresh user, then serves that lane with ``serve_lane`` in this
process (with a short idle time: it stops soon after the lane is empty) and reports the wall time
and the CPU time (of the serving thread) per job spent in each stage: the claim, the events with
RQ's bookkeeping, the job, the outcome. No profiler is attached, so the total is what a lane worker
really spends; on a busy machine read the CPU column (wall time then includes waiting for a core).
Uses ``DATABASE_URL`` / ``REDIS_URL`` like ``make bench`` (a scratch SQLite and embedded Redis when
unset).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

IDLE_SECONDS = 0.05  # the lane worker stops this long after its lane is empty (not counted)

# (stage, object, attribute): each attribute is wrapped to add its wall time to its stage.
EVENTS = "events + RQ bookkeeping (one pipeline per job)"
STAGES = [
    ("claim (one UPDATE ... RETURNING, autocommit)", "webapp.lanes.lane_worker", "claim_next"),
    (EVENTS, "webapp.lanes.events", "EventPublisher.emit_ahead"),  # a start, with the previous end (sent)
    (EVENTS, "webapp.lanes.events", "RepliesLater.results"),  # ... and its replies, read after the job
    (EVENTS, "webapp.lanes.lane_worker", "announce_events"),  # an end announced alone
    ("the job itself (echo)", "webapp.lanes.execution", "run_job"),
    ("run_claimed: whole (start events, job, outcome)", "webapp.lanes.lane_worker", "run_claimed"),
    ("lane worker loop: whole", "webapp.lanes.lane_worker", "LaneWorker.serve"),
]


@contextmanager
def timed_stages(totals: dict[str, float], cpu: dict[str, float]):
    """Wrap each stage's function for the duration (wall and thread CPU); restore them afterwards."""
    import importlib

    restore = []
    for stage, module_name, attribute in STAGES:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = owner.__dict__[name]
        is_classmethod = isinstance(original, classmethod)
        function = original.__func__ if is_classmethod else original

        def wrapper(*args, _function=function, _stage=stage, **kwargs):
            began, began_cpu = time.perf_counter(), time.thread_time()
            try:
                return _function(*args, **kwargs)
            finally:
                totals[_stage] += time.perf_counter() - began
                cpu[_stage] += time.thread_time() - began_cpu

        setattr(owner, name, classmethod(wrapper) if is_classmethod else wrapper)
        restore.append((owner, name, original))
    try:
        yield
    finally:
        for owner, name, original in restore:
            setattr(owner, name, original)


def measure(count: int) -> tuple[float, dict[str, float], dict[str, float]]:
    """Serve ``count`` queued echo requests in this process: (seconds per job, stage -> wall seconds
    per job, stage -> CPU seconds per job)."""
    from bench.stack import Stack
    from webapp.lanes.lane_worker import serve_lane
    from webapp.lanes.lease import LaneLease
    from webapp.lanes.service import submit_request

    stack = Stack()
    try:
        stack.start(worker=False)
        user = stack.new_user("stages")
        with stack.app.app_context():
            # Hold the lane first, as a supervisor would: nothing else may serve it meanwhile.
            lease = LaneLease(stack.redis, user.id, f"bench-stages:{time.time_ns()}", 600)
            if not lease.acquire():
                raise RuntimeError(f"the lane of user {user.id} is already leased")
            for n in range(count):
                submit_request(user.id, "echo", {"message": f"stage {n}"})
        stack.app.config.update(LANES_IDLE_SECONDS=IDLE_SECONDS, LANES_FAIR_SHARE=count + 1)
        totals: dict[str, float] = defaultdict(float)
        cpu: dict[str, float] = defaultdict(float)
        with timed_stages(totals, cpu):
            began = time.perf_counter()
            serve_lane(stack.app, user.id, lease)  # gives the lease back when done
            seconds = time.perf_counter() - began - IDLE_SECONDS
        return (seconds / count, {stage: total / count for stage, total in totals.items()},
                {stage: total / count for stage, total in cpu.items()})
    finally:
        for problem in stack.close():
            print(f"worker_stages: {problem}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_stages", description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=200, help="echo requests to serve (default 200)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 500:
        parser.error("count must be 1..500 (the submit rate limit allows 600 a minute)")
    per_job, stages, cpu = measure(args.count)
    print(f"Lane worker, {args.count} echo jobs served back to back: {per_job * 1000:.2f} ms per job (wall)")
    print(f"  {'stage':52s} {'wall':>9} {'CPU':>9}")
    for stage in dict.fromkeys(stage for stage, _module, _attribute in STAGES):
        print(f"  {stage:52s} {stages.get(stage, 0.0) * 1000:6.2f} ms {cpu.get(stage, 0.0) * 1000:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
