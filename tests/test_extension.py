"""The Flask layer: installing the gate, the request hook, current_identity, signals, the verified-token cache and
the error response."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify
from flask.testing import FlaskClient

from flask_jwtgate import (
    ConfigurationError,
    GateDenied,
    Identity,
    JWTGate,
    current_identity,
    request_authenticated,
    request_denied,
)
from flask_jwtgate.settings import Settings
from flask_jwtgate.state import GateState
from flask_jwtgate.testing import KeyPair
from flask_jwtgate.verification import TokenCache, VerifiedToken, canonical_token

if TYPE_CHECKING:
    from tests.conftest import Clock

Keys = dict[str, KeyPair]
TokenFactory = Callable[..., str]
Bearer = Callable[[str], dict[str, str]]


def build(
    keys: Keys, config: dict[str, Any] | None = None, *, key: str = "rsa", **options: Any
) -> tuple[Flask, JWTGate]:
    """An app whose views show the whole identity; provider "test" on ``keys[key]`` unless ``config`` says else."""
    app = Flask("extension_test")
    app.config.update(TESTING=True, JWTGATE_PROVIDERS=[{"name": "test", "public_key": keys[key].public_pem}])
    app.config.update(config or {})
    gate = JWTGate(app, **options)
    add_views(app, gate)
    return app, gate


def show_identity() -> Any:
    identity = current_identity
    return jsonify(
        username=identity.username,
        groups=sorted(identity.groups),
        auth_method=identity.auth_method,
        token_id=identity.token_id,
        provider=identity.provider,
        claims=dict(identity.claims),
    )


def add_views(app: Flask, gate: JWTGate) -> None:
    @app.route("/api/me", methods=["GET", "POST"])
    def me() -> Any:
        return show_identity()

    @app.get("/api/open")
    @gate.public
    def open_view() -> Any:
        return show_identity()


def provider_config(keys: Keys) -> list[dict[str, Any]]:
    return [{"name": "test", "public_key": keys["rsa"].public_pem}]


def state_of(app: Flask) -> GateState:
    state: GateState = app.extensions["jwtgate"]
    return state


def gate_hooks(app: Flask) -> list[Any]:
    return [f for f in app.before_request_funcs.get(None, []) if f.__name__ == "gate_request"]


class VerifyCounter:
    """Wraps the live verifier's ``verify`` to count calls."""

    def __init__(self, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
        verifier = state_of(app).keeper.verifier
        self.calls = 0
        original = verifier.verify

        def counting(token: str, parsed: Any = None) -> VerifiedToken:
            self.calls += 1
            return original(token, parsed)

        monkeypatch.setattr(verifier, "verify", counting)


def padded(token: str) -> str:
    """The same token with its signature's base64 padding written out."""
    signature = token.rpartition(".")[2]
    return token + "=" * (-len(signature) % 4)


# -- installing the gate ----------------------------------------------------------------------------------------------


def test_gate_with_app(jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer) -> None:
    app, gate = build(jwtgate_keys)
    assert isinstance(app.extensions["jwtgate"], GateState)
    assert state_of(app).gate is gate
    assert isinstance(state_of(app).settings, Settings)
    assert not hasattr(gate, "app")
    client = app.test_client()
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=bearer(jwtgate_token_factory())).status_code == 200


def test_app_factory_with_two_apps_and_one_gate(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    gate = JWTGate()

    def create_app(**config: Any) -> Flask:
        app = Flask("factory_app")
        app.config.update(TESTING=True, JWTGATE_PROVIDERS=provider_config(jwtgate_keys))
        app.config.update(config)
        gate.init_app(app)
        add_views(app, gate)
        return app

    strict = create_app(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    lenient = create_app()
    assert JWTGate.settings(strict).read_only_groups == frozenset({"viewers"})
    assert JWTGate.settings(lenient).read_only_groups == frozenset()
    assert state_of(strict) is not state_of(lenient)
    assert state_of(strict).gate is gate and state_of(lenient).gate is gate

    headers = bearer(jwtgate_token_factory("carol", groups=["viewers"]))
    assert strict.test_client().post("/api/me", headers=headers).status_code == 403
    assert lenient.test_client().post("/api/me", headers=headers).status_code == 200
    assert strict.test_client().get("/api/me", headers=headers).status_code == 200


def test_host_hooks_registered_after_init_app_apply_to_every_app(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    gate = JWTGate()
    apps = []
    for _ in range(2):
        app = Flask("factory_app")
        app.config.update(TESTING=True, JWTGATE_PROVIDERS=provider_config(jwtgate_keys))
        gate.init_app(app)
        add_views(app, gate)
        apps.append(app)

    @gate.groups_loader
    def groups(username: str) -> list[str]:
        return ["from-directory"]

    for app in apps:
        response = app.test_client().get("/api/me", headers=bearer(jwtgate_token_factory("alice", groups=["t"])))
        assert response.get_json()["groups"] == ["from-directory", "t"]


def test_init_app_twice_with_the_same_gate_is_a_no_op(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    app, gate = build(jwtgate_keys)
    state = state_of(app)
    gate.init_app(app)
    assert state_of(app) is state
    assert len(gate_hooks(app)) == 1
    assert app.test_client().get("/api/me", headers=bearer(jwtgate_token_factory())).status_code == 200


def test_second_gate_on_the_same_app_is_refused(jwtgate_keys: Keys) -> None:
    app, gate = build(jwtgate_keys)
    with pytest.raises(RuntimeError, match="Import and use that instance instead"):
        JWTGate(app)
    other = JWTGate()
    with pytest.raises(RuntimeError, match="already been registered on this Flask app"):
        other.init_app(app)
    assert state_of(app).gate is gate
    assert len(gate_hooks(app)) == 1


def test_failed_start_leaves_no_hook(jwtgate_keys: Keys) -> None:
    app = Flask("broken")
    app.config["JWTGATE_READ_ONLY_GROUPS"] = "viewers"
    with pytest.raises(ConfigurationError):
        JWTGate(app)
    assert "jwtgate" not in app.extensions
    assert gate_hooks(app) == []


def test_gate_runs_before_the_hosts_earlier_before_request(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    app = Flask("host")
    app.config.update(TESTING=True, JWTGATE_PROVIDERS=[{"name": "test", "public_key": jwtgate_keys["rsa"].public_pem}])
    seen: list[tuple[str | None, str]] = []

    @app.before_request
    def host_hook() -> None:
        seen.append((current_identity.username, current_identity.auth_method))

    gate = JWTGate(app)
    add_views(app, gate)
    client = app.test_client()

    assert client.get("/api/me", headers=bearer(jwtgate_token_factory("alice"))).status_code == 200
    assert seen == [("alice", "jwt")]
    assert client.get("/api/me").status_code == 401
    assert seen == [("alice", "jwt")]  # the gate's refusal ends the request before the host's hook
    assert client.get("/api/open").status_code == 200
    assert seen[-1] == (None, "anonymous")


# -- current_identity -------------------------------------------------------------------------------------------------


def test_current_identity_of_a_jwt_caller(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    app, _ = build(jwtgate_keys)
    token = jwtgate_token_factory("alice", groups=["devs", "ops"], claims={"jti": "abc-123", "email": "a@example"})
    body = app.test_client().get("/api/me", headers=bearer(token)).get_json()
    assert body["username"] == "alice"
    assert body["groups"] == ["devs", "ops"]
    assert body["auth_method"] == "jwt"
    assert body["token_id"] == "jti:abc-123"
    assert body["provider"] == "test"
    assert body["claims"]["email"] == "a@example"
    assert body["claims"]["sub"] == "alice"
    assert token not in json.dumps(body)


def test_token_id_without_jti_is_a_hash_never_the_token(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    app, _ = build(jwtgate_keys)
    token = jwtgate_token_factory("alice", claims={"jti": None})
    token_id = app.test_client().get("/api/me", headers=bearer(token)).get_json()["token_id"]
    assert token_id.startswith("sha256:")
    assert token.rpartition(".")[2] not in token_id


def test_groups_loader_merges_with_token_groups(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    app, gate = build(jwtgate_keys)
    gate.groups_loader(lambda username: {"alice": ["admins"]}.get(username, []))
    client = app.test_client()
    alice = client.get("/api/me", headers=bearer(jwtgate_token_factory("alice", groups=["t"]))).get_json()
    assert alice["groups"] == ["admins", "t"]
    assert client.get("/api/me", headers=bearer(jwtgate_token_factory("zed"))).get_json()["groups"] == []


def test_a_group_change_in_the_directory_applies_to_the_next_request_with_the_same_token(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    app, gate = build(jwtgate_keys, {"JWTGATE_READ_ONLY_GROUPS": ["viewers"]})
    directory = {"alice": frozenset({"viewers"})}
    gate.groups_loader(lambda username: directory.get(username, frozenset()))
    client = app.test_client()
    alice = bearer(jwtgate_token_factory("alice", groups=["t"]))

    assert client.get("/api/me", headers=alice).get_json()["groups"] == ["t", "viewers"]
    assert client.post("/api/me", headers=alice).status_code == 403  # read-only
    directory["alice"] = frozenset({"editors"})
    assert client.get("/api/me", headers=alice).get_json()["groups"] == ["editors", "t"]
    assert client.post("/api/me", headers=alice).status_code == 200
    directory["alice"] = frozenset({"viewers"})
    assert client.post("/api/me", headers=alice).status_code == 403


def test_anonymous_on_public_paths(jwtgate_keys: Keys) -> None:
    app, _ = build(jwtgate_keys, {"JWTGATE_PUBLIC_PATHS": ["GET /api/me"]})
    client = app.test_client()
    for path in ("/api/open", "/api/me"):
        response = client.get(path)
        assert response.status_code == 200
        body = response.get_json()
        assert body["username"] is None
        assert body["auth_method"] == "anonymous"
        assert body["groups"] == []
        assert body["token_id"] is None
        assert body["provider"] is None
    assert client.post("/api/me").status_code == 401  # the public path names GET only


def test_identity_on_a_public_path_with_a_token(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    app, _ = build(jwtgate_keys)
    client = app.test_client()
    assert client.get("/api/open", headers=bearer(jwtgate_token_factory("bob"))).get_json()["username"] == "bob"
    assert client.get("/api/open", headers=bearer("not.a.token")).status_code == 401


def test_current_identity_outside_a_request_is_anonymous() -> None:
    app = Flask("x")
    with app.test_request_context("/"):
        assert current_identity.username is None
        assert current_identity.auth_method == "anonymous"
        assert isinstance(current_identity._get_current_object(), Identity)  # type: ignore[attr-defined]


# -- signals ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def received() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    events: list[tuple[str, Any, dict[str, Any]]] = []

    def on_authenticated(sender: Any, **kwargs: Any) -> None:
        events.append(("authenticated", sender, kwargs))

    def on_denied(sender: Any, **kwargs: Any) -> None:
        events.append(("denied", sender, kwargs))

    request_authenticated.connect(on_authenticated)
    request_denied.connect(on_denied)
    yield events
    request_authenticated.disconnect(on_authenticated)
    request_denied.disconnect(on_denied)


def test_request_authenticated_signal(
    jwtgate_keys: Keys,
    jwtgate_token_factory: TokenFactory,
    bearer: Bearer,
    received: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    app, _ = build(jwtgate_keys)
    app.test_client().get("/api/me", headers=bearer(jwtgate_token_factory("alice", claims={"jti": "j1"})))
    ((name, sender, kwargs),) = received
    assert name == "authenticated"
    assert sender is app
    assert set(kwargs) == {"identity"}
    assert kwargs["identity"].username == "alice"
    assert kwargs["identity"].token_id == "jti:j1"

    received.clear()
    app.test_client().get("/api/open")
    ((name, sender, kwargs),) = received
    assert (name, sender, kwargs["identity"].auth_method) == ("authenticated", app, "anonymous")


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [("no-token", 401, "missing_credentials"), ("expired", 401, "expired"), ("read-only", 403, "read_only")],
    ids=["no-token", "expired-token", "read-only-write"],
)
def test_request_denied_signal(
    jwtgate_keys: Keys,
    jwtgate_token_factory: TokenFactory,
    bearer: Bearer,
    received: list[tuple[str, Any, dict[str, Any]]],
    case: str,
    status: int,
    reason: str,
) -> None:
    app, _ = build(jwtgate_keys, {"JWTGATE_READ_ONLY_GROUPS": ["viewers"]})
    headers = {
        "no-token": {},
        "expired": bearer(jwtgate_token_factory("alice", expires_in=-3600)),
        "read-only": bearer(jwtgate_token_factory("carol", groups=["viewers"])),
    }[case]
    response = app.test_client().post("/api/me", headers=headers)
    assert response.status_code == status
    ((name, sender, kwargs),) = received
    assert name == "denied"
    assert sender is app
    assert set(kwargs) == {"error"}
    assert isinstance(kwargs["error"], GateDenied)
    assert kwargs["error"].status_code == status
    assert kwargs["error"].reason == reason


def test_signals_only_reach_receivers_of_that_app(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    first, _ = build(jwtgate_keys)
    second, _ = build(jwtgate_keys)
    seen: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(sender)

    with request_authenticated.connected_to(receiver, first), request_denied.connected_to(receiver, first):
        second.test_client().get("/api/me", headers=bearer(jwtgate_token_factory()))
        second.test_client().get("/api/me")
        assert seen == []
        first.test_client().get("/api/me")
        assert seen == [first]


# -- key types --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa", "ec256", "ec384", "ed25519"])
@pytest.mark.parametrize("source", ["pem", "file"])
def test_each_key_type_verifies(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer, tmp_path: Path, key: str, source: str
) -> None:
    entry: dict[str, Any] = {"name": "idp"}
    if source == "pem":
        entry["public_key"] = jwtgate_keys[key].public_pem
    else:
        path = tmp_path / f"{key}.pem"
        path.write_text(jwtgate_keys[key].public_pem)
        entry["public_key_file"] = str(path)
    app, _ = build(jwtgate_keys, {"JWTGATE_PROVIDERS": [entry]})
    client = app.test_client()
    response = client.get("/api/me", headers=bearer(jwtgate_token_factory("alice", key=key)))
    assert response.status_code == 200
    assert response.get_json()["provider"] == "idp"
    other = "ec256" if key != "ec256" else "rsa"
    refused = client.get("/api/me", headers=bearer(jwtgate_token_factory("alice", key=other)))
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_token"


def test_username_claim_dotted_path_and_keycloak_groups(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    entry = {
        "name": "keycloak",
        "public_key": jwtgate_keys["rsa"].public_pem,
        "username_claim": "user.name",
        "groups_claim": "realm_access.roles",
    }
    app, _ = build(jwtgate_keys, {"JWTGATE_PROVIDERS": [entry], "JWTGATE_READ_ONLY_GROUPS": ["viewer"]})
    client = app.test_client()
    claims = {"user": {"name": "dave"}, "realm_access": {"roles": ["viewer", "offline_access"]}}
    token = jwtgate_token_factory("f81d4fae-uuid", claims=claims)
    body = client.get("/api/me", headers=bearer(token)).get_json()
    assert body["username"] == "dave"
    assert body["groups"] == ["offline_access", "viewer"]
    assert client.post("/api/me", headers=bearer(token)).status_code == 403

    no_name = jwtgate_token_factory("f81d4fae-uuid", claims={"user": {"email": "d@example"}})
    response = client.get("/api/me", headers=bearer(no_name))
    assert response.status_code == 401
    assert response.get_json()["reason"] == "no_username"


def test_literal_claim_name_with_a_dot_wins(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    entry = {"name": "idp", "public_key": jwtgate_keys["rsa"].public_pem, "username_claim": "user.name"}
    app, _ = build(jwtgate_keys, {"JWTGATE_PROVIDERS": [entry]})
    token = jwtgate_token_factory("x", claims={"user.name": "literal", "user": {"name": "nested"}})
    assert app.test_client().get("/api/me", headers=bearer(token)).get_json()["username"] == "literal"


# -- the verified-token cache -----------------------------------------------------------------------------------------


def test_repeated_token_is_verified_once(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = build(jwtgate_keys)
    counter = VerifyCounter(app, monkeypatch)
    client = app.test_client()
    token = jwtgate_token_factory("alice")
    for _ in range(5):
        assert client.get("/api/me", headers=bearer(token)).get_json()["username"] == "alice"
    assert counter.calls == 1
    assert len(state_of(app).keeper.cache) == 1
    client.get("/api/me", headers=bearer(jwtgate_token_factory("bob")))
    assert counter.calls == 2


@pytest.mark.parametrize("first", ["plain", "padded"])
@pytest.mark.parametrize("jti", [True, False], ids=["with-jti", "without-jti"])
def test_padded_variant_shares_the_cache_entry(
    jwtgate_keys: Keys,
    jwtgate_token_factory: TokenFactory,
    bearer: Bearer,
    monkeypatch: pytest.MonkeyPatch,
    first: str,
    jti: bool,
) -> None:
    app, _ = build(jwtgate_keys)
    counter = VerifyCounter(app, monkeypatch)
    client = app.test_client()
    token = jwtgate_token_factory("alice", claims=None if jti else {"jti": None})
    variant = padded(token)
    assert variant != token and canonical_token(variant) == token
    order = [token, variant] if first == "plain" else [variant, token]
    bodies = []
    for spelling in order + order:
        response = client.get("/api/me", headers=bearer(spelling))
        assert response.status_code == 200
        bodies.append(response.get_json())
    assert counter.calls == 1
    assert len(state_of(app).keeper.cache) == 1
    assert len({body["token_id"] for body in bodies}) == 1
    assert {body["username"] for body in bodies} == {"alice"}


def test_padding_on_a_bad_token_does_not_reach_the_cache(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    app, _ = build(jwtgate_keys)
    client = app.test_client()
    token = jwtgate_token_factory("alice")
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    for variant in (token + "===", token[:-1] + "=="):
        response = client.get("/api/me", headers=bearer(variant))
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_token"
    assert len(state_of(app).keeper.cache) == 1


def test_cached_token_is_refused_after_exp_and_leeway(
    jwtgate_keys: Keys,
    jwtgate_token_factory: TokenFactory,
    bearer: Bearer,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _ = build(jwtgate_keys, clock=clock)
    counter = VerifyCounter(app, monkeypatch)
    client = app.test_client()
    headers = bearer(jwtgate_token_factory("alice", now=clock.now, expires_in=100))
    assert client.get("/api/me", headers=headers).status_code == 200
    clock.advance(99)
    assert client.get("/api/me", headers=headers).status_code == 200
    assert counter.calls == 1
    clock.advance(1 + 60 + 1)  # past exp + the default leeway of 60 s
    response = client.get("/api/me", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert response.get_json()["reason"] == "expired"
    assert len(state_of(app).keeper.cache) == 0


def test_leeway_is_honoured_for_a_cached_token(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer, clock: Clock
) -> None:
    app, _ = build(jwtgate_keys, clock=clock)
    client = app.test_client()
    headers = bearer(jwtgate_token_factory("alice", now=clock.now, expires_in=100))
    assert client.get("/api/me", headers=headers).status_code == 200
    clock.advance(130)  # past exp, within the leeway
    assert client.get("/api/me", headers=headers).status_code == 200


def test_token_that_is_not_yet_valid_is_refused_by_the_injected_clock(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer, clock: Clock
) -> None:
    app, _ = build(jwtgate_keys, clock=clock)
    token = jwtgate_token_factory("alice", now=clock.now + 3600)
    response = app.test_client().get("/api/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json()["reason"] == "issued_in_future"


@pytest.mark.parametrize(
    "spoil",
    ["expired", "bad-signature", "other-key", "garbage", "wrong-alg"],
)
def test_only_verified_tokens_enter_the_cache(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer, spoil: str
) -> None:
    app, _ = build(jwtgate_keys)
    client = app.test_client()
    good = jwtgate_token_factory("alice")
    token = {
        "expired": jwtgate_token_factory("alice", expires_in=-3600),
        "bad-signature": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "other-key": jwtgate_token_factory("alice", key="ec256"),
        "garbage": "a.b.c",
        "wrong-alg": jwtgate_token_factory("alice", algorithm="PS256"),
    }[spoil]
    for _ in range(2):
        assert client.get("/api/me", headers=bearer(token)).status_code == 401
    assert len(state_of(app).keeper.cache) == 0


def test_settings_change_empties_the_cache(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = build(jwtgate_keys)
    client = app.test_client()
    headers = bearer(jwtgate_token_factory("carol", groups=["viewers"]))
    assert client.post("/api/me", headers=headers).status_code == 200
    state = state_of(app)
    assert len(state.keeper.cache) == 1

    state.apply(Settings.from_mapping(app.config, {"read_only_groups": ["viewers"]}))
    assert len(state.keeper.cache) == 0
    counter = VerifyCounter(app, monkeypatch)
    assert client.post("/api/me", headers=headers).status_code == 403
    assert counter.calls == 1


def test_key_rotation_by_settings_change_refuses_cached_tokens(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    app, _ = build(jwtgate_keys)
    client = app.test_client()
    headers = bearer(jwtgate_token_factory("alice"))
    assert client.get("/api/me", headers=headers).status_code == 200
    rotated = {"JWTGATE_PROVIDERS": [{"name": "test", "public_key": jwtgate_keys["ec256"].public_pem}]}
    state_of(app).apply(Settings.from_mapping(rotated))
    assert client.get("/api/me", headers=headers).status_code == 401


def verified(name: str, expires_at: float = 2e9) -> VerifiedToken:
    return VerifiedToken("p", name, frozenset(), {}, f"jti:{name}", expires_at)


def test_token_cache_evicts_least_recently_used(clock: Clock) -> None:
    cache = TokenCache(maxsize=3, clock=clock)
    for name in "abc":
        cache.put(name, verified(name))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", verified("d"))
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [cache.get(name) is not None for name in "acd"] == [True, True, True]
    cache.put("e", verified("e"))  # after reading a, c, d: a is the least recently used
    assert cache.get("a") is None
    assert len(cache) == 3


def test_token_cache_put_of_existing_key_refreshes_it(clock: Clock) -> None:
    cache = TokenCache(maxsize=2, clock=clock)
    cache.put("a", verified("a"))
    cache.put("b", verified("b"))
    cache.put("a", verified("a"))
    cache.put("c", verified("c"))
    assert cache.get("a") is not None
    assert cache.get("b") is None


def test_token_cache_entry_never_outlives_exp(clock: Clock) -> None:
    cache = TokenCache(maxsize=10, clock=clock)
    entry = verified("a", expires_at=clock.now + 100)
    cache.put("a", entry)
    clock.advance(99.5)
    assert cache.get("a") is entry
    clock.advance(0.5)
    assert cache.get("a") is None
    assert len(cache) == 0


def test_token_cache_clear(clock: Clock) -> None:
    cache = TokenCache(maxsize=10, clock=clock)
    cache.put("a", verified("a"))
    cache.clear()
    assert len(cache) == 0
    assert cache.get("a") is None


# -- the error response -----------------------------------------------------------------------------------------------


def forged(header: dict[str, Any], payload: dict[str, Any] | None = None) -> str:
    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment(header)}.{segment(payload or {'sub': 'mallory', 'exp': 4e9})}.c2lnbmF0dXJl"


@pytest.fixture
def client(jwtgate_keys: Keys) -> FlaskClient:
    return build(jwtgate_keys)[0].test_client()


def test_error_without_credentials(client: FlaskClient) -> None:
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    body = response.get_json()
    assert set(body) == {"error", "error_description", "status", "reason"}
    assert body["status"] == 401
    assert body["error"] == "invalid_request"
    assert body["reason"] == "missing_credentials"
    assert "Bearer" in body["error_description"]


def test_error_with_a_bad_token(client: FlaskClient, jwtgate_token_factory: TokenFactory, bearer: Bearer) -> None:
    response = client.get("/api/me", headers=bearer(jwtgate_token_factory(expires_in=-3600)))
    assert response.status_code == 401
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"error", "error_description", "status", "reason"}
    assert (body["error"], body["status"], body["reason"]) == ("invalid_token", 401, "expired")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge == f'Bearer realm="api", error="invalid_token", error_description="{body["error_description"]}"'


def test_error_with_a_malformed_header(client: FlaskClient) -> None:
    response = client.get("/api/me", headers={"Authorization": "Bearer two tokens"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api", error="invalid_request"')


def test_forbidden_response(jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer) -> None:
    app, _ = build(jwtgate_keys, {"JWTGATE_READ_ONLY_GROUPS": ["viewers"]})
    response = app.test_client().post("/api/me", headers=bearer(jwtgate_token_factory("carol", groups=["viewers"])))
    assert response.status_code == 403
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"error", "error_description", "status", "reason"}
    assert (body["error"], body["status"], body["reason"]) == ("insufficient_scope", 403, "read_only")
    assert "POST" in body["error_description"]


@pytest.mark.parametrize(
    "alg",
    ['RS"256', "RS\\256", 'x", error="forged', "RS256\u00e9", "RS\t256"],
    ids=["quote", "backslash", "injected-param", "non-ascii", "tab"],
)
def test_quotes_and_backslashes_are_stripped_from_the_challenge(client: FlaskClient, bearer: Bearer, alg: str) -> None:
    response = client.get("/api/me", headers=bearer(forged({"alg": alg, "typ": "JWT"})))
    assert response.status_code == 401
    body = response.get_json()
    assert alg in body["error_description"] or repr(alg)[1:-1] in body["error_description"]
    challenge = response.headers["WWW-Authenticate"]
    prefix = 'Bearer realm="api", error="invalid_token", error_description="'
    assert challenge.startswith(prefix)
    assert challenge.endswith('"')
    description = challenge[len(prefix) : -1]
    assert '"' not in description
    assert "\\" not in description
    assert all(0x20 <= ord(c) <= 0x7E for c in description)
    assert challenge.count('"') == 6  # only the three quoted values' own quotes


def test_error_description_never_contains_the_token(client: FlaskClient, bearer: Bearer) -> None:
    token = forged({"alg": "RS256", "typ": "JWT"})
    response = client.get("/api/me", headers=bearer(token))
    assert response.status_code == 401
    assert token not in response.get_data(as_text=True)
    assert token not in response.headers["WWW-Authenticate"]


def test_token_from_another_rsa_key_is_refused(jwtgate_keys: Keys, bearer: Bearer) -> None:
    app, _ = build(jwtgate_keys)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "mallory", "exp": 4_000_000_000}, other, algorithm="RS256")
    response = app.test_client().get("/api/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json()["reason"] == "bad_signature"


def test_claims_changed_by_one_request_do_not_leak_into_the_next(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory, bearer: Bearer
) -> None:
    """The verified claims of a cached token are shared by every request that presents it: a view that changes them,
    at the top or deep inside a nested list or object, must not change what the next request sees."""
    app, _ = build(jwtgate_keys)
    attempts: list[str] = []

    def attempt(name: str, change: Callable[[], object]) -> None:
        try:
            change()
        except (TypeError, AttributeError):
            attempts.append(f"{name}: refused")  # immutable claims are the better answer
        else:
            attempts.append(f"{name}: changed")

    @app.get("/api/scribble")
    def scribble() -> Any:
        claims: Any = current_identity.claims
        seen = json.loads(json.dumps(claims))
        attempt("top", lambda: claims.__setitem__("scope", "admin"))
        attempt("nested list", lambda: claims["realm_access"]["roles"].append("admin"))
        attempt("nested object", lambda: claims["realm_access"].__setitem__("admin", True))
        attempt("list of objects", lambda: claims["orgs"][0].update(role="owner"))
        return jsonify(seen)

    client = app.test_client()
    nested = {"realm_access": {"roles": ["viewer"]}, "orgs": [{"name": "acme", "role": "member"}]}
    headers = bearer(jwtgate_token_factory("alice", claims=nested))
    first = client.get("/api/scribble", headers=headers).get_json()
    second = client.get("/api/scribble", headers=headers).get_json()

    for seen in (first, second):
        assert "scope" not in seen
        assert seen["realm_access"] == {"roles": ["viewer"]}
        assert seen["orgs"] == [{"name": "acme", "role": "member"}]
    assert all(outcome.endswith("refused") for outcome in attempts), attempts
