"""The only module that knows Redis key names, Lanes' own and the ones RQ keeps per queue."""

from __future__ import annotations

LANE_PREFIX = "lane:"
READY = "lanes:ready"  # zset: user id -> time the lane started waiting for a worker
WAKEUP = "lanes:wakeup"  # list: a nudge for supervisors that a lane became ready
KNOWN = "lanes:known"  # set: user ids whose lane may have keys in Redis
RECONCILE_LOCK = "lanes:reconcile-lock"
SUPERVISORS = "lanes:supervisors"  # zset: supervisor id -> heartbeat time
RQ_QUEUES = "rq:queues"


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
    return f"rq:queue:{lane_name(user_id)}"


def rq_job(job_id: str) -> str:
    return f"rq:job:{job_id}"


def rq_lane_keys(user_id: int) -> list[str]:
    """Every key RQ 2 keeps that names this lane (the queue, its registries and locks)."""
    name = lane_name(user_id)
    return [
        f"rq:queue:{name}",
        f"rq:queue:{name}:intermediate",
        f"rq:wip:{name}",
        f"rq:finished:{name}",
        f"rq:failed:{name}",
        f"rq:canceled:{name}",
        f"rq:deferred:{name}",
        f"rq:scheduled:{name}",
        f"rq:workers:{name}",
        f"rq:clean_registries:{name}",
        f"rq:scheduler-lock:{name}",
    ]


def login_failures(scope: str, identifier: str) -> str:
    """Zset of recent sign-in attempts counted against an account or an address (``scope``)."""
    return f"lanes:login:{scope}:{identifier}"


def signups(address: str) -> str:
    """Zset of recent sign-ups from one address."""
    return f"lanes:signup:{address}"
