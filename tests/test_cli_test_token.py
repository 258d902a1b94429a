"""``flask jwtgate test-token``: an exit status a script can use (0 allowed, 1 valid token but refused, 2 invalid
token), and ``-`` to read the token from standard input, out of the shell's history."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_jwtgate import JWTGate

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]


@pytest.fixture
def runner(jwtgate_app_factory: AppFactory) -> FlaskCliRunner:
    app, _ = jwtgate_app_factory(
        JWTGATE_READ_ONLY_GROUPS=["viewers"], JWTGATE_ALLOWED_GROUPS=["devs", "viewers"],
        JWTGATE_IP_ALLOWLIST=["10.0.0.0/8", "127.0.0.1/32"],
    )
    return app.test_cli_runner()


def run_test_token(runner: FlaskCliRunner, *args: str, stdin: str | None = None) -> Any:
    return runner.invoke(args=["jwtgate", "test-token", *args], input=stdin)


# What the tool reports, and the exit status a script sees for it: the requests are a model of the settings above.
CASES = [
    ({"groups": ["devs"]}, ["--method", "POST", "--path", "/api/items"], 0),
    ({"groups": ["viewers"]}, ["--method", "GET", "--path", "/api/items"], 0),
    ({"groups": ["viewers"]}, ["--method", "POST", "--path", "/api/items"], 1),  # read-only
    ({"groups": ["others"]}, ["--path", "/api/items"], 1),  # not in an allowed group
    ({"groups": ["devs"]}, ["--path", "/api/items", "--ip", "192.0.2.1"], 1),  # not from an allowed address
    ({"groups": ["devs"], "expires_in": -3600}, ["--path", "/api/items"], 2),  # expired
    ({"groups": ["devs"], "claims": {"typ": "ID"}}, ["--path", "/api/items"], 2),  # not an access token
]


@pytest.mark.parametrize(("token_options", "request_options", "status"), CASES)
def test_the_exit_status_says_allowed_refused_or_invalid(
    runner: FlaskCliRunner,
    jwtgate_token_factory: TokenFactory,
    token_options: dict[str, Any],
    request_options: list[str],
    status: int,
) -> None:
    tested = jwtgate_token_factory("alice", **token_options)

    as_text = run_test_token(runner, tested, *request_options)
    as_json = run_test_token(runner, tested, *request_options, "--json")

    report = json.loads(as_json.output)
    assert as_text.exit_code == as_json.exit_code == status, as_text.output
    assert (report["allowed"], report["valid"]) == {0: (True, True), 1: (False, True), 2: (False, False)}[status]
    assert as_text.exception is None or isinstance(as_text.exception, SystemExit)  # never a traceback


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=30)
@given(garbage=st.text(min_size=1, max_size=200).filter(lambda t: t.strip() and not t.startswith("-")))
def test_anything_that_is_no_token_exits_2(runner: FlaskCliRunner, garbage: str) -> None:
    result = run_test_token(runner, garbage, "--path", "/api/items", "--json")

    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["valid"] is False


def test_a_dash_reads_the_token_from_standard_input(
    runner: FlaskCliRunner, jwtgate_token_factory: TokenFactory
) -> None:
    tested = jwtgate_token_factory("alice", groups=["devs"])

    allowed = run_test_token(runner, "-", "--path", "/api/items", "--json", stdin=tested + "\n")
    refused = run_test_token(runner, "-", "--path", "/api/items", "--ip", "192.0.2.1", stdin=tested)

    assert allowed.exit_code == 0, allowed.output
    report = json.loads(allowed.output)
    assert report["identity"]["username"] == "alice" and report["token"]["length"] == len(tested)
    assert refused.exit_code == 1, refused.output
    assert tested not in allowed.output and tested not in refused.output


@pytest.mark.parametrize("stdin", ["", "\n", "  \t\n"])
def test_an_empty_standard_input_is_a_usage_error(runner: FlaskCliRunner, stdin: str) -> None:
    result = run_test_token(runner, "-", stdin=stdin)

    assert result.exit_code == 2
    assert "standard input holds no token" in result.output
    assert "checks" not in result.output  # no report: nothing was tested


def test_the_help_documents_the_exit_status_and_standard_input(runner: FlaskCliRunner) -> None:
    result = run_test_token(runner, "--help")

    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "0 the request would be allowed" in text
    assert "1 the token is valid, but the request would be refused" in text
    assert "2 the token is invalid" in text
    assert "A TOKEN of - reads the token from standard input" in text
