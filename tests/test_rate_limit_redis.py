"""Rate limits in Redis: one count shared by every worker and host, and what happens when Redis goes away.

The shared-count test uses the Redis of ``redis_url`` under a key prefix of its own. The outage tests start a
throwaway ``redis-server`` on a free port and stop it mid-test; the shared server is never touched.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import free_port, service_missing
from flask import Flask

from flask_jwtgate.testing import KeyPair, make_app

TokenFactory = Callable[..., str]


class RedisServer:
    """A ``redis-server`` process of the test's own, which the test may stop and start again."""

    def __init__(self, binary: str, directory: str) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"redis-server on port {self.port} did not start", pytrace=False)
                time.sleep(0.05)  # waiting for a process to listen, not for a rate window

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def throwaway_redis(tmp_path: Any) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server", "the redis-server binary is not on PATH")
    try:
        import redis  # noqa: F401
    except ImportError:
        service_missing("Redis", "the 'redis' package is not installed")
    server = RedisServer(str(binary), str(tmp_path))
    server.start()
    try:
        yield server
    finally:
        server.stop()


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


def outage_app(keys: dict[str, KeyPair], server: RedisServer, **config: Any) -> Flask:
    app, _ = make_app(
        keys,
        JWTGATE_RATE_LIMIT="100/minute",
        JWTGATE_RATE_LIMIT_STORAGE_URI=server.url,
        JWTGATE_AUTH_FAILURE_LIMIT="5/minute",
        **config,
    )
    return app


def test_when_redis_stops_the_gate_fails_closed_and_recovers(
    jwtgate_keys: dict[str, KeyPair],
    jwtgate_token_factory: TokenFactory,
    throwaway_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = outage_app(jwtgate_keys, throwaway_redis).test_client()
    token = jwtgate_token_factory("alice")
    before = client.get("/api/items", headers=auth(token))

    throwaway_redis.stop()
    with caplog.at_level(logging.ERROR, logger="flask_jwtgate"):
        started = time.monotonic()
        during = [
            client.get("/api/items", headers=auth(token)),
            client.get("/api/status"),
            client.get("/api/items", headers=auth("not-a-token")),
        ]
        elapsed = time.monotonic() - started
    throwaway_redis.start()
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
    assert caplog.text.count("the rate-limit store") == 1
    assert "refused with 503" in caplog.text
    assert after.status_code == 200
    assert after.headers["RateLimit-Remaining"] == "99"  # a fresh Redis: the old count went with the old server


def test_when_redis_stops_the_gate_can_fail_open(
    jwtgate_keys: dict[str, KeyPair],
    jwtgate_token_factory: TokenFactory,
    throwaway_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = outage_app(jwtgate_keys, throwaway_redis, JWTGATE_RATE_LIMIT_FAIL_OPEN=True).test_client()
    token = jwtgate_token_factory("alice")
    before = client.get("/api/items", headers=auth(token))

    throwaway_redis.stop()
    with caplog.at_level(logging.ERROR, logger="flask_jwtgate"):
        during = [client.get("/api/items", headers=auth(token)) for _ in range(3)]
        public = client.get("/api/status")
        invalid = client.get("/api/items", headers=auth("not-a-token"))

    assert before.status_code == 200
    assert [r.status_code for r in during] == [200, 200, 200]
    assert all("RateLimit-Limit" not in r.headers for r in during)
    assert public.status_code == 200
    assert invalid.status_code == 401
    assert "pass without a limit" in caplog.text
