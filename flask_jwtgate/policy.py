"""The access policy: which rule applies to a request, in which order, and what it decides.

The order is fixed, and each step can only narrow what the previous allowed:

1. master switch (``JWTGATE_ENABLED``): off, the gate does nothing;
2. bypass paths: the gate does nothing (the host's own authentication still applies);
3. protected paths: a path outside them is not "the API", and the gate does nothing;
4. the client address and the IP allowlist;
5. a CORS preflight without credentials passes (browsers send no credentials on it), but only to a route whose
   OPTIONS answer is Flask's automatic one: a view that handles OPTIONS itself is a view like any other;
6. credentials: if any are sent they must be valid, even on a public path;
7. public paths (and ``@gate.public`` views) let anonymous callers in, unless a restricted-public rule forces
   authentication; a public path is then open to every caller, and the group rules below do not apply;
8. allowed groups;
9. read-only groups: only ``GET``, ``HEAD`` and ``OPTIONS``. This is an allowlist: ``PROPFIND``, ``TRACE`` and
   invented methods are writes. A member of a read-only group is read-only even if another group would allow more,
   and a method-override header or ``_method`` parameter is never believed to turn a write into a read (and is
   refused outright when it names a write on a read).

The gate's own endpoints (under ``JWTGATE_URL_PREFIX``) are decided by the same steps, whatever the switch and the
path rules say: steps 1 to 3 never exempt them, and the path rules never make them public (only the views the gate
itself marks public, such as the admin console's page, are). So the IP allowlist, the failed-authentication limit,
the allowed groups and the read-only groups hold for them as for the API.

Everything here works on a WSGI environ (PEP 3333) and plain data; the Flask layer only turns the decision into a
response.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl

from .addresses import AddressResolver, ClientAddress
from .credentials import TOKEN_PREFIX, Credentials, parse_authorization
from .errors import (
    AccessDenied,
    GateDenied,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingCredentials,
    TemporarilyUnavailable,
)
from .identity import ANONYMOUS, NO_CLAIMS, Identity
from .paths import match_loosening, match_tightening
from .providers import ProviderClients, ProviderRouter
from .settings import Settings
from .verification import JWTVerifier, TokenCache, VerifiedToken

if TYPE_CHECKING:
    from .api_tokens import ApiTokenStore

logger = logging.getLogger("flask_jwtgate")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: load_groups' marker for a loader that takes the username only.
_ONE_ARGUMENT = object()
_OVERRIDE_HEADERS = ("HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_HTTP_METHOD", "HTTP_X_METHOD_OVERRIDE")

#: ``loader(username)`` or ``loader(username, provider)`` -> the user's groups in the host's directory.
GroupsLoader = Callable[..., Iterable[str]]


class HostHooks:
    """The host's functions, registered through the extension's decorators, possibly after ``init_app``."""

    def __init__(self) -> None:
        self.groups_loader: GroupsLoader | None = None
        #: Whether ``groups_loader`` takes the provider as a second argument.
        self.loader_takes_provider = False
        self.pat_validator: Callable[[str], str | None] | None = None
        self.basic_auth_validator: Callable[[str, str], bool] | None = None

    def set_groups_loader(self, loader: GroupsLoader) -> None:
        self.groups_loader = loader
        self.loader_takes_provider = _takes_two_arguments(loader)


def _takes_two_arguments(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the documented one-argument form
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


class View(NamedTuple):
    """What the Flask layer knows about the view a request routes to."""

    #: Marked ``@gate.public``.
    public: bool = False
    #: One of the gate's own endpoints (under ``JWTGATE_URL_PREFIX``): never exempt, never public by path rules.
    own: bool = False
    #: Flask answers OPTIONS for this route itself (``provide_automatic_options``): a preflight may pass.
    automatic_options: bool = False


#: A request that routes to no view, or to a plain one.
PLAIN_VIEW = View()


@dataclass(frozen=True)
class Route:
    """How the path rules classify one method and path."""

    bypass: bool
    protected: bool
    public: bool
    restricted: bool


_ROUTES: dict[tuple[bool, bool, bool, bool], Route] = {}


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
    :param clients: the app's JWKS and introspection clients, kept across settings changes.
    :param api_tokens: returns the app's API-token store, if it has one.

    ::

        keeper = Gatekeeper(settings)
        decision = keeper.check(environ, "GET", "/rest/api/2/myself")
        decision.identity.username   # or GateDenied was raised
    """

    def __init__(
        self,
        settings: Settings,
        hooks: HostHooks | None = None,
        clock: Callable[[], float] = time.time,
        clients: ProviderClients | None = None,
        api_tokens: Callable[[], ApiTokenStore | None] | None = None,
    ) -> None:
        self.settings = settings
        #: The app's API-token store (it lives with the database, longer than this object).
        self.api_tokens = api_tokens
        self.hooks = hooks or HostHooks()
        self.clock = clock
        # JWTs to their provider (public key or JWKS), opaque tokens to introspection; ``clients`` (the JWKS keys and
        # introspection answers) outlive this object, so a settings change does not empty them.
        self.providers = ProviderRouter(settings.providers, clock=clock, clients=clients)
        self.verifier: JWTVerifier = self.providers.jwt
        self.cache = TokenCache(clock=clock)
        self.addresses = AddressResolver(
            settings.ip_allowlist,
            settings.trusted_proxies,
            settings.proxy_header,
            ipv6_prefix=settings.rate_limit_ipv6_prefix,
        )
        self.proxy_environ_key = (
            "HTTP_" + settings.proxy_header.upper().replace("-", "_") if settings.proxy_header else None
        )
        # Paths repeat, and callers choose them: a memo of the rule classification, bounded in entries and, as only
        # short keys enter it (see route), in bytes.
        self._routes = lru_cache(maxsize=self.ROUTE_MEMO_SIZE)(self._route)
        #: The providers whose users are the host directory's (``None``: the host's own users, PATs and Basic).
        self.directory_providers: frozenset[str | None] = frozenset(
            {None, *(p.name for p in settings.providers if p.directory_users)}
        )

    # -- path rules -------------------------------------------------------------------------------------------------

    #: The route memo holds at most this many entries, with keys (method and path) of at most this many characters:
    #: 8192 x (512 + ~300 bytes of overhead), under 7 MiB however the paths are chosen.
    ROUTE_MEMO_SIZE = 8192
    ROUTE_MEMO_MAX_KEY = 512

    def route(self, method: str, path: str) -> Route:
        """How the path rules classify ``method`` and the raw request ``path``."""
        if len(path) + len(method) > self.ROUTE_MEMO_MAX_KEY:
            # Classified afresh: a caller sending distinct long paths (before any credential check) must not be
            # able to fill the memo with them.
            return self._route(method, path)
        return self._routes(method, path)

    def _route(self, method: str, path: str) -> Route:
        s = self.settings
        # The raw path for every rule: loosening rules take only its canonical spelling, tightening rules all of its
        # readings (flask_jwtgate.paths).
        key = (
            match_loosening(s.bypass_paths, method, path),
            match_tightening(s.protected_paths, method, path),
            match_loosening(s.public_paths, method, path),
            match_tightening(s.restricted_public_paths, method, path),
        )
        # One shared Route per outcome (there are 16): the memo's entries then hold no object of their own.
        route = _ROUTES.get(key)
        if route is None:
            route = _ROUTES.setdefault(key, Route(*key))
        return route

    # -- the decision -----------------------------------------------------------------------------------------------

    def handles(self, method: str, path: str, view: View = PLAIN_VIEW) -> Route | None:
        """How the path rules classify the request, or ``None`` when the gate is not involved (steps 1 to 3)."""
        route = self.route(method, path)
        if view.own:  # the gate's own endpoints: always decided, never exempt
            return route
        if not self.settings.enabled or route.bypass or not route.protected:
            return None
        return route

    def check(self, environ: Mapping[str, Any], method: str, path: str, view: View = PLAIN_VIEW) -> Decision:
        """Decide one request; raise :class:`GateDenied` (a subclass naming the reason) to refuse it."""
        route = self.handles(method, path, view)
        if route is None:
            return Decision(None)
        client = self.client_of(environ)
        try:
            return self._check_client(environ, method, route, view, client)
        except GateDenied as exc:
            exc.client = client
            raise

    def _check_client(
        self, environ: Mapping[str, Any], method: str, route: Route, view: View, client: ClientAddress
    ) -> Decision:
        s = self.settings
        if not client.allowed:
            require_allowed(client)  # raises
        if view.own:  # public only where the gate itself says so, whatever the path rules say
            public, restricted = view.public, False
        else:
            public = route.public or view.public
            restricted = public and route.restricted
            if restricted:
                public = False
        authorization = environ.get("HTTP_AUTHORIZATION")
        if not authorization:
            if method == "OPTIONS" and view.automatic_options and s.allow_cors_preflight and _is_preflight(environ):
                return Decision(ANONYMOUS, client, route)
            if public:
                return Decision(ANONYMOUS, client, route)
            if restricted:
                raise MissingCredentials("this public endpoint requires authentication", reason="public_restricted")
            raise MissingCredentials("authentication is required: send 'Authorization: Bearer <token>'")
        identity = self.authenticate(authorization)
        if public:
            return tuple.__new__(Decision, (identity, client, route))  # Decision(...) without its Python __new__
        try:
            if s.allowed_groups and outside_allowed_groups(s, identity):
                raise AccessDenied(
                    f"user {identity.username!r} is not in a group allowed to call this API",
                    reason="group_not_allowed",
                )
            if s.read_only_groups and is_read_only(s, identity):
                check_read_only(environ, method)
        except GateDenied as exc:
            exc.identity = identity
            raise
        # Decision(identity, client, route), without the named tuple's Python-level __new__: every allowed request
        # makes one.
        return tuple.__new__(Decision, (identity, client, route))

    def client_of(self, environ: Mapping[str, Any]) -> ClientAddress:
        """The request's client address, read as the settings say (the proxy header only from trusted proxies)."""
        forwarded = environ.get(self.proxy_environ_key) if self.proxy_environ_key else None
        return self.addresses.resolve(environ.get("REMOTE_ADDR"), forwarded)

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
            return self.authenticate_basic(credentials)
        return self.authenticate_bearer(credentials)

    def authenticate_bearer(self, credentials: Credentials) -> Identity:
        token = credentials.value
        if token.startswith(TOKEN_PREFIX):
            return self.authenticate_api_token(token)
        if token.count(".") not in (2, 4):
            # Not a JWT: the host's PAT validator is asked first, so that a host PAT is never shown to an identity
            # provider's introspection endpoint.
            if self.hooks.pat_validator is not None:
                if self.settings.accept_pats:
                    identity = self.authenticate_pat(token)
                    if identity is not None:
                        return identity
                elif not self.providers.takes_opaque_tokens or self.authenticate_pat(token) is not None:
                    # PATs are off. With an introspection provider the host is still asked to recognise its own
                    # token, only so that it is refused here rather than shown to the provider.
                    raise InvalidToken(
                        "personal access tokens are disabled on this API (JWTGATE_ACCEPT_PATS)",
                        reason="token_kind_disabled",
                    )
            if not self.providers.takes_opaque_tokens:
                raise InvalidToken("the token is not a JWT and no other token kind is enabled", reason="unknown_token")
        if not self.settings.accept_jwt:
            raise InvalidToken("JWTs are disabled on this API (JWTGATE_ACCEPT_JWT)", reason="token_kind_disabled")
        key = self.providers.cache_key(token)
        verified = self.cache.get(key)
        if verified is None:
            verified = self.providers.verify(token)
            self.cache.put(key, verified)
        return self.identity_for(verified)

    def authenticate_api_token(self, secret: str) -> Identity:
        """A gate-issued API token: the groups stored with it, and the directory's (looked up now, so that a group
        change applies at once) when it belongs to a directory user."""
        if not self.settings.accept_api_tokens:
            raise InvalidToken(
                "API tokens are disabled on this API (JWTGATE_ACCEPT_API_TOKENS)", reason="token_kind_disabled"
            )
        store = self.api_tokens() if self.api_tokens is not None else None
        if store is None:
            raise TemporarilyUnavailable(
                "API tokens cannot be checked: no token store", reason="token_store_unavailable"
            )
        token = store.authenticate(secret)
        loaded = self._directory_groups(token.username, token.provider)
        if token.read_only is None:
            # Made before tokens kept their maker's groups: complete only where the directory says what they are.
            complete = loaded is not None
        else:
            complete = not token.read_only
        groups = token.groups if loaded is None else token.groups | loaded
        return Identity(
            token.username, groups, "api_token", token.credential_id, token.provider, NO_CLAIMS, complete, token.groups
        )

    def authenticate_pat(self, token: str) -> Identity | None:
        """The host's personal access token, or ``None`` when the host does not know it."""
        validator = self.hooks.pat_validator
        assert validator is not None
        try:
            username = validator(token)
        except Exception as exc:  # the host's code: fail closed, never a 500
            logger.exception("jwtgate: pat_validator failed")
            raise TemporarilyUnavailable("personal access tokens cannot be checked", reason="pat_unavailable") from exc
        if username is None:
            return None
        if not isinstance(username, str) or not username:
            raise InvalidToken("the personal access token names no user", reason="no_username")
        return self._host_identity(username, "pat", "pat:" + hashlib.sha256(token.encode()).hexdigest()[:32])

    def authenticate_basic(self, credentials: Credentials) -> Identity:
        """Basic credentials, checked by the host's ``basic_auth_validator`` unless Basic is disabled."""
        if self.settings.disable_basic_auth:
            raise InvalidRequest("Basic authentication is disabled on this API", reason="basic_disabled")
        validator = self.hooks.basic_auth_validator
        if validator is None:
            raise InvalidRequest(
                "Basic credentials are not accepted: register a @gate.basic_auth_validator to enable them, or use "
                "'Authorization: Bearer <token>'",
                reason="basic_not_configured",
            )
        assert credentials.username is not None and credentials.password is not None
        try:
            accepted = validator(credentials.username, credentials.password)
        except Exception as exc:  # the host's code: fail closed, never a 500
            logger.exception("jwtgate: basic_auth_validator failed")
            raise TemporarilyUnavailable("Basic credentials cannot be checked", reason="basic_unavailable") from exc
        if accepted is not True:
            raise InvalidToken("the username or password is wrong", reason="bad_credentials")
        return self._host_identity(credentials.username, "basic", "basic:" + credentials.username)

    def _host_identity(self, username: str, method: str, token_id: str) -> Identity:
        """A user of the host's own (a PAT's or Basic credentials'): the directory's groups only."""
        groups = self._directory_groups(username, None)
        return Identity(username, groups or frozenset(), method, token_id)

    def identity_for(self, verified: VerifiedToken) -> Identity:
        loaded = self._directory_groups(verified.username, verified.provider)
        return verified.identity if loaded is None else verified.identity_with(loaded)

    def owner(self, provider: str | None, username: str | None) -> tuple[str | None, str | None]:
        """Who ``username`` of ``provider`` is: ``(provider, username)``, the provider ``None`` for the directory's
        users (so that a token made for the directory's ``alice`` is the ``alice`` of every directory provider)."""
        return (None if provider in self.directory_providers else provider), username

    def owner_of(self, identity: Identity) -> tuple[str | None, str | None]:
        """Whose API tokens ``identity`` sees as its own."""
        return self.owner(identity.provider, identity.username)

    def _directory_groups(self, username: str, provider: str | None) -> frozenset[str] | None:
        """The ``groups_loader``'s groups of ``username``, or ``None`` when no loader speaks for that user (no loader,
        or a provider whose users are not the directory's)."""
        loader = self.hooks.groups_loader
        if loader is None or provider not in self.directory_providers:
            return None
        return self.load_groups(loader, username, provider if self.hooks.loader_takes_provider else _ONE_ARGUMENT)

    @staticmethod
    def load_groups(loader: GroupsLoader, username: str, provider: object = _ONE_ARGUMENT) -> frozenset[str]:
        """Call the host's loader; its failure denies the request (503), never a 500.

        :param provider: passed as the second argument, unless it is the marker of the one-argument form (the
            default).
        """
        try:
            loaded = loader(username) if provider is _ONE_ARGUMENT else loader(username, provider)
            # Members that are not strings can never equal a configured group name, so they cannot widen access;
            # a bare string is one group, never a set of characters.
            if isinstance(loaded, frozenset):
                return loaded
            return frozenset((loaded,) if isinstance(loaded, str) else loaded or ())
        except Exception as exc:  # the host's code: fail closed, never a 500
            logger.exception("jwtgate: groups_loader failed for a user")
            raise TemporarilyUnavailable("the group directory could not be read", reason="groups_unavailable") from exc


def outside_allowed_groups(settings: Settings, identity: Identity) -> bool:
    """Whether ``JWTGATE_ALLOWED_GROUPS`` is set and ``identity`` is in none of its groups (then it is refused)."""
    # isdisjoint: no set made on every request, as an intersection would.
    return bool(settings.allowed_groups) and identity.groups.isdisjoint(settings.allowed_groups)


def is_read_only(settings: Settings, identity: Identity) -> bool:
    """Whether ``identity`` may only read: it is in a read-only group, or read-only groups are configured and its
    groups claim was malformed (so it cannot be told that it is in none)."""
    return bool(settings.read_only_groups) and (
        not identity.groups.isdisjoint(settings.read_only_groups) or not identity.groups_complete
    )


def require_allowed(client: ClientAddress) -> None:
    """The IP allowlist: refuse a client outside it (an unknown address is outside every allowlist)."""
    if not client.allowed:
        raise AccessDenied(f"the client address {client} is not allowed to call this API", reason="ip_not_allowed")


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


