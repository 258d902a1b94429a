"""The host's own credentials (personal access tokens, Basic) and the global toggles for each kind of credential.

The host's validators are plain functions that record their calls, so each test can also assert whether the gate
asked them at all: a disabled kind is refused without consulting the host, and a host PAT never reaches an identity
provider's introspection endpoint.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock
from flask import Flask, jsonify

from flask_jwtgate import JWTGate, current_identity
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing_idp import MockIdentityProvider

Factory = Callable[..., tuple[Flask, JWTGate]]

ALICE_PAT = "hpat_" + secrets.token_urlsafe(24)
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test password


class Host:
    """The host app's side: its user directory, its PATs and passwords, and a log of every validator call."""

    def __init__(self) -> None:
        self.groups: dict[str, list[str]] = {"alice": ["devs"], "viola": ["viewers"]}
        self.pats: dict[str, str] = {ALICE_PAT: "alice"}
        self.passwords: dict[str, str] = {"alice": PASSWORD, "viola": PASSWORD}
        self.pat_calls: list[str] = []
        self.basic_calls: list[str] = []
        self.fail = False

    def pat_validator(self, token: str) -> str | None:
        self.pat_calls.append(token)
        if self.fail:
            raise ConnectionError("the host's PAT table is down")
        return self.pats.get(token)

    def basic_auth_validator(self, username: str, password: str) -> bool:
        self.basic_calls.append(username)
        if self.fail:
            raise ConnectionError("the host's password store is down")
        return self.passwords.get(username) == password


@pytest.fixture
def host() -> Host:
    return Host()


@pytest.fixture
def make_app(
    jwtgate_app_factory: Factory, host: Host, clock: Clock, tmp_path: Path
) -> Iterator[Callable[..., Flask]]:
    """``make(pat=True, basic=True, **config) -> app``: the plugin's test API with the host's validators registered
    (``pat``/``basic`` False leaves one out) and ``GET /api/me`` showing ``current_identity``."""
    made: list[Flask] = []

    def make(*, pat: bool = True, basic: bool = True, **config: Any) -> Flask:
        config.setdefault("JWTGATE_AUDIT_SPOOL_DIR", str(tmp_path / "spool"))
        app, gate = jwtgate_app_factory(clock=clock, **config)
        gate.groups_loader(lambda username: host.groups.get(username, []))
        if pat:
            gate.pat_validator(host.pat_validator)
        if basic:
            gate.basic_auth_validator(host.basic_auth_validator)

        @app.get("/api/me")
        def me() -> Any:
            return jsonify(
                username=current_identity.username,
                groups=sorted(current_identity.groups),
                auth_method=current_identity.auth_method,
                token_id=current_identity.token_id,
                provider=current_identity.provider,
            )

        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["jwtgate"].audit.close(timeout=5)


@pytest.fixture
def jwt(jwtgate_token_factory: Callable[..., str], clock: Clock) -> Callable[..., str]:
    """``jwt(username, groups=None)``: a JWT from provider "test", issued at the test clock's now."""
    return lambda username="alice", groups=None: jwtgate_token_factory(username, groups=groups, now=clock.now)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def api_token(app: Flask, username: str = "alice") -> str:
    """A gate-issued API token for ``username``, made through the app's token store."""
    _token, secret = app.extensions["jwtgate"].api_tokens.create(username, name="t", expires_in_days=1)
    return str(secret)


def assert_refused(response: Any, status: int, reason: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == status and body["reason"] == reason
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="')
    if status == 503:
        assert body["error"] == "temporarily_unavailable"


# -- personal access tokens -------------------------------------------------------------------------------------------


def test_a_host_pat_authenticates_as_its_user(make_app: Callable[..., Flask], host: Host) -> None:
    client = make_app().test_client()

    response = client.get("/api/me", headers=bearer(ALICE_PAT))

    assert response.status_code == 200
    me = response.get_json()
    assert (me["username"], me["groups"], me["auth_method"], me["provider"]) == ("alice", ["devs"], "pat", None)
    assert me["token_id"].startswith("pat:") and ALICE_PAT not in me["token_id"]
    assert ALICE_PAT[5:] not in me["token_id"]
    assert host.pat_calls == [ALICE_PAT]
    whoami = client.get("/jwtgate/whoami", headers=bearer(ALICE_PAT))
    assert whoami.status_code == 200 and whoami.get_json()["auth_method"] == "pat"
    assert ALICE_PAT not in whoami.get_data(as_text=True)


def test_the_same_pat_always_has_the_same_token_id(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()

    ids = {client.get("/api/me", headers=bearer(ALICE_PAT)).get_json()["token_id"] for _ in range(3)}

    assert len(ids) == 1


def test_pats_off_refuse_a_pat_as_a_disabled_kind_without_asking_the_host(
    make_app: Callable[..., Flask], host: Host
) -> None:
    client = make_app(JWTGATE_ACCEPT_PATS=False).test_client()

    response = client.get("/api/items", headers=bearer(ALICE_PAT))

    assert_refused(response, 401, "token_kind_disabled")
    assert "JWTGATE_ACCEPT_PATS" in response.get_json()["error_description"]
    assert host.pat_calls == []


def test_a_pat_the_host_does_not_know_is_401(make_app: Callable[..., Flask], host: Host) -> None:
    response = make_app().test_client().get("/api/items", headers=bearer("hpat_unknown_" + "x" * 20))

    assert_refused(response, 401, "unknown_token")
    assert host.pat_calls == ["hpat_unknown_" + "x" * 20]


@pytest.mark.parametrize("answer", ["", 42, b"alice", ["alice"]], ids=["empty", "int", "bytes", "list"])
def test_a_validator_answer_that_is_not_a_username_is_401(
    make_app: Callable[..., Flask], host: Host, answer: Any
) -> None:
    host.pats[ALICE_PAT] = answer

    response = make_app().test_client().get("/api/items", headers=bearer(ALICE_PAT))

    assert_refused(response, 401, "no_username")


def test_a_failing_pat_validator_is_503_never_500(make_app: Callable[..., Flask], host: Host) -> None:
    host.fail = True

    response = make_app().test_client().get("/api/items", headers=bearer(ALICE_PAT))

    assert_refused(response, 503, "pat_unavailable")
    assert ALICE_PAT not in response.get_data(as_text=True)


# -- Basic credentials ------------------------------------------------------------------------------------------------


def test_basic_credentials_authenticate_through_the_hosts_validator(make_app: Callable[..., Flask], host: Host) -> None:
    response = make_app().test_client().get("/api/me", headers=basic("alice", PASSWORD))

    assert response.status_code == 200
    me = response.get_json()
    assert (me["username"], me["groups"], me["auth_method"]) == ("alice", ["devs"], "basic")
    assert PASSWORD not in response.get_data(as_text=True)
    assert host.basic_calls == ["alice"]


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("alice", ""), ("mallory", PASSWORD), ("alice", PASSWORD + " ")],
    ids=["wrong-password", "empty-password", "unknown-user", "trailing-space"],
)
def test_wrong_basic_credentials_are_401_bad_credentials(
    make_app: Callable[..., Flask], username: str, password: str
) -> None:
    response = make_app().test_client().get("/api/items", headers=basic(username, password))

    assert_refused(response, 401, "bad_credentials")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_basic_disabled_refuses_even_good_credentials_without_asking_the_host(
    make_app: Callable[..., Flask], host: Host
) -> None:
    client = make_app(JWTGATE_DISABLE_BASIC_AUTH=True).test_client()

    response = client.get("/api/items", headers=basic("alice", PASSWORD))

    assert_refused(response, 401, "basic_disabled")
    assert host.basic_calls == []


def test_basic_without_a_validator_fails_closed_and_says_how_to_enable_it(make_app: Callable[..., Flask]) -> None:
    response = make_app(basic=False).test_client().get("/api/items", headers=basic("alice", PASSWORD))

    assert_refused(response, 401, "basic_not_configured")
    assert "@gate.basic_auth_validator" in response.get_json()["error_description"]


def test_a_failing_basic_validator_is_503_never_500(make_app: Callable[..., Flask], host: Host) -> None:
    host.fail = True

    response = make_app().test_client().get("/api/items", headers=basic("alice", PASSWORD))

    assert_refused(response, 503, "basic_unavailable")
    assert PASSWORD not in response.get_data(as_text=True)


# -- PAT and Basic callers are subject to every policy rule ------------------------------------------------------------


def credentials(kind: str, username: str, host: Host) -> dict[str, str]:
    if kind == "pat":
        pat = f"hpat_{username}_" + "x" * 20
        host.pats[pat] = username
        return bearer(pat)
    return basic(username, PASSWORD)


@pytest.mark.parametrize("kind", ["pat", "basic"])
@pytest.mark.parametrize(
    ("config", "username", "method", "remote_addr", "status", "reason"),
    [
        ({"JWTGATE_READ_ONLY_GROUPS": ["viewers"]}, "viola", "GET", "127.0.0.1", 200, None),
        ({"JWTGATE_READ_ONLY_GROUPS": ["viewers"]}, "viola", "POST", "127.0.0.1", 403, "read_only"),
        ({"JWTGATE_READ_ONLY_GROUPS": ["viewers"]}, "alice", "POST", "127.0.0.1", 200, None),
        ({"JWTGATE_ALLOWED_GROUPS": ["devs"]}, "viola", "GET", "127.0.0.1", 403, "group_not_allowed"),
        ({"JWTGATE_ALLOWED_GROUPS": ["devs"]}, "alice", "GET", "127.0.0.1", 200, None),
        ({"JWTGATE_IP_ALLOWLIST": ["10.0.0.0/8"]}, "alice", "GET", "192.0.2.7", 403, "ip_not_allowed"),
        ({"JWTGATE_IP_ALLOWLIST": ["10.0.0.0/8"]}, "alice", "GET", "10.1.2.3", 200, None),
    ],
    ids=[
        "read-only-read",
        "read-only-write",
        "not-read-only-write",
        "allowed-groups-outsider",
        "allowed-groups-member",
        "ip-outside",
        "ip-inside",
    ],
)
def test_host_credentials_are_subject_to_every_policy_rule(
    make_app: Callable[..., Flask],
    host: Host,
    kind: str,
    config: dict[str, Any],
    username: str,
    method: str,
    remote_addr: str,
    status: int,
    reason: str | None,
) -> None:
    client = make_app(**config).test_client()

    response = client.open(
        "/api/items",
        method=method,
        headers=credentials(kind, username, host),
        environ_base={"REMOTE_ADDR": remote_addr},
    )

    if reason is None:
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.get_json()["user"] == username
    else:
        assert_refused(response, status, reason)


# -- the global toggles -----------------------------------------------------------------------------------------------

KINDS = ("jwt", "api_token", "pat", "basic")


def headers_for(kind: str, app: Flask, jwt: Callable[..., str]) -> dict[str, str]:
    if kind == "jwt":
        return bearer(jwt("alice"))
    if kind == "api_token":
        return bearer(api_token(app))
    if kind == "pat":
        return bearer(ALICE_PAT)
    return basic("alice", PASSWORD)


@pytest.mark.parametrize(
    ("key", "value", "disabled", "reason"),
    [
        ("JWTGATE_ACCEPT_JWT", True, None, None),
        ("JWTGATE_ACCEPT_JWT", False, "jwt", "token_kind_disabled"),
        ("JWTGATE_ACCEPT_API_TOKENS", True, None, None),
        ("JWTGATE_ACCEPT_API_TOKENS", False, "api_token", "token_kind_disabled"),
        ("JWTGATE_ACCEPT_PATS", True, None, None),
        ("JWTGATE_ACCEPT_PATS", False, "pat", "token_kind_disabled"),
        ("JWTGATE_DISABLE_BASIC_AUTH", False, None, None),
        ("JWTGATE_DISABLE_BASIC_AUTH", True, "basic", "basic_disabled"),
    ],
    ids=["jwt-on", "jwt-off", "api-tokens-on", "api-tokens-off", "pats-on", "pats-off", "basic-on", "basic-off"],
)
def test_each_toggle_turns_off_its_own_kind_and_no_other(
    make_app: Callable[..., Flask],
    jwt: Callable[..., str],
    key: str,
    value: bool,
    disabled: str | None,
    reason: str | None,
) -> None:
    app = make_app(**{key: value})
    client = app.test_client()

    for kind in KINDS:
        response = client.get("/api/me", headers=headers_for(kind, app, jwt))
        if kind == disabled:
            assert reason is not None
            assert_refused(response, 401, reason)
        else:
            assert response.status_code == 200, (kind, response.get_data(as_text=True))
            me = response.get_json()
            assert (me["username"], me["auth_method"]) == ("alice", kind)


@pytest.mark.parametrize(
    ("key", "kind"),
    [("JWTGATE_ACCEPT_JWT", "jwt"), ("JWTGATE_ACCEPT_API_TOKENS", "api_token")],
    ids=["jwt", "api-token"],
)
def test_a_disabled_kind_is_refused_on_the_gates_own_endpoints_too(
    make_app: Callable[..., Flask], jwt: Callable[..., str], key: str, kind: str
) -> None:
    app = make_app(**{key: False})

    response = app.test_client().get("/jwtgate/whoami", headers=headers_for(kind, app, jwt))

    assert_refused(response, 401, "token_kind_disabled")


def test_a_jwt_already_cached_is_refused_once_jwts_are_off(
    make_app: Callable[..., Flask], jwt: Callable[..., str]
) -> None:
    """One app: the token is verified and cached, then the settings switch JWTs off; the cached token is refused."""
    app = make_app()
    client = app.test_client()
    token = jwt("alice")
    assert client.get("/api/items", headers=bearer(token)).status_code == 200
    state = app.extensions["jwtgate"]
    assert state.keeper.cache.get(token) is not None  # verified and cached: the fast path would find it

    state.apply(Settings.from_mapping({**app.config, "JWTGATE_ACCEPT_JWT": False}))

    for _ in range(2):
        assert_refused(client.get("/api/items", headers=bearer(token)), 401, "token_kind_disabled")


# -- a host PAT never reaches the identity provider --------------------------------------------------------------------


@pytest.fixture
def idp_app(make_app: Callable[..., Flask], idp: MockIdentityProvider) -> Callable[..., Flask]:
    """``make(**config)``: an app whose only provider is the mock identity provider's introspection endpoint."""
    return lambda **config: make_app(JWTGATE_PROVIDERS=[idp.introspection_provider()], **config)


def test_a_host_pat_is_never_sent_to_the_introspection_endpoint(
    idp_app: Callable[..., Flask], idp: MockIdentityProvider, host: Host
) -> None:
    client = idp_app().test_client()

    for _ in range(3):
        response = client.get("/api/me", headers=bearer(ALICE_PAT))
        assert response.status_code == 200
        assert response.get_json()["auth_method"] == "pat"

    assert idp.hits["introspect"] == 0
    assert ALICE_PAT not in idp.introspected
    # the provider's own opaque tokens still go to it, after the host said it does not know them
    opaque = idp.mint_opaque("bob", groups=["devs"])
    response = client.get("/api/me", headers=bearer(opaque))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert (response.get_json()["username"], response.get_json()["auth_method"]) == ("bob", "introspection")
    assert idp.introspected == [opaque]
    assert ALICE_PAT not in idp.introspected


def test_a_host_pat_is_not_sent_to_the_introspection_endpoint_when_pats_are_off(
    idp_app: Callable[..., Flask], idp: MockIdentityProvider
) -> None:
    response = idp_app(JWTGATE_ACCEPT_PATS=False).test_client().get("/api/items", headers=bearer(ALICE_PAT))

    assert_refused(response, 401, "token_kind_disabled")
    assert ALICE_PAT not in idp.introspected
    assert idp.hits["introspect"] == 0


def test_a_failing_pat_validator_does_not_send_the_pat_to_the_introspection_endpoint(
    idp_app: Callable[..., Flask], idp: MockIdentityProvider, host: Host
) -> None:
    host.fail = True

    response = idp_app().test_client().get("/api/items", headers=bearer(ALICE_PAT))

    assert_refused(response, 503, "pat_unavailable")
    assert idp.hits["introspect"] == 0


def test_jwts_off_also_turns_off_introspected_tokens_without_asking_the_provider(
    idp_app: Callable[..., Flask], idp: MockIdentityProvider
) -> None:
    client = idp_app(JWTGATE_ACCEPT_JWT=False).test_client()
    opaque = idp.mint_opaque("bob", groups=["devs"])

    response = client.get("/api/items", headers=bearer(opaque))

    assert_refused(response, 401, "token_kind_disabled")
    assert idp.hits["introspect"] == 0
    assert client.get("/api/me", headers=bearer(ALICE_PAT)).get_json()["auth_method"] == "pat"  # PATs unaffected


def test_introspected_tokens_are_accepted_while_jwts_are_on(
    idp_app: Callable[..., Flask], idp: MockIdentityProvider
) -> None:
    opaque = idp.mint_opaque("bob", groups=["devs"])

    response = idp_app(JWTGATE_ACCEPT_JWT=True).test_client().get("/api/me", headers=bearer(opaque))

    assert response.status_code == 200
    assert (response.get_json()["username"], response.get_json()["auth_method"]) == ("bob", "introspection")
    assert idp.hits["introspect"] == 1
