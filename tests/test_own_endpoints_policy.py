"""The gate's own endpoints are decided by the same policy as any API request, whatever the path rules say.

The property: for any configuration of the switch and the path rules (protected, bypass, public, restricted), and any
caller (groups, address, credentials), a request to one of the gate's own endpoints gets the gate's refusal exactly
when the same request to a fully protected API path does; the path rules never exempt or open the gate's endpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, jsonify
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_jwtgate import JWTGate

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]

#: (method, path) of the gate's own endpoints, with a body where they take one.
OWN = [
    ("GET", "/jwtgate/whoami", None),
    ("GET", "/jwtgate/tokens", None),
    ("POST", "/jwtgate/tokens", {"name": "ci", "expires_in_days": 1}),
    ("DELETE", "/jwtgate/tokens/0123456789abcdef", None),
    ("GET", "/jwtgate/admin/audit/status", None),
    ("POST", "/jwtgate/admin/test-token", {"token": "x"}),
]
#: The gate's refusals: (status, reason) the policy gives, as opposed to the endpoints' own answers.
POLICY_REASONS = {
    "missing_credentials", "ip_not_allowed", "group_not_allowed", "read_only", "too_many_failed_attempts",
    "public_restricted",
}  # fmt: skip

path_rules = st.lists(st.sampled_from(["/**", "/jwtgate/**", "/jwtgate/*", "/api/**", "/jwtgate", "/x"]), max_size=2)


def mirror_app(factory: AppFactory, **config: Any) -> Flask:
    """The same policy settings on a fully protected API: every path is "the API", nothing exempt or public."""
    config.update(
        JWTGATE_ENABLED=True,
        JWTGATE_PROTECTED_PATHS=["/**"],
        JWTGATE_BYPASS_PATHS=[],
        JWTGATE_PUBLIC_PATHS=[],
        JWTGATE_RESTRICTED_PUBLIC_PATHS=[],
    )
    app, _gate = factory(**config)

    @app.route("/api/mirror", methods=["GET", "POST", "DELETE"])
    def mirror() -> Any:
        return jsonify(ok=True)

    return app


def refusal(response: Any) -> tuple[int, str] | None:
    body = response.get_json(silent=True) or {}
    reason = body.get("reason")
    return (response.status_code, reason) if reason in POLICY_REASONS else None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    enabled=st.booleans(),
    protected=path_rules,
    bypass=path_rules,
    public=path_rules,
    restricted=path_rules,
    allowlist=st.sampled_from([[], ["127.0.0.0/8"], ["10.0.0.0/8"]]),
    allowed=st.sampled_from([[], ["staff"], ["jwtgate-admins"]]),
    read_only=st.sampled_from([[], ["viewers"]]),
    caller_groups=st.lists(st.sampled_from(["staff", "viewers", "jwtgate-admins"]), unique=True),
    credentials=st.booleans(),
    endpoint=st.sampled_from(OWN),
)
def test_own_endpoints_get_the_policy_whatever_the_path_rules_say(
    jwtgate_app_factory: AppFactory,
    jwtgate_token_factory: TokenFactory,
    enabled: bool,
    protected: list[str],
    bypass: list[str],
    public: list[str],
    restricted: list[str],
    allowlist: list[str],
    allowed: list[str],
    read_only: list[str],
    caller_groups: list[str],
    credentials: bool,
    endpoint: tuple[str, str, Any],
) -> None:
    policy = dict(
        JWTGATE_IP_ALLOWLIST=allowlist,
        JWTGATE_ALLOWED_GROUPS=allowed,
        JWTGATE_READ_ONLY_GROUPS=read_only,
        JWTGATE_AUDIT_ENABLED=False,
    )
    app, _gate = jwtgate_app_factory(
        JWTGATE_ENABLED=enabled,
        JWTGATE_PROTECTED_PATHS=protected,
        JWTGATE_BYPASS_PATHS=bypass,
        JWTGATE_PUBLIC_PATHS=public,
        JWTGATE_RESTRICTED_PUBLIC_PATHS=restricted,
        **policy,
    )
    method, path, body = endpoint
    headers = {"Authorization": f"Bearer {jwtgate_token_factory('alice', groups=caller_groups)}"} if credentials else {}
    own = app.test_client().open(path, method=method, json=body, headers=headers)
    expected = mirror_app(jwtgate_app_factory, **policy).test_client().open(
        "/api/mirror", method=method, json=body, headers=headers
    )
    assert refusal(own) == refusal(expected), own.get_data(as_text=True)
    if refusal(expected) is None:
        # Let through by the policy: whatever the endpoint itself answers, never a 5xx, and never anonymously.
        assert own.status_code < 500
        assert credentials or own.status_code in (401, 403)


def test_a_read_only_callers_token_stays_read_only_though_the_prefix_is_outside_the_api(
    jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory
) -> None:
    # The finding: with the API at /api/** and viewers read-only, a viewer (group from the JWT) got 201 from
    # POST /jwtgate/tokens, and the new API token then deleted with 200.
    app, _gate = jwtgate_app_factory(JWTGATE_PROTECTED_PATHS=["/api/**"], JWTGATE_READ_ONLY_GROUPS=["viewers"])
    client = app.test_client()
    viewer = {"Authorization": f"Bearer {jwtgate_token_factory('carol', groups=['viewers'])}"}
    response = client.post("/jwtgate/tokens", json={"name": "ci", "expires_in_days": 1}, headers=viewer)
    assert response.status_code == 403
    assert response.get_json()["reason"] == "read_only"

    # Read-only groups configured later: the token a viewer made before still cannot write.
    app, _gate = jwtgate_app_factory(JWTGATE_PROTECTED_PATHS=["/api/**"])
    client = app.test_client()
    created = client.post("/jwtgate/tokens", json={"name": "ci", "expires_in_days": 1}, headers=viewer)
    assert created.status_code == 201
    assert created.get_json()["groups"] == ["viewers"]
    state = app.extensions["jwtgate"]
    state.apply(state.settings.replace(read_only_groups=frozenset({"viewers"})))
    api_token = {"Authorization": f"Bearer {created.get_json()['token']}"}
    assert client.get("/api/items", headers=api_token).status_code == 200
    refused = client.delete("/api/items", headers=api_token)
    assert refused.status_code == 403
    assert refused.get_json()["reason"] == "read_only"


def test_failed_guesses_at_whoami_count_towards_the_failed_authentication_limit(
    jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory
) -> None:
    app, _gate = jwtgate_app_factory(
        JWTGATE_PROTECTED_PATHS=["/api/**"], JWTGATE_RATE_LIMIT="1000/minute", JWTGATE_AUTH_FAILURE_LIMIT="3/minute"
    )
    client = app.test_client()
    for _ in range(3):
        assert client.get("/jwtgate/whoami", headers={"Authorization": "Bearer not.a.token"}).status_code == 401
    valid = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}
    blocked = client.get("/jwtgate/whoami", headers=valid)
    assert blocked.status_code == 429
    assert blocked.get_json()["reason"] == "too_many_failed_attempts"
    assert client.get("/api/items", headers=valid).status_code == 429


@pytest.mark.parametrize(
    "config",
    [
        {"JWTGATE_ENABLED": False},
        {"JWTGATE_BYPASS_PATHS": ["/jwtgate/**"]},
        {"JWTGATE_PROTECTED_PATHS": ["/api/**"]},
        {"JWTGATE_PUBLIC_PATHS": ["/jwtgate/**"]},
    ],
    ids=["gate-off", "bypassed", "unprotected", "public"],
)
def test_the_gates_endpoints_are_never_open_to_anonymous_callers(
    jwtgate_app_factory: AppFactory, config: dict[str, Any]
) -> None:
    app, _gate = jwtgate_app_factory(**config)
    client = app.test_client()
    for method, path, body in OWN:
        response = client.open(path, method=method, json=body)
        assert response.status_code == 401, (method, path)
        assert response.get_json()["reason"] == "missing_credentials"
