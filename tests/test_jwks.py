"""JWKS providers: keys fetched from the provider's endpoint, cached, rotated, refetched with a cooldown, served while
the endpoint is down, bound to their algorithms; and a slow endpoint never stalls requests that do not need it."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from conftest import Clock
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from werkzeug.test import TestResponse

from flask_jwtgate import ConfigurationError, JWTGate
from flask_jwtgate.jwks import MAX_STALE, JWKSClient, cache_lifetime, parse_jwk
from flask_jwtgate.outbound import OutboundError, fetch
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing_idp import MockIdentityProvider

AppFactory = Callable[..., tuple[Flask, JWTGate]]
IdPFactory = Callable[..., MockIdentityProvider]


def get(app: Flask, token: str, path: str = "/api/items") -> TestResponse:
    return app.test_client().get(path, headers={"Authorization": f"Bearer {token}"})


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` for at most ``timeout`` seconds (real time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def jwks_clients(app: Flask) -> list[JWKSClient]:
    return list(app.extensions["jwtgate"].provider_clients.jwks._clients.values())


def wait_idle(app: Flask) -> None:
    for client in jwks_clients(app):
        assert client.wait_idle(5)


@pytest.fixture
def make(jwtgate_app_factory: AppFactory, clock: Clock) -> Callable[..., Flask]:
    """``make(*providers, **config) -> app`` with the test clock."""

    def build(*providers: dict[str, Any], **config: Any) -> Flask:
        app, _gate = jwtgate_app_factory(clock=clock, JWTGATE_PROVIDERS=list(providers), **config)
        return app

    return build


# -- verification and caching -----------------------------------------------------------------------------------------


def test_token_signed_with_a_published_key_is_accepted_and_keys_are_fetched_once(
    idp: MockIdentityProvider, make: Callable[..., Flask]
) -> None:
    app = make(idp.jwks_provider())
    for name in ("alice", "bob", "carol"):
        response = get(app, idp.mint_jwt(name, groups=["devs"]))
        assert response.status_code == 200
        assert response.json == {"user": name, "groups": ["devs"]}
    assert idp.hits["jwks"] == 1


def test_forged_token_with_a_published_kid_is_refused(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.jwks_provider())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(idp.claims_for("mallory"), other, algorithm="RS256", headers={"kid": idp.signing_key.kid})
    response = get(app, forged)
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "bad_signature"


def test_max_age_is_honoured_and_a_stale_set_is_refreshed_in_the_background(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    idp.jwks_max_age = 120
    app = make(idp.jwks_provider())
    assert get(app, idp.mint_jwt()).status_code == 200
    clock.advance(119)
    assert get(app, idp.mint_jwt()).status_code == 200
    assert idp.hits["jwks"] == 1
    clock.advance(2)
    assert get(app, idp.mint_jwt()).status_code == 200  # served from the stale set at once
    assert wait_until(lambda: idp.hits["jwks"] == 2)
    wait_idle(app)
    clock.advance(60)
    assert get(app, idp.mint_jwt()).status_code == 200
    assert idp.hits["jwks"] == 2  # the refreshed set is fresh again for 120 s


@pytest.mark.parametrize(
    ("max_age", "provider", "fresh_for"),
    [
        (0, {"jwks_min_ttl": 90}, 90),  # "max-age=0" never means "fetch on every request": the floor
        (10**6, {"jwks_max_ttl": 600}, 600),  # a week-long max-age is cut to the ceiling
        (None, {"cache_ttl": 200}, 200),  # no Cache-Control: the provider's cache_ttl
    ],
)
def test_freshness_is_clamped_between_floor_and_ceiling(
    idp: MockIdentityProvider,
    make: Callable[..., Flask],
    clock: Clock,
    max_age: int | None,
    provider: dict[str, Any],
    fresh_for: int,
) -> None:
    idp.jwks_max_age = max_age
    app = make(idp.jwks_provider(**provider))
    assert get(app, idp.mint_jwt()).status_code == 200
    clock.advance(fresh_for - 1)
    assert get(app, idp.mint_jwt()).status_code == 200
    assert idp.hits["jwks"] == 1
    clock.advance(2)
    assert get(app, idp.mint_jwt()).status_code == 200
    assert wait_until(lambda: idp.hits["jwks"] == 2)


def test_cache_lifetime_parsing() -> None:
    assert cache_lifetime("public, max-age=300", None, 100, 60, 3600) == 300
    assert cache_lifetime("max-age=300", "200", 100, 60, 3600) == 100  # Age from a CDN counts
    assert cache_lifetime("no-store", None, 100, 60, 3600) == 60
    assert cache_lifetime("max-age=abc", None, 100, 60, 3600) == 100
    assert cache_lifetime(None, None, 100, 60, 3600) == 100
    assert cache_lifetime("max-age=99999999", None, 100, 60, 3600) == 3600


# -- rotation and the kid flood ---------------------------------------------------------------------------------------


def test_key_rotation_a_new_kid_is_fetched_and_the_old_keys_tokens_keep_working(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    app = make(idp.jwks_provider())
    old_token = idp.mint_jwt("alice")
    assert get(app, old_token).status_code == 200
    clock.advance(15)  # past the refetch cooldown (10 s by default)
    new_kid = idp.rotate()
    new_token = idp.mint_jwt("bob")
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    response = get(app, new_token)
    assert response.status_code == 200
    assert response.json is not None and response.json["user"] == "bob"
    assert idp.hits["jwks"] == 2
    assert get(app, idp.mint_jwt("carol", kid=idp.keys[0].kid)).status_code == 200  # both keys are published
    assert idp.hits["jwks"] == 2


def test_a_rotation_inside_the_cooldown_is_seen_once_the_cooldown_passes(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    app = make(idp.jwks_provider(jwks_cooldown=30))
    assert get(app, idp.mint_jwt()).status_code == 200
    idp.rotate()
    token = idp.mint_jwt("bob")
    response = get(app, token)
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "unknown_key"
    assert idp.hits["jwks"] == 1
    clock.advance(31)
    assert get(app, token).status_code == 200
    assert idp.hits["jwks"] == 2


def test_a_retired_key_stops_being_trusted_even_for_cached_tokens(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    idp.jwks_max_age = 60
    app = make(idp.jwks_provider(cache_ttl=60))
    token = idp.mint_jwt("alice", expires_in=3600)
    assert get(app, token).status_code == 200
    idp.rotate(retire_old=True)
    clock.advance(61)  # the verified-token cache and the set are both due
    get(app, token)  # may still pass once: the stale set is served while it is refreshed
    assert wait_until(lambda: idp.hits["jwks"] == 2)
    wait_idle(app)
    response = get(app, token)
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "unknown_key"


def test_a_flood_of_random_kids_costs_one_fetch_per_cooldown(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    app = make(idp.jwks_provider(jwks_cooldown=10))
    assert get(app, idp.mint_jwt()).status_code == 200
    clock.advance(11)
    statuses = [get(app, idp.mint_jwt(headers={"kid": uuid.uuid4().hex})).status_code for _ in range(200)]
    assert set(statuses) == {401}
    assert idp.hits["jwks"] == 2  # the first unknown kid refetched; the other 199 were refused at once
    clock.advance(11)
    statuses = [get(app, idp.mint_jwt(headers={"kid": uuid.uuid4().hex})).status_code for _ in range(50)]
    assert set(statuses) == {401}
    assert idp.hits["jwks"] == 3
    assert get(app, idp.mint_jwt()).status_code == 200  # the real key still works throughout


def test_concurrent_requests_for_a_new_kid_share_a_single_fetch(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a rotation, 16 requests with the new kid arrive while the refetch is held: all of them wait for that one
    fetch (single flight) and are let in by it; none starts a fetch of its own or is refused meanwhile."""
    app = make(idp.jwks_provider(timeout=10))
    assert get(app, idp.mint_jwt()).status_code == 200
    clock.advance(11)  # past the refetch cooldown: the first new kid may fetch
    idp.rotate()
    tokens = [idp.mint_jwt(f"user{n}") for n in range(16)]
    waiters = _count_flight_waiters(monkeypatch)
    idp.hold()
    idp.jwks_mode = "slow"  # the refetch hangs until released
    idp.slow_seconds = 10
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda t=t: statuses.append(get(app, t).status_code)) for t in tokens]
    for thread in threads:
        thread.start()
    try:
        # Every request is now waiting for a fetch in flight (not refused, not served by a set without the new key).
        assert wait_until(lambda: idp.hits["jwks"] == 2 and waiters() == 16), (idp.hits["jwks"], waiters())
    finally:
        idp.release()
        for thread in threads:
            thread.join(15)
    assert statuses == [200] * 16
    assert idp.hits["jwks"] == 2  # the first fetch, and one refetch for all 16


def _count_flight_waiters(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the callers that wait on a JWKS fetch in flight (the test must know they all arrived before it lets the
    fetch answer; it cannot see that from outside)."""
    from flask_jwtgate import jwks

    lock = threading.Lock()
    count = [0]

    class CountedEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            with lock:
                count[0] += 1
            return super().wait(timeout)

    class CountedFlight(jwks._Flight):
        def __init__(self) -> None:
            self.done = CountedEvent()

    monkeypatch.setattr(jwks, "_Flight", CountedFlight)
    return lambda: count[0]


# -- the endpoint down ------------------------------------------------------------------------------------------------


def test_cached_keys_are_served_while_the_endpoint_is_down(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    idp.jwks_max_age = 60
    app = make(idp.jwks_provider(cache_ttl=60))
    assert get(app, idp.mint_jwt()).status_code == 200
    idp.jwks_mode = "down"
    for _ in range(5):
        clock.advance(3600)
        assert get(app, idp.mint_jwt()).status_code == 200
        wait_idle(app)
    assert idp.hits["jwks"] > 1  # it did keep trying, in the background
    clock.advance(MAX_STALE)  # but not for ever: a day past freshness the stale keys are dropped
    response = get(app, idp.mint_jwt())
    assert response.status_code == 503
    idp.jwks_mode = "ok"
    clock.advance(11)
    assert get(app, idp.mint_jwt()).status_code == 200


@pytest.mark.parametrize("mode", ["down", "500", "html", "garbage", "huge", "redirect"])
def test_nothing_cached_and_the_fetch_failing_is_503_never_200(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock, mode: str
) -> None:
    idp.jwks_mode = mode
    app = make(idp.jwks_provider())
    response = get(app, idp.mint_jwt())
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["error"] == "temporarily_unavailable"
    assert response.headers["Cache-Control"] == "no-store"
    assert idp.hits["jwks"] == 1  # a redirect is not followed (it points back here: following it would count 2)
    assert get(app, idp.mint_jwt()).status_code == 503
    assert idp.hits["jwks"] == 1  # a dead endpoint is not hammered: the next attempt waits for the cooldown
    idp.jwks_mode = "ok"
    clock.advance(11)
    assert get(app, idp.mint_jwt()).status_code == 200


def test_a_failed_refresh_keeps_the_cached_keys(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    idp.jwks_max_age = 60
    app = make(idp.jwks_provider())
    token = idp.mint_jwt(expires_in=3600)
    assert get(app, token).status_code == 200
    idp.jwks_document = {"keys": []}  # an empty answer is an answer; garbage is not
    idp.jwks_mode = "garbage"
    clock.advance(61)
    assert get(app, idp.mint_jwt()).status_code == 200
    wait_idle(app)
    assert get(app, idp.mint_jwt()).status_code == 200


def test_a_slow_endpoint_times_out_with_503(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    idp.hold()
    idp.jwks_mode = "slow"
    app = make(idp.jwks_provider(timeout=0.3))
    response = get(app, idp.mint_jwt())
    assert response.status_code == 503
    idp.release()


def test_a_client_that_hangs_up_is_counted_by_the_mock_never_printed(
    idp: MockIdentityProvider, capfd: pytest.CaptureFixture[str]
) -> None:
    """The mock's answer to a client that has gone (a gate whose fetch timed out) is no traceback in the output."""
    idp.hold()
    idp.jwks_mode = "slow"
    host, port = idp.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(b"GET /jwks.json HTTP/1.1\r\nHost: idp\r\n\r\n")
        assert wait_until(lambda: idp.hits["jwks"] == 1)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    idp.release()  # the held answer now meets a closed connection
    assert wait_until(lambda: idp.hung_up == 1)
    assert "Traceback" not in capfd.readouterr().err


# -- a slow endpoint stalls nobody else -------------------------------------------------------------------------------


def test_a_slow_jwks_endpoint_does_not_stall_another_provider(
    jwtgate_mock_idp_factory: IdPFactory, make: Callable[..., Flask], clock: Clock
) -> None:
    slow = jwtgate_mock_idp_factory(clock=clock, issuer="https://slow.example")
    fast = jwtgate_mock_idp_factory(clock=clock, issuer="https://fast.example")
    app = make(
        slow.jwks_provider("slow", timeout=5, directory_users=False),
        fast.jwks_provider("fast", directory_users=False),
    )
    assert get(app, fast.mint_jwt("bob")).status_code == 200  # fast's keys are cached
    slow.hold()
    slow.jwks_mode = "slow"
    slow.slow_seconds = 10
    results: list[int] = []
    waiting = threading.Thread(target=lambda: results.append(get(app, slow.mint_jwt("alice")).status_code))
    waiting.start()
    assert wait_until(lambda: slow.hits["jwks"] == 1)  # slow's fetch is now hanging
    for _ in range(5):
        assert get(app, fast.mint_jwt("bob")).status_code == 200
    assert waiting.is_alive()  # fast answered while slow's fetch was still in flight
    slow.release()
    waiting.join(10)
    assert results == [200]


def test_callers_with_a_cached_key_never_wait_for_a_refresh(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    idp.jwks_max_age = 60
    app = make(idp.jwks_provider(timeout=5))
    assert get(app, idp.mint_jwt()).status_code == 200
    idp.hold()
    idp.jwks_mode = "slow"
    idp.slow_seconds = 10
    clock.advance(61)
    assert get(app, idp.mint_jwt()).status_code == 200  # starts the refresh, does not wait for it
    assert wait_until(lambda: idp.hits["jwks"] == 2)
    for _ in range(5):
        assert get(app, idp.mint_jwt()).status_code == 200  # the refresh is still hanging
    assert not all(client.wait_idle(0) for client in jwks_clients(app))
    idp.release()
    wait_idle(app)


def test_settings_changes_keep_the_cached_keys(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.jwks_provider())
    assert get(app, idp.mint_jwt()).status_code == 200
    idp.jwks_mode = "down"
    state = app.extensions["jwtgate"]
    state.apply(Settings.from_mapping({**app.config, "JWTGATE_READ_ONLY_GROUPS": ["viewers"]}))
    assert get(app, idp.mint_jwt()).status_code == 200
    assert idp.hits["jwks"] == 1


# -- which key may verify what ----------------------------------------------------------------------------------------


def _rsa_jwk(private_key: Any, **members: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    data.update(members)
    return data


def test_a_keys_own_alg_binds_the_tokens_alg(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    key = idp.signing_key
    idp.jwks_document = {"keys": [_rsa_jwk(key.private_key, kid=key.kid, alg="RS256", use="sig")]}
    app = make(idp.jwks_provider(algorithms=["RS256", "PS256"]))
    assert get(app, idp.mint_jwt(algorithm="RS256")).status_code == 200
    response = get(app, idp.mint_jwt(algorithm="PS256"))  # a valid PS256 signature, by a key published for RS256
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "alg_key_mismatch"


def test_a_key_without_alg_fits_by_its_type(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    key = idp.signing_key
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    idp.jwks_document = {"keys": [_rsa_jwk(key.private_key, kid=key.kid), {**ec_jwk, "kid": "ec"}]}
    app = make(idp.jwks_provider(algorithms=["RS256", "PS256", "ES256"]))
    assert get(app, idp.mint_jwt(algorithm="PS256")).status_code == 200
    ec_token = jwt.encode(idp.claims_for("bob"), ec_key, algorithm="ES256", headers={"kid": "ec"})
    assert get(app, ec_token).status_code == 200
    # The RSA key's kid on an ES256 token: the key's type does not fit the algorithm.
    mixed = jwt.encode(idp.claims_for("eve"), ec_key, algorithm="ES256", headers={"kid": key.kid})
    response = get(app, mixed)
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "alg_key_mismatch"


def test_the_providers_algorithms_come_first(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.jwks_provider())  # default: RS256 only
    response = get(app, idp.mint_jwt(algorithm="PS256"))
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "alg_not_allowed"
    assert idp.hits["jwks"] == 0  # refused before any key was looked up


def test_symmetric_and_encryption_keys_in_a_jwks_are_never_used(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    secret = b"s" * 32
    oct_jwk = {"kty": "oct", "kid": "shared", "k": jwt.utils.base64url_encode(secret).decode(), "alg": "HS256"}
    enc_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.jwks_document = {"keys": [oct_jwk, _rsa_jwk(enc_key, kid="enc", use="enc")]}
    app = make(idp.jwks_provider(algorithms=["RS256"]))
    hs = jwt.encode(idp.claims_for("mallory"), secret, algorithm="HS256", headers={"kid": "shared"})
    response = get(app, hs)
    assert response.status_code == 401
    # Refused by the provider's algorithms before any key is looked up: HMAC can never be configured.
    assert response.json is not None and response.json["reason"] == "alg_not_allowed"
    assert idp.hits["jwks"] == 0
    # The key lookup itself: the oct key is not in the set at all, so its kid is unknown (were it in the set, as an
    # HS256 key, the answer would be alg_key_mismatch).
    rs = jwt.encode(idp.claims_for("mallory"), enc_key, algorithm="RS256", headers={"kid": "shared"})
    response = get(app, rs)
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "unknown_key"
    clock.advance(11)
    enc = jwt.encode(idp.claims_for("mallory"), enc_key, algorithm="RS256", headers={"kid": "enc"})
    response = get(app, enc)
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "unknown_key"


def test_a_token_without_kid_only_works_with_a_single_key(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    app = make(idp.jwks_provider())
    token = jwt.encode(idp.claims_for("alice"), idp.signing_key.private_key, algorithm="RS256")
    assert get(app, token).status_code == 200
    idp.rotate()
    clock.advance(3600)
    get(app, idp.mint_jwt())
    wait_idle(app)
    response = get(app, jwt.encode(idp.claims_for("bob"), idp.keys[0].private_key, algorithm="RS256"))
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "missing_kid"


@pytest.mark.parametrize("kid", [123, "", "k" * 300, ["a"], {"a": 1}, True])
def test_hostile_kid_headers_are_401_never_500(idp: MockIdentityProvider, make: Callable[..., Flask], kid: Any) -> None:
    app = make(idp.jwks_provider())
    assert get(app, idp.mint_jwt()).status_code == 200
    header = jwt.utils.base64url_encode(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(idp.claims_for("mallory")).encode())
    signing_input = header + b"." + payload
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        signing_input, idp.signing_key.private_key
    )
    response = get(app, (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode())
    assert response.status_code == 401
    assert idp.hits["jwks"] == 1


def test_only_http_urls_are_ever_fetched() -> None:
    with pytest.raises(OutboundError, match="http"):
        fetch("file:///etc/passwd", timeout=1, max_bytes=10)


@pytest.mark.parametrize(
    ("jwk", "why"),
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, "shared-secret"),
        ({"kty": "RSA", "use": "enc"}, "use"),
        ({"kty": "RSA", "key_ops": ["encrypt"]}, "key_ops"),
        ({"kty": "RSA", "d": "AQAB"}, "private"),
        ({"kty": "RSA", "alg": "HS256"}, "alg"),
        ({"kty": "RSA", "alg": "ES256"}, "does not fit"),
        ({"kty": "RSA", "kid": 7}, "kid"),
        ("not-an-object", "JSON object"),
    ],
)
def test_unusable_jwks_entries_are_skipped_with_a_reason(jwk: Any, why: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    entry = {**_rsa_jwk(key), **jwk} if isinstance(jwk, dict) and jwk.get("kty") == "RSA" else jwk
    with pytest.raises(ValueError, match=why):
        parse_jwk(entry)


def test_weak_rsa_keys_are_skipped() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        parse_jwk(_rsa_jwk(weak))


# -- settings ---------------------------------------------------------------------------------------------------------


def test_jwks_provider_defaults(idp: MockIdentityProvider) -> None:
    settings = Settings.from_mapping({"JWTGATE_PROVIDERS": [{"name": "p", "jwks_url": idp.jwks_url}]})
    provider = settings.providers[0]
    assert provider.algorithms == ("RS256",)
    assert (provider.jwks_min_ttl, provider.jwks_max_ttl, provider.jwks_cooldown, provider.timeout) == (60, 3600, 10, 5)
    shorthand = Settings.from_mapping({"JWTGATE_JWKS_URL": idp.jwks_url, "JWTGATE_ALGORITHMS": ["ES256"]})
    assert shorthand.providers[0].jwks_url == idp.jwks_url
    assert shorthand.providers[0].algorithms == ("ES256",)


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        ({"jwks_url": "file:///etc/passwd"}, "JWTGATE_PROVIDERS[0].jwks_url", "http"),
        ({"jwks_url": "https://"}, "JWTGATE_PROVIDERS[0].jwks_url", "absolute"),
        ({"jwks_url": "https://idp/jwks", "jwks_min_ttl": 600, "jwks_max_ttl": 60}, "JWTGATE_PROVIDERS[0].jwks_min_ttl",
         "must not exceed"),
        ({"jwks_url": "https://idp/jwks", "jwks_cooldown": 0}, "JWTGATE_PROVIDERS[0].jwks_cooldown", "between 1"),
        ({"jwks_url": "https://idp/jwks", "timeout": 0}, "JWTGATE_PROVIDERS[0].timeout", "more than 0"),
        ({"jwks_url": "https://idp/jwks", "timeout": True}, "JWTGATE_PROVIDERS[0].timeout", "seconds"),
        ({"jwks_url": "https://idp/jwks", "algorithms": ["HS256"]}, "JWTGATE_PROVIDERS[0].algorithms", "asymmetric"),
        ({"jwks_url": "https://idp/jwks", "client_auth": "client_secret_post"}, "JWTGATE_PROVIDERS[0].client_auth",
         "only to introspection"),
    ],
)
def test_invalid_jwks_settings_name_the_key(entry: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Settings.from_mapping({"JWTGATE_PROVIDERS": [{"name": "p", **entry}]})
    assert info.value.key == key


def test_jwks_fields_are_refused_on_a_public_key_provider(jwtgate_keys: Any) -> None:
    entry = {"name": "p", "public_key": jwtgate_keys["rsa"].public_pem, "jwks_cooldown": 5}
    with pytest.raises(ConfigurationError, match="only to JWKS") as info:
        Settings.from_mapping({"JWTGATE_PROVIDERS": [entry]})
    assert info.value.key == "JWTGATE_PROVIDERS[0].jwks_cooldown"
