"""The rate-limit settings: validated at start-up, each failure naming its key."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_jwtgate import ConfigurationError, JWTGate
from flask_jwtgate.settings import DEFAULTS, Settings
from flask_jwtgate.testing import KeyPair, make_app


def start_fails(keys: dict[str, KeyPair], **config: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        make_app(keys, **config)
    return caught.value


def test_defaults() -> None:
    settings = Settings.from_mapping({})

    assert DEFAULTS["RATE_LIMIT"] is None
    assert settings.rate_limit_storage_uri == "memory://"
    assert settings.rate_limit_storage_options == ()
    assert settings.rate_limit_groups == ()
    assert settings.rate_limit_fail_open is False
    assert settings.auth_failure_limit == "20/minute"


@pytest.mark.parametrize("limit", ["100/minute", "10/second;1000/hour", "5 per 2 minutes"])
def test_limits_in_flask_limiter_notation_start(jwtgate_keys: dict[str, KeyPair], limit: str) -> None:
    app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT=limit, JWTGATE_AUTH_FAILURE_LIMIT=limit)

    assert JWTGate.settings(app).rate_limit == limit


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("JWTGATE_RATE_LIMIT", "lots"),
        ("JWTGATE_RATE_LIMIT", "0/minute"),
        ("JWTGATE_RATE_LIMIT", "10/fortnight"),
        ("JWTGATE_RATE_LIMIT", 100),
        ("JWTGATE_AUTH_FAILURE_LIMIT", "twenty"),
        ("JWTGATE_AUTH_FAILURE_LIMIT", "0/second"),
    ],
)
def test_a_bad_limit_names_its_key(jwtgate_keys: dict[str, KeyPair], key: str, value: Any) -> None:
    config = {"JWTGATE_RATE_LIMIT": "100/minute", key: value}

    error = start_fails(jwtgate_keys, **config)

    assert error.key == key


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["service-accounts"], "must map group names to limits"),
        ({"": "10/minute"}, "must map group names to limits"),
        ({"service-accounts": 1000}, "'service-accounts' must be a string"),
        ({"service-accounts": "fast"}, "'fast' is not a limit"),
    ],
)
def test_bad_group_overrides_name_the_key(jwtgate_keys: dict[str, KeyPair], groups: Any, expected: str) -> None:
    error = start_fails(jwtgate_keys, JWTGATE_RATE_LIMIT="10/minute", JWTGATE_RATE_LIMIT_GROUPS=groups)

    assert error.key == "JWTGATE_RATE_LIMIT_GROUPS"
    assert expected in error.message


def test_group_overrides_without_a_rate_limit_are_refused(jwtgate_keys: dict[str, KeyPair]) -> None:
    error = start_fails(jwtgate_keys, JWTGATE_RATE_LIMIT_GROUPS={"service-accounts": "1000/minute"})

    assert error.key == "JWTGATE_RATE_LIMIT_GROUPS"
    assert "JWTGATE_RATE_LIMIT" in error.message


def test_fail_open_must_be_a_boolean(jwtgate_keys: dict[str, KeyPair]) -> None:
    error = start_fails(jwtgate_keys, JWTGATE_RATE_LIMIT="10/minute", JWTGATE_RATE_LIMIT_FAIL_OPEN="sometimes")

    assert error.key == "JWTGATE_RATE_LIMIT_FAIL_OPEN"


@pytest.mark.parametrize("uri", ["nosuchstore://here", "redis://127.0.0.1:notaport/0"])
def test_an_unusable_storage_uri_fails_at_start_up(jwtgate_keys: dict[str, KeyPair], uri: str) -> None:
    error = start_fails(jwtgate_keys, JWTGATE_RATE_LIMIT="10/minute", JWTGATE_RATE_LIMIT_STORAGE_URI=uri)

    assert error.key == "JWTGATE_RATE_LIMIT_STORAGE_URI"


def test_a_storage_uri_password_is_not_repeated_in_the_error(jwtgate_keys: dict[str, KeyPair]) -> None:
    error = start_fails(
        jwtgate_keys,
        JWTGATE_RATE_LIMIT="10/minute",
        JWTGATE_RATE_LIMIT_STORAGE_URI="redis://user:hunter2@127.0.0.1:notaport/0",
    )

    assert error.key == "JWTGATE_RATE_LIMIT_STORAGE_URI"
    assert "hunter2" not in str(error)
    assert "redis://user:***@127.0.0.1:notaport/0" in str(error)


def test_storage_options_must_be_an_object(jwtgate_keys: dict[str, KeyPair]) -> None:
    error = start_fails(jwtgate_keys, JWTGATE_RATE_LIMIT="10/minute", JWTGATE_RATE_LIMIT_STORAGE_OPTIONS=["x"])

    assert error.key == "JWTGATE_RATE_LIMIT_STORAGE_OPTIONS"


def test_every_rate_limit_setting_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_RATE_LIMIT", "10/second;1000/hour")
    monkeypatch.setenv("FLASK_JWTGATE_RATE_LIMIT_GROUPS", '{"service-accounts": "5000/hour", "batch": "50/second"}')
    monkeypatch.setenv("FLASK_JWTGATE_AUTH_FAILURE_LIMIT", "5/minute")
    monkeypatch.setenv("FLASK_JWTGATE_RATE_LIMIT_FAIL_OPEN", "true")
    monkeypatch.setenv("FLASK_JWTGATE_RATE_LIMIT_STORAGE_OPTIONS", '{"key_prefix": "api"}')
    app = Flask("environment")
    app.config.from_prefixed_env()

    settings = Settings.from_mapping(app.config)

    assert settings.rate_limit == "10/second;1000/hour"
    assert settings.rate_limit_groups == (("service-accounts", "5000/hour"), ("batch", "50/second"))
    assert settings.auth_failure_limit == "5/minute"
    assert settings.rate_limit_fail_open is True
    assert settings.rate_limit_storage_options == (("key_prefix", "api"),)
