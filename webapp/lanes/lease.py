"""The Redis lease that lets one supervisor, cluster-wide, run a lane's worker: the fast path.

Redis can forget a lease (a flush, a restart without persistence), so it only decides who forks a
lane worker; the database fence (``fence``) decides who may claim the lane's requests.
"""

from __future__ import annotations

import redis

from webapp.lanes import keys, ready_index

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LaneLease:
    """A lease on one lane, held under a token that names its holder."""

    def __init__(self, connection: redis.Redis, user_id: int, token: str, seconds: float):
        self.connection = connection
        self.user_id = user_id
        self.token = token
        self.ttl_ms = int(seconds * 1000)
        self.key = keys.lease(user_id)
        self.retaken = 0  # times Redis had forgotten the lease and ``renew`` took it again

    def acquire(self) -> bool:
        return bool(self.connection.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        """Extend the lease, or take it again if Redis forgot it; False when another holder has it."""
        if self.connection.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
            return True
        if not self.acquire():
            return False
        self.retaken += 1  # Redis forgot the lane (flushed, or restarted empty): its queued ids went too
        return True

    def release(self) -> bool:
        """Give the lane back; True when it still has work for another worker."""
        return ready_index.hand_back(self.connection, self.user_id, self.token)
