"""Which faults a soak plans, with and without ``--sentinel``, and the arguments it refuses.

``sentinel_failover`` needs a replica to promote; ``redis_refuse`` and ``redis_freeze`` turn into a
failover (or a second primary) under Sentinel. A soak asked for a fault that cannot mean what it
says must refuse to start rather than report a table about something else.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench.soak.__main__ import parse_arguments
from bench.soak.faults import KINDS, default_kinds, plan

WITHOUT_SENTINEL = ("lane_worker_kill", "supervisor_kill", "web_kill", "redis_flushall", "redis_restart",
                    "redis_refuse", "redis_freeze", "postgres_stop")
WITH_SENTINEL = ("lane_worker_kill", "supervisor_kill", "web_kill", "redis_flushall", "redis_restart",
                 "sentinel_failover", "postgres_stop")


def refusal(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_the_default_kinds_are_those_that_apply_with_and_without_sentinel(monkeypatch):
    monkeypatch.delenv("SOAK_SENTINEL", raising=False)
    assert default_kinds(False) == WITHOUT_SENTINEL
    assert default_kinds(True) == WITH_SENTINEL
    assert parse_arguments(["--seed", "1"]).kinds == WITHOUT_SENTINEL
    sentinel = parse_arguments(["--seed", "1", "--sentinel"])
    assert (sentinel.sentinel, sentinel.kinds) == (True, WITH_SENTINEL)


def test_soak_sentinel_1_in_the_environment_means_sentinel(monkeypatch):
    monkeypatch.setenv("SOAK_SENTINEL", "1")
    args = parse_arguments(["--seed", "1", "--faults", "sentinel_failover,redis_flushall"])
    assert (args.sentinel, args.kinds) == (True, ("sentinel_failover", "redis_flushall"))


def test_a_failover_without_sentinel_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("SOAK_SENTINEL", raising=False)
    assert "sentinel_failover needs --sentinel" in refusal(["--faults", "web_kill,sentinel_failover"], capsys)


def test_refusing_or_freezing_the_primary_under_sentinel_is_refused(capsys):
    error = refusal(["--sentinel", "--faults", "redis_refuse,redis_freeze,web_kill"], capsys)
    assert "redis_refuse does not apply with --sentinel" in error
    assert "redis_freeze does not apply with --sentinel" in error


def test_unknown_and_empty_fault_lists_are_refused(capsys):
    assert "unknown fault kind nonsense" in refusal(["--faults", "web_kill,nonsense"], capsys)
    assert "no fault kinds given" in refusal(["--faults", ","], capsys)


def test_a_sentinel_plan_fires_every_kind_and_the_failover_is_instant():
    faults = plan(20261203, 180, 5, default_kinds(True))
    fired = Counter(fault.kind for fault in faults)
    assert set(fired) == set(WITH_SENTINEL)
    assert all(fault.seconds == 0 for fault in faults if fault.kind == "sentinel_failover")
    assert [fault.at for fault in faults] == sorted(fault.at for fault in faults)
    assert plan(20261203, 180, 5, default_kinds(True)) == faults  # the seed repeats it


def test_every_kind_has_a_description_and_an_injector():
    from bench.soak.faults import DESCRIPTIONS, Injector

    assert set(DESCRIPTIONS) == set(KINDS)
    assert all(callable(getattr(Injector, kind, None)) for kind in KINDS)
