"""The per-address limit on failed authentication (JWTGATE_AUTH_FAILURE_LIMIT), so that guessing tokens is slow.

It keys on the resolved client address, and once an address has used it up, every request from it that carries
credentials is refused before verification: a blocked guesser learns nothing about any token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import Clock
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_jwtgate.testing import KeyPair, make_app
from flask_jwtgate.verification import JWTVerifier

TokenFactory = Callable[..., str]
ATTACKER = {"REMOTE_ADDR": "198.51.100.66"}
NEIGHBOUR = {"REMOTE_ADDR": "198.51.100.67"}


@pytest.fixture
def limited(jwtgate_keys: dict[str, KeyPair], window_clock: Clock) -> Callable[..., Flask]:
    """``make(**config) -> app`` with 5 failed authentications per minute per address, 100 requests per token."""

    def make(**config: Any) -> Flask:
        config.setdefault("JWTGATE_RATE_LIMIT", "100/minute")
        config.setdefault("JWTGATE_AUTH_FAILURE_LIMIT", "5/minute")
        app, _ = make_app(jwtgate_keys, clock=window_clock, **config)
        return app

    return make


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token the gate verifies (signature checks are the work the limit saves)."""
    seen: list[str] = []
    original = JWTVerifier.verify

    def verify(self: JWTVerifier, token: str) -> Any:
        seen.append(token)
        return original(self, token)

    monkeypatch.setattr(JWTVerifier, "verify", verify)
    return seen


def call(
    client: FlaskClient, authorization: str | None, environ: dict[str, str], forwarded: str | None = None
) -> TestResponse:
    headers = {"Authorization": authorization} if authorization else {}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return client.get("/api/items", headers=headers, environ_base=environ)


def guesses(count: int) -> list[str]:
    return [f"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.guess{i}" for i in range(count)]


def test_after_the_limit_an_address_gets_429_before_any_verification(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, verifications: list[str]
) -> None:
    client = limited().test_client()
    valid = jwtgate_token_factory("alice")

    failed = [call(client, guess, ATTACKER) for guess in guesses(5)]
    verified_before = len(verifications)
    blocked_guess = call(client, guesses(6)[5], ATTACKER)
    blocked_valid = call(client, f"Bearer {valid}", ATTACKER)

    assert {r.status_code for r in failed} == {401}
    assert blocked_guess.status_code == blocked_valid.status_code == 429
    assert blocked_valid.json == {
        "error": "too_many_requests",
        "error_description": "too many failed authentication attempts from this address; retry after 60 seconds",
        "status": 429,
        "reason": "too_many_failed_attempts",
    }
    assert blocked_valid.headers["Retry-After"] == "60"
    assert blocked_valid.headers["RateLimit-Limit"] == "5"
    assert blocked_valid.headers["RateLimit-Remaining"] == "0"
    assert len(verifications) == verified_before


def test_a_token_already_verified_is_refused_too_so_a_guesser_learns_nothing(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    client = limited().test_client()
    valid = jwtgate_token_factory("alice")
    assert call(client, f"Bearer {valid}", NEIGHBOUR).status_code == 200  # now in the verified-token cache

    for guess in guesses(5):
        call(client, guess, ATTACKER)

    assert call(client, f"Bearer {valid}", ATTACKER).status_code == 429
    assert call(client, f"Bearer {valid}", NEIGHBOUR).status_code == 200


def test_a_forged_forwarding_header_cannot_reset_the_count(limited: Callable[..., Flask]) -> None:
    client = limited().test_client()

    codes = [call(client, guess, ATTACKER, f"203.0.113.{i}").status_code for i, guess in enumerate(guesses(7))]

    assert codes == [401] * 5 + [429] * 2


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(limited: Callable[..., Flask]) -> None:
    client = limited(JWTGATE_PROXY_HEADER="X-Forwarded-For", JWTGATE_TRUSTED_PROXIES=["10.0.0.0/8"]).test_client()
    proxy = {"REMOTE_ADDR": "10.1.1.1"}

    def attempt(forwarded: str) -> int:
        return call(client, guesses(1)[0], proxy, forwarded).status_code

    attacker = [attempt("198.51.100.66") for _ in range(6)]
    neighbour = attempt("198.51.100.67")

    assert attacker == [401] * 5 + [429]
    assert neighbour == 401


def test_requests_without_credentials_do_not_count(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    client = limited().test_client()

    anonymous = [call(client, None, ATTACKER) for _ in range(10)]
    public = client.get("/api/status", environ_base=ATTACKER)
    with_token = call(client, f"Bearer {jwtgate_token_factory('alice')}", ATTACKER)

    assert {r.status_code for r in anonymous} == {401}
    assert public.status_code == 200
    assert with_token.status_code == 200


def test_malformed_and_unsupported_credentials_count(limited: Callable[..., Flask]) -> None:
    client = limited().test_client()
    attempts = ["Bearer a b", "Basic !!!", "Digest x", "Basic YWxpY2U6c2VjcmV0", "Bearer not.a.jwt"]

    failed = [call(client, attempt, ATTACKER).status_code for attempt in attempts]
    blocked = call(client, "Bearer anything", ATTACKER).status_code

    assert failed == [401] * 5
    assert blocked == 429


def test_the_block_ends_with_the_window(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    client = limited().test_client()
    valid = f"Bearer {jwtgate_token_factory('alice')}"
    for guess in guesses(5):
        call(client, guess, ATTACKER)

    window_clock.advance(30)
    still_blocked = call(client, valid, ATTACKER)
    window_clock.advance(31)
    let_in = call(client, valid, ATTACKER)

    assert still_blocked.status_code == 429
    assert still_blocked.headers["Retry-After"] == "30"
    assert let_in.status_code == 200


def test_the_failure_limit_can_be_switched_off(limited: Callable[..., Flask]) -> None:
    client = limited(JWTGATE_AUTH_FAILURE_LIMIT=None).test_client()

    codes = {call(client, guess, ATTACKER).status_code for guess in guesses(30)}

    assert codes == {401}


def test_paths_the_gate_does_not_handle_are_never_blocked(limited: Callable[..., Flask]) -> None:
    app = limited(JWTGATE_BYPASS_PATHS=["/health"])
    app.add_url_rule("/health", "health", lambda: {"ok": True})
    client = app.test_client()
    for guess in guesses(5):
        call(client, guess, ATTACKER)

    response = client.get("/health", headers={"Authorization": "Bearer whatever"}, environ_base=ATTACKER)

    assert response.status_code == 200
