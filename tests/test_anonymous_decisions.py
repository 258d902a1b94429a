"""An anonymous caller the gate lets in (a CORS preflight, a public path) is still a caller it decided about: the
audit record names its address and why it was let in."""

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
