"""The Test Token tool cannot disagree with the gate: over generated settings and requests, its verdict (``explain``,
and ``POST /jwtgate/admin/test-token``) is the gate's actual answer to the same request.

Hypothesis generates the settings (master switch, protected, public, restricted-public and bypass paths, allowed and
read-only groups, IP allowlists, the credential toggles) and the request (method, path, client address, and a token:
valid with various groups, with a malformed groups claim, expired, forged, garbage, a gate-issued API token, a
revoked one). One app takes each generated setting through its state (``apply``), as a runtime change would; the gate
answers the request, the tool explains the same request, and the two are compared: allowed or refused, the status and
the reason, and who the caller is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from conftest import FIXED_START, Clock
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flask_jwtgate import GateDenied, Identity, JWTGate, request_authenticated, request_denied
from flask_jwtgate.explain import explain
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing import KeyPair, make_token
from flask_jwtgate.token_views import view_for

TOOL = "/jwtgate/admin/test-token"
ISSUER = "https://idp.example.com"
METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "PROPFIND"]
GROUPS = ["devs", "ops", "viewers"]
USERS = ["alice", "bob", "carol"]
DIRECTORY = {"alice": ["ops"], "bob": [], "carol": ["viewers"], "root": ["jwtgate-admins"]}
ADMIN_PAT = "hpat_admin-of-the-agreement-test"
ADMIN_IP = "198.51.100.9"  # never a generated client address

PATHS = [
    "/api/items", "/api/items/1", "/api/status", "/API/items", "/api//items", "/api/items/", "/api/./items",
    "/pub/docs", "/open", "/open/x", "/open/./x", "/health", "/other/thing",
    "/open", "/open/x",  # a view marked @gate.public, as often as the rest of the API
    "/jwtgate/whoami", "/jwtgate/tokens",  # the gate's own endpoints: decided whatever the path rules say
]
ADDRESSES = ["127.0.0.1", "10.1.2.3", "192.0.2.7", "203.0.113.5", "2001:db8::1", "::1"]
PROTECTED = [
    ["/**"], ["/**"], ["/**"], ["/api/**"], ["/api/*"], ["GET,POST /api/**", "/open/**"],
    ["/open/**", "/pub/**", "/health"],
]
PUBLIC = [[], ["/pub/**"], ["/api/items"], ["GET /api/**"], ["/open/**", "/health"]]
RESTRICTED = [[], ["**"], ["/open/**"], ["POST,PUT /pub/**"], ["/api/**"]]
BYPASS = [[], [], ["/health"], ["/api/items/1"], ["DELETE /api/**"], ["/pub/**"]]
ALLOWED_GROUPS = [[], [], ["devs", "ops", "viewers"], ["devs"], ["ops", "viewers"]]
READ_ONLY_GROUPS = [[], ["viewers"], ["ops"], ["viewers", "devs"]]
ALLOWLISTS = [
    [], [], [], [], ["127.0.0.0/8"], ["10.0.0.0/8", "2001:db8::/32"], ["192.0.2.7"], ["::1", "203.0.113.0/24"]
]
# Mostly valid tokens, so that the path and group rules have a caller to decide about.
TOKEN_KINDS = ["jwt"] * 6 + ["malformed_groups", "expired", "forged", "garbage", "api", "api", "api_revoked"]


@dataclass(repr=False)  # a falsifying example shows the config and the call, not the keys
class World:
    """The app under test, its base configuration, and what the gate reported for the last request."""

    app: Flask
    clock: Clock
    keys: dict[str, KeyPair]
    base: dict[str, Any]
    api_token: str
    revoked_api_token: str
    attacker: Any
    denied: list[GateDenied] = field(default_factory=list)
    authenticated: list[Identity] = field(default_factory=list)

    def __repr__(self) -> str:
        return "World(the app with the generated settings)"


@pytest.fixture(scope="module")
def world(jwtgate_keys: dict[str, KeyPair]) -> Iterator[World]:
    clock = Clock(FIXED_START)
    base: dict[str, Any] = {
        "TESTING": True,
        "JWTGATE_PROVIDERS": [{"name": "test", "public_key": jwtgate_keys["rsa"].public_pem, "issuer": ISSUER}],
        "JWTGATE_DATABASE_URI": "sqlite://",
        "JWTGATE_AUDIT_ENABLED": False,  # not the subject here, and a write per request
    }
    app = Flask("agreement")
    app.config.update(base)
    gate = JWTGate(app, clock=clock)
    gate.groups_loader(lambda username: DIRECTORY.get(username, []))
    gate.pat_validator(lambda token: "root" if token == ADMIN_PAT else None)  # the admin who asks the tool

    @app.route("/<path:rest>", methods=METHODS)
    def anything(rest: str) -> Any:
        return {"ok": True}

    @app.route("/open", methods=METHODS, defaults={"rest": ""})
    @app.route("/open/<path:rest>", methods=METHODS)
    @gate.public
    def open_view(rest: str) -> Any:
        return {"ok": True}

    store = app.extensions["jwtgate"].api_tokens
    _, api_token = store.create("bob", name="agreement", expires_in_days=1)
    revoked, revoked_api_token = store.create("alice", name="revoked", expires_in_days=1)
    store.revoke(revoked.id)
    made = World(
        app, clock, jwtgate_keys, base, api_token, revoked_api_token,
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )

    def on_denied(sender: Flask, error: GateDenied) -> None:
        made.denied.append(error)

    def on_authenticated(sender: Flask, identity: Identity) -> None:
        made.authenticated.append(identity)

    with request_denied.connected_to(on_denied, app), request_authenticated.connected_to(on_authenticated, app):
        yield made


config_strategy = st.fixed_dictionaries(
    {
        "JWTGATE_ENABLED": st.sampled_from([True] * 9 + [False]),
        "JWTGATE_PROTECTED_PATHS": st.sampled_from(PROTECTED),
        "JWTGATE_PUBLIC_PATHS": st.sampled_from(PUBLIC),
        "JWTGATE_RESTRICTED_PUBLIC_PATHS": st.sampled_from(RESTRICTED),
        "JWTGATE_BYPASS_PATHS": st.sampled_from(BYPASS),
        "JWTGATE_ALLOWED_GROUPS": st.sampled_from(ALLOWED_GROUPS),
        "JWTGATE_READ_ONLY_GROUPS": st.sampled_from(READ_ONLY_GROUPS),
        "JWTGATE_IP_ALLOWLIST": st.sampled_from(ALLOWLISTS),
        "JWTGATE_ACCEPT_JWT": st.sampled_from([True] * 5 + [False]),
        "JWTGATE_ACCEPT_API_TOKENS": st.sampled_from([True] * 5 + [False]),
    }
)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    ip: str
    kind: str
    user: str
    groups: tuple[str, ...] | None


call_strategy = st.builds(
    Call,
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    ip=st.sampled_from(ADDRESSES),
    kind=st.sampled_from(TOKEN_KINDS),
    user=st.sampled_from(USERS),
    groups=st.none() | st.lists(st.sampled_from(GROUPS), unique=True, max_size=3).map(tuple),
)


def token_for(world: World, call: Call) -> str:
    now = world.clock.now
    groups = list(call.groups) if call.groups is not None else None
    if call.kind == "jwt":
        return make_token(world.keys, call.user, groups=groups, issuer=ISSUER, now=now)
    if call.kind == "malformed_groups":
        return make_token(world.keys, call.user, issuer=ISSUER, claims={"groups": "viewers"}, now=now)
    if call.kind == "expired":
        return make_token(world.keys, call.user, groups=groups, issuer=ISSUER, now=now - 7200, expires_in=300)
    if call.kind == "forged":
        claims = {"sub": call.user, "iss": ISSUER, "iat": int(now), "exp": int(now) + 300, "groups": groups or []}
        return jwt.encode(claims, world.attacker, algorithm="RS256")
    if call.kind == "api":
        return world.api_token
    if call.kind == "api_revoked":
        return world.revoked_api_token
    return "garbage-token"


def apply(world: World, config: dict[str, Any]) -> None:
    """Take ``config`` into use on the one app, as a runtime settings change would. The admin's own way to the tool
    is kept open (its group allowed, its address allowed): neither can change a generated request's verdict."""
    config = dict(config)
    if config["JWTGATE_ALLOWED_GROUPS"]:
        config["JWTGATE_ALLOWED_GROUPS"] = [*config["JWTGATE_ALLOWED_GROUPS"], "jwtgate-admins"]
    if config["JWTGATE_IP_ALLOWLIST"]:
        config["JWTGATE_IP_ALLOWLIST"] = [*config["JWTGATE_IP_ALLOWLIST"], ADMIN_IP]
    world.app.extensions["jwtgate"].apply(Settings.from_mapping({**world.base, **config}))


def gate_answer(world: World, call: Call, token: str) -> tuple[int, dict[str, Any] | None, str | None]:
    """What the gate did with the request: the status, the refusal (status and reason) if it refused, and the
    username it let in (``None``: not gated, or refused)."""
    world.denied.clear()
    world.authenticated.clear()
    response = world.app.test_client().open(
        call.path, method=call.method, headers={"Authorization": f"Bearer {token}"},
        environ_overrides={"REMOTE_ADDR": call.ip},
    )
    assert len(world.denied) + len(world.authenticated) <= 1
    if world.denied:
        error = world.denied[0]
        assert response.status_code == error.status_code
        return response.status_code, {"status": error.status_code, "reason": error.reason}, None
    user = world.authenticated[0].username if world.authenticated else None
    return response.status_code, None, user


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=config_strategy, call=call_strategy)
def test_the_test_token_tool_gives_the_gates_own_verdict(world: World, config: dict[str, Any], call: Call) -> None:
    apply(world, config)
    token = token_for(world, call)
    state = world.app.extensions["jwtgate"]
    with world.app.app_context():
        report = explain(
            state.keeper, token, method=call.method, path=call.path, ip=call.ip,
            view=view_for(state, call.method, call.path),
        ).to_dict()
    tool = world.app.test_client().post(
        TOOL, json={"token": token, "method": call.method, "path": call.path, "ip": call.ip},
        headers={"Authorization": f"Bearer {ADMIN_PAT}"}, environ_overrides={"REMOTE_ADDR": ADMIN_IP},
    )
    status, refusal, user = gate_answer(world, call, token)
    # What was decided, for `pytest --hypothesis-show-statistics`: every rule should show up among the outcomes.
    event(str(refusal["reason"]) if refusal else "allowed" if user else "not_gated")

    assert tool.status_code == 200, tool.get_data(as_text=True)
    over_http = tool.get_json()
    for name in ("allowed", "valid", "decision", "identity"):
        assert over_http[name] == report[name], name
    if refusal is not None:
        assert report["allowed"] is False, (report["decision"], refusal)
        assert {key: report["decision"][key] for key in ("status", "reason")} == refusal
    else:
        assert report["allowed"] is True, (report["decision"], status)
        if call.path.startswith("/jwtgate/"):
            # Let through by the gate, the gate's own endpoint then answers for itself (a body it refuses: 400).
            assert status < 500
        else:
            assert status == 200
        if user is None:  # the gate was not involved
            assert report["decision"]["reason"] == "not_gated"
        else:
            assert report["decision"]["reason"] == "allowed"
            assert report["identity"]["username"] == user
