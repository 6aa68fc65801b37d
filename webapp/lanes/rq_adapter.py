"""Everything that bends RQ to Lanes' invariant, in one place.

The invariant: **the database decides what runs; an RQ job only wakes a lane.** A request's row is
the truth (queued, started, ended) and its lane worker always claims the oldest pending row. The
lane's RQ queue holds one job per request not yet started (job id = request id) so that supervisors
and lane workers wake, and so that ``Worker.all()`` and rq-dashboard show each lane, its queued jobs
and its worker. RQ's per-job bookkeeping that Lanes does not use (registries of started and finished
jobs, execution records, results) is never written: a lane worker takes an id off the queue, claims
the row, deletes the job hash, and that is all.

Here: enqueue (and put back in front), forget a canceled job, take the next id, the worker's own
registration and state, unregister a killed worker, and wipe a lane. (Settling RQ's intermediate list
happens as a lane is handed back, atomically with the ready index: ``ready_index.hand_back``.)
Key names come from ``keys``, which takes RQ's from RQ's own attributes.
"""

from __future__ import annotations

import os
import time
import zlib

import redis
from rq import SimpleWorker, worker_registration
from rq.job import JobStatus
from rq.serializers import DefaultSerializer
from rq.utils import now, utcformat

from webapp.lanes import keys

JOB_FUNCTION = "webapp.lanes.execution.run_request"
FAILED_JOB_TTL = 24 * 3600


def add_job(connection: redis.Redis, pipe, request_id: int, user_id: int, type_name: str,
            at_front: bool = False) -> None:
    """Queue the RQ job of a request in its lane (job id = request id), at the back unless ``at_front``.

    Writes what RQ's ``Queue.enqueue_call`` writes (the lane in ``rq:queues``, the job hash as
    ``Job.to_dict`` has it, the id on the queue), without building RQ's ``Job`` and ``Queue``
    objects, which cost more than the rest of a submit's Redis work. ``job_hash`` is checked
    against RQ's own in the tests. (``connection`` is RQ's way; the commands go on ``pipe``.)
    """
    queue = keys.rq_queue(user_id)
    pipe.sadd(keys.RQ_QUEUES, queue)
    pipe.hset(keys.rq_job(request_id), mapping=job_hash(request_id, user_id, type_name))
    if at_front:
        pipe.lpush(queue, str(request_id))
    else:
        pipe.rpush(queue, str(request_id))


def job_hash(request_id: int, user_id: int, type_name: str) -> dict:
    """The hash of a queued request's RQ job, field for field as RQ's ``enqueue_call`` saves it."""
    stamp = utcformat(now())
    return {
        "created_at": stamp,
        "data": zlib.compress(DefaultSerializer.dumps((JOB_FUNCTION, None, (request_id, user_id), {}))),
        "success_callback_name": "", "failure_callback_name": "", "stopped_callback_name": "",
        "started_at": "", "ended_at": "", "last_heartbeat": "", "worker_name": "", "group_id": "",
        "origin": keys.lane_name(user_id),
        "description": f"{type_name} #{request_id}",
        "enqueued_at": stamp,
        "timeout": -1, "result_ttl": 0, "failure_ttl": FAILED_JOB_TTL,
        "status": JobStatus.QUEUED.value,
    }


def forget_job(pipe, user_id: int, request_id: int) -> None:
    """Drop a canceled request's job from its lane so no worker wakes for it."""
    pipe.lrem(keys.rq_queue(user_id), 0, str(request_id))
    pipe.delete(keys.rq_job(request_id))


def mark_started(pipe, user_id: int, worker_key: str, request_id: int, taken: str | None) -> None:
    """The claimed request has left the queue: its job hash goes, the worker shows it as current.

    ``taken`` is the id this worker took off the queue for the claim (None when it claimed without
    one, e.g. first thing after a takeover). The database may have given it an older request than
    ``taken`` (ids re-added after Redis lost them); then ``taken`` goes back in front, for later.
    """
    if taken != str(request_id):
        pipe.lrem(keys.rq_queue(user_id), 1, str(request_id))
        if taken is not None:
            pipe.lpush(keys.rq_queue(user_id), taken)
    pipe.delete(keys.rq_job(request_id))
    pipe.hset(worker_key, mapping={"state": "busy", "current_job": str(request_id)})


def take_next(pipe, user_id: int) -> None:
    """Queue a pop of the lane's next job id (the pipeline's result: the id, or None)."""
    pipe.lpop(keys.rq_queue(user_id))


def wait_next(connection: redis.Redis, user_id: int, seconds: float) -> str | None:
    """Block up to ``seconds`` for the lane's next job id."""
    popped = connection.blpop([keys.rq_queue(user_id)], timeout=seconds)
    return popped[1].decode() if popped else None


def put_back(connection: redis.Redis, user_id: int, taken: str) -> None:
    """Return an id this worker took but will not claim (it is stopping) to the front of the lane."""
    connection.lpush(keys.rq_queue(user_id), taken)


_address: tuple[int, str] | None = None  # (pid, this process's Redis client address), learned ahead


def learn_address(connection: redis.Redis) -> None:
    """Ask Redis for this process's client address ahead of time (a spare lane worker does, while it
    waits), so that its RQ worker record need not ask on the lane's time. Older Redis: not learned."""
    global _address
    try:
        _address = (os.getpid(), str(connection.client_info()["addr"]))
    except redis.exceptions.ResponseError:  # CLIENT INFO needs Redis 6.2
        _address = None


class LaneRQWorker(SimpleWorker):
    """RQ's own worker record for a lane worker: registered, heartbeating, listed by rq-dashboard.

    Lanes runs its own loop (``lane_worker``); RQ's ``work()`` is never called.
    """

    _name_pending = False  # the connection's name (CLIENT SETNAME) rides with the registration

    def _set_ip_address(self, connection: redis.Redis) -> None:
        """RQ names the connection and asks Redis for its address: two round trips as the worker is
        built. With the address learned ahead (``learn_address``), neither is made now."""
        if _address is None or _address[0] != os.getpid():
            super()._set_ip_address(connection)
            return
        self.ip_address = _address[1]
        self._name_pending = True

    def register_birth(self) -> None:
        """RQ's registration in one round trip: a lane worker's name is unique to its lease, so RQ's
        check for a live namesake (two more round trips on every cold start) cannot find one."""
        with self.connection.pipeline() as pipe:
            if self._name_pending:
                pipe.client_setname(self.name)
            pipe.delete(self.key)
            self.birth_date = self.last_heartbeat = now()
            pipe.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    def mark_idle(self) -> None:
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, "state", "idle")
            pipe.hdel(self.key, "current_job")
            pipe.execute()

    def heartbeat_in(self, pipe) -> None:
        """RQ's worker heartbeat, added to a pipeline the caller runs."""
        timeout = self.worker_ttl + 60
        pipe.hset(self.key, "last_heartbeat", utcformat(now()))
        pipe.expire(self.key, timeout)


def current_job_id(worker) -> str | None:
    """The request a lane worker (as ``Worker.all()`` lists it) is running: Lanes keeps it on the
    worker's hash, not in RQ 3's per-job execution records, which cost four commands a job."""
    value = worker.connection.hget(worker.key, "current_job")
    return value.decode() if value else None


def unregister_worker(connection: redis.Redis, user_id: int, worker_name: str) -> None:
    """Unregister a killed lane worker, so rq-dashboard and ``Worker.all()`` stop listing it."""
    worker_key = keys.rq_worker(worker_name)
    with connection.pipeline() as pipe:
        pipe.srem(keys.RQ_WORKERS, worker_key)
        pipe.srem(keys.rq_lane_workers(user_id), worker_key)
        pipe.delete(worker_key)
        pipe.execute()


# Atomic, so that a submit racing the cleanup either lands before it (and the lane is not empty)
# or after it (and recreates the lane). Job hashes left in the lane's registries go too: they name
# the lane in their ``origin``.
_WIPE_IF_GONE = """
local queue, intermediate, lease, presence = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('LLEN', queue) > 0 or redis.call('LLEN', intermediate) > 0 then return 0 end
if redis.call('EXISTS', lease) == 1 then return 0 end
redis.call('ZREMRANGEBYSCORE', presence, '-inf', ARGV[2])
if redis.call('ZCARD', presence) > 0 then return 0 end
for i = 8, #KEYS do
  if redis.call('TYPE', KEYS[i]).ok == 'zset' then
    for _, job_id in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
      local id = string.match(job_id, '^[^:]+')
      redis.call('DEL', ARGV[3] .. id)
      for p = 4, #ARGV do redis.call('DEL', ARGV[p] .. id) end
    end
  end
  redis.call('DEL', KEYS[i])
end
redis.call('DEL', queue, intermediate, presence)
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('SREM', KEYS[7], queue)
return 1
"""


def wipe_lane_if_gone(connection: redis.Redis, user_id: int) -> bool:
    """Delete every key naming the lane if it is empty, unleased and its user absent; True if deleted."""
    rq_keys = keys.rq_lane_keys(user_id)
    queue, intermediate, others = rq_keys[0], rq_keys[1], rq_keys[2:]
    script_keys = [
        queue, intermediate, keys.lease(user_id), keys.presence(user_id),
        keys.READY, keys.KNOWN, keys.RQ_QUEUES, *others,
    ]
    deleted = connection.eval(
        _WIPE_IF_GONE, len(script_keys), *script_keys,
        user_id, time.time(), keys.RQ_JOB_PREFIX, *keys.RQ_JOB_SIDE_PREFIXES,
    )
    return bool(deleted)
