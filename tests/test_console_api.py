"""The admin endpoints the console adds: ``GET {prefix}/admin/providers`` (each provider's key status, never a secret)
and ``GET {prefix}/admin/lint``; the lint in ``flask jwtgate check-config``; a 400 that names its parameter."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask

from flask_jwtgate import JWTGate
from flask_jwtgate.testing_idp import MockIdentityProvider

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]


def admin_token(app: Flask) -> dict[str, str]:
    """An API token of an admin of the host's directory: it needs no provider, so none is used by signing in."""
    store = app.extensions["jwtgate"].api_tokens
    _token, secret = store.create(
        "root", name="console", expires_in_days=1, created_by="test", groups=frozenset({"jwtgate-admins"})
    )
    return {"Authorization": f"Bearer {secret}"}


def test_providers_show_a_public_keys_type_and_fingerprint(
    jwtgate_app_factory: AppFactory, jwtgate_keys: Any, jwtgate_token_factory: TokenFactory
) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False)
    client = app.test_client()
    admin = {"Authorization": f"Bearer {jwtgate_token_factory('alice', groups=['jwtgate-admins'])}"}
    response = client.get("/jwtgate/admin/providers", headers=admin)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    der = jwtgate_keys["rsa"].public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (provider,) = response.get_json()["providers"]
    assert provider["name"] == "test" and provider["kind"] == "public_key"
    assert provider["algorithms"] == ["RS256"]
    assert provider["key"] == {"type": "RSA 2048", "fingerprint": "sha256:" + hashlib.sha256(der).hexdigest()}


def test_providers_are_for_admins_only(jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False)
    client = app.test_client()
    assert client.get("/jwtgate/admin/providers").status_code == 401
    bob = {"Authorization": f"Bearer {jwtgate_token_factory('bob', groups=['developers'])}"}
    for url in ("/jwtgate/admin/providers", "/jwtgate/admin/lint"):
        refused = client.get(url, headers=bob)
        assert refused.status_code == 403 and refused.get_json()["reason"] == "not_admin"


def test_a_jwks_providers_status_follows_its_key_set(
    jwtgate_app_factory: AppFactory, idp: MockIdentityProvider, clock: Any
) -> None:
    app, _gate = jwtgate_app_factory(
        clock=clock, JWTGATE_AUDIT_ENABLED=False, JWTGATE_PROVIDERS=[idp.jwks_provider(jwks_cooldown=1)]
    )
    client = app.test_client()
    admin = admin_token(app)

    def status() -> dict[str, Any]:
        (provider,) = client.get("/jwtgate/admin/providers", headers=admin).get_json()["providers"]
        assert provider["kind"] == "jwks"
        jwks: dict[str, Any] = provider["jwks"]
        return jwks

    assert status()["state"] == "not fetched yet"
    assert idp.hits["jwks"] == 0  # looking does not fetch

    token = idp.mint_jwt("alice", expires_in=7200)
    assert client.get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    fetched = status()
    assert fetched["state"] == "fresh" and fetched["last_error"] is None and fetched["fetches"] == 1
    assert fetched["url"] == idp.jwks_url
    assert [key["kid"] for key in fetched["keys"]] == [idp.signing_key.kid]
    assert fetched["keys"][0]["algorithms"] == ["RS256"] and fetched["keys"][0]["type"] == "RSA 2048"

    idp.jwks_mode = "500"
    clock.advance(3600 + 1)  # past the set's freshness: the next use refetches in the background and fails
    assert client.get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    state = app.extensions["jwtgate"]
    state.provider_clients.jwks.peek(state.settings.providers[0]).wait_idle(5)
    stale = status()
    assert stale["state"].startswith("stale")
    assert stale["last_error"] == "the endpoint answered HTTP 500"


def test_an_introspection_providers_status_never_shows_its_secret(
    jwtgate_app_factory: AppFactory, idp: MockIdentityProvider, clock: Any
) -> None:
    app, _gate = jwtgate_app_factory(
        clock=clock, JWTGATE_AUDIT_ENABLED=False, JWTGATE_PROVIDERS=[idp.introspection_provider()]
    )
    client = app.test_client()
    admin = admin_token(app)

    def status() -> dict[str, Any]:
        response = client.get("/jwtgate/admin/providers", headers=admin)
        assert idp.client_secret not in response.get_data(as_text=True)
        (provider,) = response.get_json()["providers"]
        assert provider["kind"] == "introspection"
        introspection: dict[str, Any] = provider["introspection"]
        return introspection

    assert status()["calls"] == 0
    assert client.get("/api/items", headers={"Authorization": f"Bearer {idp.mint_opaque('alice')}"}).status_code == 200
    answered = status()
    assert answered["calls"] == 1 and answered["last_error"] is None and answered["cached_active"] == 1
    assert answered["client_id"] == idp.client_id and answered["url"] == idp.introspection_url

    idp.introspection_mode = "500"
    assert client.get("/api/items", headers={"Authorization": f"Bearer {idp.mint_opaque('bob')}"}).status_code == 503
    failed = status()
    assert failed["calls"] == 2 and failed["last_error"] == "answered HTTP 500"


# -- the lint --------------------------------------------------------------------------------------------------------


def lint_codes(client: Any, headers: dict[str, str], **options: Any) -> list[str]:
    response = client.get("/jwtgate/admin/lint", headers=headers, **options)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    return [finding["code"] for finding in response.get_json()["findings"]]


def test_the_lint_knows_the_apps_public_views(example_app_factory: Callable[..., Flask]) -> None:
    from example_app.idp import mint_token

    # serverInfo is an @gate.public view of the example app: restricting it is meaningful; /myself is not public.
    app = example_app_factory(JWTGATE_RESTRICTED_PUBLIC_PATHS=["GET /rest/api/2/serverInfo"])
    headers = {"Authorization": f"Bearer {mint_token(app, 'alice')}"}
    assert "restricted_matches_nothing_public" not in lint_codes(app.test_client(), headers)
    app = example_app_factory(JWTGATE_RESTRICTED_PUBLIC_PATHS=["/rest/api/2/myself"])
    assert "restricted_matches_nothing_public" in lint_codes(app.test_client(), headers)


def test_the_lint_sees_a_server_with_several_processes(
    jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False, JWTGATE_RATE_LIMIT="100/minute")
    client = app.test_client()
    admin = {"Authorization": f"Bearer {jwtgate_token_factory('alice', groups=['jwtgate-admins'])}"}
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    assert "memory_rate_limit_several_processes" not in lint_codes(client, admin)
    several = lint_codes(client, admin, environ_overrides={"wsgi.multiprocess": True})
    assert "memory_rate_limit_several_processes" in several
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert "memory_rate_limit_several_processes" in lint_codes(client, admin)


def test_check_config_lists_the_warnings_and_still_succeeds(example_app_factory: Callable[..., Flask]) -> None:
    app = example_app_factory(JWTGATE_AUDIT_RETENTION_DAYS=None, JWTGATE_AUDIT_MAX_ENTRIES=None)
    result = app.test_cli_runner().invoke(args=["jwtgate", "check-config", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [w["code"] for w in summary["warnings"]] == ["audit_retention_off"]
    assert summary["warnings"][0]["key"] == "JWTGATE_AUDIT_RETENTION_DAYS"
    text = app.test_cli_runner().invoke(args=["jwtgate", "check-config"])
    assert text.exit_code == 0 and "audit_retention_off" in text.output, text.output
    clean = example_app_factory().test_cli_runner().invoke(args=["jwtgate", "check-config", "--json"])
    assert json.loads(clean.output)["warnings"] == []


# -- errors name their parameter -------------------------------------------------------------------------------------


def test_a_refused_setting_names_its_key_in_the_body(
    jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory
) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_AUDIT_ENABLED=False)
    client = app.test_client()
    admin = {"Authorization": f"Bearer {jwtgate_token_factory('alice', groups=['jwtgate-admins'])}"}
    version = client.get("/jwtgate/admin/settings", headers=admin).get_json()["version"]
    refused = client.put("/jwtgate/admin/settings", json={"JWTGATE_LEEWAY": "soon", "version": version}, headers=admin)
    assert refused.status_code == 400
    assert refused.get_json()["parameter"] == "JWTGATE_LEEWAY"
    nested = client.put(
        "/jwtgate/admin/settings",
        json={"JWTGATE_PROVIDERS": [{"name": "x", "public_key": "nope"}], "version": version},
        headers=admin,
    )
    assert nested.status_code == 400
    assert nested.get_json()["parameter"] == "JWTGATE_PROVIDERS[0].public_key"
