"""Reading the Authorization header (``flask_jwtgate.credentials``): what a well-formed header yields, exactly, and what
a caller is told about one that is not (the error's ``error_description``, in the body and the challenge)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_jwtgate import JWTGate
from flask_jwtgate.credentials import Credentials, parse_authorization
from flask_jwtgate.errors import InvalidRequest


def basic(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


NOT_UTF8 = base64.b64encode(b"\xff\xfe:x").decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def-ghi", Credentials("bearer", "abc.def-ghi")),
        ("bEARER abc", Credentials("bearer", "abc")),
        ("\t Bearer   abcX \t", Credentials("bearer", "abcX")),  # spaces and tabs around, spaces after the scheme
        ("Bearer Xabc==", Credentials("bearer", "Xabc==")),
        (f"Basic {basic('alice:s3cret')}", Credentials("basic", basic("alice:s3cret"), "alice", "s3cret")),
        (f"BASIC {basic('alice:')}", Credentials("basic", basic("alice:"), "alice", "")),
        # RFC 7617: the user-id ends at the first colon; the password may hold more.
        (f"Basic {basic('alice:pa:ss:')}", Credentials("basic", basic("alice:pa:ss:"), "alice", "pa:ss:")),
        (f"Basic {basic('ünï:çødé')}", Credentials("basic", basic("ünï:çødé"), "ünï", "çødé")),
    ],
)
def test_a_well_formed_header_yields_exactly_its_credentials(header: str, expected: Credentials) -> None:
    parsed = parse_authorization(header)
    assert parsed == expected
    # The documented values of scheme, whatever case the header used.
    assert parsed.scheme in ("bearer", "basic")
    assert (parsed.value, parsed.username, parsed.password) == (expected.value, expected.username, expected.password)


@pytest.mark.parametrize(
    ("header", "description", "reason"),
    [
        ("Bearer two tokens", "the Authorization header must be 'Bearer <token>' with a single token",
         "malformed_credentials"),
        ("Bearer ", "the Authorization header must be 'Bearer <token>' with a single token", "malformed_credentials"),
        ("Basic !!!!", "the Basic credentials are not base64 'username:password'", "malformed_credentials"),
        (f"Basic {NOT_UTF8}", "the Basic credentials are not base64 'username:password'",
         "malformed_credentials"),
        (f"Basic {basic('no-colon')}", "the Basic credentials are not 'username:password'", "malformed_credentials"),
        (f"Basic {basic(':password')}", "the Basic credentials are not 'username:password'", "malformed_credentials"),
        ("Digest abc", "the Authorization scheme is not supported; use 'Bearer <token>'", "unsupported_scheme"),
        # Only spaces and tabs surround the value: a scheme with other characters glued on is another scheme.
        ("XBearer abc", "the Authorization scheme is not supported; use 'Bearer <token>'", "unsupported_scheme"),
        ("BearerX abc", "the Authorization scheme is not supported; use 'Bearer <token>'", "unsupported_scheme"),
    ],
)  # fmt: skip
def test_a_malformed_header_is_refused_saying_what_is_wrong(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], header: str, description: str, reason: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_authorization(header)
    assert (raised.value.description, raised.value.reason) == (description, reason)
    # What the caller reads: the body and the RFC 6750 challenge.
    app, _ = jwtgate_app_factory()
    response = app.test_client().get("/api/items", environ_overrides={"HTTP_AUTHORIZATION": header})
    assert response.status_code == 401
    assert response.get_json() == {
        "error": "invalid_request", "error_description": description, "status": 401, "reason": reason,
    }  # fmt: skip
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="api", error="invalid_request", error_description="{description}"'
    )


def test_a_host_token_reaches_the_validator_exactly_as_sent(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]],
) -> None:
    """The token is the header's value with the surrounding spaces taken off, and nothing else."""
    app, gate = jwtgate_app_factory()
    seen: list[str] = []

    @gate.pat_validator
    def validate(token: str) -> Any:
        seen.append(token)
        return "alice" if token == "XhostpatX" else None

    client = app.test_client()
    assert client.get("/api/items", headers={"Authorization": "Bearer  XhostpatX "}).status_code == 200
    assert client.get("/api/items", headers={"Authorization": "Bearer hostpat"}).status_code == 401
    assert seen == ["XhostpatX", "hostpat"]
