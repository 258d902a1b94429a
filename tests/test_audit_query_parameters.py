"""The audit query's parameter names: an unknown (misspelt) or repeated parameter is a 400 naming it, never a
wider export; the admin API and ``flask jwtgate audit export`` take the same filter names, from one list."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import click
import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_jwtgate import JWTGate
from flask_jwtgate.audit.query import FILTERS, PAGING
from flask_jwtgate.cli import audit_export

AppFactory = Callable[..., tuple[Flask, JWTGate]]
AUDIT = "/jwtgate/admin/audit"
KNOWN = ("user", "status", "decision", "reason", "path", "since", "until", "format", "limit", "cursor")
VALID = {"user": "bob", "status": "4xx", "decision": "deny", "reason": "read_only", "path": "/api/*",
         "since": "2025-01-31T00:00:00Z", "until": "1900000000", "format": "json", "limit": "10", "cursor": "99"}
FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


@pytest.fixture
def app(jwtgate_app_factory: AppFactory) -> Iterator[Flask]:
    app, _ = jwtgate_app_factory()
    yield app
    app.extensions["jwtgate"].audit.close(timeout=5)


@pytest.fixture
def ask(app: Flask, jwtgate_token_factory: Callable[..., str]) -> Callable[..., Any]:
    admin = {"Authorization": "Bearer " + jwtgate_token_factory("root", groups=["jwtgate-admins"])}
    client = app.test_client()
    client.get("/api/items", headers=admin)  # something to export
    return lambda query: client.get(AUDIT, query_string=query, headers=admin)


def test_the_known_names_are_the_contracts() -> None:
    assert (*FILTERS, *PAGING) == KNOWN


@pytest.mark.parametrize("fmt", ["json", "csv", "ndjson"])
def test_a_misspelt_filter_is_a_400_naming_it_not_an_export_of_everything(ask: Any, fmt: str) -> None:
    response = ask({"usr": "bob", "format": fmt})

    assert response.status_code == 400
    body = response.get_json()
    assert (body["error"], body["status"], body["reason"]) == ("invalid_request", 400, "invalid_parameter")
    assert body["error_description"].startswith("usr is not a known parameter (did you mean user?)")
    assert "known: " + ", ".join(KNOWN) in body["error_description"]
    assert "entries" not in body


@FIXTURES
@given(name=st.text(max_size=30).filter(lambda name: name not in KNOWN), value=st.text(max_size=10))
@example(name="User", value="bob")
@example(name="user ", value="bob")
@example(name="", value="x")
@example(name="access_token", value="x")
def test_every_unknown_name_is_refused(ask: Any, name: str, value: str) -> None:
    response = ask([("user", "bob"), (name, value)])

    assert response.status_code == 400, (name, response.get_data(as_text=True))
    body = response.get_json()
    assert body["reason"] == "invalid_parameter"
    assert "is not a known parameter" in body["error_description"]


@FIXTURES
@given(names=st.lists(st.sampled_from(KNOWN), unique=True))
def test_every_known_name_is_taken(ask: Any, names: list[str]) -> None:
    response = ask({name: VALID[name] for name in names})

    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("name", KNOWN)
def test_a_repeated_parameter_is_a_400_naming_it(ask: Any, name: str) -> None:
    response = ask([(name, VALID[name]), (name, VALID[name])])

    assert response.status_code == 400
    assert response.get_json()["error_description"] == f"{name} is given more than once; give it once"


def test_the_cli_offers_the_same_filters(app: Flask) -> None:
    options = {param.name for param in audit_export.params if isinstance(param, click.Option)}

    assert options - {"fmt", "output"} == set(FILTERS)
    runner = app.test_cli_runner()
    for name in FILTERS:
        result = runner.invoke(args=["jwtgate", "audit", "export", f"--{name}", VALID[name]])
        assert result.exit_code == 0, (name, result.output)
    misspelt = runner.invoke(args=["jwtgate", "audit", "export", "--usr", "bob"])
    assert misspelt.exit_code == 2 and "No such option '--usr'" in misspelt.output
