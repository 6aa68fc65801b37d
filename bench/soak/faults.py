"""The faults: what each one does, and a seeded plan of which fires when.

Every kind fires at least once per run when the run is long enough (the plan walks shuffled
rounds of all kinds). Each fault records when it began and when it ended — the moment the
broken part was whole again — which is where recovery is measured from.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass, field

from .processes import Lanes
from .sentinel import SentinelDeployment
from .servers import PostgresCluster, RedisServer

KINDS = (
    "lane_worker_kill",
    "supervisor_kill",
    "web_kill",
    "redis_flushall",
    "redis_restart",
    "redis_refuse",
    "redis_freeze",
    "sentinel_failover",
    "postgres_stop",
)
# Only with --sentinel (there is no replica to promote otherwise).
SENTINEL_ONLY = ("sentinel_failover",)
# Not with --sentinel: the primary down or frozen for longer than down-after-milliseconds is failed
# over — a refusal is then sentinel_failover again, and a freeze wakes up a second primary that
# clients still connected to it write to until the sentinels demote it (a fault of its own, not
# this one).
NOT_WITH_SENTINEL = {
    "redis_refuse": "the primary refusing connections for 2-5 s is failed over (that is sentinel_failover)",
    "redis_freeze": "a primary frozen past down-after-milliseconds is failed over and wakes as a second primary",
}
DESCRIPTIONS = {
    "lane_worker_kill": "SIGKILL one lane worker (a busy one when there is one)",
    "supervisor_kill": "SIGKILL one worker.py supervisor, then start a new one",
    "web_kill": "SIGKILL gunicorn (master and worker), then start it again on the same port",
    "redis_flushall": "FLUSHALL",
    "redis_restart": "SIGKILL redis-server and start it again at once (append-only file kept)",
    "redis_refuse": "shut redis-server down for 2-5 s (connections refused), then start it",
    "redis_freeze": "SIGSTOP redis-server for longer than LANES_LEASE_SECONDS, then SIGCONT",
    "sentinel_failover": "(--sentinel only) SIGKILL the primary; ended when the sentinels name a new primary "
                         "that answers; the killed server then rejoins as its replica",
    "postgres_stop": "pg_ctl stop (fast or immediate), 2-8 s down, then start",
}


def default_kinds(sentinel: bool) -> tuple[str, ...]:
    """Every kind that applies: with Sentinel, the Redis faults aimed at the primary and the failover."""
    if sentinel:
        return tuple(kind for kind in KINDS if kind not in NOT_WITH_SENTINEL)
    return tuple(kind for kind in KINDS if kind not in SENTINEL_ONLY)


def refused_kinds(kinds: tuple[str, ...], sentinel: bool) -> list[str]:
    """Why each of ``kinds`` cannot run with (or without) Sentinel, one sentence each; empty when all can."""
    problems = [f"unknown fault kind {kind}" for kind in kinds if kind not in KINDS]
    if sentinel:
        problems += [f"{kind} does not apply with --sentinel: {why}" for kind, why in NOT_WITH_SENTINEL.items()
                     if kind in kinds]
    else:
        problems += [f"{kind} needs --sentinel (a replica for the sentinels to promote)" for kind in SENTINEL_ONLY
                     if kind in kinds]
    return problems


@dataclass
class Fault:
    kind: str
    at: float  # planned start, seconds after traffic began
    seconds: float  # how long the part stays broken (0 for instant faults)
    detail: str = ""
    began: float = 0.0  # time.time()
    ended: float = 0.0
    skipped: str = ""  # why it could not fire (e.g. no lane worker alive)
    error: str = ""
    extra: dict = field(default_factory=dict)


def plan(seed: int, run_seconds: float, lease_seconds: float, kinds: tuple[str, ...] = default_kinds(False),
         interval: float | None = None, warmup: float = 5.0) -> list[Fault]:
    """Faults spread over the run: shuffled rounds of ``kinds``, one every ``interval`` seconds on average."""
    rng = random.Random(f"{seed}:faults")
    usable = max(run_seconds - warmup - 5.0, 1.0)
    count = max(len(kinds), round(usable / interval)) if interval else max(len(kinds), round(usable / 12))
    slot = usable / count
    order: list[str] = []
    while len(order) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        order.extend(round_)
    faults = []
    for index, kind in enumerate(order[:count]):
        seconds = {
            "redis_refuse": rng.uniform(2, 5),
            "redis_freeze": lease_seconds + rng.uniform(1, 3),
            "postgres_stop": rng.uniform(2, 8),
        }.get(kind, 0.0)
        detail = rng.choice(("fast", "immediate")) if kind == "postgres_stop" else ""
        faults.append(Fault(kind, warmup + index * slot + rng.uniform(0, slot * 0.3), seconds, detail))
    return faults


class Injector:
    """Carries out faults on the soak's own servers and processes.

    With a Sentinel deployment the Redis faults hit whichever server is primary at the time.
    """

    # Redis faults hurt most while a long job runs (its worker must outlive the fault): they wait
    # up to this long for one to have just started.
    AIMED = ("redis_flushall", "redis_restart", "redis_freeze", "sentinel_failover")
    AIM_SECONDS = 8.0

    def __init__(self, lanes: Lanes, redis_server: RedisServer | SentinelDeployment, postgres: PostgresCluster,
                 seed: int, busy_lanes, long_job_started):
        self.lanes = lanes
        self.sentinels = redis_server if isinstance(redis_server, SentinelDeployment) else None
        self._redis = redis_server
        self.postgres = postgres
        self.rng = random.Random(f"{seed}:targets")
        self.busy_lanes = busy_lanes  # () -> set of user ids with a started request (may raise)
        self.long_job_started = long_job_started  # () -> whether a long job started a moment ago (may raise)

    def fire(self, fault: Fault) -> None:
        if fault.kind in self.AIMED:
            self._aim(fault)
        fault.began = time.time()
        try:
            getattr(self, fault.kind)(fault)
        finally:
            fault.ended = fault.ended or time.time()

    def _aim(self, fault: Fault) -> None:
        deadline = time.monotonic() + self.AIM_SECONDS
        while time.monotonic() < deadline:
            try:
                if self.long_job_started():
                    fault.detail = "during a long job"
                    return
            except Exception:  # noqa: BLE001 - cannot tell: fire now
                return
            time.sleep(0.2)

    def lane_worker_kill(self, fault: Fault) -> None:
        deadline = time.monotonic() + 5
        workers = self.lanes.lane_workers()
        while not workers and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = self.lanes.lane_workers()
        if not workers:
            fault.skipped = "no lane worker alive"
            return
        try:
            busy = self.busy_lanes() & set(workers)
        except Exception:  # noqa: BLE001 - the database may be the part that is down: any worker will do
            busy = set()
        lane = self.rng.choice(sorted(busy or workers))
        pid = self.rng.choice(sorted(workers[lane]))
        fault.extra = {"lane_user_id": lane, "pid": pid, "busy": lane in busy}
        fault.detail = f"lane {lane}{' (busy)' if lane in busy else ''}"
        fault.began = time.time()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            fault.skipped = "the lane worker exited first"

    def supervisor_kill(self, fault: Fault) -> None:
        slot = self.rng.randrange(len(self.lanes.supervisors))
        fault.extra = {"pid": self.lanes.supervisors[slot].pid}
        self.lanes.kill_supervisor(slot)
        self.lanes.start_supervisor(slot)

    def web_kill(self, fault: Fault) -> None:
        self.lanes.kill_web()
        self.lanes.start_web()

    @property
    def redis(self) -> RedisServer:
        """The redis-server to break: the only one, or the primary of the moment."""
        return self.sentinels.refresh() if self.sentinels else self._redis

    def redis_flushall(self, fault: Fault) -> None:
        self.redis.flush_all()

    def redis_restart(self, fault: Fault) -> None:
        server = self.redis
        server.kill()
        server.start()
        if self.sentinels:
            # Back within milliseconds, well before down-after-milliseconds: normally still the
            # primary. Ended when it answers (as without Sentinel); the next fault waits until the
            # sentinels and the replica are with it again.
            fault.ended = time.time()
            self.sentinels.rejoin()
            if self.sentinels.primary is not server:
                fault.detail = f"failed over to {self.sentinels.primary.port}"

    def sentinel_failover(self, fault: Fault) -> None:
        """SIGKILL the primary; the fault ends when a new primary answers, then the old one rejoins as a replica."""
        old = self.sentinels.kill_primary()
        new, _ = self.sentinels.wait_for_new_primary(timeout=60)
        fault.ended = time.time()
        fault.detail = (f"{fault.detail}, " if fault.detail else "") + f"primary {old} -> {new}"
        fault.extra = {"old_primary": old, "new_primary": new}
        self.sentinels.rejoin()

    def redis_refuse(self, fault: Fault) -> None:
        self.redis.shut_down()
        try:
            time.sleep(fault.seconds)
        finally:
            self.redis.start()

    def redis_freeze(self, fault: Fault) -> None:
        self.redis.freeze()
        try:
            time.sleep(fault.seconds)
        finally:
            self.redis.thaw()

    def postgres_stop(self, fault: Fault) -> None:
        self.postgres.stop(fault.detail or "fast")
        try:
            time.sleep(fault.seconds)
        finally:
            self.postgres.start()
