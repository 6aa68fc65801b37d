"""The one place a Redis client is built from ``REDIS_URL``, a Sentinel deployment included.

``redis://``, ``rediss://`` and ``unix://`` name one server. A Sentinel deployment is named
``redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]`` (the form
rq-dashboard reads too, parsed by the same library): the client asks the sentinels for the
service's primary before each new connection, and after a failover its connections to the old
primary fail, are dropped, and reconnect to the new one.
"""

from __future__ import annotations

from urllib.parse import urlparse

import redis
import redis_sentinel_url

SENTINEL_SCHEME = "redis+sentinel"
# A sentinel that is down or frozen must not hold up asking the next one.
SENTINEL_OPTIONS = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}


def is_sentinel_url(url: str) -> bool:
    return urlparse(url).scheme == SENTINEL_SCHEME


def redis_client(url: str, **options) -> redis.Redis:
    """A client for ``url``; ``options`` (timeouts, retry) apply to the data connections."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    parsed = redis_sentinel_url.parse_sentinel_url(url, sentinel_options=SENTINEL_OPTIONS, client_options=options)
    if not parsed.default_client.service:
        raise ValueError("a redis+sentinel:// URL names the service after the hosts: host:port/service_name[/db]")
    if parsed.default_client.type != "master":
        raise ValueError("Lanes writes to Redis: a redis+sentinel:// URL must name the primary (client_type=master)")
    sentinel = redis.sentinel.Sentinel(parsed.hosts, sentinel_kwargs=parsed.sentinel_options, **parsed.client_options)
    return sentinel.master_for(parsed.default_client.service)
