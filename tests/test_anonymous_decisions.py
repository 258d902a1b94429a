"""What the audit record says of a caller the policy decided about: an anonymous caller it let in (a CORS preflight,
a public path) with its address and why, and a caller refused by the group rules by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audit_helpers import audit_rows
from conftest import SQLITE_ONLY


@SQLITE_ONLY
def test_anonymous_callers_are_recorded_with_their_address(audit_app_factory: Callable[..., Any]) -> None:
    app, _ = audit_app_factory()
    client = app.test_client()
    peer = {"REMOTE_ADDR": "192.0.2.9"}
    preflight = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"}
    assert client.options("/api/items", headers=preflight, environ_base=peer).status_code == 200
    assert client.get("/api/status", environ_base=peer).status_code == 200
    rows = [(r["client_address"], r["auth_method"], r["username"], r["reason"], r["decision"]) for r in audit_rows(app)]
    assert rows == [
        ("192.0.2.9", "anonymous", None, "cors_preflight", "allow"),
        ("192.0.2.9", "anonymous", None, "public", "allow"),
    ]


@SQLITE_ONLY
def test_a_caller_refused_by_the_group_rules_is_named_in_the_record(
    audit_app_factory: Callable[..., Any], jwtgate_token_factory: Callable[..., str]
) -> None:
    app, _ = audit_app_factory(JWTGATE_ALLOWED_GROUPS=["staff"], JWTGATE_READ_ONLY_GROUPS=["viewers"])
    client = app.test_client()
    outsider = {"Authorization": f"Bearer {jwtgate_token_factory('olga')}"}
    viewer = {"Authorization": f"Bearer {jwtgate_token_factory('vera', groups=['staff', 'viewers'])}"}
    assert client.get("/api/items", headers=outsider).status_code == 403
    assert client.post("/api/items", headers=viewer).status_code == 403
    rows = [(r["username"], r["auth_method"], r["reason"], r["decision"]) for r in audit_rows(app)]
    assert rows == [("olga", "jwt", "group_not_allowed", "deny"), ("vera", "jwt", "read_only", "deny")]
