"""Memory storage (``memory://``, the default): counters live in the process and are forgotten once their window
has passed, so a stream of new tokens or addresses cannot grow the process without bound."""

from __future__ import annotations

from collections.abc import Callable

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
