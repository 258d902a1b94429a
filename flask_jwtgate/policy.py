"""The access policy: which rule applies to a request, in which order, and what it decides.

The order is fixed, and each step can only narrow what the previous allowed:

1. master switch (``JWTGATE_ENABLED``): off, the gate does nothing;
2. bypass paths: the gate does nothing (the host's own authentication still applies);
3. protected paths: a path outside them is not "the API", and the gate does nothing;
4. the client address and the IP allowlist;
5. a CORS preflight without credentials passes (browsers send no credentials on it);
6. credentials: if any are sent they must be valid, even on a public path;
7. public paths (and ``@gate.public`` views) let anonymous callers in, unless a restricted-public rule forces
   authentication; a public path is then open to every caller, and the group rules below do not apply;
8. allowed groups;
9. read-only groups: only ``GET``, ``HEAD`` and ``OPTIONS``. This is an allowlist: ``PROPFIND``, ``TRACE`` and
   invented methods are writes. A member of a read-only group is read-only even if another group would allow more,
   and a method-override header or ``_method`` parameter is never believed to turn a write into a read (and is
   refused outright when it names a write on a read).

Everything here works on a WSGI environ (PEP 3333) and plain data; the Flask layer only turns the decision into a
response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from .addresses import AddressResolver, ClientAddress
from .credentials import Credentials, parse_authorization
from .errors import (
    AccessDenied,
    GateDenied,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingCredentials,
    TemporarilyUnavailable,
)
from .identity import ANONYMOUS, Identity
from .paths import match_loosening, match_tightening, normalise
from .settings import Settings
from .verification import JWTVerifier, TokenCache, VerifiedToken, canonical_token

logger = logging.getLogger("flask_jwtgate")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_OVERRIDE_HEADERS = ("HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_HTTP_METHOD", "HTTP_X_METHOD_OVERRIDE")

GroupsLoader = Callable[[str], Iterable[str]]


class HostHooks:
    """The host's functions, registered through the extension's decorators, possibly after ``init_app``."""

    def __init__(self) -> None:
        self.groups_loader: GroupsLoader | None = None
        self.pat_validator: Callable[[str], str | None] | None = None
        self.basic_auth_validator: Callable[[str, str], bool] | None = None


@dataclass(frozen=True)
class Route:
    """How the path rules classify one method and path."""

    bypass: bool
    protected: bool
    public: bool
    restricted: bool


class Decision(NamedTuple):
    """The outcome for one request: ``identity`` is ``None`` where the gate was not involved."""

    identity: Identity | None
    client: ClientAddress | None = None
    route: Route | None = None


class Gatekeeper:
    """Apply the policy to requests. One per settings version; replaced whole when settings change.

    :param settings: the validated settings.
    :param hooks: the host's functions (``groups_loader`` and the validators).
    :param clock: the current time in seconds; injected by tests.

    ::

        keeper = Gatekeeper(settings)
        decision = keeper.check(environ, "GET", "/rest/api/2/myself", view_is_public=False)
        decision.identity.username   # or GateDenied was raised
    """

    def __init__(
        self,
        settings: Settings,
        hooks: HostHooks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.hooks = hooks or HostHooks()
        self.clock = clock
        self.verifier = JWTVerifier(settings.providers, clock=clock)
        self.cache = TokenCache(clock=clock)
        self.addresses = AddressResolver(settings.ip_allowlist, settings.trusted_proxies, settings.proxy_header)
        self.proxy_environ_key = (
            "HTTP_" + settings.proxy_header.upper().replace("-", "_") if settings.proxy_header else None
        )
        # Paths repeat, and callers choose them: bounded memo of the rule classification.
        self.route = lru_cache(maxsize=8192)(self._route)

    # -- path rules -------------------------------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> Route:
        s = self.settings
        normalised = normalise(path)
        return Route(
            bypass=match_loosening(s.bypass_paths, method, path),
            protected=match_tightening(s.protected_paths, method, normalised),
            public=match_loosening(s.public_paths, method, path),
            restricted=match_tightening(s.restricted_public_paths, method, normalised),
        )

    # -- the decision -----------------------------------------------------------------------------------------------

    def check(self, environ: Mapping[str, Any], method: str, path: str, view_is_public: bool) -> Decision:
        """Decide one request; raise :class:`GateDenied` (a subclass naming the reason) to refuse it."""
        s = self.settings
        if not s.enabled:
            return Decision(None)
        route = self.route(method, path)
        if route.bypass or not route.protected:
            return Decision(None, route=route)
        client = self.addresses.resolve(
            environ.get("REMOTE_ADDR"), environ.get(self.proxy_environ_key) if self.proxy_environ_key else None
        )
        try:
            return self._check_client(environ, method, route, view_is_public, client)
        except GateDenied as exc:
            exc.client = client
            raise

    def _check_client(
        self, environ: Mapping[str, Any], method: str, route: Route, view_is_public: bool, client: ClientAddress
    ) -> Decision:
        s = self.settings
        if not client.allowed:
            raise AccessDenied(f"the client address {client} is not allowed to call this API", reason="ip_not_allowed")
        authorization = environ.get("HTTP_AUTHORIZATION")
        if not authorization:
            if method == "OPTIONS" and s.allow_cors_preflight and _is_preflight(environ):
                return Decision(ANONYMOUS, client, route)
            if (route.public or view_is_public) and not route.restricted:
                return Decision(ANONYMOUS, client, route)
            if route.restricted and (route.public or view_is_public):
                raise MissingCredentials("this public endpoint requires authentication", reason="public_restricted")
            raise MissingCredentials("authentication is required: send 'Authorization: Bearer <token>'")
        identity = self.authenticate(authorization)
        if (route.public or view_is_public) and not route.restricted:
            return Decision(identity, client, route)
        try:
            if s.allowed_groups and not identity.groups & s.allowed_groups:
                raise AccessDenied(
                    f"user {identity.username!r} is not in a group allowed to call this API",
                    reason="group_not_allowed",
                )
            if s.read_only_groups and (identity.groups & s.read_only_groups or not identity.groups_complete):
                check_read_only(environ, method)
        except GateDenied as exc:
            exc.identity = identity
            raise
        return Decision(identity, client, route)

    # -- credentials ------------------------------------------------------------------------------------------------

    def authenticate(self, authorization: str) -> Identity:
        """Turn an Authorization header into an identity, or raise :class:`AuthenticationFailed`."""
        if authorization.startswith("Bearer "):
            # Fast path: only verified tokens enter the cache, under their canonical spelling, so an exact hit means
            # this very string verified (and every other spelling takes the full path below).
            verified = self.cache.get(authorization[7:])
            if verified is not None:
                return self.identity_for(verified)
        credentials = parse_authorization(authorization)
        if credentials.scheme == "basic":
            if self.settings.disable_basic_auth:
                raise InvalidRequest("Basic authentication is disabled on this API", reason="basic_disabled")
            raise InvalidRequest(
                "Basic credentials are not accepted: the application registers no basic_auth_validator",
                reason="basic_not_configured",
            )
        return self.authenticate_bearer(credentials)

    def authenticate_bearer(self, credentials: Credentials) -> Identity:
        token = credentials.value
        if token.startswith("jgt_"):
            raise InvalidToken("gate-issued API tokens are not available in this version", reason="unknown_token")
        if token.count(".") not in (2, 4):
            raise InvalidToken("the token is not a JWT and no other token kind is enabled", reason="unknown_token")
        if not self.settings.accept_jwt:
            raise InvalidToken("JWTs are disabled on this API (JWTGATE_ACCEPT_JWT)", reason="token_kind_disabled")
        key = canonical_token(token)
        verified = self.cache.get(key)
        if verified is None:
            verified = self.verifier.verify(token)
            self.cache.put(key, verified)
        return self.identity_for(verified)

    def identity_for(self, verified: VerifiedToken) -> Identity:
        loader = self.hooks.groups_loader
        if loader is None:
            return verified.identity
        return Identity(
            verified.username,
            verified.groups | self.load_groups(loader, verified.username),
            verified.auth_method,
            verified.token_id,
            verified.provider,
            verified.claims,
            verified.groups_complete,
        )

    @staticmethod
    def load_groups(loader: GroupsLoader, username: str) -> frozenset[str]:
        """Call the host's loader; its failure denies the request (503), never a 500."""
        try:
            loaded = loader(username)
            # Members that are not strings can never equal a configured group name, so they cannot widen access;
            # a bare string is one group, never a set of characters.
            if isinstance(loaded, frozenset):
                return loaded
            return frozenset((loaded,) if isinstance(loaded, str) else loaded or ())
        except Exception as exc:  # the host's code: fail closed, never a 500
            logger.exception("jwtgate: groups_loader failed for a user")
            raise TemporarilyUnavailable("the group directory could not be read", reason="groups_unavailable") from exc


def check_read_only(environ: Mapping[str, Any], method: str) -> None:
    """Refuse a write by a read-only caller, however the method is dressed up."""
    if method not in READ_METHODS:
        raise InsufficientScope(f"read-only access: {method} is not allowed (only GET, HEAD and OPTIONS)")
    overrides = [environ[h] for h in _OVERRIDE_HEADERS if environ.get(h)]
    query = environ.get("QUERY_STRING", "")
    if query:  # parsed, not searched: '%5Fmethod' is '_method' to the app
        overrides += [value for name, value in parse_qsl(query, keep_blank_values=True) if name == "_method"]
    for override in overrides:
        if str(override).strip().upper() not in READ_METHODS:
            raise InsufficientScope("read-only access: a method override naming a write is refused")


def _is_preflight(environ: Mapping[str, Any]) -> bool:
    return bool(environ.get("HTTP_ORIGIN") and environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"))


