"""The HTTP layer fuzzed through nginx: request lines, header names and values, credentials and bodies that hypothesis
makes up, sent as raw bytes from an allowed or a refused client address.

Two properties, whatever the request:

- never a 5xx: not from the app (a 500, or a 503 with every dependency up), and not from nginx about the app (502,
  504: a worker that died or hung);
- never an allow without a valid credential: a request that does not carry exactly one of the stack's valid
  credentials from the allowed address, and is not a CORS preflight, does not reach a view. It reached one when the
  app answered with a success or redirect, or with an error of the example app's own (``errorMessages``: Flask's 404,
  405 or 400 answered after the gate let the request through). The paths are all protected and none is public.
"""

from __future__ import annotations

import base64
import http.client
import socket
import string
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from example_app.directory import demo_pat

from .stack import ALLOWED, REFUSED, Reply, Stack

#: Paths the gate guards, the gate's own endpoints among them; none of them is public or bypassed.
PATHS = [
    "/rest/api/2/myself", "/rest/api/2/issue", "/rest/api/2/issue/DEMO-1", "/rest/api/2/search", "/rest/api/2/project",
    "/jwtgate/whoami", "/jwtgate/tokens", "/jwtgate/admin/settings", "/jwtgate/admin/audit", "/nothing/here",
]
#: What may follow a path: encodings, dot segments, separators, parameters.
PATH_PIECES = [
    "", "/", "//", "/.", "/..", "/./x", "%2f", "%2F", "%2e%2e", "%2e", "%00", "%", "%zz", "%u002f", ";x=1", "\\",
    "%5c", "?", "?a=b&_method=GET", "?_method=DELETE", "#frag", "/serverInfo", "/../serverInfo", "%20", "~", "*",
    "%ff%fe", "\u00e9",
]
TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
#: Headers the fuzz does not write: it frames the request itself (a wrong length would only make nginx wait).
FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "keep-alive"})
HEADER_NAMES = [
    "Authorization", "authorization", "X-Forwarded-For", "Forwarded", "X-Real-IP", "X-HTTP-Method-Override",
    "X-Method-Override", "X-HTTP-Method", "Origin", "Access-Control-Request-Method", "Cookie", "Content-Type",
    "Accept", "Host", "Proxy-Authorization", "X-Test",
]


@dataclass(frozen=True)
class Credentials:
    """The stack's valid credentials, one of each kind, as ``Authorization`` values."""

    values: tuple[str, ...]

    def valid(self, value: str) -> bool:
        if value in self.values:
            return True
        # Basic credentials are base64, which has spellings that decode alike (unused bits in the last character):
        # the same password, so the same credential.
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(encoded.strip(" "), validate=True) == b"bob:builder"
            except ValueError:
                return False
        return False


@pytest.fixture(scope="module")
def credentials(stack: Stack) -> Credentials:
    bob = stack.idp.mint_jwt("bob", expires_in=3600)
    made = stack.call("POST", "/jwtgate/tokens", token=bob, body={"name": "e2e-fuzz", "expires_in_days": 1})
    assert made.status == 201, made
    return Credentials(
        (
            f"Bearer {bob}",
            f"Bearer {stack.idp.mint_opaque('bob', expires_in=3600)}",
            f"Bearer {made.json['token']}",
            f"Bearer {demo_pat('bob')}",
            "Basic " + base64.b64encode(b"bob:builder").decode(),
        )
    )


@st.composite
def authorization(draw: st.DrawFn, valid: tuple[str, ...]) -> str:
    """A valid credential, a valid one with one character of its credential changed, or something made up."""
    kind = draw(st.sampled_from(["valid", "valid", "mutated", "bearer", "basic", "text"]))
    if kind == "valid":
        return draw(st.sampled_from(valid))
    if kind == "mutated":
        value = draw(st.sampled_from(valid))
        scheme, _, credential = value.partition(" ")
        position = draw(st.integers(0, len(credential) - 1))
        replacement = draw(st.sampled_from(string.ascii_letters + string.digits + "-_.=+/~ ").filter(
            lambda c: c != credential[position]
        ))
        return f"{scheme} {credential[:position]}{replacement}{credential[position + 1:]}"
    if kind == "bearer":
        return "Bearer " + draw(st.text(string.ascii_letters + string.digits + "-._~+/=", max_size=80))
    if kind == "basic":
        user = draw(st.text(max_size=12))
        password = draw(st.text(max_size=12))
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return draw(header_value)


printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
header_value = st.one_of(
    printable,
    printable,
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60),
    st.sampled_from(["", " ", "\t", "a\x00b", "a\x0bb", "a\x01b", "127.0.0.2", "unknown", 'for="[::1]"', "GET"]),
)


@dataclass(frozen=True)
class Request:
    source: str
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def raw(self, port: int) -> bytes:
        lines = [f"{self.method} {self.target} {self.version}", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.body:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body

    def authorizations(self) -> list[str]:
        return [value for name, value in self.headers if name.lower() == "authorization"]

    def preflight(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return self.method == "OPTIONS" and {"origin", "access-control-request-method"} <= names


@st.composite
def requests(draw: st.DrawFn, valid: tuple[str, ...]) -> Request:
    # Mostly request lines nginx passes on (known methods, or invented ones in capitals); one in five is odd.
    odd = draw(st.sampled_from([False] * 4 + [True]))
    known = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "TRACE"])
    method = draw(
        st.text(string.ascii_letters + "_-", min_size=1, max_size=10)
        if odd
        else st.one_of(known, known, known, st.text(string.ascii_uppercase, min_size=3, max_size=10))
    )
    target = draw(st.sampled_from(PATHS)) + "".join(
        draw(st.lists(st.sampled_from(PATH_PIECES) | st.text(string.ascii_letters + string.digits, max_size=6),
                      max_size=3))
    )
    if draw(st.booleans()) and draw(st.booleans()):
        target = "http://127.0.0.1" + target  # the absolute form, which proxies must accept
    version = draw(st.sampled_from(["HTTP/1.2", "HTTP/2.0", "HTTP/1.1x"] if odd else ["HTTP/1.1"] * 3 + ["HTTP/1.0"]))
    names = st.sampled_from(HEADER_NAMES) | st.text(TCHAR, min_size=1, max_size=20)
    headers = draw(st.lists(st.tuples(names.filter(lambda n: n.lower() not in FRAMING), header_value), max_size=5))
    if draw(st.sampled_from([True, True, False])):
        headers.insert(draw(st.integers(0, len(headers))), ("Authorization", draw(authorization(valid))))
    if method == "OPTIONS" and draw(st.booleans()):  # a preflight now and then, to check it does not open more
        headers += [("Origin", "https://app.example"), ("Access-Control-Request-Method", "DELETE")]
    return Request(
        source=draw(st.sampled_from([ALLOWED, ALLOWED, ALLOWED, REFUSED])),
        method=method,
        target=target,
        version=version,
        headers=tuple(headers),
        body=draw(st.binary(max_size=200) | st.just(b'{"fields": {"summary": "x"}}')),
    )


def send(stack: Stack, request: Request) -> Reply | None:
    """The raw request through nginx; ``None`` when nginx closed the connection without an answer."""
    with socket.create_connection(("127.0.0.1", stack.nginx.port), timeout=30, source_address=(request.source, 0)) as s:
        s.sendall(request.raw(stack.nginx.port))
        response = http.client.HTTPResponse(s, method="HEAD" if request.method == "HEAD" else "GET")
        try:
            response.begin()
        except http.client.RemoteDisconnected:
            return None
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())


def reached_a_view(reply: Reply) -> bool:
    """Whether the app answered from a view, or from Flask's router after the gate let the request through."""
    if not reply.from_app:
        return False
    if reply.status < 400:
        return True
    try:
        body = reply.json
    except ValueError:
        return False
    return isinstance(body, dict) and "errorMessages" in body


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_request_gets_a_5xx_or_an_allow_without_a_valid_credential(
    stack: Stack, credentials: Credentials, data: st.DataObject
) -> None:
    request = data.draw(requests(credentials.values))
    reply = send(stack, request)
    authorizations = request.authorizations()
    authenticated = (
        request.source == ALLOWED and len(authorizations) == 1 and credentials.valid(authorizations[0])
    )
    if reply is None:
        event("no answer")
        return  # nginx refused it without a word: nothing reached the app
    event(f"{'valid credential' if authenticated else 'none valid'}: {reply.status} from "
          f"{'the app' if reply.from_app else 'nginx'}{', a view' if reached_a_view(reply) else ''}")
    raw = request.raw(stack.nginx.port)
    assert not (reply.from_app and reply.status >= 500), (raw, reply, stack.logs())
    assert reply.status not in (502, 504), (raw, reply, stack.logs())
    # A CORS preflight without credentials is answered (by Flask, with no view run); an empty Authorization header
    # carries none, and the gate reads it as absent.
    if not authenticated and not (request.preflight() and not any(value.strip() for value in authorizations)):
        assert not reached_a_view(reply), (raw, reply)
