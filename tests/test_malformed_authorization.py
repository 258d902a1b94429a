"""Malformed Authorization headers: each is refused with a 401 (never a 500, never a guess), and no view runs.

The header is sent raw, through the WSGI environ, so that bytes a client library would refuse to send (control
characters, latin-1, folded headers) reach the gate exactly as a lenient server would pass them on (PEP 3333: header
values are latin-1 strings).
"""

from __future__ import annotations

import base64
import functools
import random
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from flask_jwtgate import JWTGate

Factory = Callable[..., str]


class Api:
    """An app under test whose views count their calls, so a test can prove a refused request never reached one."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.view_calls: list[str] = []
        for endpoint, view in list(app.view_functions.items()):
            app.view_functions[endpoint] = self._counting(endpoint, view)

    def _counting(self, endpoint: str, view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.view_calls.append(endpoint)
            return view(*args, **kwargs)

        return counted

    def send(self, authorization: str, path: str = "/api/items", method: str = "GET", **options: Any) -> TestResponse:
        """A request whose ``Authorization`` value is exactly ``authorization`` (a latin-1 string, as in WSGI)."""
        environ = {"HTTP_AUTHORIZATION": authorization}
        return self.app.test_client().open(path, method=method, environ_overrides=environ, **options)


def assert_refused(
    api: Api, response: TestResponse, reasons: str | tuple[str, ...], *, error: str = "invalid_request"
) -> None:
    """A 401 with the contract's JSON body and an RFC 6750 challenge naming the error, and no view ran."""
    reasons = (reasons,) if isinstance(reasons, str) else reasons
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == 401
    assert body["error"] == error
    assert body["reason"] in reasons, body
    assert body["error_description"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api", ')
    assert f'error="{error}"' in challenge
    assert 'error_description="' in challenge
    assert api.view_calls == []


def basic(credentials: bytes) -> str:
    return base64.b64encode(credentials).decode()


@pytest.fixture
def make_api(jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]]) -> Callable[..., Api]:
    def make(**config: Any) -> Api:
        app, _ = jwtgate_app_factory(**config)
        return Api(app)

    return make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
def token(jwtgate_token_factory: Factory) -> str:
    return jwtgate_token_factory()


# -- the Bearer scheme ---------------------------------------------------------------------------------------------

ACCEPTED = [
    pytest.param("Bearer {token}", id="canonical"),
    pytest.param("bearer {token}", id="lower-case-scheme"),
    pytest.param("BEARER {token}", id="upper-case-scheme"),
    pytest.param("bEaReR {token}", id="mixed-case-scheme"),
    # RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token.
    pytest.param("Bearer  {token}", id="two-spaces"),
    # RFC 9110 §5.5: optional whitespace (SP / HTAB) around a field value is not part of it.
    pytest.param(" Bearer {token}", id="leading-space"),
    pytest.param("Bearer {token} ", id="trailing-space"),
    pytest.param("Bearer {token}\t", id="trailing-tab"),
]


@pytest.mark.parametrize("template", ACCEPTED)
def test_well_formed_bearer_header_is_accepted(api: Api, token: str, template: str) -> None:
    response = api.send(template.format(token=token))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["user"] == "alice"
    assert api.view_calls == ["items"]


def test_no_authorization_header_gets_a_challenge_without_an_error_code(api: Api) -> None:
    response = api.app.test_client().get("/api/items")
    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"
    # RFC 6750 §3.1: no error attribute when the request carried no authentication information at all.
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert api.view_calls == []


def test_empty_authorization_header_counts_as_no_credentials(api: Api) -> None:
    response = api.send("")
    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert api.view_calls == []


MALFORMED = "malformed_credentials"
UNSUPPORTED = "unsupported_scheme"

REFUSED_BEARER = [
    pytest.param("Bearer", MALFORMED, id="scheme-only"),
    pytest.param("Bearer ", MALFORMED, id="scheme-and-space"),
    pytest.param("Bearer     ", MALFORMED, id="scheme-and-spaces"),
    pytest.param("Bearer {token} extra", MALFORMED, id="trailing-word"),
    pytest.param("Bearer {token} {token}", MALFORMED, id="two-tokens-space"),
    pytest.param("Bearer {token},{token}", MALFORMED, id="two-tokens-comma"),
    pytest.param("Bearer {token}, Bearer {token}", MALFORMED, id="two-headers-folded"),
    pytest.param("Bearer {token};", MALFORMED, id="trailing-semicolon"),
    pytest.param('Bearer "{token}"', MALFORMED, id="quoted-token"),
    pytest.param("Bearer token={token}", MALFORMED, id="auth-param-form"),
    pytest.param("Bearer {token}\x00", MALFORMED, id="trailing-nul"),
    pytest.param("Bearer \x00{token}", MALFORMED, id="leading-nul"),
    pytest.param("Bearer {token}\x7f", MALFORMED, id="trailing-del"),
    pytest.param("Bearer \xe9\xe8\xff", MALFORMED, id="latin-1-token"),
    pytest.param("Bearer {token}\xff", MALFORMED, id="latin-1-suffix"),
    pytest.param("Bearer {token}\xc3\xa9", MALFORMED, id="utf-8-bytes-suffix"),
    # Only SP separates the scheme from the token, and only SP / HTAB may surround the field value: other
    # whitespace and control characters (which Python's str.strip() also strips) are refused, not guessed at.
    pytest.param("Bearer \x0b{token}", MALFORMED, id="vertical-tab-before-token"),
    pytest.param("Bearer \x1c{token}", MALFORMED, id="file-separator-before-token"),
    pytest.param("Bearer \x85{token}", MALFORMED, id="latin-1-next-line-before-token"),
    pytest.param("Bearer \xa0{token}", MALFORMED, id="latin-1-nbsp-before-token"),
    pytest.param("Bearer \n{token}", MALFORMED, id="newline-before-token"),
    pytest.param("Bearer {token}\r\n", MALFORMED, id="crlf-after-token"),
    pytest.param("Bearer\t{token}", (MALFORMED, UNSUPPORTED), id="tab-separator"),
    pytest.param("Bearer\xa0{token}", (MALFORMED, UNSUPPORTED), id="nbsp-separator"),
    pytest.param("Bearer\n{token}", (MALFORMED, UNSUPPORTED), id="newline-separator"),
    pytest.param("   ", (MALFORMED, UNSUPPORTED), id="whitespace-only"),
]


@pytest.mark.parametrize(("template", "reasons"), REFUSED_BEARER)
def test_malformed_bearer_header_is_refused(
    api: Api, token: str, template: str, reasons: str | tuple[str, ...]
) -> None:
    assert_refused(api, api.send(template.format(token=token)), reasons)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("Token {token}", id="Token"),
        pytest.param("JWT {token}", id="JWT"),
        pytest.param("{token}", id="no-scheme"),
        pytest.param("Bearer:{token}", id="colon-separator"),
        pytest.param("Bearer-{token}", id="dash-separator"),
        pytest.param("Bearer{token}", id="no-separator"),
        pytest.param("B\xe9arer {token}", id="latin-1-scheme"),
        pytest.param('Digest username="alice", realm="api", nonce="abc", response="def"', id="Digest"),
        pytest.param("Negotiate YIIBhgYGKwYBBQUCoIIBejCCAXagMDAu", id="Negotiate"),
        pytest.param("NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==", id="NTLM"),
        pytest.param('OAuth oauth_token="x", oauth_signature="y"', id="OAuth1"),
        pytest.param("DPoP {token}", id="DPoP"),
        pytest.param("AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/s3/aws4_request", id="AWS4"),
    ],
)
def test_unsupported_scheme_is_refused(api: Api, token: str, template: str) -> None:
    assert_refused(api, api.send(template.format(token=token)), UNSUPPORTED)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("abc", "unknown_token", id="opaque-string"),
        pytest.param("jgt_not-a-real-token", "malformed_token", id="malformed-api-token"),
        pytest.param("a.b", "unknown_token", id="two-segments"),
        pytest.param("a.b.c.d", "unknown_token", id="four-segments"),
        pytest.param("a.b.c", "malformed_token", id="three-junk-segments"),
        pytest.param("...", "unknown_token", id="dots-only"),
        pytest.param("a.b.c.d.e", "unsupported_token", id="five-junk-segments"),
    ],
)
def test_bearer_value_that_is_no_known_token_is_refused(api: Api, value: str, reason: str) -> None:
    assert_refused(api, api.send(f"Bearer {value}"), reason, error="invalid_token")


def test_jwts_are_refused_when_jwt_acceptance_is_off(make_api: Callable[..., Api], token: str) -> None:
    api = make_api(JWTGATE_ACCEPT_JWT=False)
    assert_refused(api, api.send(f"Bearer {token}"), "token_kind_disabled", error="invalid_token")


# -- tokens anywhere but the Authorization header -------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["query", "form", "proxy-authorization", "x-access-token", "cookie"],
)
def test_token_outside_the_authorization_header_is_never_read(api: Api, token: str, where: str) -> None:
    client = api.app.test_client()
    if where == "query":
        response = client.get(f"/api/items?access_token={token}")
    elif where == "form":
        response = client.post("/api/items", data={"access_token": token})
    elif where == "cookie":
        client.set_cookie("access_token", token)
        response = client.get("/api/items")
    else:
        response = client.get("/api/items", headers={where: f"Bearer {token}"})

    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"
    assert api.view_calls == []


def test_cors_preflight_with_a_bad_token_is_refused(api: Api) -> None:
    response = api.send(
        "Bearer a.b.c",
        method="OPTIONS",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"},
    )
    assert_refused(api, response, "malformed_token", error="invalid_token")


# -- the Basic scheme ----------------------------------------------------------------------------------------------

MALFORMED_BASIC = [
    pytest.param("Basic", id="scheme-only"),
    pytest.param("Basic ", id="scheme-and-space"),
    pytest.param("Basic !!!", id="not-base64"),
    pytest.param("Basic YWxpY2U=6c2VjcmV0", id="padding-inside"),
    pytest.param("Basic YWxpY2U6c2VjcmV", id="truncated"),
    pytest.param("Basic YWxp Y2U6c2VjcmV0", id="space-inside"),
    pytest.param(f"Basic {basic(b'alice:secret')} extra", id="trailing-word"),
    pytest.param(f"Basic {basic(b'alice')}", id="no-colon"),
    pytest.param(f"Basic {basic(b':secret')}", id="empty-username"),
    pytest.param(f"Basic {basic(bytes([0xFF, 0xFE]) + b':x')}", id="not-utf-8"),
    pytest.param("Basic \xe9\xe8==", id="latin-1-value"),
    pytest.param("Basic YWxpY2U6c2VjcmV0\x00", id="trailing-nul"),
]


@pytest.mark.parametrize("header", MALFORMED_BASIC)
def test_malformed_basic_credentials_are_refused(api: Api, header: str) -> None:
    assert_refused(api, api.send(header), MALFORMED)


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
@pytest.mark.parametrize("path", ["/api/items", "/api/status"], ids=["protected", "public"])
def test_basic_credentials_are_refused_when_basic_auth_is_disabled(
    make_api: Callable[..., Api], scheme: str, path: str
) -> None:
    api = make_api(JWTGATE_DISABLE_BASIC_AUTH=True)
    assert_refused(api, api.send(f"{scheme} {basic(b'alice:secret')}", path), "basic_disabled")


@pytest.mark.parametrize("path", ["/api/items", "/api/status"], ids=["protected", "public"])
def test_basic_credentials_without_a_validator_are_refused_saying_how_to_enable_them(api: Api, path: str) -> None:
    response = api.send(f"Basic {basic(b'alice:secret')}", path)

    assert_refused(api, response, "basic_not_configured")
    assert "basic_auth_validator" in response.get_json()["error_description"]


# -- public paths ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        pytest.param("Bearer", MALFORMED, id="scheme-only"),
        pytest.param("Bearer {token} extra", MALFORMED, id="trailing-word"),
        pytest.param("Bearer {token},{token}", MALFORMED, id="two-tokens"),
        pytest.param("Bearer \xe9", MALFORMED, id="latin-1"),
        pytest.param("Token {token}", UNSUPPORTED, id="Token-scheme"),
        pytest.param("Negotiate YIIBhgYGKwYBBQUC", UNSUPPORTED, id="Negotiate"),
        pytest.param("Basic !!!", MALFORMED, id="bad-basic"),
    ],
)
def test_malformed_header_on_a_public_path_is_refused(api: Api, token: str, template: str, reason: str) -> None:
    assert_refused(api, api.send(template.format(token=token), "/api/status"), reason)


def test_public_path_without_credentials_is_open(api: Api) -> None:
    response = api.app.test_client().get("/api/status")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "user": None}
    assert api.view_calls == ["status"]


# -- random bytes ----------------------------------------------------------------------------------------------------


def _random_headers(seed: int, count: int) -> list[str]:
    """Random byte strings (as WSGI's latin-1 text), bare and after each scheme; a third drawn from edge-case bytes."""
    rng = random.Random(seed)
    alphabet = bytes(range(256))
    interesting = b" \t\r\n\x00\x0b\x1c\x85\xa0=.,:;\"'\\-_+/~%"
    headers = []
    for index in range(count):
        length = rng.choice([1, 2, 3, 8, 40, 200, 1500])
        pool = interesting if index % 3 == 0 else alphabet
        value = bytes(rng.choice(pool) for _ in range(length)).decode("latin-1")
        headers.append(("", "Bearer ", "Basic ", "bearer\t")[index % 4] + value)
    return headers


def test_random_authorization_headers_are_refused_never_a_500(api: Api) -> None:
    statuses: dict[int, int] = {}
    for header in _random_headers(seed=20240611, count=400):
        for path in ("/api/items", "/api/status"):
            response = api.send(header, path)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            body = response.get_json()
            assert body["status"] == response.status_code
            assert body["reason"]
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api"')
    assert statuses == {401: 800}
    assert api.view_calls == []
