"""The ready index: which lanes have work, since when, and who waits for a worker.

``lanes:ready`` is a sorted set of user ids scored by the time the lane last started waiting for a
worker; ``lanes:wakeup`` nudges sleeping supervisors. A lane is *waiting* when it is in the index,
nobody holds its lease, and it has been so for longer than ``GRACE_SECONDS``: a supervisor with a free
slot admits a ready lane within a tick, so a lane still unserved after the grace has no slot, and only
then should a busy or idle lane worker make room for it.
"""

from __future__ import annotations

import time

import redis

from webapp.lanes import keys

GRACE_SECONDS = 0.5
WAKEUP_BACKLOG = 100

# Submit: mark the lane ready and nudge a supervisor, unless a lane worker serves it already (then
# it will see the job, and hand the lane back to the index if it stops with work left).
_MARK_UNLESS_SERVED = """
redis.call('SADD', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, ARGV[3] - 1)
return 1
"""

# Hand a lane back: release its lease (if ``token`` still holds it) and tell whether it still has
# work. A lane with work stays in the index, moved to the back (score = now) so that waiting lanes go
# first, and a supervisor is nudged. The holder also settles RQ's intermediate list, which only a lease
# holder may touch and which Lanes' lane workers never fill (a stock RQ worker, or an older Lanes, may
# have): an id whose job hash still exists goes back to the front of the queue, in order; an id without
# one is dropped, or it would make an idle lane look busy forever.
_HAND_BACK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  local leftovers = redis.call('LRANGE', KEYS[3], 0, -1)
  for i = #leftovers, 1, -1 do
    if redis.call('EXISTS', ARGV[4] .. leftovers[i]) == 1 then redis.call('LPUSH', KEYS[2], leftovers[i]) end
  end
  redis.call('DEL', KEYS[3])
end
if redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3]) > 0 then
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
  redis.call('LPUSH', KEYS[5], ARGV[2])
  redis.call('LTRIM', KEYS[5], 0, ARGV[5] - 1)
  return 1
end
redis.call('ZREM', KEYS[4], ARGV[2])
return 0
"""

# Lanes waiting for a worker: in the index since before ``ARGV[1]`` and unleased (``ARGV[2]`` aside).
_WAITING = """
local waiting = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  if member ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. member) == 0 then
    waiting[#waiting + 1] = member
    if #waiting >= tonumber(ARGV[4]) then break end
  end
end
return waiting
"""


def mark(pipe, user_id: int) -> None:
    """Add the lane (keeping its place if there already) and wake a supervisor, on the caller's pipeline."""
    pipe.zadd(keys.READY, {str(user_id): time.time()}, nx=True)
    pipe.sadd(keys.KNOWN, str(user_id))
    pipe.lpush(keys.WAKEUP, str(user_id))
    pipe.ltrim(keys.WAKEUP, 0, WAKEUP_BACKLOG - 1)


def mark_unless_served(pipe, user_id: int) -> None:
    """``mark``, skipped when a lane worker holds the lane (the submit path: no supervisor round trip)."""
    pipe.eval(_MARK_UNLESS_SERVED, 4, keys.READY, keys.WAKEUP, keys.KNOWN, keys.lease(user_id),
              user_id, time.time(), WAKEUP_BACKLOG)


def remark(connection: redis.Redis, user_id: int) -> None:
    """After a lane worker died: the lane waits again from now (an interrupted row may be its only work)."""
    with connection.pipeline() as pipe:
        pipe.zadd(keys.READY, {str(user_id): time.time()})
        pipe.lpush(keys.WAKEUP, str(user_id))
        pipe.ltrim(keys.WAKEUP, 0, WAKEUP_BACKLOG - 1)
        pipe.execute()


def hand_back(connection: redis.Redis, user_id: int, token: str) -> bool:
    """Release the lane's lease (if ``token`` holds it); True when the lane still has work for another."""
    return bool(connection.eval(
        _HAND_BACK, 5, keys.lease(user_id), keys.rq_queue(user_id), keys.rq_intermediate(user_id), keys.READY,
        keys.WAKEUP, token, user_id, time.time(), keys.RQ_JOB_PREFIX, WAKEUP_BACKLOG,
    ))


def in_order(connection: redis.Redis) -> list[int]:
    """Every lane with work, the longest waiting first."""
    return [int(member) for member in connection.zrange(keys.READY, 0, -1)]


def waiting(connection: redis.Redis, besides: int | None = None, limit: int = 1_000_000,
            grace: float = GRACE_SECONDS) -> list[int]:
    """Lanes that have waited for a worker past ``grace`` (``besides`` left out), at most ``limit``."""
    cutoff = time.time() - grace
    members = connection.eval(_WAITING, 1, keys.READY, cutoff, "" if besides is None else str(besides),
                              keys.lease(""), limit)
    return [int(member) for member in members]


def sleep_until_nudged(connection: redis.Redis, seconds: float) -> None:
    """Block a supervisor until a lane is marked ready, or ``seconds`` pass."""
    connection.blpop([keys.WAKEUP], timeout=seconds)
