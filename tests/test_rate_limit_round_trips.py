"""What a request costs in Redis: at most one round trip, whatever the request.

Counted by the server itself: a Redis of the test's own (so no one else's commands) under ``MONITOR``, which shows
every command a client sends, and marks those a Lua script runs (``lua``): a round trip is a command a client sent.
The app has every feature on: groups, read-only groups, an IP allowlist with ``X-Forwarded-For`` from a trusted
proxy, a per-token rate limit, the failed-authentication limit, and the audit log.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis_servers import RedisServer, sent_commands, throwaway_redis  # noqa: F401
from werkzeug.test import TestResponse

from flask_jwtgate.testing import KeyPair, make_app

TokenFactory = Callable[..., str]
PROXY = {"REMOTE_ADDR": "10.0.0.2"}


@pytest.fixture
def client(jwtgate_keys: dict[str, KeyPair], throwaway_redis: RedisServer, tmp_path: Any) -> FlaskClient:  # noqa: F811
    app, _ = make_app(
        jwtgate_keys,
        JWTGATE_ALLOWED_GROUPS=["staff", "viewers"],
        JWTGATE_READ_ONLY_GROUPS=["viewers"],
        JWTGATE_IP_ALLOWLIST=["192.0.2.0/24"],
        JWTGATE_PROXY_HEADER="X-Forwarded-For",
        JWTGATE_TRUSTED_PROXIES=["10.0.0.0/8"],
        JWTGATE_RATE_LIMIT="10/second;3/minute",
        JWTGATE_AUTH_FAILURE_LIMIT="2/minute",
        JWTGATE_RATE_LIMIT_STORAGE_URI=throwaway_redis.url,
        JWTGATE_AUDIT_ENABLED=True,
        JWTGATE_DATABASE_URI=f"sqlite:///{tmp_path}/audit.db",
    )
    return app.test_client()


def get(client: FlaskClient, token: str | None, source: str, path: str = "/api/items") -> TestResponse:
    headers = {"X-Forwarded-For": source, **({"Authorization": f"Bearer {token}"} if token else {})}
    return client.get(path, headers=headers, environ_base=PROXY)


def test_every_request_makes_at_most_one_round_trip(
    client: FlaskClient, throwaway_redis: RedisServer, jwtgate_token_factory: TokenFactory  # noqa: F811
) -> None:
    staff, viewer = jwtgate_token_factory("alice", groups=["staff"]), jwtgate_token_factory("carol", groups=["viewers"])
    outsider = jwtgate_token_factory("mallory", groups=["elsewhere"])
    get(client, staff, "192.0.2.1")  # the first request loads the script into Redis and opens the connection
    requests: dict[str, Callable[[], TestResponse]] = {
        "allowed": lambda: get(client, staff, "192.0.2.1"),
        "allowed again": lambda: get(client, staff, "192.0.2.1"),
        "public, anonymous": lambda: get(client, None, "192.0.2.1", "/api/status"),
        "read-only write": lambda: client.post(
            "/api/items",
            headers={"Authorization": f"Bearer {viewer}", "X-Forwarded-For": "192.0.2.1"},
            environ_base=PROXY,
        ),
        "not in an allowed group": lambda: get(client, outsider, "192.0.2.1"),
        "no credentials": lambda: get(client, None, "192.0.2.1"),
        "address not allowed": lambda: get(client, staff, "203.0.113.9"),
        "over its limit": lambda: get(client, staff, "192.0.2.1"),
        "failed authentication": lambda: get(client, "not-a-token", "192.0.2.66"),
        "failed authentication, using up the limit": lambda: get(client, "not-a-token", "192.0.2.66"),
        "blocked, valid token": lambda: get(client, staff, "192.0.2.66"),
        "blocked, another guess": lambda: get(client, "guess", "192.0.2.66"),
    }

    statuses, round_trips = {}, {}
    for name, send in requests.items():
        with sent_commands(throwaway_redis) as commands:
            statuses[name] = send().status_code
        round_trips[name] = [sent.command for sent in commands]

    assert statuses == {
        "allowed": 200,
        "allowed again": 200,
        "public, anonymous": 200,
        "read-only write": 403,
        "not in an allowed group": 403,
        "no credentials": 401,
        "address not allowed": 403,
        "over its limit": 429,
        "failed authentication": 401,
        "failed authentication, using up the limit": 401,
        "blocked, valid token": 429,
        "blocked, another guess": 429,
    }
    assert round_trips == {
        "allowed": ["EVALSHA"],
        "allowed again": ["EVALSHA"],
        "public, anonymous": ["EVALSHA"],
        "read-only write": ["EVALSHA"],  # the address's failure count: a refusal is answered alike when it is blocked
        "not in an allowed group": ["EVALSHA"],
        "no credentials": [],
        "address not allowed": [],
        "over its limit": ["EVALSHA"],
        "failed authentication": ["EVALSHA"],
        "failed authentication, using up the limit": ["EVALSHA"],
        "blocked, valid token": [],  # this process saw the limit used up: refused before verification, without asking
        "blocked, another guess": [],
    }


# -- the connections the gate keeps --------------------------------------------------------------------------------


@pytest.fixture
def plain(jwtgate_keys: dict[str, KeyPair], throwaway_redis: RedisServer) -> FlaskClient:  # noqa: F811
    app, _ = make_app(
        jwtgate_keys,
        JWTGATE_RATE_LIMIT="100/minute",
        JWTGATE_RATE_LIMIT_STORAGE_URI=throwaway_redis.url,
        JWTGATE_AUDIT_ENABLED=False,
    )
    return app.test_client()


def test_a_server_that_forgot_the_script_is_sent_it_again(
    plain: FlaskClient, throwaway_redis: RedisServer, jwtgate_token_factory: TokenFactory  # noqa: F811
) -> None:
    auth = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}
    before = plain.get("/api/items", headers=auth)
    throwaway_redis.client().script_flush()

    with sent_commands(throwaway_redis) as commands:
        after = plain.get("/api/items", headers=auth)

    assert before.headers["RateLimit-Remaining"] == "99"
    assert after.status_code == 200
    assert after.headers["RateLimit-Remaining"] == "98"
    assert [sent.command for sent in commands] == ["EVALSHA", "SCRIPT", "EVALSHA"]


def test_a_kept_connection_the_server_closed_is_replaced_without_an_outage(
    plain: FlaskClient, throwaway_redis: RedisServer, jwtgate_token_factory: TokenFactory  # noqa: F811
) -> None:
    """Redis closes idle clients (its ``timeout``) and all of them when it restarts: the next request opens a new
    connection, it is not refused and does not open the circuit breaker."""
    auth = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}
    before = plain.get("/api/items", headers=auth)
    killed = throwaway_redis.client().client_kill_filter(_type="normal", skipme=True)

    after = [plain.get("/api/items", headers=auth) for _ in range(2)]

    assert killed >= 1
    assert before.headers["RateLimit-Remaining"] == "99"
    assert [r.status_code for r in after] == [200, 200]
    assert [r.headers["RateLimit-Remaining"] for r in after] == ["98", "97"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_does_not_use_its_parents_connection(
    plain: FlaskClient, throwaway_redis: RedisServer, jwtgate_token_factory: TokenFactory  # noqa: F811
) -> None:
    """gunicorn forks its workers from the master: with ``--preload`` an app that has already talked to Redis is
    copied into each. A child must open connections of its own: two processes reading one socket mix their answers."""
    auth = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}
    plain.get("/api/items", headers=auth)  # the script loaded, a connection kept
    with sent_commands(throwaway_redis) as commands:
        plain.get("/api/items", headers=auth)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (this one has none of its own)
            child = os.fork()
        if child == 0:  # pragma: no cover  # the child's exit status is the assertion
            os._exit(0 if plain.get("/api/items", headers=auth).status_code == 200 else 1)
        _, status = os.waitpid(child, 0)
        plain.get("/api/items", headers=auth)

    parent_before, in_child, parent_after = [sent for sent in commands if sent.command == "EVALSHA"]
    assert os.waitstatus_to_exitcode(status) == 0
    assert in_child.client != parent_before.client
    assert parent_after.client == parent_before.client
