"""The only module that knows Redis key names: Lanes' own, and RQ's taken from RQ's own attributes."""

from __future__ import annotations

from rq import Queue, SimpleWorker
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.scheduler import SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.worker_registration import REDIS_WORKER_KEYS, RQ_KEY_PREFIX, WORKERS_BY_QUEUE_KEY

LANE_PREFIX = "lane:"
READY = "lanes:ready"  # zset: user id -> time the lane started waiting for a worker
WAKEUP = "lanes:wakeup"  # list: a nudge for supervisors that a lane became ready
KNOWN = "lanes:known"  # set: user ids whose lane may have keys in Redis
RECONCILE_LOCK = "lanes:reconcile-lock"
SUPERVISORS = "lanes:supervisors"  # zset: supervisor id -> heartbeat time
RQ_QUEUES = Queue.redis_queues_keys  # set of every queue's key
RQ_WORKERS = REDIS_WORKER_KEYS  # set of every worker's key
RQ_JOB_PREFIX = Job.redis_job_namespace_prefix
RQ_WORKER_PREFIX = SimpleWorker.redis_worker_namespace_prefix
# Per-job keys that RQ 3 may keep besides the job hash (results stream, execution records).
RQ_JOB_SIDE_PREFIXES = (f"{RQ_KEY_PREFIX}:results:", f"{RQ_KEY_PREFIX}:executions:")
_RQ_REGISTRIES = (
    StartedJobRegistry, FinishedJobRegistry, FailedJobRegistry, CanceledJobRegistry,
    DeferredJobRegistry, ScheduledJobRegistry,
)


def lane_name(user_id: int) -> str:
    """The RQ queue name of a user's lane."""
    return f"{LANE_PREFIX}{user_id}"


def lease(user_id: int) -> str:
    return f"lanes:lease:{user_id}"


def presence(user_id: int) -> str:
    """Zset of the user's live sessions and sockets, scored by the time they expire."""
    return f"lanes:presence:{user_id}"


def cancel_flag(request_id: int) -> str:
    return f"lanes:cancel:{request_id}"


def rq_queue(user_id: int) -> str:
    return f"{Queue.redis_queue_namespace_prefix}{lane_name(user_id)}"


def rq_intermediate(user_id: int) -> str:
    """RQ's list of ids a worker dequeued but has not started (Lanes' lane workers never use it)."""
    return IntermediateQueue.get_intermediate_queue_key(rq_queue(user_id))


def rq_job(job_id: str | int) -> str:
    return f"{RQ_JOB_PREFIX}{job_id}"


def rq_worker(name: str) -> str:
    return f"{RQ_WORKER_PREFIX}{name}"


def rq_lane_workers(user_id: int) -> str:
    """The set of workers RQ lists for this lane's queue."""
    return WORKERS_BY_QUEUE_KEY % lane_name(user_id)


def rq_lane_registries(user_id: int) -> list[str]:
    """The job registries (sorted sets of job ids) RQ keeps for this lane's queue."""
    name = lane_name(user_id)
    return [registry.key_template.format(name) for registry in _RQ_REGISTRIES]


def rq_lane_keys(user_id: int) -> list[str]:
    """Every key RQ keeps that names this lane: the queue, its registries, worker set and locks."""
    name = lane_name(user_id)
    return [
        rq_queue(user_id),
        rq_intermediate(user_id),
        *rq_lane_registries(user_id),
        rq_lane_workers(user_id),
        f"{RQ_KEY_PREFIX}:clean_registries:{name}",  # Queue.registry_cleaning_key, which needs a connection
        SCHEDULER_LOCKING_KEY_TEMPLATE % name,
    ]


def login_failures(scope: str, identifier: str) -> str:
    """Zset of recent sign-in attempts counted against an account or an address (``scope``)."""
    return f"lanes:login:{scope}:{identifier}"


def signups(address: str) -> str:
    """Zset of recent sign-ups from one address."""
    return f"lanes:signup:{address}"
