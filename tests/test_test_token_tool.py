"""The "Test Token" tool (``POST /jwtgate/admin/test-token`` and ``flask jwtgate test-token``), the token CLI, and
``GET /jwtgate/whoami``.

The tool explains every check the gate makes, in order, for a given token and request; it is for admins only, never
echoes the token, and survives everything the gate itself refuses.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from conftest import Clock
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

from flask_jwtgate import JWTGate
from flask_jwtgate.testing import KeyPair

TOOL = "/jwtgate/admin/test-token"
ISSUER = "https://idp.example.com"
AUDIENCE = "jira"
ADMIN_GROUPS = ["jwtgate-admins"]
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # every control character but the newline
Keys = dict[str, KeyPair]


@pytest.fixture
def directory() -> dict[str, list[str]]:
    """The host's user directory behind the groups_loader."""
    return {"alice": ["staff"], "viola": [], "root": []}


@pytest.fixture
def make_app(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]],
    jwtgate_keys: Keys,
    directory: dict[str, list[str]],
    clock: Clock,
    tmp_path: Path,
) -> Iterator[Callable[..., Flask]]:
    """``make(**config) -> app``: provider "test" with an issuer and audience, read-only group "viewers", an IP
    allowlist of loopback and 10/8, and a groups_loader over ``directory``."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        provider = {"name": "test", "public_key": jwtgate_keys["rsa"].public_pem, "issuer": ISSUER}
        provider["audience"] = AUDIENCE
        config.setdefault("JWTGATE_PROVIDERS", [provider])
        config.setdefault("JWTGATE_READ_ONLY_GROUPS", ["viewers"])
        config.setdefault("JWTGATE_IP_ALLOWLIST", ["127.0.0.0/8", "10.0.0.0/8"])
        config.setdefault("JWTGATE_AUDIT_SPOOL_DIR", str(tmp_path / "spool"))
        app, gate = jwtgate_app_factory(clock=clock, **config)
        gate.groups_loader(lambda username: directory.get(username, []))
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["jwtgate"].audit.close(timeout=5)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def token(jwtgate_token_factory: Callable[..., str], clock: Clock) -> Callable[..., str]:
    """``token(username="alice", groups=None, **options)``: a JWT for provider "test" issued at the clock's now."""

    def make(username: str = "alice", groups: list[str] | None = None, **options: Any) -> str:
        options.setdefault("issuer", ISSUER)
        options.setdefault("audience", AUDIENCE)
        return jwtgate_token_factory(username, groups=groups, now=clock.now, **options)

    return make


@pytest.fixture
def admin(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": "Bearer " + token("root", ADMIN_GROUPS)}


def run_tool(client: FlaskClient, admin: dict[str, str], **body: Any) -> tuple[int, dict[str, Any], str]:
    response = client.post(TOOL, json=body, headers=admin)
    assert response.status_code != 500
    return response.status_code, response.get_json(), response.get_data(as_text=True)


def steps(report: dict[str, Any]) -> list[str]:
    return [check["step"] for check in report["checks"]]


def check(report: dict[str, Any], step: str) -> dict[str, str]:
    (found,) = [c for c in report["checks"] if c["step"] == step]
    return found


def in_order(sequence: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` appears in ``sequence`` in this order (not necessarily adjacent)."""
    remaining = iter(sequence)
    return all(step in remaining for step in wanted)


POLICY_STEPS = ["gate enabled", "bypass paths", "protected paths", "ip allowlist", "public paths"]


# -- who may use the tool ---------------------------------------------------------------------------------------------


def test_the_tool_is_for_admins_only(client: FlaskClient, token: Callable[..., str]) -> None:
    tested = token("alice")

    anonymous = client.post(TOOL, json={"token": tested})
    non_admin = client.post(TOOL, json={"token": tested}, headers={"Authorization": "Bearer " + token("alice")})

    assert anonymous.status_code == 401 and anonymous.get_json()["reason"] == "missing_credentials"
    assert non_admin.status_code == 403 and non_admin.get_json()["reason"] == "not_admin"
    for response in (anonymous, non_admin):
        assert "checks" not in response.get_json()
        assert tested not in response.get_data(as_text=True)


def test_an_admin_by_groups_loader_may_use_the_tool(
    client: FlaskClient, token: Callable[..., str], directory: dict[str, list[str]]
) -> None:
    directory["alice"] = ADMIN_GROUPS

    response = client.post(TOOL, json={"token": token("viola")}, headers={"Authorization": "Bearer " + token("alice")})

    assert response.status_code == 200
    assert response.get_json()["valid"] is True


# -- the report -------------------------------------------------------------------------------------------------------


def test_a_valid_jwt_is_explained_check_by_check_in_order(
    client: FlaskClient, admin: dict[str, str], token: Callable[..., str]
) -> None:
    tested = token("alice", ["devs"])

    status, report, text = run_tool(client, admin, token=tested, method="GET", path="/api/items")

    assert status == 200
    assert {"valid", "allowed", "decision", "checks"} <= set(report)
    assert report["valid"] is True and report["allowed"] is True
    assert report["decision"] == {"status": 200, "reason": "allowed"}
    assert report["identity"]["username"] == "alice" and report["identity"]["auth_method"] == "jwt"
    assert report["identity"]["groups"] == ["devs", "staff"]
    assert report["token"]["kind"] == "jwt" and report["token"]["length"] == len(tested)
    order = steps(report)
    assert order[0] == "token kind" and order[-1] == "decision"
    assert in_order(
        order,
        ["token kind", "provider", "signature", "exp", "iss", "aud", "username", "groups", *POLICY_STEPS,
         "allowed groups", "read-only groups", "decision"],
    ), order
    assert check(report, "token kind")["detail"] == "jwt"
    assert "test" in check(report, "provider")["detail"]
    assert check(report, "signature")["outcome"] == "pass"
    exp = check(report, "exp")
    assert exp["outcome"] == "pass" and "in 300 s" in exp["detail"] and "leeway 60 s" in exp["detail"]
    assert check(report, "iss")["outcome"] == "pass" and ISSUER in check(report, "iss")["detail"]
    assert check(report, "username")["detail"] == "'alice'"
    assert check(report, "groups")["detail"] == "devs (token), staff (groups_loader)"
    assert all(c["outcome"] != "fail" for c in report["checks"])
    assert tested not in text


@pytest.mark.parametrize(
    ("options", "step", "reason"),
    [
        ({"expires_in": -3600}, "exp", "expired"),
        ({"issuer": "https://evil.example.com"}, "iss", "wrong_issuer"),
        ({"audience": "confluence"}, "aud", "wrong_audience"),
    ],
    ids=["expired", "wrong-issuer", "wrong-audience"],
)
def test_a_failing_claim_is_named_and_the_later_checks_are_not_run(
    client: FlaskClient,
    admin: dict[str, str],
    token: Callable[..., str],
    options: dict[str, Any],
    step: str,
    reason: str,
) -> None:
    tested = token("alice", **options)

    status, report, text = run_tool(client, admin, token=tested)

    assert status == 200
    assert report["valid"] is False and report["allowed"] is False and report["identity"] is None
    assert report["decision"] == {"status": 401, "error": "invalid_token", "reason": reason}
    failed = check(report, step)
    assert failed["outcome"] == "fail" and reason in failed["detail"]
    order = steps(report)
    assert check(report, "username")["outcome"] == "not checked"
    assert in_order(order, ["token kind", "signature", step, "username", *POLICY_STEPS, "decision"]), order
    assert check(report, "decision")["outcome"] == "fail"
    assert tested not in text


def test_an_expired_token_shows_how_long_ago_and_the_leeway(
    client: FlaskClient, admin: dict[str, str], token: Callable[..., str]
) -> None:
    status, report, _text = run_tool(client, admin, token=token("alice", expires_in=-3600))

    assert status == 200
    assert "leeway 60 s" in check(report, "exp")["detail"]


def forge(tested: str) -> str:
    """The token with its signature's first byte changed."""
    head, payload, signature = tested.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0xFF
    return f"{head}.{payload}." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any]) -> str:
    return pyjwt.encode(claims, None, algorithm="none")


@pytest.mark.parametrize(
    ("kind", "step", "reason"),
    [
        ("bad-signature", "signature", "bad_signature"),
        ("other-key", "signature", "bad_signature"),
        ("alg-none", "signature", "alg_none"),
        ("alg-none-empty-signature", "token", "malformed_token"),
    ],
    ids=["bad-signature", "other-key", "alg-none", "alg-none-empty-signature"],
)
def test_a_token_that_fails_its_signature_says_so_and_checks_no_claim(
    client: FlaskClient,
    admin: dict[str, str],
    token: Callable[..., str],
    clock: Clock,
    kind: str,
    step: str,
    reason: str,
) -> None:
    claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": int(clock.now) + 300}
    if kind == "bad-signature":
        tested = forge(token("alice"))
    elif kind == "other-key":
        tested = pyjwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256")
    elif kind == "alg-none":
        tested = unsigned(claims) + "c2lnbmF0dXJl"
    else:
        tested = unsigned(claims)

    status, report, text = run_tool(client, admin, token=tested)

    assert status == 200
    assert report["valid"] is False and report["allowed"] is False
    assert report["decision"] == {"status": 401, "error": "invalid_token", "reason": reason}
    assert check(report, step)["outcome"] == "fail" and reason in check(report, step)["detail"]
    claims_passed = [c for c in report["checks"] if c["step"] in ("exp", "iss", "aud", "username")]
    assert all(c["outcome"] != "pass" for c in claims_passed), claims_passed
    assert tested not in text


def test_a_forged_token_with_an_unknown_issuer_is_never_reported_as_signature_verified(
    make_app: Callable[..., Flask], jwtgate_keys: Keys, admin: dict[str, str], clock: Clock
) -> None:
    second = {
        "name": "other", "public_key": jwtgate_keys["ec256"].public_pem, "issuer": "https://other.example",
        "directory_users": False,
    }
    first = {
        "name": "test", "public_key": jwtgate_keys["rsa"].public_pem, "issuer": ISSUER, "audience": AUDIENCE,
        "directory_users": True,
    }
    client = make_app(JWTGATE_PROVIDERS=[first, second]).test_client()
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"sub": "alice", "iss": "https://evil.example", "exp": int(clock.now) + 300}
    tested = pyjwt.encode(claims, forger, algorithm="RS256")

    status, report, _text = run_tool(client, admin, token=tested)

    assert status == 200
    assert report["valid"] is False and report["decision"]["reason"] == "unknown_issuer"
    signature = [c for c in report["checks"] if c["step"] == "signature"]
    assert all(c["outcome"] != "pass" for c in signature), signature  # its signature was never checked


def test_an_api_token_is_explained_with_groups_from_the_groups_loader(
    app: Flask, client: FlaskClient, admin: dict[str, str]
) -> None:
    _created, secret = app.extensions["jwtgate"].api_tokens.create("alice", name="ci", expires_in_days=7)

    status, report, text = run_tool(client, admin, token=secret, method="POST", path="/api/items")

    assert status == 200
    assert report["valid"] is True and report["allowed"] is True
    assert report["token"]["kind"] == "api_token"
    assert report["identity"]["auth_method"] == "api_token" and report["identity"]["username"] == "alice"
    assert check(report, "groups")["detail"] == "staff (groups_loader)"
    assert steps(report)[0] == "token kind" and steps(report)[-1] == "decision"
    assert secret not in text and secret[4:] not in text


def test_a_revoked_api_token_is_reported_revoked(app: Flask, client: FlaskClient, admin: dict[str, str]) -> None:
    store = app.extensions["jwtgate"].api_tokens
    created, secret = store.create("alice", name="ci", expires_in_days=7)
    store.revoke(created.id)

    status, report, text = run_tool(client, admin, token=secret)

    assert status == 200
    assert report["valid"] is False and report["decision"]["reason"] == "revoked"
    assert secret[4:] not in text


@pytest.mark.parametrize(
    "tested",
    [
        "this is not a token at all!!",
        "garbage.garbage.garbage-garbage",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9",
        "jgt_" + "A" * 43,
        "jgt_tooshort-tooshort",
        "abc\ndef\r\nghi-garbage",
        "\u00e9\u00e8\u00ea-unicode-garbage-\u2028",
        "x" * 20_000,
        "e30." + "x" * 20_000 + ".sig",
        "a.b.c.d.e-garbage-five-segments",
    ],
    ids=[
        "words",
        "three-garbage-segments",
        "two-segments",
        "unknown-api-token",
        "short-api-token",
        "newlines",
        "unicode",
        "20k-opaque",
        "20k-jwt-shaped",
        "jwe-shaped",
    ],
)
def test_garbage_is_explained_as_invalid_never_a_500_and_never_echoed(
    client: FlaskClient, admin: dict[str, str], tested: str
) -> None:
    status, report, text = run_tool(client, admin, token=tested)

    assert status == 200, text
    assert report["valid"] is False and report["allowed"] is False
    assert report["decision"]["status"] in (400, 401)
    assert steps(report)[0] == "token kind" and steps(report)[-1] == "decision"
    assert tested not in text


def test_a_100_kb_token_is_refused_or_explained_never_echoed(client: FlaskClient, admin: dict[str, str]) -> None:
    tested = "A" * 50_000 + "." + "B" * 50_000 + ".C"

    status, body, text = run_tool(client, admin, token=tested)

    assert status in (200, 400), text
    if status == 400:
        assert body["reason"] == "invalid_parameter" and body["error_description"].startswith("token")
    else:
        assert body["valid"] is False
    assert "A" * 1000 not in text and "B" * 1000 not in text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "token"),
        ({"token": None}, "token"),
        ({"token": 12345}, "token"),
        ({"token": ["a.b.c"]}, "token"),
        ({"token": {"value": "x"}}, "token"),
        ({"token": True}, "token"),
        ({"token": ""}, "token"),
        ({"token": "abc", "method": 5}, "method"),
        ({"token": "abc", "method": ""}, "method"),
        ({"token": "abc", "path": "api/items"}, "path"),
        ({"token": "abc", "path": ["/"]}, "path"),
        ({"token": "abc", "ip": 10}, "ip"),
    ],
    ids=[
        "no-token",
        "null-token",
        "int-token",
        "list-token",
        "object-token",
        "bool-token",
        "empty-token",
        "int-method",
        "empty-method",
        "relative-path",
        "list-path",
        "int-ip",
    ],
)
def test_a_malformed_request_is_400_naming_the_field(
    client: FlaskClient, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post(TOOL, json=body, headers=admin)

    assert response.status_code == 400
    error = response.get_json()
    assert error["reason"] == "invalid_parameter" and error["error"] == "invalid_request"
    assert error["error_description"].startswith(field)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("token=abc", "application/x-www-form-urlencoded"),
        ('{"token": ', "application/json"),
        ("[]", "application/json"),
    ],
    ids=["form", "truncated-json", "json-array"],
)
def test_a_body_that_is_not_a_json_object_is_400(
    client: FlaskClient, admin: dict[str, str], data: str, content_type: str
) -> None:
    response = client.post(TOOL, data=data, content_type=content_type, headers=admin)

    assert response.status_code == 400
    assert response.get_json()["reason"] == "invalid_parameter"
    assert "body" in response.get_json()["error_description"]


@pytest.mark.parametrize(
    "extra",
    [
        {"method": "PROPFIND"},
        {"method": "get"},
        {"method": "G\u00c9T"},
        {"method": "GET /x HTTP/1.1"},
        {"method": "X" * 32},
        {"path": "/\x00"},
        {"path": "/" + "a" * 2047},
        {"path": "//api/items/../items"},
        {"path": "/api/items?x=1#frag"},
        {"path": "/%2e%2e/%ff"},
        {"ip": "not-an-ip"},
        {"ip": "::1"},
        {"ip": "10.0.0.1, 192.0.2.1"},
        {"ip": "999.999.999.999"},
        {"ip": "10.0.0.1%eth0"},
        {"ip": "\x1b[31m"},
    ],
    ids=lambda extra: f"{next(iter(extra))}-{ascii(next(iter(extra.values())))[:24]}",
)
def test_odd_method_path_and_ip_are_never_a_500(
    client: FlaskClient, admin: dict[str, str], token: Callable[..., str], extra: dict[str, str]
) -> None:
    tested = token("alice")

    status, body, text = run_tool(client, admin, token=tested, **extra)

    assert status in (200, 400), text
    if status == 200:
        assert body["valid"] is True and steps(body)[-1] == "decision"
    else:
        assert body["reason"] == "invalid_parameter"
    assert tested not in text


# -- the request decides the verdict ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "groups", "request_fields", "decision", "failed_step"),
    [
        ("viola", ["viewers"], {"method": "GET", "path": "/api/items"}, {"status": 200, "reason": "allowed"}, None),
        (
            "viola",
            ["viewers"],
            {"method": "POST", "path": "/api/items"},
            {"status": 403, "error": "insufficient_scope", "reason": "read_only"},
            "read-only groups",
        ),
        (
            "viola",
            ["viewers"],
            {"method": "delete", "path": "/api/items"},
            {"status": 403, "error": "insufficient_scope", "reason": "read_only"},
            "read-only groups",
        ),
        ("alice", ["devs"], {"method": "POST", "path": "/api/items"}, {"status": 200, "reason": "allowed"}, None),
        (
            "alice",
            ["devs"],
            {"path": "/api/items", "ip": "192.0.2.1"},
            {"status": 403, "error": "access_denied", "reason": "ip_not_allowed"},
            "ip allowlist",
        ),
        ("alice", ["devs"], {"path": "/api/items", "ip": "10.1.2.3"}, {"status": 200, "reason": "allowed"}, None),
        ("alice", ["devs"], {"path": "/api/status"}, {"status": 200, "reason": "allowed"}, None),
    ],
    ids=[
        "read-only-get",
        "read-only-post",
        "read-only-lowercase-delete",
        "writer-post",
        "ip-outside-allowlist",
        "ip-inside-allowlist",
        "public-view",
    ],
)
def test_method_path_and_ip_change_the_verdict(
    client: FlaskClient,
    admin: dict[str, str],
    token: Callable[..., str],
    username: str,
    groups: list[str],
    request_fields: dict[str, str],
    decision: dict[str, Any],
    failed_step: str | None,
) -> None:
    status, report, _text = run_tool(client, admin, token=token(username, groups), **request_fields)

    assert status == 200
    assert report["valid"] is True
    assert report["decision"] == decision
    assert report["allowed"] is (decision["status"] == 200)
    assert report["request"]["method"] == request_fields.get("method", "GET").upper()
    assert check(report, "decision")["outcome"] == ("pass" if failed_step is None else "fail")
    if failed_step is not None:
        assert check(report, failed_step)["outcome"] == "fail"


def test_public_paths_and_allowed_groups_are_reported(
    make_app: Callable[..., Flask], admin: dict[str, str], token: Callable[..., str]
) -> None:
    client = make_app(JWTGATE_ALLOWED_GROUPS=["devs", "jwtgate-admins"]).test_client()

    _status, outsider, _text = run_tool(client, admin, token=token("alice", ["sales"]), path="/api/items")
    _status, public, _text = run_tool(client, admin, token=token("alice", ["sales"]), path="/api/status")

    assert outsider["decision"] == {"status": 403, "error": "access_denied", "reason": "group_not_allowed"}
    assert check(outsider, "allowed groups")["outcome"] == "fail"
    assert check(public, "public paths")["detail"] == "public"
    assert public["decision"] == {"status": 200, "reason": "allowed"}


def test_the_report_shows_the_rate_limit_bucket_once_rate_limiting_is_on(
    make_app: Callable[..., Flask], admin: dict[str, str], token: Callable[..., str]
) -> None:
    client = make_app(JWTGATE_RATE_LIMIT="100/minute").test_client()

    status, report, _text = run_tool(client, admin, token=token("alice"), path="/api/items")

    assert status == 200
    rate = [c for c in report["checks"] if "rate" in c["step"].lower()]
    assert rate, steps(report)
    assert "100" in rate[0]["detail"]
    assert in_order(steps(report), ["read-only groups", rate[0]["step"]])


def test_the_report_shows_the_addresss_failure_bucket_as_the_gate_counts_it(
    make_app: Callable[..., Flask], admin: dict[str, str], token: Callable[..., str]
) -> None:
    client = make_app(JWTGATE_RATE_LIMIT="100/minute", JWTGATE_IP_ALLOWLIST=[]).test_client()
    # One refused token from another address of the same /64 (IPv6 clients are counted per network).
    refused = client.get(
        "/api/items", headers={"Authorization": "Bearer x.y.z"}, environ_base={"REMOTE_ADDR": "2001:db8:5:6::1"}
    )

    _status, report, _text = run_tool(client, admin, token=token("alice"), path="/api/items", ip="2001:db8:5:6::9")
    _status, v4_report, _text = run_tool(client, admin, token=token("alice"), path="/api/items", ip="192.0.2.1")

    assert refused.status_code == 401
    assert "bucket failed:2001:db8:5:6::/64: 1/20 failed authentications (20 per 1 minute)" in check(
        report, "rate limit"
    )["detail"]
    assert "bucket failed:192.0.2.1: 0/20 failed authentications" in check(v4_report, "rate limit")["detail"]


def test_the_report_does_not_read_a_store_the_circuit_breaker_keeps_closed_off(
    make_app: Callable[..., Flask], admin: dict[str, str], token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(JWTGATE_RATE_LIMIT="100/minute")
    store = app.extensions["jwtgate"].limit_store
    reads: list[str] = []
    monkeypatch.setattr(store.storage, "get", lambda key: reads.append(key) or 0)
    store.retry_at = store.clock() + 5  # a failure a moment ago opened the breaker

    _status, report, _text = run_tool(app.test_client(), admin, token=token("alice"), path="/api/items")

    assert check(report, "rate limit") == {
        "step": "rate limit",
        "outcome": "fail",
        "detail": "the rate-limit store failed a moment ago and is not asked again yet",
    }
    assert reads == []


def test_a_store_that_fails_the_reports_read_is_shut_off_for_the_requests_too(
    make_app: Callable[..., Flask], admin: dict[str, str], token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(JWTGATE_RATE_LIMIT="100/minute")
    store = app.extensions["jwtgate"].limit_store

    def hanging(key: str) -> int:
        raise TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(store.storage, "get", hanging)

    _status, report, _text = run_tool(app.test_client(), admin, token=token("alice"), path="/api/items")

    assert check(report, "rate limit")["outcome"] == "fail"
    assert "cannot be read" in check(report, "rate limit")["detail"]
    assert store.retry_at > store.clock()  # one breaker for reads and counts: the next count does not wait either


# -- the CLI ----------------------------------------------------------------------------------------------------------


def test_cli_test_token_prints_one_line_per_check_and_no_control_characters(
    app: Flask, token: Callable[..., str]
) -> None:
    hostile = token("alice", headers={"kid": "\x1b[31mred\nforged line\r\x07\u009b2J"})
    runner = app.test_cli_runner()

    text = runner.invoke(args=["jwtgate", "test-token", hostile, "--method", "POST", "--path", "/api/items"])
    as_json = runner.invoke(
        args=["jwtgate", "test-token", hostile, "--method", "POST", "--path", "/api/items", "--json"]
    )

    assert text.exit_code == 0, text.output
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert report["valid"] is True and report["decision"] == {"status": 200, "reason": "allowed"}
    assert report["request"] == {"method": "POST", "path": "/api/items", "ip": None}
    assert not CONTROL.search(text.output), ascii(text.output)
    lines = text.output.splitlines()
    check_lines = [line for line in lines if line.startswith("  ")]
    assert len(check_lines) == len(report["checks"])
    for line, reported in zip(check_lines, report["checks"], strict=True):
        assert line.strip().startswith(reported["step"])
    assert "forged line" not in [line.strip() for line in lines]
    assert hostile not in text.output and hostile not in as_json.output


def test_cli_test_token_shows_the_read_only_verdict(app: Flask, token: Callable[..., str]) -> None:
    tested = token("viola", ["viewers"])

    result = app.test_cli_runner().invoke(
        args=["jwtgate", "test-token", tested, "--method", "POST", "--path", "/api/items", "--json"]
    )

    assert result.exit_code == 1, result.output  # a valid token, a refused request
    report = json.loads(result.output)
    assert report["decision"] == {"status": 403, "error": "insufficient_scope", "reason": "read_only"}
    assert tested not in result.output


@pytest.mark.parametrize(
    "tested", ["garbage-token-garbage", "x" * 100_000, "a.b.c", "jgt_" + "B" * 43], ids=["word", "100k", "dots", "api"]
)
def test_cli_test_token_survives_garbage(app: Flask, tested: str) -> None:
    result = app.test_cli_runner().invoke(args=["jwtgate", "test-token", tested, "--path", "relative"])

    assert result.exit_code == 2, result.output  # an invalid token
    assert isinstance(result.exception, SystemExit)  # the exit status, not a traceback
    assert "token valid: no; request allowed: no" in result.output
    assert tested not in result.output


def test_cli_tokens_create_list_and_revoke(app: Flask, client: FlaskClient) -> None:
    runner = app.test_cli_runner()

    created = runner.invoke(args=["jwtgate", "tokens", "create", "alice", "--name", "x"])
    assert created.exit_code == 0, created.output
    shown = json.loads(created.output)
    secret = shown["token"]
    assert secret.startswith("jgt_") and shown["username"] == "alice" and shown["name"] == "x"
    assert shown["created_by"] == "cli"
    runner.invoke(args=["jwtgate", "tokens", "create", "bob", "--name", "y", "--expires-in-days", "1"])

    listed = runner.invoke(args=["jwtgate", "tokens", "list"])
    only_alice = runner.invoke(args=["jwtgate", "tokens", "list", "--username", "alice"])
    assert listed.exit_code == 0 and only_alice.exit_code == 0
    assert sorted(t["username"] for t in json.loads(listed.output)) == ["alice", "bob"]
    assert [t["id"] for t in json.loads(only_alice.output)] == [shown["id"]]
    assert secret not in listed.output and secret[4:] not in listed.output
    assert all("token" not in t for t in json.loads(listed.output))
    me = client.get("/api/items", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.get_json()["user"] == "alice"

    revoked = runner.invoke(args=["jwtgate", "tokens", "revoke", shown["id"]])
    again = runner.invoke(args=["jwtgate", "tokens", "revoke", shown["id"]])
    unknown = runner.invoke(args=["jwtgate", "tokens", "revoke", "no-such-id"])

    assert revoked.exit_code == 0 and revoked.output.strip() == f"revoked {shown['id']}"
    assert again.exit_code == 1 and "no live token" in again.output
    assert unknown.exit_code == 1 and "no live token" in unknown.output
    refused = client.get("/api/items", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401 and refused.get_json()["reason"] == "revoked"
    (alice_token,) = json.loads(runner.invoke(args=["jwtgate", "tokens", "list", "--username", "alice"]).output)
    assert alice_token["revoked_at"] is not None


@pytest.mark.parametrize(
    "args",
    [
        ["alice"],
        ["alice", "--name", "x", "--expires-in-days", "0"],
        ["alice", "--name", "x", "--expires-in-days", "3651"],
    ],
    ids=["no-name", "zero-days", "too-many-days"],
)
def test_cli_tokens_create_refuses_bad_options(app: Flask, args: list[str]) -> None:
    result = app.test_cli_runner().invoke(args=["jwtgate", "tokens", "create", *args])

    assert result.exit_code == 2, result.output
    assert json.loads(app.test_cli_runner().invoke(args=["jwtgate", "tokens", "list"]).output) == []


# -- whoami -----------------------------------------------------------------------------------------------------------


def test_whoami_returns_the_callers_identity(client: FlaskClient, token: Callable[..., str]) -> None:
    tested = token("alice", ["devs"])

    response = client.get("/jwtgate/whoami", headers={"Authorization": f"Bearer {tested}"})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["username"] == "alice" and body["groups"] == ["devs", "staff"]
    assert body["auth_method"] == "jwt" and body["provider"] == "test"
    assert body["token_id"].startswith("jti:")
    assert tested not in response.get_data(as_text=True)


def test_whoami_without_credentials_is_401(client: FlaskClient) -> None:
    response = client.get("/jwtgate/whoami")

    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="')
    assert "error=" not in response.headers["WWW-Authenticate"]


def test_whoami_with_an_invalid_token_is_401_invalid_token(client: FlaskClient, token: Callable[..., str]) -> None:
    response = client.get("/jwtgate/whoami", headers={"Authorization": "Bearer " + forge(token("alice"))})

    assert response.status_code == 401
    assert response.get_json()["reason"] == "bad_signature"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
