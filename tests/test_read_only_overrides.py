"""Method overrides for a read-only caller, wherever they are sent: a header and a query string together, and an
``_method`` that names nothing (which is no read either)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from flask_jwtgate import JWTGate


@pytest.fixture
def viewer(jwtgate_token_factory: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwtgate_token_factory('carol', groups=['viewers'])}"}


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({"X-HTTP-Method-Override": "DELETE"}, "page=2", 403),  # a query string does not hide the header
        ({"X-HTTP-Method-Override": "GET"}, "page=2&_method=PUT", 403),
        ({}, "_method=", 403),
        ({}, "_method", 403),
        ({"X-HTTP-Method-Override": "GET"}, "page=2&_method=head", 200),
    ],
)
def test_every_override_is_read(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]],
    viewer: dict[str, str],
    headers: dict[str, str],
    query: str,
    status: int,
) -> None:
    app, _ = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    response = app.test_client().get("/api/items", headers={**viewer, **headers}, query_string=query)
    assert response.status_code == status
    if status == 403:
        assert response.get_json()["reason"] == "read_only"
