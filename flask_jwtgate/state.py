"""The base of the Flask layer: the gate's state for one app, the request's values on ``g``, and the error responses.

Everything Flask-facing builds on this module: the extension installs a :class:`GateState` per app, the request hook
fills ``g``, and the gate's own views, the CLI and the audit log read both. It imports nothing of theirs, so the
Flask layer is a tree: ``extension`` (the top, which installs everything) → ``views``, ``token_views``, ``cli``,
``audit`` → ``state`` → the pure core (``policy``, ``ratelimit``, ``settings``, ...).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g
from werkzeug.local import LocalProxy

from . import signals
from .errors import AuthenticationFailed, ConfigurationError, GateDenied, RateLimited
from .identity import ANONYMOUS, Identity
from .policy import PLAIN_VIEW, Decision, Gatekeeper, HostHooks, View
from .providers import ProviderClients
from .ratelimit import GateLimiter, LimitStore, RateLimitRules, rate_limited_headers
from .settings import Settings

if TYPE_CHECKING:
    from .api_tokens import ApiTokenStore
    from .audit import AuditLog
    from .database import GateDatabase
    from .revisions import Revisions
    from .runtime import RuntimeSettings

#: Where the state lives: ``app.extensions["jwtgate"]``.
EXTENSION_KEY = "jwtgate"
#: The attribute ``@gate.public`` sets on a view function.
PUBLIC_ATTRIBUTE = "_jwtgate_public"
#: The name of the gate's own blueprint: its endpoints are ``jwtgate.<view>``.
BLUEPRINT_NAME = "jwtgate"
_OWN_PREFIX = BLUEPRINT_NAME + "."


class GateState:
    """Everything the gate keeps for one app, under ``app.extensions["jwtgate"]``.

    :param hooks: the host's functions (``groups_loader``, the validators), shared with the :class:`JWTGate`.
    :param clock: the gate's clock.
    :param settings: the validated settings to start with.
    :param limit_store: the rate-limit storage, when rate limiting is on.
    :param gate: the :class:`JWTGate` that installed this state (a second ``init_app`` by another is refused).
    :param app: the app, held weakly: the sender of the signals this state sends.
    """

    def __init__(
        self,
        hooks: HostHooks,
        clock: Callable[[], float],
        settings: Settings,
        limit_store: LimitStore | None = None,
        gate: object = None,
        app: Flask | None = None,
    ) -> None:
        self.hooks = hooks
        self.clock = clock
        self.gate = gate
        self._app = weakref.ref(app) if app is not None else None
        #: endpoint -> what the policy needs to know of its view (see :meth:`view_of`).
        self.views: dict[str | None, View] = {None: PLAIN_VIEW}
        #: Flask-Limiter's storage, kept across settings changes (a new storage URI takes a restart).
        self.limit_store = limit_store
        #: JWKS key sets and introspection answers: kept across settings changes (see flask_jwtgate.providers).
        self.provider_clients = ProviderClients(clock=clock)
        #: The gate's database and audit log (flask_jwtgate.database, flask_jwtgate.audit), set up by init_app.
        self.database: GateDatabase | None = None
        self.audit: AuditLog | None = None
        #: The gate-issued API tokens (flask_jwtgate.api_tokens), on the same database.
        self.api_tokens: ApiTokenStore | None = None
        #: How changes made in other processes are noticed, and the run-time settings (set up by init_app).
        self.revisions: Revisions
        self.runtime: RuntimeSettings
        #: The version of the run-time settings in force (0: the config's alone).
        self.version = 0
        #: The config's rate limit: an admin may change a limit only where the storage to count it was built.
        self.base_rate_limit = settings.rate_limit
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        """Take new settings into use: a new policy object, and with it empty caches."""
        self.settings = settings
        self.keeper = Gatekeeper(
            settings,
            hooks=self.hooks,
            clock=self.clock,
            clients=self.provider_clients,
            api_tokens=lambda: self.api_tokens,
        )
        self.provider_clients.retain(settings.providers)
        rules = RateLimitRules.from_settings(settings)
        self.limiter: GateLimiter | None = (
            GateLimiter(rules, self.limit_store, clock=self.clock)
            if rules is not None and self.limit_store is not None
            else None
        )


    def view_of(self, app: Flask, endpoint: str | None) -> View:
        """What the policy needs to know of ``endpoint``'s view: public, one of the gate's own; memoised."""
        if endpoint is None:
            return PLAIN_VIEW
        view = View(
            public=bool(getattr(app.view_functions.get(endpoint), PUBLIC_ATTRIBUTE, False)),
            own=endpoint.startswith(_OWN_PREFIX),
        )
        self.views[endpoint] = view
        return view


    def take(self, settings: Settings, version: int) -> None:
        """Take a version of the run-time settings into use, and say so (the ``settings_changed`` signal)."""
        changed = version != self.version or settings != self.settings
        self.apply(settings)
        self.version = version
        app = self._app() if self._app is not None else None
        if changed and app is not None and signals.settings_changed.receivers:
            signals.settings_changed.send(app, settings=settings, version=version)

    def check_usable(self, settings: Settings) -> None:
        """Refuse settings this app cannot put in force without a restart."""
        if settings.rate_limit is not None and self.limit_store is None and settings.rate_limit != self.base_rate_limit:
            raise ConfigurationError(
                "JWTGATE_RATE_LIMIT",
                "cannot be switched on at run time in this app: Flask-Limiter is switched off (RATELIMIT_ENABLED), or "
                "run-time settings were off at start-up",
            )


def state_of(app: Flask | None = None) -> GateState:
    """The gate's state of ``app`` (default: the current app)."""
    state: GateState = (app or current_app).extensions[EXTENSION_KEY]
    return state


# -- the request's values on g -----------------------------------------------------------------------------------------
# The hook keeps its results in g under these names: _jwtgate_request ((start, request, path)), _jwtgate_decision,
# _jwtgate_denied (the GateDenied that refused the request), _jwtgate_identity, _jwtgate_quota, _jwtgate_audited.


def _get_identity() -> Identity:
    # g._get_current_object() once, rather than g.get(): every attribute through the proxy costs a context lookup,
    # and views read current_identity several times per request.
    identity: Identity = g._get_current_object().__dict__.get("_jwtgate_identity", ANONYMOUS)
    return identity


#: The caller of the current request. Anonymous where the gate let the request through without credentials, or
#: was not involved (bypass paths, unprotected paths, gate switched off).
current_identity: Identity = LocalProxy(_get_identity)  # type: ignore[assignment]


def decision_of_request() -> Decision | None:
    """The gate's decision for the current request, if it made one."""
    decision: Decision | None = g.get("_jwtgate_decision")
    return decision


def request_path(environ: dict[str, Any]) -> str:
    """The path Flask routes on: ``PATH_INFO`` as Werkzeug decodes it, without Werkzeug's stripping of leading
    slashes (so ``//admin`` is seen as the non-canonical path it is)."""
    path: str = environ.get("PATH_INFO") or "/"
    if not path.isascii():
        path = path.encode("latin-1", "replace").decode("utf-8", "replace")
    return path


# -- error responses ---------------------------------------------------------------------------------------------------


def error_response(exc: GateDenied, realm: str = "api") -> Response:
    """The contract's JSON error, with an RFC 6750 challenge on a 401."""
    response = Response(json.dumps(exc.to_dict()), status=exc.status_code, mimetype="application/json")
    if isinstance(exc, AuthenticationFailed):
        challenge = f'Bearer realm="{realm}"'
        if exc.credentials_present:
            challenge += f', error="{exc.error}", error_description="{_quotable(exc.description)}"'
        response.headers["WWW-Authenticate"] = challenge
    elif isinstance(exc, RateLimited):
        response.headers.extend(rate_limited_headers(exc))
    response.headers["Cache-Control"] = "no-store"
    return response


def _quotable(text: str) -> str:
    # RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E, so no quote, backslash or non-ASCII.
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "'" if c == '"' else "" for c in text)
