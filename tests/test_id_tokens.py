"""An OpenID Connect ID token is not an access token: refused on the JWT path and the introspection path alike, with
the same reason (``not_access_token``), and described as such by the Test Token tool.

An ID token is signed by the provider's key and its ``aud`` is the client's id, which an admin may well have
configured as the API's audience; the providers that mark their tokens are believed: Keycloak's ``typ`` claim
(``ID``, ``Refresh``, ``Offline``, ``Logout``) and Cognito's ``token_use`` (anything but ``access``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Clock
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_jwtgate import JWTGate
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing_idp import MockIdentityProvider
from flask_jwtgate.verification import JWTVerifier

AppFactory = Callable[..., tuple[Flask, JWTGate]]
AUDIENCE = "my-client"
FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=40)


def case_variants(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(word, upper, strict=True))
    )


#: Claims by which a provider says its token is not an access token.
NOT_ACCESS = st.one_of(
    st.sampled_from(["ID", "id_token", "Refresh", "refresh_token", "Offline", "Logout"])
    .flatmap(case_variants)
    .map(lambda typ: {"typ": typ}),
    st.one_of(st.text(max_size=12), st.integers(), st.none(), st.lists(st.just("access"), max_size=1))
    .filter(lambda use: not (isinstance(use, str) and use.lower() == "access"))
    .map(lambda use: {"token_use": use}),
)
#: What access tokens say, or nothing at all.
ACCESS = [{}, {"typ": "Bearer"}, {"token_use": "access"}, {"typ": "Bearer", "token_use": "Access"}]

KEYCLOAK_ID_TOKEN = {"typ": "ID", "nonce": "n-0S6_WzA2Mj", "azp": AUDIENCE, "auth_time": 1_800_000_000,
                     "at_hash": "77QmUPtjPfzWtF2AnpK9RQ", "session_state": "s-1"}
COGNITO_ID_TOKEN = {"token_use": "id", "cognito:username": "alice", "email_verified": True}


@pytest.fixture
def idp(jwtgate_mock_idp_factory: Callable[..., MockIdentityProvider], clock: Clock) -> MockIdentityProvider:
    return jwtgate_mock_idp_factory(clock=clock, audience=AUDIENCE)


@pytest.fixture
def paths(
    jwtgate_app_factory: AppFactory, idp: MockIdentityProvider, clock: Clock
) -> Iterator[dict[str, Callable[[dict[str, Any]], Any]]]:
    """``{"jwt": send, "introspection": send}``: ``send(claims)`` makes a token with those claims for that path (a
    JWT checked with the provider's JWKS, or an opaque token the provider introspects) and sends it to the API."""
    jwt_app, _ = jwtgate_app_factory(clock=clock, JWTGATE_PROVIDERS=[idp.jwks_provider()])
    introspection_app, _ = jwtgate_app_factory(clock=clock, JWTGATE_PROVIDERS=[idp.introspection_provider()])

    def via(app: Flask, mint: Callable[..., str]) -> Callable[[dict[str, Any]], Any]:
        client = app.test_client()
        return lambda claims: client.get(
            "/api/items", headers={"Authorization": f"Bearer {mint('alice', claims=claims)}"}
        )

    yield {"jwt": via(jwt_app, idp.mint_jwt), "introspection": via(introspection_app, idp.mint_opaque)}
    for app in (jwt_app, introspection_app):
        app.extensions["jwtgate"].audit.close(timeout=5)


@pytest.mark.parametrize("path", ["jwt", "introspection"])
@pytest.mark.parametrize("claims", [KEYCLOAK_ID_TOKEN, COGNITO_ID_TOKEN], ids=["keycloak", "cognito"])
def test_an_id_token_for_the_configured_audience_is_refused(
    paths: dict[str, Callable[[dict[str, Any]], Any]], path: str, claims: dict[str, Any]
) -> None:
    response = paths[path](claims)

    assert response.status_code == 401
    body = response.get_json()
    assert (body["error"], body["reason"]) == ("invalid_token", "not_access_token")
    assert "not an access token" in body["error_description"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@FIXTURES
@given(claims=NOT_ACCESS)
@example(claims={"typ": "ID"})
@example(claims={"token_use": "id"})
def test_both_paths_refuse_a_token_that_says_it_is_no_access_token_alike(
    paths: dict[str, Callable[[dict[str, Any]], Any]], claims: dict[str, Any]
) -> None:
    by_jwt, by_introspection = paths["jwt"](claims), paths["introspection"](claims)

    assert by_jwt.status_code == by_introspection.status_code == 401
    assert by_jwt.get_json() == by_introspection.get_json()
    assert by_jwt.get_json()["reason"] == "not_access_token"


@pytest.mark.parametrize("path", ["jwt", "introspection"])
@pytest.mark.parametrize("claims", ACCESS, ids=["unmarked", "keycloak", "cognito", "both"])
def test_an_access_token_is_accepted(
    paths: dict[str, Callable[[dict[str, Any]], Any]], path: str, claims: dict[str, Any]
) -> None:
    response = paths[path](claims)

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["user"] == "alice"


# -- the Test Token tool --------------------------------------------------------------------------------------------


def explained(app: Flask, token: str) -> tuple[int, dict[str, Any]]:
    result = app.test_cli_runner().invoke(args=["jwtgate", "test-token", token, "--path", "/api/items", "--json"])
    return result.exit_code, json.loads(result.output)


def step(report: dict[str, Any], name: str) -> dict[str, str]:
    (found,) = [check for check in report["checks"] if check["step"] == name]
    return found


@pytest.mark.parametrize("path", ["jwt", "introspection"])
def test_the_test_token_tool_says_an_id_token_is_not_an_access_token(
    jwtgate_app_factory: AppFactory, idp: MockIdentityProvider, clock: Clock, path: str
) -> None:
    provider = idp.jwks_provider() if path == "jwt" else idp.introspection_provider()
    app, _ = jwtgate_app_factory(clock=clock, JWTGATE_PROVIDERS=[provider])
    mint = idp.mint_jwt if path == "jwt" else idp.mint_opaque

    code, report = explained(app, mint("alice", claims=KEYCLOAK_ID_TOKEN))

    assert code == 2 and report["valid"] is False and report["allowed"] is False
    assert report["decision"] == {"status": 401, "error": "invalid_token", "reason": "not_access_token"}
    kind = step(report, "token type")
    assert kind["outcome"] == "fail"
    assert "'typ' claim says 'ID'" in kind["detail"] and "not_access_token" in kind["detail"]
    signatures = [check for check in report["checks"] if check["step"] == "signature"]
    if path == "jwt":  # the signature was good: it is the kind of token that is refused
        assert [check["outcome"] for check in signatures] == ["pass"]
    else:
        assert signatures == []


def test_the_test_token_tool_shows_an_access_tokens_type(
    jwtgate_app_factory: AppFactory, idp: MockIdentityProvider, clock: Clock
) -> None:
    app, _ = jwtgate_app_factory(clock=clock, JWTGATE_PROVIDERS=[idp.jwks_provider()])

    code, report = explained(app, idp.mint_jwt("alice", claims={"typ": "Bearer"}))

    assert code == 0 and report["valid"] is True
    assert step(report, "token type") == {
        "step": "token type", "outcome": "pass", "detail": "an access token: typ='Bearer'"
    }


def test_with_several_published_keys_each_token_is_checked_with_the_key_its_kid_names(
    jwtgate_app_factory: AppFactory, idp: MockIdentityProvider, clock: Clock
) -> None:
    first = idp.signing_key.kid
    second = idp.rotate()  # both keys published
    app, _ = jwtgate_app_factory(clock=clock, JWTGATE_PROVIDERS=[idp.jwks_provider()])
    client = app.test_client()
    try:
        statuses = [
            client.get("/api/items", headers={"Authorization": f"Bearer {idp.mint_jwt('alice', kid=kid)}"}).status_code
            for kid in (first, second)
        ]
    finally:
        app.extensions["jwtgate"].audit.close(timeout=5)
    assert statuses == [200, 200]


def test_a_token_checked_with_a_key_set_is_cached_no_longer_than_its_exp_the_cache_ttl_and_the_sets_freshness(
    idp: MockIdentityProvider, clock: Clock
) -> None:
    idp.rotate()  # two keys published: each token names its own
    entries = [idp.jwks_provider("short", cache_ttl=120), idp.jwks_provider("long", cache_ttl=86400)]
    short, long = (
        JWTVerifier(Settings.from_mapping({"JWTGATE_PROVIDERS": [entry]}).providers, clock=clock) for entry in entries
    )
    now = clock.now

    expiring = short.verify(idp.mint_jwt(expires_in=60)).expires_at
    lasting = short.verify(idp.mint_jwt(expires_in=86400)).expires_at
    fresh_until = short.jwks.client(short.providers[0]).keys.fresh_until  # type: ignore[union-attr]
    by_the_set = long.verify(idp.mint_jwt(expires_in=86400)).expires_at
    long_fresh_until = long.jwks.client(long.providers[0]).keys.fresh_until  # type: ignore[union-attr]

    assert now + 120 < fresh_until < now + 86400  # what the three limits below tell apart
    assert (expiring, lasting, by_the_set) == (now + 60, now + 120, long_fresh_until)
