"""Failed sign-in throttles that a parallel burst cannot overrun.

An attempt first takes a place in a sliding log per account and per address (one Lua script:
both limits are checked and both places taken, or neither); only then is its password checked.
A success gives its places back, so only failures count. 40 wrong passwords sent at once for
one account therefore get at most 10 checks, not 40.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass

from flask import current_app
from limits import parse

from webapp.lanes import keys

_RESERVE = """
local now = tonumber(ARGV[1])
local wait = 0
for i = 1, #KEYS do
  local window, limit = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local left = window
    if oldest[2] then left = tonumber(oldest[2]) + window - now end
    if left > wait then wait = left end
  end
end
if wait > 0 then return tostring(wait) end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[#ARGV])
  redis.call('EXPIRE', KEYS[i], math.ceil(tonumber(ARGV[2 * i])) + 1)
end
return '0'
"""


@dataclass
class Attempt:
    keys: tuple[str, ...]
    member: str
    retry_after: int = 0  # seconds; > 0 when refused

    @property
    def refused(self) -> bool:
        return self.retry_after > 0


def take_places(limits: list[tuple[str, str]]) -> Attempt:
    """Take one place under every (key, "N/period") limit, atomically, or none when one is full."""
    attempt = Attempt(keys=tuple(key for key, _ in limits), member=secrets.token_hex(8))
    arguments = []
    for _, limit in limits:
        item = parse(limit)
        arguments += [item.get_expiry(), item.amount]
    wait = current_app.extensions["lanes_redis"].eval(
        _RESERVE, len(limits), *attempt.keys, time.time(), *arguments, attempt.member
    )
    attempt.retry_after = math.ceil(float(wait))
    return attempt


class LoginThrottle:
    """``reserve`` before checking a password; ``give_back`` after a success."""

    def reserve(self, account: str, address: str) -> Attempt:
        config = current_app.config
        return take_places([
            (keys.login_failures("account", account), config["LANES_LOGIN_RATE_ACCOUNT"]),
            (keys.login_failures("address", address), config["LANES_LOGIN_RATE_ADDRESS"]),
        ])

    def give_back(self, attempt: Attempt) -> None:
        with current_app.extensions["lanes_redis"].pipeline() as pipe:
            for key in attempt.keys:
                pipe.zrem(key, attempt.member)
            pipe.execute()


login_throttle = LoginThrottle()
