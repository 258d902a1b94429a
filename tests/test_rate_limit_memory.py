"""Memory storage (``memory://``, the default): counters live in the process and are forgotten once their window
has passed, so a stream of new tokens or addresses cannot grow the process without bound."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from conftest import Clock

from flask_jwtgate.ratelimit import SweptMemoryStorage
from flask_jwtgate.testing import KeyPair, make_app

TokenFactory = Callable[..., str]


def test_counters_whose_window_has_passed_are_swept_away(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    app, _ = make_app(jwtgate_keys, clock=window_clock, JWTGATE_RATE_LIMIT="5/minute")
    client = app.test_client()
    storage = app.extensions["jwtgate"].limit_store.storage

    def call_with_a_new_token() -> int:
        token = jwtgate_token_factory("alice")
        return client.get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code

    first = [call_with_a_new_token() for _ in range(20)]
    counters_during_the_window = len(storage.storage)
    window_clock.advance(61)
    later = call_with_a_new_token()

    assert isinstance(storage, SweptMemoryStorage)
    assert first == [200] * 20
    assert counters_during_the_window == 20
    assert later == 200
    assert len(storage.storage) == 1


def test_counting_in_memory_under_several_processes_is_warned_about_once(
    jwtgate_keys: dict[str, KeyPair], window_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app(jwtgate_keys, clock=window_clock, JWTGATE_RATE_LIMIT="5/minute")
    client = app.test_client()
    several = {"wsgi.multiprocess": True, "SERVER_SOFTWARE": "gunicorn/23.0.0"}

    with caplog.at_level(logging.WARNING, logger="flask_jwtgate"):
        statuses = [client.get("/api/status", environ_overrides=several).status_code for _ in range(3)]

    assert statuses == [200] * 3
    assert [r.getMessage() for r in caplog.records if "wsgi.multiprocess" in r.getMessage()] == [
        "jwtgate: rate limits are counted in memory (JWTGATE_RATE_LIMIT_STORAGE_URI='memory://'), but gunicorn/23.0.0 "
        "runs this app in several processes (wsgi.multiprocess): each process counts alone, so every token gets its "
        "limit once per process. Set JWTGATE_RATE_LIMIT_STORAGE_URI to shared storage such as "
        "'redis://redis-host:6379/0'."
    ]
