"""Path rules that name methods ("GET /rest/**", "DELETE /api/**") apply to those methods only, through the gate,
for each kind of rule; and a fast path never takes a longer header for a shorter token it has seen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_jwtgate import JWTGate


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"JWTGATE_BYPASS_PATHS": ["POST /api/items"]}, {"GET": 401, "POST": 200, "DELETE": 401}),
        ({"JWTGATE_PROTECTED_PATHS": ["GET /api/**"]}, {"GET": 401, "POST": 200, "DELETE": 200}),
        ({"JWTGATE_PUBLIC_PATHS": ["GET /api/items"]}, {"GET": 200, "POST": 401, "DELETE": 401}),
        ({"JWTGATE_PUBLIC_PATHS": ["/api/items"], "JWTGATE_RESTRICTED_PUBLIC_PATHS": ["DELETE /api/items"]},
         {"GET": 200, "POST": 200, "DELETE": 401}),
    ],
)  # fmt: skip
def test_a_rule_with_methods_applies_to_those_methods_only(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], config: dict[str, Any], expected: dict[str, int]
) -> None:
    app, _ = jwtgate_app_factory(**config)
    client = app.test_client()
    assert {method: client.open("/api/items", method=method).status_code for method in expected} == expected


def test_a_token_with_a_character_in_front_is_another_token(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_token_factory: Callable[..., str]
) -> None:
    app, _ = jwtgate_app_factory()
    client = app.test_client()
    token = jwtgate_token_factory("alice")
    assert client.get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    refused = client.get("/api/items", headers={"Authorization": f"Bearer X{token}"})
    assert refused.status_code == 401
    assert refused.get_json()["reason"] == "malformed_token"


def test_a_rule_with_methods_applies_to_a_long_path_too(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]],
) -> None:
    """Paths too long for the route memo are classified afresh, by the same rules."""
    app, _ = jwtgate_app_factory(JWTGATE_PROTECTED_PATHS=["GET /api/**"])
    client = app.test_client()
    path = "/api/" + "x" * 600
    assert client.get(path).status_code == 401
    assert client.post(path).status_code == 404  # not the API for POST: the gate lets Flask answer
