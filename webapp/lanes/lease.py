"""The lease that lets at most one worker, cluster-wide, serve a lane."""

from __future__ import annotations

import time

import redis

from webapp.lanes import keys

# Release the lease and tell whether the lane still has work. A lane with work stays in
# the ready index, moved to the back (score = now) so that waiting lanes go first.
#
# The holder also settles the lane's RQ intermediate list, which only it may touch: an id
# whose job hash still exists goes back to the front of the queue, in order; an id without
# one is dropped. (RQ moves every id it dequeues there first, and leaves it behind when the
# job hash is gone, e.g. a finished job enqueued twice.) Otherwise a leftover id would make
# the idle lane look busy forever, and its keys would never be cleaned up.
_RELEASE = """
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
  return 1
end
redis.call('ZREM', KEYS[4], ARGV[2])
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LaneLease:
    """A lease on one lane, held under a token that names its holder."""

    def __init__(self, connection: redis.Redis, user_id: int, token: str, seconds: int):
        self.connection = connection
        self.user_id = user_id
        self.token = token
        self.ttl_ms = int(seconds * 1000)
        self.key = keys.lease(user_id)

    def acquire(self) -> bool:
        return bool(self.connection.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        """Extend the lease; False when it was lost (expired, or taken by another holder)."""
        return bool(self.connection.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    def release(self) -> bool:
        """Give the lane back; True when it still has work for another worker."""
        queue = keys.rq_queue(self.user_id)
        return bool(
            self.connection.eval(
                _RELEASE, 4, self.key, queue, f"{queue}:intermediate", keys.READY,
                self.token, self.user_id, time.time(), keys.rq_job(""),
            )
        )
