"""The per-address limit on failed authentication (JWTGATE_AUTH_FAILURE_LIMIT), so that guessing tokens is slow.

It keys on the resolved client address, and once an address has used it up, every request from it that carries
credentials is refused with the same 429, valid tokens included: a blocked guesser learns nothing about any token. A
process that knows the address is blocked refuses it before verification; one that does not (another worker) learns it
from the store's answer in the same call that counts the request, and answers the same.

Every test runs on memory storage and on the real Redis (``redis_url``, under a key prefix of its own), except those
that move the clock: Redis keeps its own time.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Clock
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_jwtgate import GateDenied, ratelimit, request_denied
from flask_jwtgate.ratelimit import SweptMemoryStorage
from flask_jwtgate.testing import KeyPair, make_app
from flask_jwtgate.verification import JWTVerifier

TokenFactory = Callable[..., str]
ATTACKER = {"REMOTE_ADDR": "198.51.100.66"}
NEIGHBOUR = {"REMOTE_ADDR": "198.51.100.67"}


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The storage settings: memory, or the real Redis under a key prefix of the test's own."""
    if request.param == "memory":
        return {}
    return {
        "JWTGATE_RATE_LIMIT_STORAGE_URI": request.getfixturevalue("redis_url"),
        "JWTGATE_RATE_LIMIT_STORAGE_OPTIONS": {"key_prefix": request.getfixturevalue("key_prefix")},
    }


#: For a test that moves the clock: memory storage follows the test's clock, Redis keeps its own time.
MEMORY_ONLY = pytest.mark.parametrize("storage", ["memory"], indirect=True)


@pytest.fixture
def limited(jwtgate_keys: dict[str, KeyPair], window_clock: Clock, storage: dict[str, Any]) -> Callable[..., Flask]:
    """``make(**config) -> app`` with 5 failed authentications per minute per address, 100 requests per token. Apps
    made with the Redis storage share their counts, like the workers of one server."""

    def make(**config: Any) -> Flask:
        config.setdefault("JWTGATE_RATE_LIMIT", "100/minute")
        config.setdefault("JWTGATE_AUTH_FAILURE_LIMIT", "5/minute")
        app, _ = make_app(jwtgate_keys, clock=window_clock, **storage, **config)
        return app

    return make


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token the gate verifies (signature checks are the work the limit saves)."""
    seen: list[str] = []
    original = JWTVerifier.verify

    def verify(self: JWTVerifier, token: str, parsed: Any = None) -> Any:
        seen.append(token)
        return original(self, token, parsed)

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
    """Well-formed RS256 tokens with forged signatures: each reaches the signature check unless the limit stops it
    first, so a test that counts verifications sees the work a block saves."""
    signatures = (base64.urlsafe_b64encode(b"forged signature %d" % i).rstrip(b"=").decode() for i in range(count))
    return [f"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.{signature}" for signature in signatures]


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
    assert verified_before == 5  # each guess reached the signature check
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


def test_a_blocked_address_is_answered_as_before_without_credentials(limited: Callable[..., Flask]) -> None:
    client = limited().test_client()
    for guess in guesses(5):
        call(client, guess, ATTACKER)

    public = client.get("/api/status", environ_base=ATTACKER)
    anonymous = call(client, None, ATTACKER)
    another_guess = call(client, guesses(6)[5], ATTACKER)

    assert another_guess.status_code == 429  # blocked for anything with credentials
    assert public.status_code == 200 and public.headers["RateLimit-Remaining"] == "99"  # counted as usual
    assert anonymous.status_code == 401  # the policy's answer, not the block's 429


def test_the_gates_own_endpoints_refuse_a_blocked_address_before_verification_whatever_the_path_rules(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, verifications: list[str]
) -> None:
    # Path rules never exempt the gate's own endpoints (/jwtgate/...), nor does the precheck.
    client = limited(JWTGATE_BYPASS_PATHS=["/jwtgate/**"]).test_client()
    valid = f"Bearer {jwtgate_token_factory('alice')}"
    for guess in guesses(5):
        call(client, guess, ATTACKER)
    verified_before = len(verifications)

    response = client.get("/jwtgate/whoami", headers={"Authorization": valid}, environ_base=ATTACKER)

    assert response.status_code == 429 and (response.json or {}).get("reason") == "too_many_failed_attempts"
    assert len(verifications) == verified_before


def test_malformed_and_unsupported_credentials_count(limited: Callable[..., Flask]) -> None:
    client = limited().test_client()
    attempts = ["Bearer a b", "Basic !!!", "Digest x", "Basic YWxpY2U6c2VjcmV0", "Bearer not.a.jwt"]

    failed = [call(client, attempt, ATTACKER).status_code for attempt in attempts]
    blocked = call(client, "Bearer anything", ATTACKER).status_code

    assert failed == [401] * 5
    assert blocked == 429


@MEMORY_ONLY
def test_the_block_ends_with_the_window(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    client = limited().test_client()
    valid = f"Bearer {jwtgate_token_factory('alice')}"
    for guess in guesses(5):
        call(client, guess, ATTACKER)

    window_clock.advance(30)
    still_blocked = call(client, valid, ATTACKER)
    window_clock.advance(30)  # the window's end, to the second
    let_in = call(client, valid, ATTACKER)

    assert still_blocked.status_code == 429
    assert still_blocked.headers["Retry-After"] == "30"
    assert let_in.status_code == 200


@MEMORY_ONLY
def test_a_worker_that_learns_of_the_block_from_the_store_answers_with_the_limit_that_blocks(
    limited: Callable[..., Flask],
    jwtgate_token_factory: TokenFactory,
    window_clock: Clock,
    verifications: list[str],
) -> None:
    app = limited(JWTGATE_AUTH_FAILURE_LIMIT="5/minute;100/hour")
    client = app.test_client()
    valid = f"Bearer {jwtgate_token_factory('alice')}"
    denied: list[GateDenied] = []

    def record(sender: Flask, error: GateDenied) -> None:
        denied.append(error)

    for guess in guesses(5):
        call(client, guess, ATTACKER)
    window_clock.advance(0.95)
    app.extensions["jwtgate"].limiter._blocked.clear()  # as in a worker that has not seen the failures
    with request_denied.connected_to(record, app):
        told_by_the_store = call(client, valid, ATTACKER)  # 59.05 seconds of the minute left
        window_clock.advance(59.02)
        verified_before = len(verifications)
        # 0.03 seconds left: still known to this process, which refuses a token it has never seen unverified
        remembered = call(client, f"Bearer {jwtgate_token_factory('bob')}", ATTACKER)

    assert [r.status_code for r in (told_by_the_store, remembered)] == [429, 429]
    assert [(r.headers["Retry-After"], r.headers["RateLimit-Limit"]) for r in (told_by_the_store, remembered)] == [
        ("60", "5"),
        ("1", "5"),
    ]
    assert len(verifications) == verified_before
    assert [(e.reason, str(e.client)) for e in denied] == [("too_many_failed_attempts", "198.51.100.66")] * 2


@MEMORY_ONLY
def test_with_two_failure_limits_the_one_used_up_is_remembered_to_its_windows_end(
    limited: Callable[..., Flask],
    jwtgate_token_factory: TokenFactory,
    window_clock: Clock,
    verifications: list[str],
) -> None:
    client = limited(JWTGATE_AUTH_FAILURE_LIMIT="5/minute;100/hour").test_client()
    for guess in guesses(5):
        call(client, guess, ATTACKER)

    window_clock.advance(59 + 31 / 32)  # a moment before the minute's end
    verified_before = len(verifications)
    last_moment = call(client, f"Bearer {jwtgate_token_factory('alice')}", ATTACKER)
    verified_after = len(verifications)
    window_clock.advance(1 / 32)  # the minute's end
    after = call(client, f"Bearer {jwtgate_token_factory('bob')}", ATTACKER)

    assert last_moment.status_code == 429 and verified_after == verified_before  # refused before verification
    assert (last_moment.headers["Retry-After"], last_moment.headers["RateLimit-Limit"]) == ("1", "5")
    assert after.status_code == 200


@MEMORY_ONLY
@pytest.mark.parametrize(("fail_open", "status"), [(False, 503), (True, 401)], ids=["fail-closed", "fail-open"])
def test_when_the_store_fails_refused_credentials_are_answered_as_the_fail_mode_says(
    limited: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fail_open: bool,
    status: int,
) -> None:
    """Whether the credentials were valid must not show: closed, a guess gets the same 503 as a valid token would."""

    def unreachable(*args: object) -> list[float]:
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(SweptMemoryStorage, "count_request", unreachable)
    app = limited(JWTGATE_RATE_LIMIT_FAIL_OPEN=fail_open)
    denied: list[GateDenied] = []

    def record(sender: Flask, error: GateDenied) -> None:
        denied.append(error)

    with request_denied.connected_to(record, app), caplog.at_level(logging.ERROR, logger="flask_jwtgate"):
        response = call(app.test_client(), guesses(1)[0], ATTACKER)

    assert response.status_code == status
    [logged] = [r.getMessage() for r in caplog.records if "rate-limit store" in r.getMessage()]
    assert "failed (ConnectionError: Connection refused)" in logged
    expected = "rate_limit_unavailable" if status == 503 else (response.json or {}).get("reason")
    assert [(e.reason, str(e.client)) for e in denied] == [(expected, "198.51.100.66")]
    if status == 503:
        assert response.json == {
            "error": "temporarily_unavailable",
            "error_description": "the rate-limit store cannot be reached; retry shortly",
            "status": 503,
            "reason": "rate_limit_unavailable",
        }


@MEMORY_ONLY
def test_a_request_the_allowlist_refuses_costs_no_store_call(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    count = SweptMemoryStorage.count_request

    def counted(self: SweptMemoryStorage, *args: Any) -> Any:
        calls.append(args)
        return count(self, *args)

    monkeypatch.setattr(SweptMemoryStorage, "count_request", counted)
    client = limited(JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"]).test_client()

    credentials = (guesses(1)[0], f"Bearer {jwtgate_token_factory()}")
    refused = [call(client, authorization, ATTACKER) for authorization in credentials]

    assert [r.status_code for r in refused] == [403, 403]
    assert calls == []


@MEMORY_ONLY
def test_the_process_remembers_at_most_max_remembered_blocks_addresses(
    limited: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "_MAX_REMEMBERED_BLOCKS", 2)
    app = limited()
    client = app.test_client()
    remembered = []
    for address in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        for guess in guesses(5):
            call(client, guess, {"REMOTE_ADDR": address})
        remembered.append(len(app.extensions["jwtgate"].limiter._blocked))
    assert remembered == [1, 2, 1]  # full: forgotten, and started again (forgetting costs a verification, no more)


@MEMORY_ONLY
def test_a_block_another_thread_forgets_at_the_same_moment_is_forgotten_once(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    app = limited()
    client = app.test_client()
    for guess in guesses(5):
        call(client, guess, ATTACKER)
    limiter = app.extensions["jwtgate"].limiter

    class ForgottenMeanwhile(dict):  # type: ignore[type-arg]
        """Another request's thread drops the ended block between this one's lookup and its removal."""

        def get(self, key: Any, default: Any = None) -> Any:
            value = dict.get(self, key, default)
            dict.pop(self, key, None)
            return value

    limiter._blocked = ForgottenMeanwhile(limiter._blocked)
    window_clock.advance(60)

    assert call(client, f"Bearer {jwtgate_token_factory('alice')}", ATTACKER).status_code == 200


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


# -- several workers: the store's answer, not the process's memory, enforces the block -------------------------------


@pytest.mark.parametrize("storage", ["redis"], indirect=True)
def test_a_worker_that_has_not_seen_the_failures_refuses_every_credential_the_same(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, verifications: list[str]
) -> None:
    """The failures are counted by one worker. Each other worker, whose first request from that address is a valid
    token, a write a read-only user may not make, or another guess, answers the same 429 (the address's count comes
    back in the call that counts the request, or that counts the failure); and from then on refuses that address
    before verifying anything."""

    def worker() -> FlaskClient:
        return limited(JWTGATE_READ_ONLY_GROUPS=["viewers"]).test_client()

    valid = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}
    viewer = {"Authorization": f"Bearer {jwtgate_token_factory('carol', groups=['viewers'])}"}
    first_requests: dict[str, Callable[[FlaskClient, dict[str, str]], TestResponse]] = {
        "valid token": lambda w, source: w.get("/api/items", headers=valid, environ_base=source),
        "read-only write": lambda w, source: w.post("/api/items", headers=viewer, environ_base=source),
        "another guess": lambda w, source: call(w, guesses(7)[6], source),
    }
    fresh = {name: worker() for name in first_requests}
    # What each answers from another address (each worker has now also verified and cached the tokens).
    elsewhere = {name: send(fresh[name], NEIGHBOUR).status_code for name, send in first_requests.items()}
    guessed_on = worker()
    for guess in guesses(5):
        call(guessed_on, guess, ATTACKER)

    answers = {name: send(fresh[name], ATTACKER) for name, send in first_requests.items()}
    verified_before = len(verifications)
    later = [send(fresh["valid token"], ATTACKER) for send in first_requests.values()]

    assert elsewhere == {"valid token": 200, "read-only write": 403, "another guess": 401}
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(first_requests, 429)
    assert all(r.json == answers["valid token"].json for r in [*answers.values(), *later])
    assert answers["valid token"].json["reason"] == "too_many_failed_attempts"
    assert all(r.headers["RateLimit-Limit"] == "5" and 1 <= int(r.headers["Retry-After"]) <= 60 for r in later)
    assert {r.status_code for r in later} == {429}
    assert len(verifications) == verified_before, "a worker verified tokens from an address it knew to be blocked"
