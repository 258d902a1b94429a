"""The three ways the gate counts (``flask_jwtgate.ratelimit.Count``) give the same answers: memory storage, the Lua
script in Redis, and limits' own calls one counter at a time (Redis Cluster, memcached, ...), here on the real Redis.

Hypothesis generates limits and a sequence of calls: count a bucket's counters, optionally watching an address's
failure counters first (a request with credentials), or check and count the failure counters (a refused
authentication). Counts and which watched counter stopped a call must agree exactly; the seconds to a window's reset
(in milliseconds) within the seconds that separate the calls (Redis keeps its own time).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from conftest import Clock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits.storage import RedisStorage, storage_from_string

from flask_jwtgate.ratelimit import Count, RedisCounter, Rule, StorageCounter, SweptMemoryStorage, parse_rules

LIMITS = st.sampled_from(["1/minute", "2/minute", "3/minute;5/hour", "2/minute;4/hour", "1/minute;2/hour;3/day"])
#: (bucket, watch the address's failure counters first, or count them as a refused authentication instead)
CALLS = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["count", "watch", "fail"])), max_size=20)


@pytest.fixture
def redis_storage(redis_url: str, key_prefix: str) -> Iterator[RedisStorage]:
    storage = storage_from_string(redis_url, key_prefix=key_prefix)
    assert isinstance(storage, RedisStorage)
    yield storage


def call(
    count: Count, run: str, bucket: str, kind: str, rules: tuple[Rule, ...], failures: tuple[Rule, ...]
) -> list[float]:
    keys = [f"{run}/token:{bucket}{rule.suffix}" for rule in rules]
    watch = [f"{run}/failed:{rule.suffix}" for rule in failures]
    if kind == "count":
        return count([], (), keys, rules)
    if kind == "watch":
        return count(watch, failures, keys, rules)
    return count(watch, failures, watch, failures)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=LIMITS, failure_limit=LIMITS, calls=CALLS)
def test_memory_redis_and_limits_calls_count_alike(
    redis_storage: RedisStorage, window_clock: Clock, limit: str, failure_limit: str, calls: list[tuple[str, str]]
) -> None:
    rules, failures = parse_rules(limit), parse_rules(failure_limit)
    run = uuid.uuid4().hex  # fresh counters in every example
    counters = {
        "memory": SweptMemoryStorage().count_request,
        "redis script": RedisCounter(redis_storage),
        "limits calls": StorageCounter(redis_storage),
    }
    for bucket, kind in calls:
        replies = {
            name: call(count, f"{run}-{name}", bucket, kind, rules, failures) for name, count in counters.items()
        }
        memory = replies["memory"]
        for name, reply in replies.items():
            assert reply[::2] == memory[::2], (name, bucket, kind)
            windows = [failures[-1 - int(reply[0])].expiry] if reply and reply[0] < 0 else (
                [rule.expiry for rule in (failures if kind == "fail" else rules)][: len(reply) // 2])
            for milliseconds, window in zip(reply[1::2], windows, strict=True):
                # Memory's clock stands still here; Redis's moves on (and limits' TTL is whole seconds).
                assert (window - 2) * 1000 <= milliseconds <= window * 1000, (name, reply)


def test_the_scripts_counters_are_limits_own(redis_storage: RedisStorage) -> None:
    """The script writes what limits writes, where limits looks: the Test Token tool, Flask-Limiter and limits read
    the gate's counts through limits' storage."""
    rules = parse_rules("5/minute")
    key = f"{uuid.uuid4().hex}/token:a{rules[0].suffix}"
    counter = RedisCounter(redis_storage)

    replies = [counter([], (), [key], rules) for _ in range(3)]

    assert [reply[0] for reply in replies] == [1, 2, 3]
    assert redis_storage.get(key) == 3
    assert 58 <= redis_storage.get_expiry(key) - time.time() <= 60
    assert redis_storage.incr(key, 60) == 4  # limits' own increment continues the same count
    assert counter([], (), [key], rules)[0] == 5
