"""Introspection providers (RFC 7662): opaque tokens and JWTs asked of the provider, with client authentication,
strict reading of the answer, claim checks, a cache bounded by exp and cache_ttl, a short negative cache, and 503
(never 200) when the endpoint fails."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Clock
from flask import Flask, jsonify
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from example_app import create_app
from example_app import idp as demo_idp
from flask_jwtgate import ConfigurationError, JWTGate, current_identity
from flask_jwtgate.introspection import NEGATIVE_TTL, introspection_key
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing_idp import MockIdentityProvider

AppFactory = Callable[..., tuple[Flask, JWTGate]]
IdPFactory = Callable[..., MockIdentityProvider]


def get(app: Flask, token: str) -> TestResponse:
    return app.test_client().get("/api/whoami", headers={"Authorization": f"Bearer {token}"})


def reason(response: TestResponse) -> str:
    assert response.json is not None
    value: str = response.json["reason"]
    return value


@pytest.fixture
def make(jwtgate_app_factory: AppFactory, clock: Clock) -> Callable[..., Flask]:
    """``make(*providers, **config) -> app`` with the test clock and a ``/api/whoami`` route."""

    def build(*providers: dict[str, Any], **config: Any) -> Flask:
        app, _gate = jwtgate_app_factory(clock=clock, JWTGATE_PROVIDERS=list(providers), **config)

        @app.get("/api/whoami")
        def whoami() -> Any:
            return jsonify(
                user=current_identity.username,
                groups=sorted(current_identity.groups),
                auth_method=current_identity.auth_method,
                provider=current_identity.provider,
                token_id=current_identity.token_id,
            )

        return app

    return build


# -- the happy path and the cache --------------------------------------------------------------------------------------


def test_an_active_opaque_token_is_accepted(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.introspection_provider())
    response = get(app, idp.mint_opaque("alice", groups=["devs"]))
    assert response.status_code == 200
    assert response.json is not None
    assert response.json["user"] == "alice"
    assert response.json["groups"] == ["devs"]
    assert response.json["auth_method"] == "introspection"
    assert response.json["provider"] == "mock-introspection"
    assert idp.introspected[0].startswith("mock_")


def test_a_repeated_token_is_introspected_once(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.introspection_provider())
    token = idp.mint_opaque("alice")
    for _ in range(10):
        assert get(app, token).status_code == 200
    assert idp.hits["introspect"] == 1


def test_the_cache_never_outlives_cache_ttl_so_a_revocation_is_seen(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    app = make(idp.introspection_provider(cache_ttl=60))
    token = idp.mint_opaque("alice", expires_in=3600)
    assert get(app, token).status_code == 200
    idp.revoke(token)
    clock.advance(59)
    assert get(app, token).status_code == 200  # within cache_ttl: the cached answer
    assert idp.hits["introspect"] == 1
    clock.advance(2)
    response = get(app, token)
    assert response.status_code == 401
    assert reason(response) == "inactive_token"
    assert idp.hits["introspect"] == 2


def test_the_cache_never_outlives_exp(idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock) -> None:
    app = make(idp.introspection_provider(cache_ttl=3600))
    token = idp.mint_opaque("alice", expires_in=30)
    assert get(app, token).status_code == 200
    clock.advance(29)
    assert get(app, token).status_code == 200
    assert idp.hits["introspect"] == 1
    clock.advance(2)
    assert get(app, token).status_code == 401  # asked again at exp (the provider's own clock says: expired)
    assert idp.hits["introspect"] == 2


def test_an_answer_without_exp_is_cached_for_cache_ttl_only(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    app = make(idp.introspection_provider(cache_ttl=30))
    token = idp.mint_opaque("alice")
    idp._opaque[token].pop("exp")
    assert get(app, token).status_code == 200
    clock.advance(31)
    assert get(app, token).status_code == 200
    assert idp.hits["introspect"] == 2


def test_cached_answers_serve_through_an_outage_until_cache_ttl(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    app = make(idp.introspection_provider(cache_ttl=120))
    token = idp.mint_opaque("alice", expires_in=3600)
    assert get(app, token).status_code == 200
    idp.introspection_mode = "down"
    clock.advance(100)
    assert get(app, token).status_code == 200
    clock.advance(21)
    assert get(app, token).status_code == 503


def test_cache_ttl_zero_asks_every_time(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.introspection_provider(cache_ttl=0))
    token = idp.mint_opaque("alice")
    for _ in range(3):
        assert get(app, token).status_code == 200
    assert idp.hits["introspect"] == 3


def test_settings_changes_keep_the_cached_answers(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.introspection_provider())
    token = idp.mint_opaque("alice")
    assert get(app, token).status_code == 200
    idp.introspection_mode = "down"
    state = app.extensions["jwtgate"]
    state.apply(Settings.from_mapping({**app.config, "JWTGATE_READ_ONLY_GROUPS": ["viewers"]}))
    assert get(app, token).status_code == 200
    assert idp.hits["introspect"] == 1


# -- the negative cache and encoding variants ------------------------------------------------------------------------


def test_an_inactive_token_is_remembered_briefly(
    idp: MockIdentityProvider, make: Callable[..., Flask], clock: Clock
) -> None:
    app = make(idp.introspection_provider())
    for _ in range(20):
        response = get(app, "not-a-token-the-provider-knows")
        assert response.status_code == 401
        assert reason(response) == "inactive_token"
    assert idp.hits["introspect"] == 1
    clock.advance(NEGATIVE_TTL + 1)
    assert get(app, "not-a-token-the-provider-knows").status_code == 401
    assert idp.hits["introspect"] == 2


def test_encoding_variants_of_a_token_share_one_entry(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.introspection_provider())
    token = idp.mint_opaque("alice")
    first = get(app, token)
    assert first.status_code == 200
    for variant in (token + "=", token + "=="):
        response = get(app, variant)
        assert response.status_code == 200
        assert response.json is not None and first.json is not None
        assert response.json["token_id"] == first.json["token_id"]  # one identity, one rate-limit bucket
    assert idp.hits["introspect"] == 1
    for variant in ("bogus", "bogus=", "bogus==="):
        assert get(app, variant).status_code == 401
    assert idp.hits["introspect"] == 2
    assert introspection_key("abc==") == introspection_key("abc") == "abc"


def test_the_token_id_never_contains_the_token(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.introspection_provider())
    token = idp.mint_opaque("alice", claims={"jti": None})
    response = get(app, token)
    assert response.status_code == 200
    assert response.json is not None
    assert response.json["token_id"].startswith("sha256:")
    assert token not in response.json["token_id"]


# -- the endpoint failing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["down", "500", "html", "redirect", "slow"])
def test_a_failing_endpoint_is_503_and_nothing_is_cached(
    idp: MockIdentityProvider, make: Callable[..., Flask], mode: str
) -> None:
    idp.hold()
    idp.introspection_mode = mode
    app = make(idp.introspection_provider(timeout=0.3))
    token = idp.mint_opaque("alice")
    response = get(app, token)
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["error"] == "temporarily_unavailable"
    assert response.headers["Cache-Control"] == "no-store"
    assert idp.hits["introspect"] == 1  # a redirect is not followed
    idp.release()
    idp.introspection_mode = "ok"
    assert get(app, token).status_code == 200  # the failure was not cached


@pytest.mark.parametrize("mode", ["inactive", "active_string"])
def test_only_a_json_true_active_counts(idp: MockIdentityProvider, make: Callable[..., Flask], mode: str) -> None:
    idp.introspection_mode = mode
    app = make(idp.introspection_provider())
    response = get(app, idp.mint_opaque("alice"))
    assert response.status_code == 401
    assert reason(response) == "inactive_token"


def test_nothing_secret_reaches_the_log(
    idp: MockIdentityProvider, make: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make(idp.introspection_provider(timeout=0.3, client_secret="wrong-secret-value"))
    token = idp.mint_opaque("alice")
    assert get(app, token).status_code == 503  # the provider refuses the gate's credentials: a configuration error
    for mode in ("500", "html", "down", "active_string"):
        idp.client_secret = "wrong-secret-value"
        idp.introspection_mode = mode
        get(app, idp.mint_opaque("bob"))
    assert "client credentials" in caplog.text
    assert "wrong-secret-value" not in caplog.text
    assert token not in caplog.text
    assert "mock_" not in caplog.text


# -- client authentication, verified on the provider's side ------------------------------------------------------------


def test_client_secret_basic_is_the_default(
    jwtgate_mock_idp_factory: IdPFactory, make: Callable[..., Flask], clock: Clock
) -> None:
    idp = jwtgate_mock_idp_factory(
        clock=clock, client_auth="client_secret_basic", client_secret="s3cret with spaces & :colons"
    )
    app = make(idp.introspection_provider())
    assert get(app, idp.mint_opaque("alice")).status_code == 200
    assert idp.client_auth_seen == ["client_secret_basic"]


def test_client_secret_post(jwtgate_mock_idp_factory: IdPFactory, make: Callable[..., Flask], clock: Clock) -> None:
    idp = jwtgate_mock_idp_factory(clock=clock, client_auth="client_secret_post")
    app = make(idp.introspection_provider(client_auth="client_secret_post"))
    assert get(app, idp.mint_opaque("alice")).status_code == 200
    assert idp.client_auth_seen == ["client_secret_post"]


def test_the_wrong_client_authentication_is_503_not_401(
    jwtgate_mock_idp_factory: IdPFactory, make: Callable[..., Flask], clock: Clock
) -> None:
    idp = jwtgate_mock_idp_factory(clock=clock, client_auth="client_secret_post")
    app = make(idp.introspection_provider())  # basic, which this provider refuses
    response = get(app, idp.mint_opaque("alice"))
    assert response.status_code == 503
    assert idp.client_auth_seen == ["refused"]


# -- what the answer must say ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "claims", "why"),
    [
        ({"issuer": "https://elsewhere.example"}, {}, "wrong_issuer"),
        ({"audience": "my-api"}, {}, "wrong_audience"),
        ({"audience": "my-api"}, {"aud": "another-api"}, "wrong_audience"),
        ({}, {"aud": "some-api"}, "wrong_audience"),  # names an audience, none configured: as for JWTs
        ({"allowed_client_ids": ["other-client"]}, {}, "client_not_allowed"),
        ({}, {"token_type": "refresh_token"}, "not_access_token"),
        ({}, {"typ": "Refresh"}, "not_access_token"),
        ({}, {"exp": "9999999999"}, "invalid_claim"),
        ({}, {"nbf": 1_900_000_000}, "not_yet_valid"),
        ({}, {"sub": ""}, "no_username"),
    ],
)
def test_claims_are_checked(
    idp: MockIdentityProvider, make: Callable[..., Flask], provider: dict[str, Any], claims: dict[str, Any], why: str
) -> None:
    app = make(idp.introspection_provider(**provider))
    response = get(app, idp.mint_opaque("alice", claims=claims))
    assert response.status_code == 401
    assert reason(response) == why


def test_allowed_client_ids(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.introspection_provider(allowed_client_ids=["mock-client"]))
    assert get(app, idp.mint_opaque("alice")).status_code == 200


def test_keycloak_style_claims(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(
        idp.introspection_provider(
            username_claim="preferred_username", groups_claim="realm_access.roles", audience="account"
        )
    )
    claims = {"preferred_username": "alice.k", "realm_access": {"roles": ["jira-users", "offline_access"]},
              "aud": "account", "typ": "Bearer"}
    response = get(app, idp.mint_opaque("f3b1c0de-uuid", claims=claims))
    assert response.status_code == 200
    assert response.json is not None
    assert response.json["user"] == "alice.k"
    assert response.json["groups"] == ["jira-users", "offline_access"]


# -- routing ----------------------------------------------------------------------------------------------------------


def test_a_jwt_is_introspected_when_the_only_provider_is_an_introspection_provider(
    idp: MockIdentityProvider, make: Callable[..., Flask]
) -> None:
    app = make(idp.introspection_provider())
    response = get(app, idp.mint_jwt("alice", groups=["devs"]))
    assert response.status_code == 200
    assert response.json is not None and response.json["auth_method"] == "introspection"
    assert idp.hits == {"introspect": 1}  # asked, never fetched keys


def test_a_jwt_naming_another_issuer_is_never_sent(idp: MockIdentityProvider, make: Callable[..., Flask]) -> None:
    app = make(idp.introspection_provider())
    response = get(app, idp.mint_jwt("alice", claims={"iss": "https://someone-else.example"}))
    assert response.status_code == 401
    assert reason(response) == "wrong_issuer"
    assert idp.hits["introspect"] == 0


def test_mixed_providers_route_by_issuer_and_by_token_kind(
    jwtgate_mock_idp_factory: IdPFactory, make: Callable[..., Flask], clock: Clock
) -> None:
    local = jwtgate_mock_idp_factory(clock=clock, issuer="https://local.example")
    remote = jwtgate_mock_idp_factory(clock=clock, issuer="https://remote.example")
    app = make(
        local.jwks_provider("local", directory_users=False),
        remote.introspection_provider("remote", directory_users=False),
    )
    response = get(app, local.mint_jwt("alice"))
    assert response.status_code == 200
    assert response.json is not None and response.json["auth_method"] == "jwt"
    response = get(app, remote.mint_opaque("bob"))
    assert response.status_code == 200
    assert response.json is not None and response.json["auth_method"] == "introspection"
    response = get(app, remote.mint_jwt("carol"))
    assert response.status_code == 200
    assert response.json is not None and response.json["provider"] == "remote"
    assert local.hits == {"jwks": 1}
    assert remote.hits == {"introspect": 2}


def test_several_introspection_providers_need_one_marked_for_opaque_tokens(
    jwtgate_mock_idp_factory: IdPFactory, make: Callable[..., Flask], clock: Clock
) -> None:
    one = jwtgate_mock_idp_factory(clock=clock, issuer="https://one.example")
    two = jwtgate_mock_idp_factory(clock=clock, issuer="https://two.example")
    app = make(
        one.introspection_provider("one", directory_users=False),
        two.introspection_provider("two", directory_users=False),
    )
    response = get(app, two.mint_opaque("bob"))
    assert response.status_code == 401
    assert reason(response) in {"unknown_token", "no_provider"}
    assert one.hits["introspect"] == two.hits["introspect"] == 0  # never sprayed across providers
    assert get(app, two.mint_jwt("carol")).status_code == 200  # JWTs still route by issuer
    app = make(
        one.introspection_provider("one", directory_users=False),
        two.introspection_provider("two", opaque_tokens=True, directory_users=False),
    )
    assert get(app, two.mint_opaque("bob")).status_code == 200
    assert one.hits["introspect"] == 0


def test_an_oversized_opaque_token_is_refused_without_a_call(
    idp: MockIdentityProvider, make: Callable[..., Flask]
) -> None:
    app = make(idp.introspection_provider())
    response = get(app, "x" * 20000)
    assert response.status_code == 401
    assert idp.hits["introspect"] == 0


def test_accept_jwt_off_refuses_introspected_tokens_without_a_call(
    idp: MockIdentityProvider, make: Callable[..., Flask]
) -> None:
    app = make(idp.introspection_provider(), JWTGATE_ACCEPT_JWT=False)
    response = get(app, idp.mint_opaque("alice"))
    assert response.status_code == 401
    assert reason(response) == "token_kind_disabled"
    assert idp.hits["introspect"] == 0


def test_without_an_introspection_provider_opaque_tokens_are_unknown(
    idp: MockIdentityProvider, make: Callable[..., Flask]
) -> None:
    app = make(idp.jwks_provider())
    response = get(app, idp.mint_opaque("alice"))
    assert response.status_code == 401
    assert reason(response) == "unknown_token"


# -- settings ---------------------------------------------------------------------------------------------------------


def _introspection(**fields: Any) -> dict[str, Any]:
    return {"name": "p", "introspection_url": "https://idp.example/introspect", "client_id": "api",
            "client_secret": "secret", **fields}


@pytest.mark.parametrize(
    ("entries", "key", "message"),
    [
        ([_introspection(client_secret=None)], "JWTGATE_PROVIDERS[0].client_secret", "client_secret"),
        ([_introspection(client_id="")], "JWTGATE_PROVIDERS[0].client_id", "client_id"),
        ([_introspection(client_auth="private_key_jwt")], "JWTGATE_PROVIDERS[0].client_auth", "client_secret_basic"),
        ([_introspection(opaque_tokens="yes")], "JWTGATE_PROVIDERS[0].opaque_tokens", "true or false"),
        ([_introspection(allowed_client_ids=[1])], "JWTGATE_PROVIDERS[0].allowed_client_ids", "client ids"),
        ([_introspection(algorithms=["RS256"])], "JWTGATE_PROVIDERS[0].algorithms", "does not apply"),
        ([_introspection(timeout=120)], "JWTGATE_PROVIDERS[0].timeout", "at most 60"),
        ([_introspection(jwks_cooldown=5)], "JWTGATE_PROVIDERS[0].jwks_cooldown", "only to JWKS"),
        ([_introspection(introspection_url="ftp://idp/x")], "JWTGATE_PROVIDERS[0].introspection_url", "http"),
        ([_introspection(opaque_tokens=True), _introspection(name="q", opaque_tokens=True)], "JWTGATE_PROVIDERS",
         "exactly one"),
        ([_introspection(issuer="https://a"), _introspection(name="q", issuer="https://a")], "JWTGATE_PROVIDERS",
         "issuer"),
    ],
)
def test_invalid_introspection_settings_name_the_key(entries: list[dict[str, Any]], key: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Settings.from_mapping({"JWTGATE_PROVIDERS": entries})
    assert info.value.key == key


def test_introspection_settings_defaults_and_shorthand() -> None:
    settings = Settings.from_mapping(
        {
            "JWTGATE_INTROSPECTION_URL": "https://idp.example/introspect",
            "JWTGATE_INTROSPECTION_CLIENT_ID": "api",
            "JWTGATE_INTROSPECTION_CLIENT_SECRET": "hunter2-value",
        }
    )
    provider = settings.providers[0]
    assert (provider.client_auth, provider.timeout, provider.opaque_tokens) == ("client_secret_basic", 5.0, None)
    assert provider.client_secret == "hunter2-value"
    assert "hunter2-value" not in repr(settings)


def test_client_id_is_refused_on_a_public_key_provider(jwtgate_keys: Any) -> None:
    entry = {"name": "p", "public_key": jwtgate_keys["rsa"].public_pem, "client_secret": "x"}
    with pytest.raises(ConfigurationError, match="only to introspection") as info:
        Settings.from_mapping({"JWTGATE_PROVIDERS": [entry]})
    assert info.value.key == "JWTGATE_PROVIDERS[0].client_secret"


# -- the example app's demo identity provider -------------------------------------------------------------------------


@pytest.fixture
def served_example(tmp_path: Any) -> Iterator[tuple[Flask, str]]:
    """The example app served for real on 127.0.0.1 (the gate must reach its IdP over HTTP)."""
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def test_demo_idp_introspection_endpoint(served_example: tuple[Flask, str]) -> None:
    app, _base = served_example
    client = app.test_client()
    client_id, secret = demo_idp.client_credentials(app)
    opaque = demo_idp.mint_opaque_token(app, "bob", groups=["jira-developers"])
    jwt_token = demo_idp.mint_token(app, "carol")
    basic = (client_id, secret)
    answer = client.post("/idp/introspect", data={"token": opaque}, auth=basic).json
    assert answer is not None and answer["active"] is True and answer["sub"] == "bob"
    assert answer["groups"] == ["jira-developers"]
    answer = client.post(
        "/idp/introspect", data={"token": jwt_token, "client_id": client_id, "client_secret": secret}
    ).json
    assert answer is not None and answer["active"] is True and answer["sub"] == "carol"
    for bad in (opaque[:-1] + ("A" if opaque[-1] != "A" else "B"), "ido_", "garbage", jwt_token + "x"):
        assert client.post("/idp/introspect", data={"token": bad}, auth=basic).json == {"active": False}
    assert client.post("/idp/introspect", data={"token": opaque}).status_code == 401
    assert client.post("/idp/introspect", data={"token": opaque}, auth=(client_id, "wrong")).status_code == 401
    assert client.post("/idp/introspect", data={}, auth=basic).status_code == 400


def test_example_app_with_an_introspection_provider(served_example: tuple[Flask, str], tmp_path: Any) -> None:
    idp_app, base = served_example
    gate_app = create_app(
        {"TESTING": True, "JWTGATE_INTROSPECTION_URL": base + "/idp/introspect"},
        instance_path=str(tmp_path / "instance"),
    )
    client = gate_app.test_client()
    token = demo_idp.mint_opaque_token(idp_app, "bob")
    response = client.get("/rest/api/2/myself", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json is not None
    assert response.json["name"] == "bob"
    assert response.json["authMethod"] == "introspection"
    assert "jira-developers" in response.json["groups"]
