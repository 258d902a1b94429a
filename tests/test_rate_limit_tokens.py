"""Per-token rate limits (JWTGATE_RATE_LIMIT): one bucket per verified token, per address for anonymous callers.

Memory storage on a controlled clock: limits' memory storage reads ``time.time`` through its module, which the
``window_clock`` fixture points at the gate's clock, so a window passes by advancing the clock, never by sleeping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from conftest import Clock
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_jwtgate import GateDenied, JWTGate, request_denied
from flask_jwtgate.errors import InvalidParameter
from flask_jwtgate.ratelimit import SweptMemoryStorage
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing import KeyPair, make_app

TokenFactory = Callable[..., str]


@pytest.fixture
def limited(jwtgate_keys: dict[str, KeyPair], window_clock: Clock) -> Callable[..., Flask]:
    """``make(**config) -> app``: the test API with a limit of 3 per minute unless ``config`` says otherwise."""

    def make(**config: Any) -> Flask:
        config.setdefault("JWTGATE_RATE_LIMIT", "3/minute")
        app, _ = make_app(jwtgate_keys, clock=window_clock, **config)
        return app

    return make


def get(client: FlaskClient, token: str | None = None, path: str = "/api/items", **kwargs: Any) -> TestResponse:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(path, headers=headers, **kwargs)


def rate_headers(response: TestResponse) -> tuple[str | None, str | None, str | None]:
    h = response.headers
    return h.get("RateLimit-Limit"), h.get("RateLimit-Remaining"), h.get("RateLimit-Reset")


def test_token_gets_its_limit_then_429_with_the_contract_body_and_headers(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    client = limited().test_client()
    token = jwtgate_token_factory("alice")

    allowed = [get(client, token) for _ in range(3)]
    refused = get(client, token)

    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert [rate_headers(r) for r in allowed] == [("3", "2", "60"), ("3", "1", "60"), ("3", "0", "60")]
    assert refused.status_code == 429
    assert refused.json == {
        "error": "too_many_requests",
        "error_description": "this token has used up its rate limit (3 per 1 minute); retry after 60 seconds",
        "status": 429,
        "reason": "rate_limited",
    }
    assert refused.headers["Retry-After"] == "60"
    assert rate_headers(refused) == ("3", "0", "60")
    assert refused.headers["Cache-Control"] == "no-store"


def test_reset_and_retry_after_are_whole_seconds_rounded_up(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    client = limited(JWTGATE_RATE_LIMIT="2/minute").test_client()
    token = jwtgate_token_factory("alice")

    first = get(client, token)
    window_clock.advance(0.95)  # 59.05 seconds left
    second = get(client, token)
    window_clock.advance(58.6)  # 0.45 seconds left
    refused = get(client, token)

    assert [rate_headers(first), rate_headers(second)] == [("2", "1", "60"), ("2", "0", "60")]
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json == {
        "error": "too_many_requests",
        "error_description": "this token has used up its rate limit (2 per 1 minute); retry after 1 seconds",
        "status": 429,
        "reason": "rate_limited",
    }


def test_a_window_that_ends_as_it_is_counted_says_reset_0(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis's PTTL says 0 in a window's last millisecond; the store's answer stands in for it here.
    monkeypatch.setattr(SweptMemoryStorage, "count_request", lambda *args: [1, 0.0])
    client = limited().test_client()
    assert rate_headers(get(client, jwtgate_token_factory("alice"))) == ("3", "2", "0")


def test_window_resets_when_the_clock_passes_it(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    client = limited().test_client()
    token = jwtgate_token_factory("alice")
    for _ in range(3):
        get(client, token)

    window_clock.advance(20)
    waiting = get(client, token)
    window_clock.advance(41)
    after = get(client, token)

    assert waiting.status_code == 429
    assert waiting.headers["Retry-After"] == "40"
    assert after.status_code == 200
    assert rate_headers(after) == ("3", "2", "60")


def test_several_limits_apply_together_and_the_tightest_is_reported(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    client = limited(JWTGATE_RATE_LIMIT="2/second;3/minute").test_client()
    token = jwtgate_token_factory("alice")

    burst = [get(client, token) for _ in range(3)]
    window_clock.advance(1)
    next_second = get(client, token)
    window_clock.advance(1)
    minute_used_up = get(client, token)

    assert [r.status_code for r in burst] == [200, 200, 429]
    assert burst[2].headers["Retry-After"] == "1"
    assert rate_headers(burst[0]) == ("2", "1", "1")
    assert next_second.status_code == 200
    assert rate_headers(next_second) == ("3", "0", "59")
    assert minute_used_up.status_code == 429
    assert minute_used_up.headers["RateLimit-Limit"] == "3"
    assert minute_used_up.headers["Retry-After"] == "58"


def test_of_two_limits_with_as_many_left_the_one_that_resets_last_is_reported(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    # After one request both limits leave 2: until the minute's window resets no more than 2 are left, whatever the
    # second's says, so the headers must not promise a fresh quota in 1 s.
    client = limited(JWTGATE_RATE_LIMIT="3/second;3/minute").test_client()
    token = jwtgate_token_factory("alice")

    first = get(client, token)
    window_clock.advance(1)
    second = get(client, token)

    assert rate_headers(first) == ("3", "2", "60")
    assert rate_headers(second) == ("3", "1", "59")


def test_of_two_limits_with_as_many_left_and_the_same_reset_the_shorter_is_reported(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    # Half a second before the minute's window resets, a new second's window starts: both leave 1, both reset within
    # a second. Either is true; the headers keep to the first, the shorter window.
    client = limited(JWTGATE_RATE_LIMIT="2/second;3/minute").test_client()
    token = jwtgate_token_factory("alice")

    get(client, token)
    window_clock.advance(59.5)
    late = get(client, token)

    assert rate_headers(late) == ("2", "1", "1")


def test_encoding_variants_and_header_spellings_share_one_bucket(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    client = limited().test_client()
    token = jwtgate_token_factory("alice")
    head, payload, signature = token.split(".")
    padded = f"{head}.{payload}.{signature}" + "=" * (-len(signature) % 4)
    assert padded != token, "the test needs a signature whose base64 takes padding"

    spellings = [f"Bearer {token}", f"bearer {padded}", f"BEARER   {token}  "]
    responses = [client.get("/api/items", headers={"Authorization": a}) for a in spellings]
    refused = get(client, token)

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["2", "1", "0"]
    assert refused.status_code == 429


def test_two_tokens_of_one_user_have_two_buckets(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    client = limited().test_client()
    first, second = jwtgate_token_factory("alice"), jwtgate_token_factory("alice")
    for _ in range(3):
        get(client, first)

    assert get(client, first).status_code == 429
    assert get(client, second).status_code == 200
    assert get(client, second).headers["RateLimit-Remaining"] == "1"


def test_an_invalid_token_never_draws_from_a_valid_tokens_bucket(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory, jwtgate_keys: dict[str, KeyPair]
) -> None:
    client = limited(JWTGATE_AUTH_FAILURE_LIMIT=None).test_client()
    token = jwtgate_token_factory("alice")
    claims = jwt.decode(token, options={"verify_signature": False})
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forgeries = [
        jwt.encode(claims, other_key, algorithm="RS256"),  # same jti, wrong key
        jwtgate_token_factory("alice", claims={"jti": claims["jti"]}, expires_in=-3600),  # same jti, expired
        token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),  # the valid token, signature damaged
    ]

    refused = [get(client, forged) for forged in forgeries * 3]
    allowed = [get(client, token) for _ in range(3)]

    assert {r.status_code for r in refused} == {401}
    assert all("RateLimit-Remaining" not in r.headers for r in refused)
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert allowed[0].headers["RateLimit-Remaining"] == "2"


def test_head_and_every_other_method_count_like_get(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    client = limited().test_client()
    token = jwtgate_token_factory("alice")
    auth = {"Authorization": f"Bearer {token}"}

    head = client.head("/api/items", headers=auth)
    post = client.post("/api/items", headers=auth)
    get_ = client.get("/api/items", headers=auth)
    head_again = client.head("/api/items", headers=auth)

    assert [r.status_code for r in (head, post, get_)] == [200, 200, 200]
    assert [r.headers["RateLimit-Remaining"] for r in (head, post, get_)] == ["2", "1", "0"]
    assert head_again.status_code == 429
    assert head_again.headers["Retry-After"] == "60"


def test_a_group_override_replaces_the_default_and_the_first_listed_group_wins(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    client = limited(
        JWTGATE_RATE_LIMIT="1/minute",
        JWTGATE_RATE_LIMIT_GROUPS={"service-accounts": "4/minute", "batch": "2/minute"},
    ).test_client()
    service = jwtgate_token_factory("robot", groups=["batch", "service-accounts"])
    batch = jwtgate_token_factory("cron", groups=["batch"])
    person = jwtgate_token_factory("alice", groups=["developers"])

    service_codes = [get(client, service).status_code for _ in range(5)]
    batch_codes = [get(client, batch).status_code for _ in range(3)]
    person_codes = [get(client, person).status_code for _ in range(2)]

    assert service_codes == [200, 200, 200, 200, 429]
    assert batch_codes == [200, 200, 429]
    assert person_codes == [200, 429]


def test_anonymous_callers_of_a_public_path_are_limited_per_resolved_address(
    limited: Callable[..., Flask],
) -> None:
    client = limited().test_client()
    first = {"REMOTE_ADDR": "198.51.100.7"}

    own = [client.get("/api/status", environ_base=first) for _ in range(3)]
    spoofed = client.get("/api/status", environ_base=first, headers={"X-Forwarded-For": "203.0.113.99"})
    other = client.get("/api/status", environ_base={"REMOTE_ADDR": "198.51.100.8"})

    assert [r.status_code for r in own] == [200, 200, 200]
    assert own[0].headers["RateLimit-Remaining"] == "2"
    assert spoofed.status_code == 429
    assert spoofed.json is not None and spoofed.json["error_description"].startswith("this address has used up")
    assert other.status_code == 200


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(limited: Callable[..., Flask]) -> None:
    client = limited(
        JWTGATE_PROXY_HEADER="X-Forwarded-For", JWTGATE_TRUSTED_PROXIES=["10.0.0.0/8"]
    ).test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.2"}

    def call(forwarded: str) -> int:
        return client.get("/api/status", environ_base=proxy, headers={"X-Forwarded-For": forwarded}).status_code

    first = [call("198.51.100.7") for _ in range(4)]
    # The client may prepend anything; the proxy appended the address it saw, and that is the one believed.
    prepended = call("203.0.113.1, 198.51.100.7")
    second = call("198.51.100.8")

    assert first == [200, 200, 200, 429]
    assert prepended == 429
    assert second == 200


def test_a_valid_token_on_a_public_path_draws_from_its_own_bucket(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    client = limited().test_client()
    token = jwtgate_token_factory("alice")
    for _ in range(3):
        client.get("/api/status")

    with_token = get(client, token, path="/api/status")
    anonymous = client.get("/api/status")

    assert with_token.status_code == 200
    assert with_token.headers["RateLimit-Remaining"] == "2"
    assert anonymous.status_code == 429


def test_paths_the_gate_does_not_handle_are_not_limited(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    app = limited(JWTGATE_RATE_LIMIT="1/minute", JWTGATE_BYPASS_PATHS=["/health"], JWTGATE_PROTECTED_PATHS=["/api/**"])
    app.add_url_rule("/health", "health", lambda: {"ok": True})
    app.add_url_rule("/docs", "docs", lambda: {"docs": True})
    client = app.test_client()
    token = jwtgate_token_factory("alice")

    responses = [client.get(path, headers={"Authorization": f"Bearer {token}"}) for path in ["/health", "/docs"] * 3]

    assert {r.status_code for r in responses} == {200}
    assert all("RateLimit-Limit" not in r.headers for r in responses)
    assert get(client, token).status_code == 200


def test_the_constructor_overrides_the_configured_limit(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    app = Flask("override")
    app.config.update(
        TESTING=True,
        JWTGATE_PROVIDERS=[{"name": "test", "public_key": jwtgate_keys["rsa"].public_pem}],
        JWTGATE_RATE_LIMIT="100/minute",
    )
    JWTGate(app, clock=window_clock, rate_limit="1/minute")
    app.add_url_rule("/api", "api", lambda: {"ok": True})
    client = app.test_client()
    token = jwtgate_token_factory("alice")

    assert [get(client, token, path="/api").status_code for _ in range(2)] == [200, 429]


def test_a_refusal_for_the_rate_limit_is_signalled_with_its_reason_and_who(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    app = limited(JWTGATE_RATE_LIMIT="1/minute")
    client = app.test_client()
    token = jwtgate_token_factory("alice")
    denied: list[GateDenied] = []

    def record(sender: Flask, error: GateDenied) -> None:
        denied.append(error)

    with request_denied.connected_to(record, app):
        get(client, token)
        get(client, token)

    assert [(e.reason, e.status_code, e.identity.username, str(e.client)) for e in denied] == [
        ("rate_limited", 429, "alice", "127.0.0.1")
    ]


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_when_the_store_fails_the_gate_answers_as_its_fail_mode_says(
    limited: Callable[..., Flask],
    jwtgate_token_factory: TokenFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fail_open: bool,
) -> None:
    """The store's failure, whatever its library calls it (memory stands in for an unreachable Redis here): 503
    ``rate_limit_unavailable`` signalled with who asked, or with JWTGATE_RATE_LIMIT_FAIL_OPEN the request passes
    without a limit; either way the outage is logged with its cause."""

    def unreachable(*args: object) -> list[float]:
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(SweptMemoryStorage, "count_request", unreachable)
    app = limited(JWTGATE_RATE_LIMIT_FAIL_OPEN=fail_open)
    client = app.test_client()
    denied: list[GateDenied] = []

    def record(sender: Flask, error: GateDenied) -> None:
        denied.append(error)

    with request_denied.connected_to(record, app), caplog.at_level(logging.ERROR, logger="flask_jwtgate"):
        response = get(client, jwtgate_token_factory("alice"))

    if fail_open:
        assert response.status_code == 200 and rate_headers(response) == (None, None, None)
        assert denied == []
    else:
        assert response.status_code == 503
        assert response.json == {
            "error": "temporarily_unavailable",
            "error_description": "the rate-limit store cannot be reached; retry shortly",
            "status": 503,
            "reason": "rate_limit_unavailable",
        }
        assert [(e.reason, e.identity.username, str(e.client)) for e in denied] == [
            ("rate_limit_unavailable", "alice", "127.0.0.1")
        ]
    [logged] = [r.getMessage() for r in caplog.records if "rate-limit store" in r.getMessage()]
    assert "failed (ConnectionError: Connection refused)" in logged


@pytest.mark.parametrize("runtime", [True, False], ids=["runtime-settings", "config-only"])
def test_nothing_is_limited_without_a_rate_limit(jwtgate_keys: dict[str, KeyPair], bearer: Any, runtime: bool) -> None:
    app, _ = make_app(jwtgate_keys, JWTGATE_RUNTIME_SETTINGS=runtime)
    client = app.test_client()

    responses = [client.get("/api/status") for _ in range(30)]

    assert {r.status_code for r in responses} == {200}
    assert "RateLimit-Limit" not in responses[-1].headers
    # The storage is built only where an admin may switch limits on at run time.
    assert ("limiter" in app.extensions) is runtime


def test_new_limits_taken_into_use_at_run_time_apply_at_once(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    app = limited(JWTGATE_RATE_LIMIT="100/minute")
    client = app.test_client()
    token = jwtgate_token_factory("alice")
    before = get(client, token)
    state = app.extensions["jwtgate"]

    state.apply(state.settings.replace(rate_limit="2/minute"))
    after = [get(client, token) for _ in range(3)]

    assert before.headers["RateLimit-Limit"] == "100"
    assert [r.status_code for r in after] == [200, 200, 429]
    assert after[0].headers["RateLimit-Limit"] == "2"


def test_with_the_gate_switched_off_nothing_is_limited_and_no_headers_are_sent(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    app = limited(JWTGATE_ENABLED=False, JWTGATE_RATE_LIMIT="1/minute", JWTGATE_AUTH_FAILURE_LIMIT="1/minute")
    client = app.test_client()
    token = jwtgate_token_factory("alice")

    responses = [get(client, token) for _ in range(3)]
    responses += [get(client, "not-a-token") for _ in range(3)]  # no failed authentication: nothing is checked
    responses += [get(client, path="/api/status") for _ in range(3)]

    assert [r.status_code for r in responses] == [200] * 9
    assert all(rate_headers(r) == (None, None, None) for r in responses)


def test_switching_the_gate_off_at_run_time_lifts_a_block_for_failed_authentication(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    app = limited(JWTGATE_AUTH_FAILURE_LIMIT="2/minute")
    client = app.test_client()
    token = jwtgate_token_factory("alice")
    assert [get(client, "not-a-token").status_code for _ in range(2)] == [401, 401]
    assert get(client, token).status_code == 429  # this address is blocked
    state = app.extensions["jwtgate"]

    state.apply(Settings.from_mapping({**app.config, "JWTGATE_ENABLED": False}))
    response = get(client, token)

    assert response.status_code == 200
    assert rate_headers(response) == (None, None, None)


def test_switching_rate_limiting_on_at_run_time_applies_at_once(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, window_clock: Clock
) -> None:
    """With run-time settings on, the storage is built at start-up whether a limit is set or not: an admin's limit
    counts from the next request."""
    app, _ = make_app(jwtgate_keys, clock=window_clock)
    client = app.test_client()
    token = jwtgate_token_factory("alice")
    assert get(client, token).status_code == 200

    app.extensions["jwtgate"].runtime.change({"JWTGATE_RATE_LIMIT": "1/minute"}, based_on=None, by="test")
    responses = [get(client, token) for _ in range(2)]

    assert [r.status_code for r in responses] == [200, 429]
    assert rate_headers(responses[0])[:2] == ("1", "0")


def test_a_limit_cannot_be_switched_on_where_flask_limiter_is_off(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory
) -> None:
    app, _ = make_app(jwtgate_keys, RATELIMIT_ENABLED=False)
    with pytest.raises(InvalidParameter) as info:
        app.extensions["jwtgate"].runtime.change({"JWTGATE_RATE_LIMIT": "1/minute"}, based_on=None, by="test")
    assert info.value.parameter == "JWTGATE_RATE_LIMIT" and "RATELIMIT_ENABLED" in info.value.description


def test_a_new_storage_uri_at_run_time_takes_a_restart(
    limited: Callable[..., Flask], jwtgate_token_factory: TokenFactory
) -> None:
    """README: "... or a new storage URI, takes a restart": the counts stay where they were kept."""
    app = limited(JWTGATE_RATE_LIMIT="2/minute")
    client = app.test_client()
    token = jwtgate_token_factory("alice")
    assert get(client, token).status_code == 200
    state = app.extensions["jwtgate"]

    # A Redis nothing listens on: were it taken into use, every counted request would be a 503.
    state.apply(Settings.from_mapping({**app.config, "JWTGATE_RATE_LIMIT_STORAGE_URI": "redis://127.0.0.1:1/0"}))
    responses = [get(client, token) for _ in range(2)]

    assert [r.status_code for r in responses] == [200, 429]  # the same count, in the same memory storage
    assert rate_headers(responses[0]) == ("2", "0", "60")
