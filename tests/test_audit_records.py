"""What the audit log records: one row per request the gate handles, allowed or denied, with the identity, the
client, the request and the outcome; never the token; the caller's text stored as data. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import pytest
from audit_helpers import ADMIN_GROUP, audit_rows, bearer
from flask import Flask

from flask_jwtgate import JWTGate
from flask_jwtgate.audit.model import ALLOWED_REASONS

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]


def test_an_allowed_request_is_recorded_with_who_what_and_how(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, clock: Any
) -> None:
    app, _ = audit_app_factory(clock=clock)
    token = jwtgate_token_factory("bob", groups=["developers"], now=clock(), claims={"jti": "bob-token-1"})

    response = app.test_client().get("/api/items", headers={**bearer(token), "User-Agent": "curl/8.5"})

    assert response.status_code == 200
    [row] = audit_rows(app)
    assert row["time"] == dt.datetime.fromtimestamp(clock(), dt.timezone.utc)
    assert row["request_id"]
    assert (row["username"], row["auth_method"], row["token_id"], row["provider"]) == (
        "bob", "jwt", "jti:bob-token-1", "test"
    )
    assert (row["client_address"], row["peer_address"], row["forwarded_for"]) == ("127.0.0.1", "127.0.0.1", None)
    assert (row["method"], row["path"], row["endpoint"], row["status"]) == ("GET", "/api/items", "items", 200)
    assert (row["decision"], row["reason"], row["detail"]) == ("allow", "authenticated", None)
    assert row["latency_ms"] is not None and 0 <= row["latency_ms"] < 5000
    assert row["user_agent"] == "curl/8.5"


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("no token", 401, "missing_credentials"),
        ("expired", 401, "expired"),
        ("forged", 401, "bad_signature"),
        ("read-only write", 403, "read_only"),
        ("not in an allowed group", 403, "group_not_allowed"),
    ],
)
def test_every_denial_is_recorded_with_its_reason(
    audit_app_factory: AppFactory,
    jwtgate_token_factory: TokenFactory,
    clock: Any,
    case: str,
    status: int,
    reason: str,
) -> None:
    app, _ = audit_app_factory(
        clock=clock, JWTGATE_READ_ONLY_GROUPS=["viewers"], JWTGATE_ALLOWED_GROUPS=["viewers", "developers"]
    )
    now = clock()
    method, headers, username = "GET", {}, None
    if case == "expired":
        # Signed by the provider's key: whose token it was is recorded. A forged one says nothing that is believed.
        username = "bob"
        headers = bearer(jwtgate_token_factory(username, groups=["developers"], now=now - 3600, expires_in=60))
    elif case == "forged":
        headers = bearer(jwtgate_token_factory("bob", groups=["developers"], now=now)[:-4] + "AAAA")
    elif case == "read-only write":
        method, headers, username = "POST", bearer(jwtgate_token_factory("carol", groups=["viewers"], now=now)), "carol"
    elif case == "not in an allowed group":
        headers, username = bearer(jwtgate_token_factory("mallory", groups=["guests"], now=now)), "mallory"

    response = app.test_client().open("/api/items", method=method, headers=headers)

    assert response.status_code == status
    [row] = audit_rows(app)
    assert (row["status"], row["decision"], row["reason"]) == (status, "deny", reason)
    assert row["username"] == username
    assert row["auth_method"] == ("anonymous" if username is None else "jwt")
    assert (row["token_id"] is None) == (username is None)
    assert row["detail"] == response.get_json()["error_description"]
    assert row["client_address"] == "127.0.0.1"


@pytest.mark.parametrize("case", ["revoked", "expired"])
def test_an_api_token_refused_as_revoked_or_expired_is_recorded_as_whose_it_was(
    audit_app_factory: AppFactory, clock: Any, case: str
) -> None:
    app, _ = audit_app_factory(clock=clock)
    store = app.extensions["jwtgate"].api_tokens
    token, secret = store.create("bob", name="ci", expires_in_days=1)
    if case == "revoked":
        store.revoke(token.id)
    else:
        clock.advance(86400)

    response = app.test_client().get("/api/items", headers=bearer(secret))

    assert (response.status_code, response.get_json()["reason"]) == (401, case)
    [row] = audit_rows(app)
    assert (row["decision"], row["reason"], row["username"], row["auth_method"], row["token_id"]) == (
        "deny", case, "bob", "api_token", f"api:{token.id}"
    )
    assert secret not in str(row)


def test_a_jwt_signed_by_the_provider_but_refused_for_its_claims_is_recorded_as_whose_it_was(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, clock: Any
) -> None:
    app, _ = audit_app_factory(clock=clock)
    token = jwtgate_token_factory("bob", now=clock(), claims={"jti": "bob-token-2", "aud": "another-api"})

    response = app.test_client().get("/api/items", headers=bearer(token))

    assert response.status_code == 401
    [row] = audit_rows(app)
    assert (row["reason"], row["username"], row["auth_method"], row["token_id"], row["provider"]) == (
        response.get_json()["reason"], "bob", "jwt", "jti:bob-token-2", "test"
    )


def test_an_address_outside_the_allowlist_is_recorded(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory(JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"])

    response = app.test_client().get("/api/items", environ_base={"REMOTE_ADDR": "192.0.2.7"})

    assert response.status_code == 403
    [row] = audit_rows(app)
    assert (row["reason"], row["client_address"], row["decision"]) == ("ip_not_allowed", "192.0.2.7", "deny")


def test_public_and_preflight_requests_are_recorded_as_anonymous(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory()
    client = app.test_client()

    assert client.get("/api/status").status_code == 200
    preflight = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"}
    assert client.options("/api/items", headers=preflight).status_code == 200

    rows = audit_rows(app)
    assert [(r["path"], r["method"], r["auth_method"], r["username"], r["reason"], r["decision"]) for r in rows] == [
        ("/api/status", "GET", "anonymous", None, "public", "allow"),
        ("/api/items", "OPTIONS", "anonymous", None, "cors_preflight", "allow"),
    ]
    # The admin API's reason filter relies on it: no other reason is ever recorded with "allow".
    assert set(ALLOWED_REASONS) == {"authenticated"} | {r["reason"] for r in rows}


@pytest.mark.parametrize(
    "config",
    [
        {"JWTGATE_BYPASS_PATHS": ["/api/**"]},
        {"JWTGATE_PROTECTED_PATHS": ["/rest/**"]},
        {"JWTGATE_ENABLED": False},
        {"JWTGATE_AUDIT_ENABLED": False},
    ],
    ids=["bypass path", "unprotected path", "gate off", "audit off"],
)
def test_requests_the_gate_does_not_handle_get_no_record(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, config: dict[str, Any]
) -> None:
    app, _ = audit_app_factory(**config)
    client = app.test_client()

    assert client.get("/api/items").status_code in (200, 401)
    assert client.get("/api/items", headers=bearer(jwtgate_token_factory("bob"))).status_code == 200

    if config.get("JWTGATE_AUDIT_ENABLED") is False:
        assert client.get("/api/items").status_code == 401  # the gate still works; only the record is off
    assert audit_rows(app) == []


def test_the_client_address_and_the_forwarding_chain_are_recorded(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory
) -> None:
    app, _ = audit_app_factory(JWTGATE_PROXY_HEADER="X-Forwarded-For", JWTGATE_TRUSTED_PROXIES=["127.0.0.1/32"])
    chain = "198.51.100.1, 203.0.113.9"

    response = app.test_client().get(
        "/api/items", headers={**bearer(jwtgate_token_factory("bob")), "X-Forwarded-For": chain}
    )

    assert response.status_code == 200
    [row] = audit_rows(app)
    assert (row["client_address"], row["peer_address"], row["forwarded_for"]) == ("203.0.113.9", "127.0.0.1", chain)


def test_the_token_is_never_recorded(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, _ = audit_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    good = jwtgate_token_factory("bob")
    refused = jwtgate_token_factory("carol", groups=["viewers"])
    broken = good[:-6] + "AAAAAA"
    client = app.test_client()

    assert client.get("/api/items", headers=bearer(good)).status_code == 200
    assert client.delete("/api/items", headers=bearer(refused)).status_code == 403
    assert client.get("/api/items", headers=bearer(broken)).status_code == 401

    rows = audit_rows(app)
    assert len(rows) == 3
    stored = " ".join(str(value) for row in rows for value in row.values())
    logged = caplog.text
    for token in (good, refused, broken):
        signature = token.rsplit(".", 1)[1]
        assert token not in stored and signature not in stored
        assert signature not in logged


def test_caller_text_is_stored_as_data_and_never_forges_a_log_line(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, _ = audit_app_factory()
    forged_line = "\n2030-01-01 INFO jwtgate: user=admin allowed"
    token = jwtgate_token_factory("bob", headers={"kid": "key-1" + forged_line})
    client = app.test_client()

    # Servers refuse raw newlines in headers, but a WSGI environ can hold anything: build it directly.
    client.get("/api/items", headers=bearer(token), environ_overrides={"HTTP_USER_AGENT": "agent" + forged_line})
    client.get("/api/items%0A2030-01-01%20INFO%20forged", environ_overrides={"HTTP_USER_AGENT": "nul\x00byte"})

    first, second = audit_rows(app)
    assert first["user_agent"] == "agent" + forged_line
    assert second["path"] == "/api/items\n2030-01-01 INFO forged"
    assert second["user_agent"] == "nul\ufffdbyte"
    for record in caplog.records:
        assert "user=admin allowed" not in record.getMessage()
        assert "INFO forged" not in record.getMessage()


def test_long_and_odd_caller_values_are_cut_and_cleaned_not_refused(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory
) -> None:
    app, _ = audit_app_factory()
    odd_user = "\ud800" + "ü" * 400  # a lone surrogate in a claim: PostgreSQL would refuse it as such
    token = jwtgate_token_factory(odd_user)

    response = app.test_client().get(
        "/api/items/" + "x" * 5000, headers={**bearer(token), "User-Agent": "ä" * 2000}
    )

    assert response.status_code == 404
    [row] = audit_rows(app)
    assert row["path"] == ("/api/items/" + "x" * 5000)[:2048]
    assert row["user_agent"] == "ä" * 512
    assert row["username"] == ("?" + "ü" * 400)[:255]


@pytest.mark.parametrize("propagate", [False, True])
def test_a_request_that_fails_in_the_view_is_recorded_as_a_500(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, propagate: bool
) -> None:
    app, _ = audit_app_factory(PROPAGATE_EXCEPTIONS=propagate)

    @app.get("/api/boom")
    def boom() -> Any:
        raise RuntimeError("the host's bug")

    client = app.test_client()
    if propagate:
        with pytest.raises(RuntimeError):
            client.get("/api/boom", headers=bearer(jwtgate_token_factory("bob")))
    else:
        assert client.get("/api/boom", headers=bearer(jwtgate_token_factory("bob"))).status_code == 500

    [row] = audit_rows(app)
    assert (row["status"], row["decision"], row["username"], row["endpoint"]) == (500, "allow", "bob", "boom")


def test_the_admin_api_records_its_own_refusals(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory
) -> None:
    app, _ = audit_app_factory()
    client = app.test_client()

    assert client.get("/jwtgate/admin/audit", headers=bearer(jwtgate_token_factory("bob"))).status_code == 403
    admin = bearer(jwtgate_token_factory("alice", groups=[ADMIN_GROUP]))
    assert client.get("/jwtgate/admin/audit", headers=admin).status_code == 200

    refused, allowed = audit_rows(app)
    assert (refused["username"], refused["status"], refused["decision"], refused["reason"]) == (
        "bob", 403, "deny", "not_admin"
    )
    assert (allowed["username"], allowed["status"], allowed["endpoint"]) == ("alice", 200, "jwtgate.audit_list")
