"""The gate's own HTTP calls to identity providers (JWKS and introspection endpoints).

Threat model: the URL comes from the administrator's configuration, never from a token (``jku``/``x5u`` headers are
never read), but what the network answers is not trusted to be well-behaved. So:

- only ``http`` and ``https`` URLs are opened (urllib would otherwise also open ``file:``, ``ftp:`` and ``data:``);
- redirects are never followed: a redirect is returned as the 3xx status it is, and callers treat it as a failure, so a
  compromised or misconfigured endpoint cannot send the gate (with its client secret) somewhere else;
- every socket operation has a short timeout, and the body is read against a deadline and a size limit, so a slow or
  endless answer costs at most about ``timeout`` seconds and ``max_bytes`` of memory;
- TLS certificates are verified with the system's trust store (urllib's default context).

Known limits: name resolution (``getaddrinfo``) is not covered by the timeout; the standard proxy environment variables
(``HTTPS_PROXY``, ``NO_PROXY``) are honoured, as they are by every HTTP client an operator would expect.

Nothing here logs or returns a request's body: the introspection body carries the caller's token and, with
``client_secret_post``, the client secret.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from .redaction import redact_secrets

USER_AGENT = "flask-jwtgate"
_CHUNK = 16 * 1024


class OutboundError(Exception):
    """The endpoint could not be reached or did not answer in time (no HTTP status to report)."""


@dataclass(frozen=True)
class HTTPResult:
    """An endpoint's answer, whatever its status: the caller decides what a 3xx, 4xx or 5xx means."""

    status: int
    headers: Message = field(repr=False)
    body: bytes = field(repr=False)

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    @property
    def is_json(self) -> bool:
        kind = self.content_type
        return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: urllib then raises the 3xx as an ``HTTPError``, which :func:`fetch` returns."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTTPResult:
    """GET ``url`` (or POST ``data``) and return the answer of whatever status.

    :param timeout: seconds for each socket operation, and for reading the whole body.
    :param max_bytes: a longer body is refused.
    :raises OutboundError: the URL is not http(s), the endpoint cannot be reached, it is too slow, or its body is
        too large. The message is safe to log: it never contains the request body.
    """
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise OutboundError("only http and https URLs are fetched")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
        url,
        data=data,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        method="GET" if data is None else "POST",
    )
    deadline = time.monotonic() + timeout
    try:
        response: Any = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:  # 3xx (redirects are refused), 4xx and 5xx: an answer, not a failure
        response = exc
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        # http.client quotes a URL it cannot use ("nonnumeric port: ':pw@host:x'"); the message is logged.
        raise OutboundError(
            redact_secrets(f"cannot reach the endpoint: {type(reason).__name__}: {reason}", url)
        ) from exc
    try:
        status = int(response.status if hasattr(response, "status") else response.code)
        body = _read(response, max_bytes, deadline) if response.fp is not None else b""
        return HTTPResult(status, response.headers, body)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise OutboundError(
            redact_secrets(f"the endpoint's answer could not be read: {type(exc).__name__}: {exc}", url)
        ) from exc
    finally:
        response.close()


def _read(response: Any, max_bytes: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise OutboundError("the endpoint's answer took longer than the timeout")
        chunk = response.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise OutboundError(f"the endpoint's answer is larger than {max_bytes} bytes")
        chunks.append(chunk)
