"""Introspection providers: asking the provider whether a token is active (RFC 7662), and caching its answer.

What is trusted, and why
------------------------
The provider's answer, and nothing in the token: an opaque token means nothing to the gate, and a JWT sent to an
introspection provider is never decoded for its claims (only, when several providers are configured, for its ``iss``,
to decide which provider to ask; see :mod:`flask_jwtgate.providers`). The answer counts only when:

- it comes from the configured ``introspection_url``, over a connection whose certificate verifies (https), with no
  redirect followed, within ``timeout`` seconds, at most 64 KiB, with status 200 and a JSON content type;
- ``active`` is the JSON boolean ``true``. ``"true"``, ``1``, or a missing member mean inactive (401);
- ``token_type``, when present, is ``Bearer``/``access_token``, and the answer passes the JWT path's
  :func:`~flask_jwtgate.verification.check_access_token`: a Keycloak ``typ`` of ``ID``, ``Refresh``, ``Offline`` or
  ``Logout``, or a Cognito ``token_use`` other than ``access``, is an active token too, but not an access token;
- ``exp``, ``nbf``, ``iat``, ``iss`` and ``aud`` pass the same checks as a JWT's (:func:`check_claims`), except that a
  missing ``exp`` is allowed: RFC 7662 makes it optional, and the provider has just said the token is active. The
  answer is then cached for ``cache_ttl`` only;
- ``client_id`` is one of the provider's ``allowed_client_ids``, when those are configured.

The gate authenticates to the endpoint with ``client_id``/``client_secret``, as HTTP Basic (``client_secret_basic``,
the default, both parts form-encoded first as RFC 6749 §2.3.1 says) or as form fields (``client_secret_post``). The
secret and the token are never logged and never appear in an error message.

When the provider is down
-------------------------
Unreachable, a timeout, any status but 200 (including a redirect, or 401/403 refusing the gate's own credentials,
which is logged as a configuration error), HTML, or a body that is not a JSON object: 503 ``temporarily_unavailable``,
and nothing is cached, so the next request asks again. A cached answer keeps serving until it expires, and not
longer: how long a revocation may take to be seen (``cache_ttl``) is the administrator's promise to keep.

Caching
-------
An active answer is cached until ``min(exp, fetched + cache_ttl)``; an inactive one for :data:`NEGATIVE_TTL` seconds
(or ``cache_ttl``, if shorter), so a replayed bad token does not reach the provider on every request. The two caches
are separate and bounded, so a flood of bad tokens cannot evict the good ones. Entries are keyed by the token with
trailing ``=`` removed (:func:`introspection_key`): base64 padding is not significant in any token encoding, so
``tok`` and ``tok==`` are one entry, one identity and one rate-limit bucket. Both spellings carry the same secret, so
answering one from the other's entry lets nobody in who could not already get in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

from .errors import InvalidClaim, InvalidToken, TemporarilyUnavailable
from .outbound import OutboundError, fetch
from .redaction import redact_uri
from .registry import ClientRegistry
from .settings import ProviderSettings
from .verification import (
    VerifiedToken,
    check_access_token,
    check_claims,
    groups_claim_is_malformed,
    read_identity,
)

logger = logging.getLogger("flask_jwtgate")

CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
#: Seconds an inactive answer is cached.
NEGATIVE_TTL = 10.0
MAX_RESPONSE_BYTES = 64 * 1024
_ACCESS_TOKEN_TYPES = frozenset({"bearer", "access_token"})


def introspection_key(token: str) -> str:
    """The cache key all encoding variants of ``token`` share (trailing base64 padding is not significant)."""
    return token.rstrip("=")


@dataclass(frozen=True)
class _Answer:
    response: Mapping[str, Any] | None  # None: inactive
    fetched_at: float


class _BoundedCache:
    """A bounded map that forgets its oldest entry first; safe for threads (the lock guards writes; a read is one
    dict lookup, so the hot path takes no lock)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[str, _Answer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> _Answer | None:
        return self._entries.get(key)

    def put(self, key: str, answer: _Answer) -> None:
        with self._lock:
            self._entries[key] = answer
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def pop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class IntrospectionClient:
    """One introspection endpoint with its client credentials and its cache of answers.

    :param url: the endpoint.
    :param client_id: the gate's client id at the provider.
    :param client_secret: its secret.
    :param client_auth: ``"client_secret_basic"`` (default) or ``"client_secret_post"``.
    :param timeout: seconds for the call.
    :param clock: the current time in seconds (cache expiry); injected by tests.

    ::

        client = IntrospectionClient("https://idp.example/introspect", "api", "secret")
        response, fetched_at = client.introspect(token, cache_ttl=60)   # InvalidToken when inactive, 503 when down
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        *,
        client_auth: str = "client_secret_basic",
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        maxsize: int = 10_000,
    ) -> None:
        if client_auth not in CLIENT_AUTH_METHODS:
            raise ValueError(f"client_auth must be one of {CLIENT_AUTH_METHODS}")
        self.url = url
        self.client_id = client_id
        self._client_secret = client_secret
        self.client_auth = client_auth
        self.timeout = timeout
        self.clock = clock
        self._active = _BoundedCache(maxsize)
        self._inactive = _BoundedCache(maxsize)
        #: How many calls were made to the endpoint (for tests and operators).
        self.calls = 0
        #: When the endpoint was last called, and why that call failed (``None``: it answered); for the console.
        self.last_call_at: float | None = None
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"IntrospectionClient({redact_uri(self.url)!r}, client_id={self.client_id!r})"

    def introspect(self, token: str, cache_ttl: float, key: str | None = None) -> tuple[Mapping[str, Any], float]:
        """The provider's active answer for ``token`` and when it was fetched, from the cache or the endpoint.

        :param cache_ttl: an active answer older than this is asked again.
        :param key: the cache key (default :func:`introspection_key`).
        :raises InvalidToken: the provider says the token is not active (401).
        :raises TemporarilyUnavailable: the endpoint failed and nothing cached can answer (503).
        """
        key = introspection_key(token) if key is None else key
        now = self.clock()
        cached = self._active.get(key)
        if cached is not None and cached.response is not None:
            if now < cached.fetched_at + cache_ttl and now < _expiry(cached.response):
                return cached.response, cached.fetched_at
            self._active.pop(key)
        refused = self._inactive.get(key)
        if refused is not None:
            if now < refused.fetched_at + min(NEGATIVE_TTL, cache_ttl):
                raise InvalidToken("the identity provider says the token is not active", reason="inactive_token")
            self._inactive.pop(key)
        response = self._call(token)
        fetched_at = self.clock()
        if response is None:
            self._inactive.put(key, _Answer(None, fetched_at))
            raise InvalidToken("the identity provider says the token is not active", reason="inactive_token")
        self._active.put(key, _Answer(response, fetched_at))
        return response, fetched_at

    def _call(self, token: str) -> Mapping[str, Any] | None:
        """POST the token; return the active answer, ``None`` when inactive, or raise 503."""
        form = {"token": token, "token_type_hint": "access_token"}
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if self.client_auth == "client_secret_basic":
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form.update(client_id=self.client_id, client_secret=self._client_secret)
        self.calls += 1
        self.last_call_at = self.clock()
        try:
            result = fetch(
                self.url, data=urlencode(form).encode(), headers=headers, timeout=self.timeout,
                max_bytes=MAX_RESPONSE_BYTES,
            )
        except OutboundError as exc:
            raise self._failed(logging.WARNING, f"failed: {exc}") from exc
        if result.status in (401, 403):
            raise self._failed(
                logging.ERROR,
                f"refused the gate's client credentials (HTTP {result.status}); check the provider's client_id, "
                "client_secret and client_auth",
            )
        if result.status != 200:
            raise self._failed(logging.WARNING, f"answered HTTP {result.status}")
        if not result.is_json:
            raise self._failed(logging.WARNING, f"answered {result.content_type!r}, not JSON")
        try:
            data = json.loads(result.body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise self._failed(logging.WARNING, "answered a body that is not JSON") from exc
        if not isinstance(data, dict):
            raise self._failed(logging.WARNING, "answered JSON that is not an object")
        self.last_error = None
        active = data.get("active")
        if active is True:
            return data
        if active is not False:
            logger.warning(
                "jwtgate: introspection at %s answered 'active' as %s, not a JSON boolean; the token is refused",
                redact_uri(self.url), type(active).__name__,
            )
        return None

    def _failed(self, level: int, what: str) -> TemporarilyUnavailable:
        """Log and remember (for the admin console) why the endpoint failed; the 503 to raise."""
        self.last_error = what
        logger.log(level, "jwtgate: introspection at %s %s", redact_uri(self.url), what)
        return _unavailable()

    def status(self) -> dict[str, Any]:
        """What an admin may see of this client: the endpoint, the calls, the cached answers, the last failure; never
        the secret or a token."""
        return {
            "url": redact_uri(self.url),
            "client_id": self.client_id,
            "client_auth": self.client_auth,
            "calls": self.calls,
            "last_call_at": self.last_call_at,
            "last_error": self.last_error,
            "cached_active": len(self._active),
            "cached_inactive": len(self._inactive),
        }


def _unavailable() -> TemporarilyUnavailable:
    return TemporarilyUnavailable(
        "the identity provider's introspection endpoint cannot be reached right now", reason="introspection_unavailable"
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _expiry(response: Mapping[str, Any]) -> float:
    exp = response.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return float("inf")  # absent (or invalid: then check_claims refuses it before it is ever used)
    return float(exp)


def verify_introspected(
    client: IntrospectionClient, provider: ProviderSettings, token: str, key: str, now: Callable[[], float]
) -> VerifiedToken:
    """Introspect ``token`` at ``provider`` and turn an active answer into a :class:`VerifiedToken`.

    The result's ``expires_at`` is when the gate must ask again: ``min(exp, fetched + cache_ttl)``.

    :raises InvalidToken: inactive, or a claim check failed (401).
    :raises TemporarilyUnavailable: the endpoint failed (503).
    """
    response, fetched_at = client.introspect(token, provider.cache_ttl, key)
    token_type = response.get("token_type")
    if token_type is not None and (not isinstance(token_type, str) or token_type.lower() not in _ACCESS_TOKEN_TYPES):
        raise InvalidClaim(
            "the provider says this is not a bearer access token", claim="token_type", reason="not_access_token"
        )
    check_access_token(response)
    exp = check_claims(response, provider, now(), require_exp=False)
    if provider.allowed_client_ids:
        client_id = response.get("client_id")
        if not isinstance(client_id, str) or client_id not in provider.allowed_client_ids:
            raise InvalidClaim(
                "the token was not issued to a client this API accepts", claim="client_id", reason="client_not_allowed"
            )
    username, groups = read_identity(response, provider)
    jti = response.get("jti")
    if isinstance(jti, str) and 0 < len(jti) <= 128:
        token_id = "jti:" + jti
    else:
        token_id = "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return VerifiedToken(
        provider=provider.name,
        username=username,
        groups=groups,
        claims=dict(response),  # VerifiedToken keeps a deep read-only copy
        token_id=token_id,
        expires_at=min(exp, fetched_at + provider.cache_ttl),
        auth_method="introspection",
        groups_complete=not groups_claim_is_malformed(response, provider),
    )


class IntrospectionRegistry(ClientRegistry[IntrospectionClient]):
    """One :class:`IntrospectionClient` per endpoint and credentials, shared by every settings version of an app, so
    that a settings change keeps the cached answers (see :mod:`flask_jwtgate.registry`)."""

    def _identity(self, provider: ProviderSettings) -> Hashable | None:
        if provider.introspection_url is None:
            return None
        secret = hashlib.sha256((provider.client_secret or "").encode()).hexdigest()
        return provider.introspection_url, provider.client_id, secret, provider.client_auth, provider.timeout

    def _make(self, provider: ProviderSettings) -> IntrospectionClient:
        assert provider.introspection_url is not None and provider.client_id and provider.client_secret
        return IntrospectionClient(
            provider.introspection_url,
            provider.client_id,
            provider.client_secret,
            client_auth=provider.client_auth,
            timeout=provider.timeout,
            clock=self.clock,
        )
