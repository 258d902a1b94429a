"""Passwords in URIs are never printed or logged: redact_uri over every shape of URI a secret can hide in, and the
places the gate shows a URI (check-config, the rate-limit outage log line, start-up errors)."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from conftest import free_port
from flask import Flask
from hypothesis import assume, example, given
from hypothesis import strategies as st

from flask_jwtgate import ConfigurationError, JWTGate
from flask_jwtgate.redaction import redact_secrets, redact_uri

AppFactory = Callable[..., tuple[Flask, JWTGate]]

# Letters, digits and every character that means something in a URI, plus a few beyond ASCII.
_SECRET_ALPHABET = st.sampled_from(list("abcdefghijkXYZ0123456789@:/?#&;=%+*[]!$'(),~._-") + ["é", "ü", "€", " "])
SECRETS = st.text(_SECRET_ALPHABET, min_size=6, max_size=24).filter(lambda s: s.strip("*"))
SECRET_NAMES = ["password", "passwd", "pass", "pwd", "secret", "token", "sslpassword", "client_secret",
                "access_token", "api_key", "authToken"]
SCHEMES = ["redis", "rediss", "redis+unix", "unix", "memcached", "mongodb", "postgresql", "postgresql+psycopg",
           "mysql+pymysql", "sqlite", "https"]


def any_case(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))
    )


def encodings(secret: str) -> st.SearchStrategy[str]:
    """How a URI writer may spell ``secret``: percent-encoded (quote or quote_plus), every byte encoded, or as is."""
    every_byte = "".join(f"%{b:02X}" for b in secret.encode())
    return st.sampled_from([quote(secret, safe=""), quote_plus(secret), every_byte, secret])


@st.composite
def uris_with_a_secret(draw: st.DrawFn) -> tuple[str, set[str]]:
    """A URI holding a secret somewhere, and the spellings of it that must not appear in the output."""
    secret = draw(SECRETS)
    written = draw(encodings(secret))
    scheme = draw(st.sampled_from(SCHEMES))
    host = draw(st.sampled_from(["127.0.0.1", "cache.internal", "[::1]", "", "db-1.example"]))
    port = draw(st.sampled_from(["", ":6379", ":5432"]))
    path = draw(st.sampled_from(["/0", "/gate", "", "/tmp/redis.sock", "//var/run/db.sock"]))
    name = draw(st.sampled_from(SECRET_NAMES).flatmap(any_case))
    if draw(st.booleans()):
        name = name.replace("a", "%61", 1)  # a percent-encoded parameter name
    others = draw(st.lists(st.sampled_from(["db=0", "ssl=true", "connect_timeout=1", "options=-csearch_path%3Dx"]),
                           max_size=3))
    separator = draw(st.sampled_from(["&", ";"]))
    position = draw(st.integers(0, len(others)))
    params = [*others[:position], f"{name}={written}", *others[position:]]
    user = draw(st.sampled_from(["", "gate", "default"]))
    shape = draw(st.sampled_from(["userinfo", "query", "both", "broken-port", "broken-ipv6", "two-ats"]))
    # Written as is into a query, an '&' ends the value for every reader: what follows is another parameter
    # (`password=a&b=c`), so no reader takes the whole for a password, and nothing can tell it from one.
    assume(not (written == secret and "&" in secret and shape in ("query", "both", "broken-port", "broken-ipv6")))
    if shape == "userinfo":
        uri = f"{scheme}://{user}:{written}@{host}{port}{path}"
    elif shape == "query":
        uri = f"{scheme}://{host}{port}{path}?{separator.join(params)}"
    elif shape == "both":
        uri = f"{scheme}://{user}:{written}@{host}{port}{path}?{separator.join(params)}"
    elif shape == "broken-port":
        uri = f"{scheme}://{user}:{written}@{host}:port{path}?{separator.join(params)}"
    elif shape == "broken-ipv6":
        uri = f"{scheme}://{user}:{written}@[::1{path}?{separator.join(params)}"
    else:
        uri = f"{scheme}://{user}:{written}@{written}@{host}{path}"
    # The secret must be identifiable: not a piece of the URI's other parts.
    frame = uri.replace(written, "")
    assume(secret not in frame and written not in frame)
    return uri, {secret, written}


@given(uris_with_a_secret())
@example(("redis://:hunter2@127.0.0.1:6379/0?password=hunter2", {"hunter2"}))
@example(("redis://127.0.0.1:6379/0?PassWord=hunter2", {"hunter2"}))
@example(("postgresql+psycopg://gate@db/gate?sslpassword=hunter2&connect_timeout=1", {"hunter2"}))
@example(("redis://:pa/ss@word@host/0", {"pa/ss@word"}))
@example(("redis://:pa?ss@host/0", {"pa?ss"}))
@example(("redis://h/0?db=0;password=hunter2", {"hunter2"}))
@example(("unix://:hunter2@/tmp/redis.sock?db=0", {"hunter2"}))
def test_no_uri_shows_its_secret(case: tuple[str, set[str]]) -> None:
    uri, secrets = case

    shown = redact_uri(uri)

    for secret in secrets:
        assert secret not in shown, (uri, shown)


@given(uris_with_a_secret(), st.text(max_size=20))
def test_no_library_message_quoting_the_uri_shows_its_secret(case: tuple[str, set[str]], noise: str) -> None:
    uri, secrets = case
    message = f"unknown storage scheme : {uri}; {noise}"

    shown = redact_secrets(message, uri)

    for secret in secrets:
        assert secret not in shown or secret in noise, (uri, shown)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("memory://", "memory://"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw-1234@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:pw-1234@cache:6380/0?ssl_cert_reqs=required",
         "rediss://default:***@cache:6380/0?ssl_cert_reqs=required"),
        ("postgresql+psycopg://gate@db/gate?sslpassword=pw-1234&connect_timeout=1",
         "postgresql+psycopg://gate@db/gate?sslpassword=***&connect_timeout=1"),
        ("redis+unix:///tmp/redis.sock?db=0&password=pw-1234", "redis+unix:///tmp/redis.sock?db=0&password=***"),
        ("sqlite:////var/lib/gate@host.db", "sqlite:////var/lib/gate@host.db"),
        ("redis://:pa/ss-1234@host/0", "redis://***"),  # readers disagree on the password: only the scheme
    ],
)
def test_what_is_not_secret_is_shown_as_it_was(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


# -- where the gate shows URIs -----------------------------------------------------------------------------------------

USERINFO, QUERY, DB_USERINFO, DB_QUERY, PROVIDER = "Hunter2-u", "Hunter2-q", "S3cret-u", "S3cret-q", "Cl13nt-q"
ALL_SECRETS = (USERINFO, QUERY, DB_USERINFO, DB_QUERY, PROVIDER)


def test_check_config_shows_no_password(jwtgate_app_factory: AppFactory, jwtgate_keys: Any) -> None:
    app, _ = jwtgate_app_factory(
        JWTGATE_PROVIDERS=[
            {"name": "test", "public_key": jwtgate_keys["rsa"].public_pem, "issuer": "https://one.example",
             "directory_users": True},
            {"name": "remote", "jwks_url": f"https://idp.example/jwks?client_secret={PROVIDER}",
             "issuer": "https://two.example", "directory_users": False},
        ],
        JWTGATE_RATE_LIMIT="100/minute",
        JWTGATE_RATE_LIMIT_STORAGE_URI=f"redis://:{USERINFO}@127.0.0.1:6379/0?Password={QUERY}",
    )
    runner = app.test_cli_runner()

    as_json = runner.invoke(args=["jwtgate", "check-config", "--json"])
    as_text = runner.invoke(args=["jwtgate", "check-config"])

    assert as_json.exit_code == 0 and as_text.exit_code == 0, as_json.output + as_text.output
    for secret in ALL_SECRETS:
        assert secret not in as_json.output and secret not in as_text.output
    summary = json.loads(as_json.output)
    assert summary["rate_limit"]["storage"] == "redis://:***@127.0.0.1:6379/0?Password=***"
    assert summary["providers"][1]["jwks_url"] == "https://idp.example/jwks?client_secret=***"


def test_check_config_masks_a_database_password_sqlalchemy_would_show(
    jwtgate_app_factory: AppFactory,
) -> None:
    # SQLAlchemy's hide_password masks the userinfo only; a libpq password can be a query parameter too.
    app, _ = jwtgate_app_factory(
        JWTGATE_DATABASE_URI=f"postgresql+psycopg://gate:{DB_USERINFO}@127.0.0.1:1/none?connect_timeout=1"
        f"&password={DB_QUERY}"
    )

    result = app.test_cli_runner().invoke(args=["jwtgate", "check-config", "--json"])

    assert result.exit_code == 0, result.output
    assert DB_USERINFO not in result.output and DB_QUERY not in result.output
    assert json.loads(result.output)["database"] == (
        "postgresql+psycopg://gate:***@127.0.0.1:1/none?connect_timeout=1&password=***"
    )


def test_the_storage_outage_log_line_shows_no_password(
    jwtgate_app_factory: AppFactory,
    jwtgate_token_factory: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri = f"redis://:{USERINFO}@127.0.0.1:{free_port()}/0?password={QUERY}"  # nothing listens there
    app, _ = jwtgate_app_factory(JWTGATE_RATE_LIMIT="100/minute", JWTGATE_RATE_LIMIT_STORAGE_URI=uri)
    headers = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}

    with caplog.at_level(logging.ERROR, logger="flask_jwtgate"):
        response = app.test_client().get("/api/items", headers=headers)

    assert response.status_code == 503
    (line,) = [record.getMessage() for record in caplog.records if "rate-limit store" in record.getMessage()]
    assert "redis://:***@127.0.0.1" in line and "password=***" in line
    assert USERINFO not in caplog.text and QUERY not in caplog.text


def test_the_outage_log_line_redacts_what_the_storage_quotes(caplog: pytest.LogCaptureFixture) -> None:
    from flask_jwtgate.ratelimit import LimitStore

    uri = f"redis://:{USERINFO}@cache:6379/0?password={QUERY}"
    store = LimitStore(storage=None, uri=uri)  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="flask_jwtgate"):
        store.log_failure(ConnectionError(f"cannot reach {uri}"), fail_open=False)

    assert "rate-limit store" in caplog.text
    assert USERINFO not in caplog.text and QUERY not in caplog.text


def start_up_error(jwtgate_app_factory: AppFactory, **config: Any) -> tuple[ConfigurationError, str]:
    """The ConfigurationError the app refuses to start with, and its traceback as a terminal would show it (causes
    included: a chained library error would print the URI it quotes)."""
    with pytest.raises(ConfigurationError) as caught:
        jwtgate_app_factory(**config)
    return caught.value, "".join(traceback.format_exception(caught.value))


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"JWTGATE_RATE_LIMIT": "1/second",
          "JWTGATE_RATE_LIMIT_STORAGE_URI": f"redis+nosuch://:{USERINFO}@cache/0?password={QUERY}"},
         "JWTGATE_RATE_LIMIT_STORAGE_URI"),
        ({"JWTGATE_RATE_LIMIT": "1/second",
          "JWTGATE_RATE_LIMIT_STORAGE_URI": f"memcached://:{USERINFO}@cache:port?password={QUERY}"},
         "JWTGATE_RATE_LIMIT_STORAGE_URI"),
        ({"JWTGATE_DATABASE_URI": f"nosuch://gate:{DB_USERINFO}@db/gate?password={DB_QUERY}"},
         "JWTGATE_DATABASE_URI"),
        ({"JWTGATE_DATABASE_URI": f"postgresql+psycopg://gate:{DB_USERINFO}@db:port/gate?sslpassword={DB_QUERY}"},
         "JWTGATE_DATABASE_URI"),
        ({"JWTGATE_DATABASE_URI": f"not a URL :{DB_USERINFO}@ ?password={DB_QUERY}"}, "JWTGATE_DATABASE_URI"),
        ({"JWTGATE_PROVIDERS": [{"name": "p", "jwks_url": f"https://u:{USERINFO}@idp:port/jwks?token={QUERY}"}]},
         "JWTGATE_PROVIDERS[0].jwks_url"),
        ({"JWTGATE_PROVIDERS": [{"name": "p", "jwks_url": f"ftp://u:{USERINFO}@idp/jwks?token={QUERY}"}]},
         "JWTGATE_PROVIDERS[0].jwks_url"),
    ],
    ids=["unknown-storage", "storage-port", "unknown-database", "database-port", "not-a-url", "provider-port",
         "provider-scheme"],
)
def test_a_start_up_error_shows_no_password(
    jwtgate_app_factory: AppFactory, config: dict[str, Any], key: str
) -> None:
    error, shown = start_up_error(jwtgate_app_factory, **config)

    assert error.key == key
    for secret in ALL_SECRETS:
        assert secret not in shown, shown


def test_a_database_error_quoting_the_url_shows_no_password(
    jwtgate_app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLAlchemy 2.0 quotes the URL it cannot parse ("Could not parse SQLAlchemy URL from string '...'"); 2.1 no
    # longer does. The gate's message and the traceback must be clean with either.
    import sqlalchemy

    def refuse(uri: str) -> Any:
        raise sqlalchemy.exc.ArgumentError(f"Could not parse SQLAlchemy URL from string '{uri}'")

    monkeypatch.setattr(sqlalchemy.engine, "make_url", refuse)
    uri = f"postgresql+psycopg://gate:{DB_USERINFO}@db/gate?sslpassword={DB_QUERY}"

    error, shown = start_up_error(jwtgate_app_factory, JWTGATE_DATABASE_URI=uri)

    assert error.key == "JWTGATE_DATABASE_URI"
    assert "Could not parse SQLAlchemy URL" in shown
    assert DB_USERINFO not in shown and DB_QUERY not in shown
