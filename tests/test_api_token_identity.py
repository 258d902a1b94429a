"""Who a gate-issued API token is, as ``current_identity`` shows it: its owner, ``auth_method`` ``api_token``, the
``token_id`` ``api:<id>`` (never the secret), no claims, and the groups the token itself carries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify

from flask_jwtgate import JWTGate, current_identity
from flask_jwtgate.errors import TemporarilyUnavailable
from flask_jwtgate.policy import Gatekeeper
from flask_jwtgate.settings import Settings


def test_an_api_tokens_identity(jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]]) -> None:
    app, gate = jwtgate_app_factory()
    gate.groups_loader(lambda username: ["ops"])

    @app.get("/api/me")
    def me() -> Any:
        identity = current_identity
        return jsonify(
            username=identity.username, groups=sorted(identity.groups), auth_method=identity.auth_method,
            token_id=identity.token_id, provider=identity.provider, claims=identity.claims,
            token_groups=sorted(identity.token_groups),
        )  # fmt: skip

    token, secret = app.extensions["jwtgate"].api_tokens.create(
        "dora", name="ci", expires_in_days=1, groups=frozenset({"devs"})
    )
    headers = {"Authorization": f"Bearer {secret}"}
    response = app.test_client().get("/api/me", headers=headers)
    assert response.status_code == 200
    assert response.get_json() == {
        "username": "dora", "groups": ["devs", "ops"], "auth_method": "api_token", "token_id": f"api:{token.id}",
        "provider": None, "claims": {}, "token_groups": ["devs"],
    }  # fmt: skip
    whoami = app.test_client().get("/jwtgate/whoami", headers=headers).get_json()
    assert whoami["token_id"] == f"api:{token.id}"


def test_every_callers_claims_are_json_like_a_jwts(jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]]) -> None:
    """A view may return ``current_identity.claims`` whoever calls: before, the empty claims of an anonymous caller,
    an API token, a PAT or Basic were a ``MappingProxyType`` that ``jsonify`` refuses (a 500)."""
    app, gate = jwtgate_app_factory()
    gate.pat_validator(lambda token: "erin" if token == "hostpat" else None)

    @app.get("/api/claims")
    @gate.public
    def claims() -> Any:
        return jsonify(current_identity.claims)

    client = app.test_client()
    assert client.get("/api/claims").get_json() == {}
    assert client.get("/api/claims", headers={"Authorization": "Bearer hostpat"}).get_json() == {}


def test_a_policy_without_a_token_store_refuses_api_tokens_with_a_503() -> None:
    keeper = Gatekeeper(Settings.from_mapping({"JWTGATE_DATABASE_URI": "sqlite://"}))
    try:
        keeper.authenticate("Bearer jgt_" + "A" * 43)
    except TemporarilyUnavailable as refused:
        assert (refused.status_code, refused.reason) == (503, "token_store_unavailable")
    else:  # pragma: no cover - the assertion's message
        raise AssertionError("an API token was accepted without a token store")
