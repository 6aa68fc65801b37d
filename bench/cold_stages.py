"""``python -m bench.cold_stages [N]``: where a cold lane's start goes, stage by stage.

Starts a Lanes as ``make bench`` does (``DATABASE_URL`` / ``REDIS_URL`` honoured), but runs the
supervisor as ``python -m bench.cold_stages --supervise FILE``: ``worker.py`` with timestamps. Each
stage's function is wrapped in that process before anything is forked, so the lane workers it forks
record too; every record is one line appended to FILE (``time.time()``, pid, user, stage), an
atomic write shared by all the processes. Then N fresh users submit one echo request each, one after
the other, as the ``cold`` scenario does, and for each stage the report gives the median time from
the submit's return (negative: the stage happened before it, e.g. a spare lane worker forked ahead).

No profiler is attached; the wrappers cost a write each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import median

LANE_STARTED = "lane worker started (fork or spare)"

# (stage, module, attribute, when): the wrapped function records as it returns (when True, only then).
STAGES = [
    ("supervisor woke (BLPOP lanes:wakeup)", "webapp.lanes.ready_index", "sleep_until_nudged", None),
    ("lease taken (SET NX)", "webapp.lanes.lease", "LaneLease.acquire", bool),
    ("handed to the spare (pipe written)", "webapp.lanes.spare", "Spare.hand", bool),
    (LANE_STARTED, "webapp.lanes.lane_worker", "serve_lane", "enter"),
    ("LaneWorker built (RQ worker)", "webapp.lanes.lane_worker", "LaneWorker.__init__", None),
    ("fence taken", "webapp.lanes.lane_worker", "LaneWorker.take_fence", bool),
    ("registered with RQ", "webapp.lanes.rq_adapter", "LaneRQWorker.register_birth", None),
    ("first claim done", "webapp.lanes.lane_worker", "claim_next", None),
    ("started published", "webapp.lanes.events", "EventPublisher.emit_along", "started"),
]
FORKED = "process forked (child running)"
RECEIVED = "started received (Socket.IO)"
ORDER = [STAGES[0][0], STAGES[1][0], FORKED, *[stage for stage, *_ in STAGES[2:]], RECEIVED]  # as they happen


# -- the supervisor's side ------------------------------------------------------------------


class Recorder:
    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __call__(self, stage: str, user: object = "-") -> None:
        os.write(self.fd, f"{time.time():.6f}\t{os.getpid()}\t{user}\t{stage}\n".encode())


def _user_of(args, kwargs) -> object:
    """The lane a wrapped call is about, when its arguments say (a user id, a lease, a LaneWorker)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        user = getattr(value, "user_id", None)
        if isinstance(user, int):
            return user
    return "-"


def install(path: str) -> None:
    """Wrap each stage's function to record its time; a forked child records as it starts running."""
    import importlib

    record = Recorder(path)
    os.register_at_fork(after_in_child=lambda: record(FORKED))
    for stage, module_name, attribute, when in STAGES:
        *path_parts, name = attribute.split(".")
        try:
            owner = importlib.import_module(module_name)
            for part in path_parts:
                owner = getattr(owner, part)
            function = getattr(owner, name)
        except (ImportError, AttributeError):
            continue  # a stage this version of Lanes does not have (e.g. no spare)

        def wrapper(*args, _function=function, _stage=stage, _when=when, **kwargs):
            user = _user_of(args, kwargs)
            if _when == "enter":
                record(_stage, user)
                return _function(*args, **kwargs)
            result = _function(*args, **kwargs)
            if _when is bool and not result:
                return result
            if _when == "started":
                events = args[2] if len(args) > 2 else kwargs.get("events", ())
                if not any(event == "request.started" for event, _ in events):
                    return result
            record(_stage, user)
            return result

        setattr(owner, name, wrapper)
        if name == "serve_lane":  # imported by name where it is called
            for caller_name in ("webapp.lanes.supervisor", "webapp.lanes.spare"):
                caller = sys.modules.get(caller_name)
                if getattr(caller, name, None) is function:
                    setattr(caller, name, wrapper)


def supervise(path: str) -> None:
    """``worker.py`` with stage timestamps."""
    import shutil
    import tempfile

    metrics_dir = tempfile.mkdtemp(prefix="lanes-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        from webapp import create_app
        from webapp.lanes.supervisor import Supervisor

        install(path)
        Supervisor(create_app()).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


# -- the client's side ----------------------------------------------------------------------


def read_records(path: Path) -> list[tuple[float, int, object, str]]:
    records = []
    for line in path.read_text().splitlines():
        at, pid, user, stage = line.split("\t")
        records.append((float(at), int(pid), int(user) if user.lstrip("-").isdigit() else None, stage))
    return records


def stage_offsets(records, submits: dict[int, float], received: dict[int, float]) -> dict[str, list[float]]:
    """Per stage, each user's offset (s) from the submit's return to that stage's time for the lane."""
    user_of_pid = {}
    for _at, pid, user, stage in records:
        if stage == LANE_STARTED and user is not None:
            user_of_pid[pid] = user
    by_user: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    wakes = []
    for at, pid, user, stage in records:
        if stage == STAGES[0][0]:
            wakes.append(at)
            continue
        user = user if user is not None else user_of_pid.get(pid)
        if user is not None:
            by_user[user][stage].append(at)
    offsets: dict[str, list[float]] = defaultdict(list)
    for user, submitted in submits.items():
        stages = by_user[user]
        # The wake-up that led to the lease: the supervisor's last return from BLPOP before it (a
        # nudge, or a tick's timeout when it was awake already: then it is counted only within a tick).
        leased = min(stages.get(STAGES[1][0], []), default=None)
        woke = max((at for at in wakes if leased is not None and at <= leased), default=None)
        if woke is not None and leased - woke <= 0.25:
            offsets[STAGES[0][0]].append(woke - submitted)
        for stage in ORDER[1:-1]:
            times = stages.get(stage, [])
            if times:
                offsets[stage].append(min(times) - submitted)
        if user in received:
            offsets[RECEIVED].append(received[user] - submitted)
    return offsets


def measure(count: int) -> dict[str, list[float]]:
    from bench.clients import ApiClient, LiveEvents
    from bench.stack import Child, Stack

    stack = Stack()
    path = stack.scratch / "stages.log"
    try:
        stack.start(worker=False)
        stack.worker = Child([sys.executable, "-m", "bench.cold_stages", "--supervise", str(path)],
                             stack.env, stack.scratch / "worker.log")
        stack._wait_for_supervisor()
        web = stack.start_web()
        users = stack.new_users("cold", count)
        # As the cold scenario does: every client connected first, then one submit after another.
        clients = [(user, ApiClient(web.url, user.token), LiveEvents(web.url, user.token).connect()) for user in users]
        submits, received = {}, {}
        try:
            for user, api, live in clients:
                submitted = api.submit("echo", {"message": "cold"})
                started = live.arrival("request.started", submitted.request_id, 30)
                submits[user.id] = submitted.wall_returned
                if started is not None:
                    received[user.id] = started[1]
                live.end_of(submitted.request_id, 30)
        finally:
            for _user, api, live in clients:
                live.close()
                api.close()
        time.sleep(0.2)
        return stage_offsets(read_records(path), submits, received)
    finally:
        for problem in stack.close():
            print(f"cold_stages: {problem}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_stages", description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=20, help="fresh users, one request each (default 20)")
    parser.add_argument("--supervise", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.supervise:
        supervise(args.supervise)
        return 0
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    offsets = measure(args.count)
    print(f"Cold lane start, {args.count} fresh users (load average at the start: {load}; "
          f"at the end: {', '.join(f'{value:.2f}' for value in os.getloadavg())})")
    print(f"  {'stage (time after the submit returned)':52s} {'median':>9s} {'min':>9s}   n")
    for stage in ORDER:
        values = offsets.get(stage, [])
        if values:
            print(f"  {stage:52s} {median(values) * 1000:7.1f} ms {min(values) * 1000:7.1f} ms {len(values):3d}")
        else:
            print(f"  {stage:52s} {'-':>9s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
