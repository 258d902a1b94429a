"""The verified-token cache is keyed by the canonical token (README, "Security model"): a signature with base64
padding appended is the same token, one entry, verified once."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import Flask

from flask_jwtgate import JWTGate
from flask_jwtgate.verification import TokenCache, VerifiedToken


def test_a_padded_spelling_of_a_verified_token_is_not_verified_again(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_token_factory: Callable[..., str]
) -> None:
    app, _ = jwtgate_app_factory()
    providers = app.extensions["jwtgate"].keeper.providers
    verified: list[str] = []
    verify = providers.verify

    def counting(token: str) -> Any:
        verified.append(token)
        return verify(token)

    providers.verify = counting
    token = jwtgate_token_factory("alice")
    assert len(token.rpartition(".")[2]) % 4 == 2  # an RS256 signature: two '=' of padding are valid
    client = app.test_client()
    for spelling in (token, token + "==", token, token + "=="):
        assert client.get("/api/items", headers={"Authorization": f"Bearer {spelling}"}).status_code == 200
    assert verified == [token]



def test_the_cache_keeps_its_size_in_entries_dropping_the_least_recently_used() -> None:
    now = [0.0]
    cache = TokenCache(maxsize=2, clock=lambda: now[0])

    def entry(name: str) -> VerifiedToken:
        return VerifiedToken("test", name, frozenset(), {}, f"jti:{name}", expires_at=60.0)

    cache.put("a", entry("a"))
    cache.put("b", entry("b"))
    used = cache.get("a")  # 'b' is now the least recently used
    cache.put("c", entry("c"))

    assert used is not None and used.username == "a"
    assert len(cache) == 2
    assert [e.username if e else None for e in (cache.get("a"), cache.get("b"), cache.get("c"))] == ["a", None, "c"]
    now[0] = 60.0  # their expiry: no longer served
    assert (cache.get("a"), cache.get("c")) == (None, None)


def test_an_entry_another_thread_drops_meanwhile_is_a_miss_never_an_error() -> None:
    cache = TokenCache(clock=lambda: 60.0)

    class DroppedMeanwhile(OrderedDict):  # type: ignore[type-arg]
        """Another thread removes the entry between this one's lookup and its removal (or its move to the end)."""

        def get(self, key: Any, default: Any = None) -> Any:
            value = OrderedDict.get(self, key, default)
            OrderedDict.pop(self, key, None)
            return value

    cache._entries = DroppedMeanwhile()
    cache.put("expired", VerifiedToken("test", "a", frozenset(), {}, "jti:a", expires_at=60.0))
    cache.put("live", VerifiedToken("test", "b", frozenset(), {}, "jti:b", expires_at=120.0))
    assert cache.get("expired") is None
    assert cache.get("live") is not None


def test_a_spelling_verification_would_refuse_is_never_answered_from_the_cache(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_token_factory: Callable[..., str]
) -> None:
    # Only the padding PyJWT accepts is stripped: a character slipped in before it makes another token.
    app, _ = jwtgate_app_factory()
    client = app.test_client()
    token = jwtgate_token_factory("alice")
    answers = [
        client.get("/api/items", headers={"Authorization": f"Bearer {spelling}"}).status_code
        for spelling in (token, token + "X=", token + "X==", token + "==")
    ]
    assert answers == [200, 401, 401, 200]
