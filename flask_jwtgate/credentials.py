"""Reading the Authorization header (RFC 6750 §2.1, RFC 7617).

Only the header carries credentials: a token in the query string ends up in every proxy's access log, so
``?access_token=`` is never read. The scheme is case-insensitive; the token must be a single ``b64token``.
Anything else (two headers folded into one, stray spaces inside the token, control characters) is refused as a
malformed request rather than guessed at.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from .errors import InvalidRequest

#: The prefix of every API token the gate issues: recognisable in logs, secret scanners and by the gate itself.
TOKEN_PREFIX = "jgt_"  # noqa: S105 - a prefix, not a secret
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")


@dataclass(frozen=True)
class Credentials:
    """The credentials of one request: ``scheme`` is ``"bearer"`` or ``"basic"``."""

    scheme: str
    value: str = field(repr=False)  # secrets never reach a repr, a log line or a traceback's locals dump
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_authorization(header: str) -> Credentials:
    """Parse an Authorization header value, or raise :class:`InvalidRequest` saying what is wrong."""
    # Only spaces and tabs around the value, and only spaces after the scheme (RFC 9110 §11.4): str.strip() would also
    # eat vertical tabs, line breaks, NEL and NBSP, reading the header differently from a proxy in front of us.
    scheme, _, value = header.strip(" \t").partition(" ")
    value = value.strip(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        if not _B64TOKEN.match(value):
            raise InvalidRequest("the Authorization header must be 'Bearer <token>' with a single token")
        return Credentials("bearer", value)
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("the Basic credentials are not base64 'username:password'") from exc
        username, colon, password = decoded.partition(":")
        if not colon or not username:
            raise InvalidRequest("the Basic credentials are not 'username:password'")
        return Credentials("basic", value, username, password)
    raise InvalidRequest(
        "the Authorization scheme is not supported; use 'Bearer <token>'", reason="unsupported_scheme"
    )
