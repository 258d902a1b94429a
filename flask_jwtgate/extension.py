"""The Flask layer: ``JWTGate`` turns a request into the policy's inputs and a decision into a response."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, g, request

from . import signals
from .api_tokens import ApiTokenStore
from .audit import install as install_audit
from .cli import cli
from .console import install as install_console
from .errors import GateDenied, TemporarilyUnavailable
from .limiter import install_limiter
from .policy import HostHooks
from .ratelimit import Quota
from .revisions import Revisions
from .runtime import RuntimeSettings, secret_key_of
from .settings import DEFAULTS, Settings
from .settings_views import add_settings_views
from .state import (
    EXTENSION_KEY,
    PUBLIC_ATTRIBUTE,
    GateState,
    current_identity,
    error_response,
    request_path,
    state_of,
)
from .token_views import install as install_token_views
from .views import add_audit_views, make_blueprint

__all__ = ["JWTGate", "current_identity"]

F = TypeVar("F", bound=Callable[..., Any])

_OPTION_NAMES = frozenset(name.lower() for name in DEFAULTS)


class JWTGate:
    """The API-authentication gate for a Flask app.

    :param app: the app to protect now; or call :meth:`init_app` later (app factories, several apps per process).
    :param db: the host's Flask-SQLAlchemy instance, shared for the gate's tables; without it the gate makes its own.
    :param clock: the current time in seconds, for token expiry and caches; tests pass a controllable one.
    :param options: any ``JWTGATE_*`` setting, lower case without the prefix; it overrides the app's config.

    ::

        app = Flask(__name__)
        app.config["JWTGATE_PUBLIC_KEY_FILE"] = "idp-public.pem"
        gate = JWTGate(app, read_only_groups=["viewers"])

        @gate.groups_loader
        def groups(username):
            return directory.groups_of(username)

        @app.get("/status")
        @gate.public
        def status():
            return {"ok": True}
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: Any = None,
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise TypeError(f"JWTGate() got unknown options {sorted(unknown)}; valid: {sorted(_OPTION_NAMES)}")
        self.db = db
        self.clock = clock
        self.options = options
        self.hooks = HostHooks()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and validate the settings, and install the gate on ``app``.

        :raises ConfigurationError: a setting is invalid; the message names the key.
        """
        existing = app.extensions.get(EXTENSION_KEY)
        if existing is not None:
            if existing.gate is self:
                return
            raise RuntimeError(
                "A 'JWTGate' instance has already been registered on this Flask app. Import and use that instance "
                "instead."
            )
        settings = Settings.from_mapping(app.config, self.options)
        # With run-time settings an admin may switch rate limiting on later: the storage is built now either way.
        limit_store = (
            install_limiter(app, settings) if settings.rate_limit is not None or settings.runtime_settings else None
        )
        state = GateState(self.hooks, self.clock, settings, limit_store, gate=self, app=app)
        app.extensions[EXTENSION_KEY] = state

        def gate_request() -> Response | None:
            return _gate_request(app, state)

        # The gate runs before every other before_request function, the host's included, so that anything that
        # reads current_identity sees it. The rate limiter is not a hook of its own: _gate_request calls it right
        # after the decision, so it keys on the verified identity (install_limiter removed Flask-Limiter's hooks).
        app.before_request_funcs.setdefault(None, []).insert(0, gate_request)

        audit = install_audit(app, state, self.db)
        capture = audit.capture
        # One after_request function, registered here, before the host's own: they run in reverse order, so this one
        # runs last and the audit log records the status the caller actually gets. The rate-limit headers go in the
        # same function, first: Flask's cost per hook is more than the work of either.
        if limit_store is not None:

            def after_request(response: Response) -> Response:
                return capture(_add_rate_limit_headers(response))

            app.after_request(after_request)
        else:
            app.after_request(capture)
        database = state.database
        assert database is not None  # made by install_audit, shared by the audit log, the tokens and the settings
        state.revisions = Revisions(database, clock=self.clock)
        state.api_tokens = ApiTokenStore(database, clock=self.clock, revisions=state.revisions)
        state.runtime = RuntimeSettings(
            database=database,
            revisions=state.revisions,
            base=settings.raw,
            enabled=settings.runtime_settings,
            apply=state.take,
            check=state.check_usable,
            secret_key=secret_key_of(app.config),
            clock=self.clock,
        )
        state.runtime.load()
        blueprint = make_blueprint(state)
        add_audit_views(blueprint, state)
        install_token_views(blueprint, state)
        add_settings_views(blueprint, state)
        install_console(blueprint, state)
        app.register_blueprint(blueprint)
        app.cli.add_command(cli)

    # -- the host's hooks -------------------------------------------------------------------------------------------

    def groups_loader(self, loader: F) -> F:
        """Register ``loader(username)`` or ``loader(username, provider)`` -> iterable of group names, merged with the
        credential's own groups.

        It is asked for the host directory's users: those of PATs and Basic credentials (``provider`` ``None``), and
        those of a provider whose ``directory_users`` is true (the default with a single provider).
        """
        self.hooks.set_groups_loader(loader)
        return loader

    def pat_validator(self, validator: F) -> F:
        """Register ``validator(token) -> username or None`` for the host's personal access tokens."""
        self.hooks.pat_validator = validator
        return validator

    def basic_auth_validator(self, validator: F) -> F:
        """Register ``validator(username, password) -> bool``, the host's own password check."""
        self.hooks.basic_auth_validator = validator
        return validator

    @staticmethod
    def public(view: F) -> F:
        """Mark a view as open to anonymous callers (unless an admin restricts it with a restricted-public path)."""
        setattr(view, PUBLIC_ATTRIBUTE, True)
        return view

    # -- per-app access ---------------------------------------------------------------------------------------------

    @staticmethod
    def settings(app: Flask | None = None) -> Settings:
        """The settings in force for ``app`` (default: the current app)."""
        return state_of(app).settings


def _gate_request(app: Flask, state: GateState) -> Response | None:
    # One proxy lookup each for the request and g: this runs on every request. Values go straight into g's __dict__
    # (what `g.name = value` does, without the Python-level __setattr__ call).
    started = time.perf_counter()  # the audit record's latency runs from here
    req = request._get_current_object()  # type: ignore[attr-defined]
    values = g._get_current_object().__dict__
    environ = req.environ
    rule = req.url_rule
    method = req.method
    path = request_path(environ)
    # What the audit record takes from the request, kept so that it need not look it up again.
    values["_jwtgate_request"] = (started, req, path)
    endpoint = rule.endpoint if rule is not None else None
    view = state.views.get(endpoint)
    if view is None:
        view = state.view_of(app, endpoint)
    if method == "OPTIONS" and getattr(rule, "provide_automatic_options", False):
        view = view._replace(automatic_options=True)  # Flask itself answers this OPTIONS
    revisions = state.revisions
    if state.clock() >= revisions.due:  # at most once a second: has an admin changed the settings, or a token?
        revisions.check()
    limiter = state.limiter
    try:
        if state.runtime.version is None:
            raise TemporarilyUnavailable(
                "the gate's run-time settings cannot be read yet; retry shortly", reason="settings_unavailable"
            )
        if limiter is not None:
            # An address this process knows to be over its failed-authentication limit is refused before any
            # verification (no round trip: the store's answers below are what enforce the limit).
            limiter.precheck(environ, method, path, state.keeper, view)
        try:
            decision = state.keeper.check(environ, method, path, view)
        except GateDenied as exc:
            # The policy refused: a refused authentication is counted against its address, and an address over its
            # failure limit gets the same 429 whatever its credentials were (one call to the store).
            if limiter is None:
                raise
            raise limiter.refused(exc, environ)  # noqa: B904  # exc itself, or the answer that replaces it
        if limiter is not None and decision.identity is not None:
            # After the decision, never before: the bucket is the verified identity's (flask_jwtgate.ratelimit). The
            # same call to the store checks the address's failure limit for a request with credentials.
            values["_jwtgate_quota"] = limiter.hit(decision)
    except GateDenied as exc:
        values["_jwtgate_denied"] = exc
        if signals.request_denied.receivers:
            signals.request_denied.send(app, error=exc)
        return error_response(exc)
    values["_jwtgate_decision"] = decision
    if decision.identity is not None:
        values["_jwtgate_identity"] = decision.identity
        if signals.request_authenticated.receivers:
            signals.request_authenticated.send(app, identity=decision.identity)
    return None


def _add_rate_limit_headers(response: Response) -> Response:
    """The ``RateLimit-*`` fields on every response to a request the limiter counted."""
    # Not g.get() (a proxied method lookup) nor getattr(g, ...) (a missing name raises and catches AttributeError in
    # g's __getattr__): a plain dict read.
    quota: Quota | None = g._get_current_object().__dict__.get("_jwtgate_quota")
    if quota is not None:
        add = response.headers.add
        add("RateLimit-Limit", str(quota.limit))
        add("RateLimit-Remaining", str(quota.remaining))
        add("RateLimit-Reset", str(quota.reset))
    return response
