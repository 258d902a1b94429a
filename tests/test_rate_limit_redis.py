"""Rate limits in Redis: one count shared by every worker and host, and what happens when Redis goes away or hangs.

The shared-count test uses the Redis of ``redis_url`` under a key prefix of its own. The outage tests start a
throwaway ``redis-server`` on a free port and stop it mid-test; the shared server is never touched. A Redis that hangs
is a listener of the test's own that accepts connections and never answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Clock, free_port, service_missing
from flask import Flask
from redis_servers import RedisServer, SilentRedis, silent_redis, throwaway_redis  # noqa: F401

from flask_jwtgate.limiter import REDIS_DEFAULTS
from flask_jwtgate.ratelimit import LimitStore
from flask_jwtgate.testing import KeyPair, make_app

TokenFactory = Callable[..., str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_workers_sharing_redis_share_one_exact_count(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, redis_url: str, key_prefix: str
) -> None:
    config = {
        "JWTGATE_RATE_LIMIT": "4/minute",
        "JWTGATE_RATE_LIMIT_STORAGE_URI": redis_url,
        "JWTGATE_RATE_LIMIT_STORAGE_OPTIONS": {"key_prefix": key_prefix},
    }
    workers = [make_app(jwtgate_keys, **config)[0].test_client() for _ in range(3)]
    token, other = jwtgate_token_factory("alice"), jwtgate_token_factory("bob")

    responses = [workers[i % 3].get("/api/items", headers=auth(token)) for i in range(9)]
    unaffected = workers[0].get("/api/items", headers=auth(other))

    assert [r.status_code for r in responses] == [200] * 4 + [429] * 5
    assert [r.headers["RateLimit-Remaining"] for r in responses[:4]] == ["3", "2", "1", "0"]
    assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in responses[4:])
    assert unaffected.status_code == 200


def outage_app(keys: dict[str, KeyPair], url: str, breaker_clock: Clock, **config: Any) -> Flask:
    """The test API counting in the Redis at ``url``, its circuit breaker on ``breaker_clock``."""
    config.setdefault("JWTGATE_RATE_LIMIT", "100/minute")
    app, _ = make_app(
        keys,
        JWTGATE_RATE_LIMIT_STORAGE_URI=url,
        JWTGATE_AUTH_FAILURE_LIMIT="5/minute",
        **config,
    )
    store_of(app).clock = breaker_clock
    return app


def store_of(app: Flask) -> LimitStore:
    store: LimitStore = app.extensions["jwtgate"].limit_store
    return store


def test_when_redis_stops_the_gate_fails_closed_and_recovers(
    jwtgate_keys: dict[str, KeyPair],
    jwtgate_token_factory: TokenFactory,
    throwaway_redis: RedisServer,  # noqa: F811
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = outage_app(jwtgate_keys, throwaway_redis.url, clock).test_client()
    token = jwtgate_token_factory("alice")
    before = client.get("/api/items", headers=auth(token))

    throwaway_redis.stop()
    with caplog.at_level(logging.WARNING, logger="flask_jwtgate"):
        started = time.monotonic()
        during = [
            client.get("/api/items", headers=auth(token)),
            client.get("/api/status"),
            client.get("/api/items", headers=auth("not-a-token")),
        ]
        elapsed = time.monotonic() - started
        throwaway_redis.start()
        within_the_interval = client.get("/api/items", headers=auth(token))  # the breaker is still open
        clock.advance(LimitStore.RETRY_INTERVAL)
        after = client.get("/api/items", headers=auth(token))

    assert before.status_code == 200
    assert [r.status_code for r in during] == [503, 503, 503]
    assert during[0].json == {
        "error": "temporarily_unavailable",
        "error_description": "the rate-limit store cannot be reached; retry shortly",
        "status": 503,
        "reason": "rate_limit_unavailable",
    }
    assert all("RateLimit-Limit" not in r.headers for r in during)
    assert elapsed < 10, "a dead store must fail requests fast, not hang them"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "refused with 503" in errors[0]
    assert within_the_interval.status_code == 503
    assert after.status_code == 200
    assert after.headers["RateLimit-Remaining"] == "99"  # a fresh Redis: the old count went with the old server
    assert "answers again" in caplog.records[-1].getMessage()


def test_when_redis_stops_the_gate_can_fail_open(
    jwtgate_keys: dict[str, KeyPair],
    jwtgate_token_factory: TokenFactory,
    throwaway_redis: RedisServer,  # noqa: F811
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = outage_app(jwtgate_keys, throwaway_redis.url, clock, JWTGATE_RATE_LIMIT_FAIL_OPEN=True).test_client()
    token = jwtgate_token_factory("alice")
    before = client.get("/api/items", headers=auth(token))

    throwaway_redis.stop()
    with caplog.at_level(logging.ERROR, logger="flask_jwtgate"):
        during = [client.get("/api/items", headers=auth(token)) for _ in range(3)]
        public = client.get("/api/status")
        invalid = client.get("/api/items", headers=auth("not-a-token"))
    throwaway_redis.start()
    clock.advance(LimitStore.RETRY_INTERVAL)
    after = client.get("/api/items", headers=auth(token))

    assert before.status_code == 200
    assert [r.status_code for r in during] == [200, 200, 200]
    assert all("RateLimit-Limit" not in r.headers for r in during)
    assert public.status_code == 200
    assert invalid.status_code == 401
    assert "pass without a limit" in caplog.text
    assert after.headers["RateLimit-Remaining"] == "99"


# -- a Redis that hangs: the circuit breaker, and the timeouts the gate sets -------------------------------------------


def send_in_thread(client: Any, requests: list[dict[str, str]]) -> list[Any]:
    """Send ``requests`` (their headers) one after another in a thread; the answers, or a failure if they hang."""
    answers: list[Any] = []

    def send() -> None:
        for headers in requests:
            answers.append(client.get("/api/items", headers=headers))

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    # A correctness bound, not a performance figure: a hung request fails here (and is unblocked when the listener
    # closes). Without the breaker these requests would take one socket timeout each, far beyond it.
    sender.join(20)
    assert not sender.is_alive(), "requests hung on a Redis that never answers"
    return answers


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_a_hanging_redis_costs_one_timeout_per_interval_not_one_per_request(
    jwtgate_keys: dict[str, KeyPair],
    jwtgate_token_factory: TokenFactory,
    silent_redis: SilentRedis,  # noqa: F811
    clock: Clock,
    fail_open: bool,
) -> None:
    """Each call to a hung Redis is a new connection that times out (redis-py drops a connection after a timeout):
    the connections the listener accepts count the gate's attempts."""
    app = outage_app(
        jwtgate_keys,
        silent_redis.url,
        clock,
        JWTGATE_RATE_LIMIT_FAIL_OPEN=fail_open,
        JWTGATE_RATE_LIMIT_STORAGE_OPTIONS={"socket_timeout": 0.2, "socket_connect_timeout": 0.2},
    )
    client = app.test_client()
    token = auth(jwtgate_token_factory("alice"))

    first_interval = send_in_thread(client, [token, auth("not-a-token")] * 10)
    attempts_in_the_first_interval = len(silent_redis.connections)
    clock.advance(LimitStore.RETRY_INTERVAL - 0.1)
    still_open = send_in_thread(client, [token] * 5)
    attempts_before_the_trial = len(silent_redis.connections)
    clock.advance(0.1)
    trial = send_in_thread(client, [token] * 5)  # one trial call, which hangs too: open for another interval

    expected = 200 if fail_open else 503
    assert [r.status_code for r in first_interval] == [expected, 401 if fail_open else 503] * 10
    assert {r.status_code for r in still_open + trial} == {expected}
    assert all("RateLimit-Limit" not in r.headers for r in first_interval + still_open + trial)
    assert attempts_in_the_first_interval == 1
    assert attempts_before_the_trial == 1
    assert len(silent_redis.connections) == 2


def test_a_redis_that_never_answers_fails_a_request_with_503_within_the_socket_timeout(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, silent_redis: SilentRedis  # noqa: F811
) -> None:
    """``socket_timeout`` is 1 s unless set: a hung store costs a request about that, never a hang. The bound below is
    a correctness bound, not a performance figure: well above the gate's 1 s, and below redis-py's own default of
    5 s, so it fails if the gate's default is lost as well as if the request hangs."""
    app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT="100/minute", JWTGATE_RATE_LIMIT_STORAGE_URI=silent_redis.url)
    started = time.monotonic()
    [response] = send_in_thread(app.test_client(), [auth(jwtgate_token_factory("alice"))])
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json["reason"] == "rate_limit_unavailable"
    assert elapsed < 3


@pytest.fixture
def redis_package() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        service_missing("Redis", "the 'redis' package is not installed")


def test_the_outage_log_masks_the_storage_password(
    jwtgate_keys: dict[str, KeyPair],
    jwtgate_token_factory: TokenFactory,
    redis_package: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri = f"redis://jwtgate:s3cret-passw0rd@127.0.0.1:{free_port()}/0"  # nothing listens: refused at once
    app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT="100/minute", JWTGATE_RATE_LIMIT_STORAGE_URI=uri)

    with caplog.at_level(logging.ERROR, logger="flask_jwtgate"):
        response = app.test_client().get("/api/items", headers=auth(jwtgate_token_factory("alice")))

    assert response.status_code == 503
    assert "the rate-limit store redis://jwtgate:***@127.0.0.1:" in caplog.text
    assert "s3cret-passw0rd" not in caplog.text


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}),
        ({"socket_timeout": 0.25}, {"socket_timeout": 0.25, "socket_connect_timeout": 1.0}),
        ({"socket_connect_timeout": 3}, {"socket_timeout": 1.0, "socket_connect_timeout": 3}),
    ],
    ids=["defaults", "user-socket-timeout", "user-connect-timeout"],
)
def test_redis_timeouts_default_to_one_second_and_the_users_options_win(
    jwtgate_keys: dict[str, KeyPair], redis_package: None, options: dict[str, Any], expected: dict[str, float]
) -> None:
    """JWTGATE_RATE_LIMIT_STORAGE_OPTIONS over the gate's defaults: a value the user sets wins, the defaults stay for
    the rest, and every other option reaches the storage too."""
    app, _ = make_app(
        jwtgate_keys,
        JWTGATE_RATE_LIMIT="100/minute",
        JWTGATE_RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0",  # built, never connected to
        JWTGATE_RATE_LIMIT_STORAGE_OPTIONS={**options, "key_prefix": "api"},
    )
    storage = app.extensions["jwtgate"].limit_store.storage
    # The Redis client that the storage talks through: what its connections will be opened with.
    connection = storage.storage.connection_pool.connection_kwargs

    assert {name: connection.get(name) for name in REDIS_DEFAULTS} == expected
    assert storage.key_prefix == "api"


def test_an_error_reply_fails_its_request_but_does_not_open_the_breaker(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, redis_url: str, key_prefix: str
) -> None:
    """A key that holds something else than a counter (a shared key prefix, say) makes Redis answer with an error: the
    requests that need that key fail as the fail mode says, and everyone else's pass, because Redis is up."""
    import redis

    app, _ = make_app(
        jwtgate_keys,
        JWTGATE_RATE_LIMIT="100/minute",
        JWTGATE_AUTH_FAILURE_LIMIT="5/minute",
        JWTGATE_RATE_LIMIT_STORAGE_URI=redis_url,
        JWTGATE_RATE_LIMIT_STORAGE_OPTIONS={"key_prefix": key_prefix},
    )
    redis.Redis.from_url(redis_url).rpush(f"{key_prefix}:jwtgate/failed:198.51.100.66/5/1/minute", "not a count")
    client = app.test_client()
    token = auth(jwtgate_token_factory("alice"))

    broken = client.get("/api/items", headers=token, environ_base={"REMOTE_ADDR": "198.51.100.66"})
    others = [client.get("/api/items", headers=token) for _ in range(2)]

    assert broken.status_code == 503
    assert broken.json["reason"] == "rate_limit_unavailable"
    assert [r.status_code for r in others] == [200, 200]
    assert store_of(app).retry_at == 0.0
