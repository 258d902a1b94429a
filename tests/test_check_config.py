"""``flask jwtgate check-config``: JSON a script can parse (``--json``), an exit status, and the credentials that are
in effect rather than the toggles alone; and the help of ``flask jwtgate tokens create --expires-in-days``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest
from flask import Flask

from flask_jwtgate import JWTGate

AppFactory = Callable[..., tuple[Flask, JWTGate]]


def check_config(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["jwtgate", "check-config", *args])
    return result.exit_code, result.output


def test_json_is_the_whole_output_and_the_status_is_0(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])

    code, output = check_config(app, "--json")

    assert code == 0
    summary = json.loads(output)  # nothing before or after the object
    assert summary["read_only_groups"] == ["viewers"]
    assert summary["providers"][0]["name"] == "test"


def test_text_is_for_people_and_ends_with_the_verdict(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers", "auditors"], JWTGATE_ISSUER=None)

    code, output = check_config(app)

    assert code == 0
    lines = output.splitlines()
    assert lines[-1] == "configuration OK"
    assert "read_only_groups: auditors, viewers" in lines
    assert "  - name: test" in lines and "    algorithms: RS256" in lines
    assert "  limit: -" in lines  # rate_limit.limit: None


def test_help_documents_json_and_the_exit_status(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory()

    code, output = check_config(app, "--help")

    assert code == 0
    text = " ".join(output.split())
    assert "--json" in text and "0 the configuration is OK" in text


# The model: a credential kind is accepted when its setting allows it AND the host registered its validator.
COMBINATIONS = list(itertools.product([True, False], repeat=4))


@pytest.mark.parametrize(("accept_pats", "pat_validator", "disable_basic", "basic_validator"), COMBINATIONS)
def test_credentials_are_shown_as_they_are_in_effect(
    jwtgate_app_factory: AppFactory,
    jwtgate_token_factory: Callable[..., str],
    accept_pats: bool,
    pat_validator: bool,
    disable_basic: bool,
    basic_validator: bool,
) -> None:
    app, gate = jwtgate_app_factory(JWTGATE_ACCEPT_PATS=accept_pats, JWTGATE_DISABLE_BASIC_AUTH=disable_basic)
    if pat_validator:
        gate.pat_validator(lambda token: "alice" if token == "host-pat-123" else None)
    if basic_validator:
        gate.basic_auth_validator(lambda username, password: (username, password) == ("alice", "pw"))

    code, output = check_config(app, "--json")

    assert code == 0
    credentials = json.loads(output)["credentials"]
    pats, basic = accept_pats and pat_validator, not disable_basic and basic_validator
    assert (credentials["personal_access_tokens"], credentials["basic"]) == (pats, basic)
    # ... and that is what the gate does with such credentials.
    client = app.test_client()
    with_pat = client.get("/api/items", headers={"Authorization": "Bearer host-pat-123"})
    with_basic = client.get("/api/items", headers={"Authorization": "Basic YWxpY2U6cHc="})  # alice:pw
    assert (with_pat.status_code == 200, with_basic.status_code == 200) == (pats, basic)
    notes = json.loads(output)["notes"]
    assert any("pat_validator" in note for note in notes) == (accept_pats and not pat_validator)
    assert any("basic_auth_validator" in note for note in notes) == (not disable_basic and not basic_validator)


def test_jwts_are_not_in_effect_without_a_provider(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory(JWTGATE_PROVIDERS=[])

    _code, output = check_config(app, "--json")

    summary = json.loads(output)
    assert summary["credentials"]["jwt"] is False and summary["credentials"]["api_tokens"] is True
    assert any("no provider is configured" in note for note in summary["notes"])


def test_tokens_create_documents_its_expiry(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory()

    result = app.test_cli_runner().invoke(args=["jwtgate", "tokens", "create", "--help"])

    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--expires-in-days INTEGER Days until the token expires: 90 unless given, at most 3650." in text
