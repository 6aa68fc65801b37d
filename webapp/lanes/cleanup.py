"""Deleting a lane whose user is gone: every Redis key naming it, in one atomic step."""

from __future__ import annotations

import time

import redis
from flask import has_app_context

from webapp import system_log
from webapp.lanes import keys

# Atomic, so that a submit racing the cleanup either lands before it (and the lane is not
# empty) or after it (and recreates the lane). Job hashes left in the lane's registries go
# too: they name the lane in their ``origin``.
_DELETE_IF_GONE = """
local queue, intermediate, lease, presence = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('LLEN', queue) > 0 or redis.call('LLEN', intermediate) > 0 then return 0 end
if redis.call('EXISTS', lease) == 1 then return 0 end
redis.call('ZREMRANGEBYSCORE', presence, '-inf', ARGV[2])
if redis.call('ZCARD', presence) > 0 then return 0 end
for i = 8, #KEYS do
  if redis.call('TYPE', KEYS[i]).ok == 'zset' then
    for _, job_id in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
      local id = string.match(job_id, '^[^:]+')
      redis.call('DEL', 'rq:job:' .. id, 'rq:results:' .. id, 'rq:executions:' .. id)
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


def delete_lane_if_gone(connection: redis.Redis, user_id: int) -> bool:
    """Delete the lane's keys if it is empty, unleased and its user absent; True if deleted."""
    rq_keys = keys.rq_lane_keys(user_id)
    queue, intermediate, others = rq_keys[0], rq_keys[1], rq_keys[2:]
    script_keys = [
        queue, intermediate, keys.lease(user_id), keys.presence(user_id),
        keys.READY, keys.KNOWN, keys.RQ_QUEUES, *others,
    ]
    deleted = connection.eval(_DELETE_IF_GONE, len(script_keys), *script_keys, user_id, time.time())
    if deleted and has_app_context():
        system_log.record("lane.deleted", subject=keys.lane_name(user_id))
    return bool(deleted)


def sweep(connection: redis.Redis) -> int:
    """Try to delete every known lane; returns how many were deleted."""
    deleted = 0
    for member in connection.smembers(keys.KNOWN):
        deleted += delete_lane_if_gone(connection, int(member))
    return deleted
