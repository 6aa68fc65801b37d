"""Rate limits kept in Redis (the ``limits`` library): submits per user, failed logins."""

from __future__ import annotations

import math
import time

from flask import Flask, current_app
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter


class RateLimits:
    """Named limits, each parsed once from configuration (e.g. ``600/minute``)."""

    def init_app(self, app: Flask) -> None:
        connection = app.extensions["lanes_redis"]
        storage = RedisStorage("redis://unused", connection_pool=connection.connection_pool)
        app.extensions["lanes_rate_limits"] = {
            "limiter": SlidingWindowCounterRateLimiter(storage),
            "submit": parse(app.config["LANES_SUBMIT_RATE"]),
            "login_account": parse(app.config["LANES_LOGIN_RATE_ACCOUNT"]),
            "login_address": parse(app.config["LANES_LOGIN_RATE_ADDRESS"]),
        }

    def _get(self, name: str) -> tuple[SlidingWindowCounterRateLimiter, RateLimitItem]:
        state = current_app.extensions["lanes_rate_limits"]
        return state["limiter"], state[name]

    def hit(self, name: str, *identifiers: str) -> bool:
        """Count one event; False when the limit was already reached."""
        limiter, item = self._get(name)
        return limiter.hit(item, *identifiers)

    def allowed(self, name: str, *identifiers: str) -> bool:
        """Whether one more event would be within the limit (counts nothing)."""
        limiter, item = self._get(name)
        return limiter.test(item, *identifiers)

    def retry_after(self, name: str, *identifiers: str) -> int:
        """Seconds until the limit admits another event."""
        limiter, item = self._get(name)
        reset_at = limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset_at - time.time()))


rate_limits = RateLimits()
