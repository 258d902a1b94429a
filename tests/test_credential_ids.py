"""The ``token_id`` of each kind of credential (what the audit log, the rate limits and ``current_identity`` know a
credential by, never its secret), and the provider a two-argument ``groups_loader`` is told."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify

from flask_jwtgate import JWTGate, current_identity

AppFactory = Callable[..., tuple[Flask, JWTGate]]


def seen(app: Flask, authorization: str) -> dict[str, Any]:
    @app.get("/api/seen")
    def view() -> Any:
        return jsonify(token_id=current_identity.token_id, groups=sorted(current_identity.groups))

    response = app.test_client().get("/api/seen", headers={"Authorization": authorization})
    assert response.status_code == 200
    payload: dict[str, Any] = response.get_json()
    return payload


def test_a_host_pat_is_known_by_a_hash_of_it(jwtgate_app_factory: AppFactory) -> None:
    app, gate = jwtgate_app_factory()
    gate.pat_validator(lambda token: "erin" if token == "hostpat-erin" else None)
    expected = "pat:" + hashlib.sha256(b"hostpat-erin").hexdigest()[:32]
    assert seen(app, "Bearer hostpat-erin")["token_id"] == expected


def test_basic_credentials_are_known_by_their_user(jwtgate_app_factory: AppFactory) -> None:
    app, gate = jwtgate_app_factory()
    gate.basic_auth_validator(lambda username, password: password == "pw")
    authorization = "Basic " + base64.b64encode(b"frank:pw").decode()
    assert seen(app, authorization)["token_id"] == "basic:frank"


def test_a_two_argument_loader_is_told_the_provider(
    jwtgate_app_factory: AppFactory, jwtgate_token_factory: Callable[..., str]
) -> None:
    app, gate = jwtgate_app_factory()
    gate.groups_loader(lambda username, provider: [f"{username}@{provider}"])
    assert seen(app, f"Bearer {jwtgate_token_factory('alice')}")["groups"] == ["alice@test"]


def test_a_loader_without_a_signature_is_called_with_the_username_alone(
    jwtgate_app_factory: AppFactory, jwtgate_token_factory: Callable[..., str]
) -> None:
    """A builtin such as a dict's ``__getitem__`` shows no signature: it gets the documented one-argument call."""
    app, gate = jwtgate_app_factory()
    gate.groups_loader({"alice": ["ops"]}.__getitem__)
    assert seen(app, f"Bearer {jwtgate_token_factory('alice')}")["groups"] == ["ops"]
