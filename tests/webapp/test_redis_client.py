"""``REDIS_URL`` forms: one server, or a Sentinel deployment named by its sentinels and service."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool

from webapp.redis_client import redis_client


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database():
    client = redis_client("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.2:26380/lanes/3", socket_timeout=7)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "lanes" and pool.is_master
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["socket_timeout"] == 7
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["host"] for s in sentinels] == ["127.0.0.1", "127.0.0.2"]
    # A sentinel that does not answer must not hold up asking the next one.
    assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 2.0 for s in sentinels)


def test_a_sentinel_url_without_a_service_is_refused_clearly():
    with pytest.raises(ValueError, match="service"):
        redis_client("redis+sentinel://127.0.0.1:26379")


def test_plain_urls_name_one_server():
    client = redis_client("redis://127.0.0.1:6390/4")
    assert client.connection_pool.connection_kwargs["port"] == 6390
    assert client.connection_pool.connection_kwargs["db"] == 4
