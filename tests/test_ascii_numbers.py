"""Numbers from outside are ASCII digits, everywhere: ``str.isdigit()`` is true of ``²`` and ``①`` (which ``int()``
then refuses), and ``int()`` reads ``١٢``, ``１２``, ``1_000``, ``+5`` and `` 5 ``. Whatever digit-like text a caller,
a provider or an environment variable sends, the answer is a 400 naming the parameter, a usage error, a
ConfigurationError naming the key, or (a provider's cache header) the provider's cache_ttl: never a 500, a traceback
or another reading of the number."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Clock
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_jwtgate import ConfigurationError, JWTGate
from flask_jwtgate.addresses import parse_address
from flask_jwtgate.ascii_numbers import parse_decimal, parse_whole
from flask_jwtgate.jwks import cache_lifetime
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing_idp import MockIdentityProvider

AppFactory = Callable[..., tuple[Flask, JWTGate]]
AUDIT = "/jwtgate/admin/audit"
FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)

ASCII_DIGITS = st.sampled_from("0123456789")
#: Characters that make a text not a number in ASCII digits, although Python may read it as one (or say it is a
#: digit): other scripts' digits (Nd), superscripts, circled and fraction numbers (No), fullwidth digits, signs,
#: the underscore int() allows, and non-ASCII spaces that str.strip() would remove.
NOT_ASCII = st.one_of(
    st.characters(categories=["Nd", "No"]).filter(lambda c: c not in "0123456789"),
    st.sampled_from([chr(0xFF10 + i) for i in range(10)]),
    st.sampled_from(["+", "-", "_", "\u00a0", "\u2003", "\u3000", "\u2007", "\u0660", "²", "³", "¹", "①", "⑳"]),
)


@st.composite
def digit_like(draw: st.DrawFn, max_size: int = 6) -> str:
    """A text of ASCII digits with at least one character that is not one."""
    characters = draw(st.lists(st.one_of(ASCII_DIGITS, NOT_ASCII), max_size=max_size))
    position = draw(st.integers(0, len(characters)))
    characters.insert(position, draw(NOT_ASCII))
    return "".join(characters)


DIGIT_LIKE = digit_like()
#: What the admin API's parameters are refused for, besides: surrounding ASCII spaces as well.
QUERY_VALUES = st.one_of(DIGIT_LIKE, st.builds(lambda d, s: s + d + s, st.text("0123456789", min_size=1, max_size=3),
                                               st.sampled_from([" ", "\t"])))


# -- the one rule ------------------------------------------------------------------------------------------------------


@given(DIGIT_LIKE)
@example("²")
@example("①")
@example("1_000")
@example("١٢")
@example("１２")
@example("+5")
def test_only_ascii_digits_are_a_number(text: str) -> None:
    assert parse_whole(text) is None
    assert parse_decimal(text) is None
    assert parse_decimal(text + ".5") is None


@given(st.text("0123456789", min_size=1, max_size=12), st.text("0123456789", max_size=6))
def test_ascii_digits_read_as_python_reads_them(whole: str, fraction: str) -> None:
    assert parse_whole(whole) == int(whole)
    assert parse_decimal(f"{whole}.{fraction}") == float(f"{whole}.{fraction}")


def test_length_is_bounded_before_int_runs() -> None:
    assert parse_whole("9" * 18) == 10**18 - 1
    assert parse_whole("9" * 19) is None
    assert parse_whole("9" * 19, max_digits=19) == 10**19 - 1
    assert parse_whole("9" * 5000) is None  # int() itself would raise past 4300 digits
    assert parse_whole("") is None and parse_decimal("") is None and parse_decimal(".") is None


# -- the admin audit API: 400 naming the parameter ---------------------------------------------------------------------


@pytest.fixture
def audit_api(jwtgate_app_factory: AppFactory, jwtgate_token_factory: Callable[..., str]) -> Iterator[Any]:
    app, _ = jwtgate_app_factory()
    admin = {"Authorization": "Bearer " + jwtgate_token_factory("root", groups=["jwtgate-admins"])}
    client = app.test_client()

    def ask(**query: str) -> Any:
        return client.get(AUDIT, query_string=query, headers=admin)

    yield ask
    app.extensions["jwtgate"].audit.close(timeout=5)


@FIXTURES
@given(
    parameter_value=st.one_of(
        st.tuples(st.sampled_from(["limit", "cursor", "status"]), QUERY_VALUES),
        st.tuples(st.sampled_from(["since", "until"]), DIGIT_LIKE),  # times may have spaces around them
    )
)
@example(parameter_value=("limit", "²"))
@example(parameter_value=("cursor", "²³"))
@example(parameter_value=("status", "²²²"))
@example(parameter_value=("status", "４xx"))
@example(parameter_value=("limit", "1_0"))
@example(parameter_value=("since", "\u30001800000000"))
def test_the_audit_api_answers_400_naming_the_parameter(audit_api: Any, parameter_value: tuple[str, str]) -> None:
    parameter, value = parameter_value

    response = audit_api(**{parameter: value})

    assert response.status_code == 400, (parameter, value, response.get_data(as_text=True))
    body = response.get_json()
    assert (body["error"], body["reason"]) == ("invalid_request", "invalid_parameter")
    assert body["error_description"].startswith(parameter)


def test_the_audit_api_still_reads_ascii_numbers(audit_api: Any) -> None:
    assert audit_api(limit="5", cursor="12", status="200", since="1800000000.5").status_code == 200


# -- the CLI: a usage error --------------------------------------------------------------------------------------------


@FIXTURES
@given(
    command=st.sampled_from([
        ["audit", "export", "--status"],
        ["audit", "export", "--since"],
        ["tokens", "create", "alice", "--name", "ci", "--expires-in-days"],
    ]),
    value=DIGIT_LIKE,
)
@example(command=["audit", "export", "--status"], value="²²²")
@example(command=["tokens", "create", "alice", "--name", "ci", "--expires-in-days"], value="３０")
@example(command=["tokens", "create", "alice", "--name", "ci", "--expires-in-days"], value="1_0")
def test_the_cli_answers_a_usage_error(jwtgate_app_factory: AppFactory, command: list[str], value: str) -> None:
    app, _ = jwtgate_app_factory()

    result = app.test_cli_runner().invoke(args=["jwtgate", *command, value])

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert command[-1] in result.output
    assert app.extensions["jwtgate"].api_tokens.list(None) == []


def test_the_cli_still_reads_ascii_numbers(jwtgate_app_factory: AppFactory) -> None:
    app, _ = jwtgate_app_factory()
    runner = app.test_cli_runner()

    created = runner.invoke(args=["jwtgate", "tokens", "create", "alice", "--name", "ci", "--expires-in-days", "30"])
    exported = runner.invoke(args=["jwtgate", "audit", "export", "--status", "403"])

    assert created.exit_code == 0 and exported.exit_code == 0, created.output + exported.output


@FIXTURES
@given(value=DIGIT_LIKE)
@example(value="²")
def test_the_example_idp_mint_answers_a_usage_error(example_app: Flask, value: str) -> None:
    result = example_app.test_cli_runner().invoke(args=["idp", "mint", "bob", "--expires-in", value])

    assert result.exit_code == 2 and "--expires-in" in result.output, result.output


def test_the_example_app_refuses_a_port_that_is_not_ascii_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    import example_app.__main__ as entry

    def no_app() -> Flask:
        raise AssertionError("PORT was read as a number")  # and the server would start

    monkeypatch.setattr(entry, "create_app", no_app)
    monkeypatch.setenv("PORT", "５０００")

    with pytest.raises(SystemExit, match="PORT must be a port number"):
        entry.main()


# -- settings: a ConfigurationError naming the key ---------------------------------------------------------------------

WHOLE_KEYS = ["JWTGATE_AUDIT_BATCH_SIZE", "JWTGATE_AUDIT_QUEUE_SIZE", "JWTGATE_AUDIT_RETENTION_DAYS",
              "JWTGATE_AUDIT_MAX_ENTRIES", "JWTGATE_AUDIT_PRUNE_INTERVAL", "JWTGATE_AUDIT_PRUNE_CHUNK_SIZE",
              "JWTGATE_AUDIT_SPOOL_MAX_BYTES"]


@given(key=st.sampled_from([*WHOLE_KEYS, "JWTGATE_AUDIT_FLUSH_INTERVAL"]), value=DIGIT_LIKE)
@example(key="JWTGATE_AUDIT_BATCH_SIZE", value="²")
@example(key="JWTGATE_AUDIT_FLUSH_INTERVAL", value="１.５")
def test_a_setting_answers_a_configuration_error_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_mapping({key: value})

    assert caught.value.key == key


@pytest.mark.parametrize(("key", "value", "read"), [
    ("JWTGATE_AUDIT_BATCH_SIZE", " 50\n", 50), ("JWTGATE_AUDIT_FLUSH_INTERVAL", "0.5", 0.5),
    ("JWTGATE_AUDIT_FLUSH_INTERVAL", "2", 2.0),
])
def test_a_setting_still_reads_ascii_numbers(key: str, value: str, read: float) -> None:
    settings = Settings.from_mapping({key: value})

    assert getattr(settings, key.removeprefix("JWTGATE_").lower()) == read


def test_the_environment_gets_a_configuration_error_not_a_value_error(
    monkeypatch: pytest.MonkeyPatch, example_app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_AUDIT_BATCH_SIZE", "²")

    with pytest.raises(ConfigurationError) as caught:
        example_app_factory()

    assert caught.value.key == "JWTGATE_AUDIT_BATCH_SIZE" and "'²'" in str(caught.value)


# -- a provider's cache headers: its cache_ttl -------------------------------------------------------------------------

TTL, FLOOR, CEILING = 200.0, 60.0, 3600.0


@given(value=DIGIT_LIKE, quoted=st.booleans())
@example(value="²", quoted=False)
def test_an_unreadable_max_age_means_the_providers_cache_ttl(value: str, quoted: bool) -> None:
    header = f'public, max-age="{value}"' if quoted else f"public, max-age={value}"

    assert cache_lifetime(header, None, TTL, FLOOR, CEILING) == TTL
    assert cache_lifetime("max-age=300", value, TTL, FLOOR, CEILING) == TTL  # an unreadable Age


@given(max_age=st.integers(0, 10**6), age=st.one_of(st.none(), st.integers(0, 10**6)))
def test_a_readable_max_age_is_used_less_its_age(max_age: int, age: int | None) -> None:
    lifetime = cache_lifetime(f"max-age={max_age}", None if age is None else f" {age}", TTL, FLOOR, CEILING)

    assert lifetime == min(max(max_age - (age or 0), FLOOR), CEILING)


@pytest.mark.parametrize("headers", [{"Cache-Control": "max-age=²"}, {"Cache-Control": "max-age=300", "Age": "¹"}],
                         ids=["max-age", "age"])
def test_a_provider_sending_an_unreadable_cache_header_is_still_used_for_its_cache_ttl(
    jwtgate_mock_idp_factory: Callable[..., MockIdentityProvider],
    jwtgate_app_factory: AppFactory,
    clock: Clock,
    headers: dict[str, str],
) -> None:
    idp = jwtgate_mock_idp_factory(clock=clock)
    idp.jwks_max_age = None
    idp.jwks_headers = headers
    app, _ = jwtgate_app_factory(clock=clock, JWTGATE_PROVIDERS=[idp.jwks_provider(cache_ttl=200)])
    client = app.test_client()

    def status() -> int:
        return client.get("/api/items", headers={"Authorization": f"Bearer {idp.mint_jwt()}"}).status_code

    assert status() == 200  # not a 503: the keys are good, only their lifetime is unreadable
    clock.advance(199)
    assert status() == 200
    assert idp.hits["jwks"] == 1  # fresh for cache_ttl (200 s), not refetched


# -- odds and ends ----------------------------------------------------------------------------------------------------


def test_a_forwarded_port_in_other_digits_is_not_an_address() -> None:
    assert str(parse_address("192.0.2.1:8080")) == "192.0.2.1"
    assert parse_address("192.0.2.1:８０") is None
    assert parse_address("[2001:db8::1]:٨٠") is None


def test_the_mock_idp_refuses_a_content_length_that_is_not_ascii_digits(
    jwtgate_mock_idp: MockIdentityProvider,
) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", int(jwtgate_mock_idp.base_url.rpartition(":")[2]), timeout=5)
    connection.putrequest("POST", "/introspect")
    connection.putheader("Content-Length", "²")
    connection.endheaders()

    assert connection.getresponse().status == 400
    connection.close()
