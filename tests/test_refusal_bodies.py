"""What a refused caller reads: for each refusal of the policy, the exact JSON body (``error``, ``error_description``,
``status``, ``reason``), and for a failure of the host's own code the log line that tells the operator which hook
failed. The descriptions are the README's "says why": a caller and an admin act on them."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_jwtgate import JWTGate
from flask_jwtgate.state import EXTENSION_KEY

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]


def body(error: str, description: str, status: int, reason: str) -> dict[str, Any]:
    return {"error": error, "error_description": description, "status": status, "reason": reason}


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def refused(app: Flask, authorization: str | None = None, **options: Any) -> dict[str, Any]:
    options.setdefault("path", "/api/items")
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = app.test_client().open(headers=headers, **options)
    assert response.status_code >= 400
    assert response.headers["Cache-Control"] == "no-store"
    payload: dict[str, Any] = response.get_json()
    assert payload["status"] == response.status_code
    return payload


def test_no_credentials(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory()
    assert refused(app) == body(
        "invalid_request", "authentication is required: send 'Authorization: Bearer <token>'", 401,
        "missing_credentials",
    )  # fmt: skip


def test_no_credentials_on_a_restricted_public_path(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory(JWTGATE_RESTRICTED_PUBLIC_PATHS=["/api/status"])
    assert refused(app, path="/api/status") == body(
        "invalid_request", "this public endpoint requires authentication", 401, "public_restricted"
    )


def test_address_outside_the_allowlist(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory(JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"])
    assert refused(app, environ_overrides={"REMOTE_ADDR": "192.0.2.7"}) == body(
        "access_denied", "the client address 192.0.2.7 is not allowed to call this API", 403, "ip_not_allowed"
    )


def test_group_not_allowed(jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory) -> None:
    app, _ = jwtgate_app_factory(JWTGATE_ALLOWED_GROUPS=["staff"])
    token = jwtgate_token_factory("alice", groups=["guests"])
    assert refused(app, f"Bearer {token}") == body(
        "access_denied", "user 'alice' is not in a group allowed to call this API", 403, "group_not_allowed"
    )


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_read_only_write(jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, method: str) -> None:
    app, _ = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    token = jwtgate_token_factory("carol", groups=["viewers"])
    assert refused(app, f"Bearer {token}", method=method) == body(
        "insufficient_scope", f"read-only access: {method} is not allowed (only GET, HEAD and OPTIONS)", 403,
        "read_only",
    )  # fmt: skip


def test_read_only_override(jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory) -> None:
    app, _ = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    token = jwtgate_token_factory("carol", groups=["viewers"])
    response = app.test_client().get(
        "/api/items", headers={"Authorization": f"Bearer {token}", "X-HTTP-Method-Override": "DELETE"}
    )
    assert response.status_code == 403
    assert response.get_json() == body(
        "insufficient_scope", "read-only access: a method override naming a write is refused", 403, "read_only"
    )


@pytest.mark.parametrize(
    ("config", "authorization", "expected"),
    [
        ({"JWTGATE_ACCEPT_JWT": False}, "jwt", body(
            "invalid_token", "JWTs are disabled on this API (JWTGATE_ACCEPT_JWT)", 401, "token_kind_disabled")),
        ({"JWTGATE_ACCEPT_API_TOKENS": False}, "Bearer jgt_" + "A" * 43, body(
            "invalid_token", "API tokens are disabled on this API (JWTGATE_ACCEPT_API_TOKENS)", 401,
            "token_kind_disabled")),
        ({"JWTGATE_ACCEPT_PATS": False}, "Bearer hostpat-alice", body(
            "invalid_token", "personal access tokens are disabled on this API (JWTGATE_ACCEPT_PATS)", 401,
            "token_kind_disabled")),
        ({}, "Bearer not-a-jwt-nor-a-pat", body(
            "invalid_token", "the token is not a JWT and no other token kind is enabled", 401, "unknown_token")),
        ({}, "Bearer hostpat-nameless", body(
            "invalid_token", "the personal access token names no user", 401, "no_username")),
        ({"JWTGATE_DISABLE_BASIC_AUTH": True}, basic("alice", "pw-alice"), body(
            "invalid_request", "Basic authentication is disabled on this API", 401, "basic_disabled")),
        ({}, basic("alice", "wrong"), body(
            "invalid_token", "the username or password is wrong", 401, "bad_credentials")),
    ],
)  # fmt: skip
def test_credentials_refused(
    jwtgate_app_factory: AppFactory,
    jwtgate_token_factory: TokenFactory,
    config: dict[str, Any],
    authorization: str,
    expected: dict[str, Any],
) -> None:
    app, gate = jwtgate_app_factory(**config)
    gate.pat_validator(lambda token: {"hostpat-alice": "alice", "hostpat-nameless": ""}.get(token))
    gate.basic_auth_validator(lambda username, password: password == f"pw-{username}")
    if authorization == "jwt":
        authorization = f"Bearer {jwtgate_token_factory('alice')}"
    assert refused(app, authorization) == expected


def test_basic_without_a_validator(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory()
    assert refused(app, basic("alice", "pw")) == body(
        "invalid_request",
        "Basic credentials are not accepted: register a @gate.basic_auth_validator to enable them, or use "
        "'Authorization: Bearer <token>'",
        401,
        "basic_not_configured",
    )


def test_api_tokens_without_a_token_store(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory()
    app.extensions[EXTENSION_KEY].api_tokens = None
    assert refused(app, "Bearer jgt_" + "A" * 43) == body(
        "temporarily_unavailable", "API tokens cannot be checked: no token store", 503, "token_store_unavailable"
    )


def _failing(*args: Any) -> Any:
    raise RuntimeError("the host's directory is down")


@pytest.mark.parametrize(
    ("hook", "authorization", "description", "reason", "log"),
    [
        ("pat_validator", "Bearer hostpat-alice", "personal access tokens cannot be checked", "pat_unavailable",
         "jwtgate: pat_validator failed"),
        ("basic_auth_validator", basic("alice", "pw"), "Basic credentials cannot be checked", "basic_unavailable",
         "jwtgate: basic_auth_validator failed"),
        ("groups_loader", "jwt", "the group directory could not be read", "groups_unavailable",
         "jwtgate: groups_loader failed for a user"),
    ],
)  # fmt: skip
def test_a_failing_host_hook_is_a_503_and_a_log_line_naming_it(
    jwtgate_app_factory: AppFactory,
    jwtgate_token_factory: TokenFactory,
    caplog: pytest.LogCaptureFixture,
    hook: str,
    authorization: str,
    description: str,
    reason: str,
    log: str,
) -> None:
    app, gate = jwtgate_app_factory()
    getattr(gate, hook)(_failing)
    if authorization == "jwt":
        authorization = f"Bearer {jwtgate_token_factory('alice')}"
    with caplog.at_level(logging.ERROR, logger="flask_jwtgate"):
        assert refused(app, authorization) == body("temporarily_unavailable", description, 503, reason)
    assert [record.getMessage() for record in caplog.records] == [log]
    assert caplog.records[0].exc_info is not None  # the host's traceback, for the operator
