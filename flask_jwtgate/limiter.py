"""Flask-Limiter's part: building the rate-limit storage from its URI and options, on the app.

The gate counts in Flask-Limiter's storage but makes its decisions itself (``flask_jwtgate.ratelimit``, which never
imports Flask). This module is the one place that touches Flask-Limiter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .ratelimit import LimitStore, SweptMemoryStorage
from .redaction import redact_secrets, redact_uri
from .settings import PREFIX, Settings

if TYPE_CHECKING:
    from flask import Flask
    from flask_limiter import Limiter

logger = logging.getLogger("flask_jwtgate")

#: Redis options the gate sets unless JWTGATE_RATE_LIMIT_STORAGE_OPTIONS does: a hung store must not hang requests.
REDIS_DEFAULTS: Mapping[str, float] = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
_REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+unix"})


def install_limiter(app: Flask, settings: Settings) -> LimitStore | None:
    """Register Flask-Limiter on ``app`` for its storage, and take back its per-request hooks.

    Flask-Limiter's ``init_app`` builds the storage from the URI and options (its part of the job) and registers a
    ``before_request`` (``_check_request_limit``), an ``after_request`` (header injection) and a
    ``teardown_request`` (its per-request context). The gate removes those three and calls the storage itself, right
    after its decision, in ``_gate_request``: so the order is explicit rather than a matter of which extension
    registered its hook first, the key is the verified identity rather than a key function reading request state,
    and the per-request cost is one increment instead of Flask-Limiter's limit resolution, context and header
    machinery (measured here on the example app: about +350 µs a request for that machinery after the gate, against
    about +18 µs for the gate's counting and its three headers; ``tests/bench/bench_gate.py`` has the columns). The
    removal is by identity, so a Flask-Limiter the host registers for its own limits keeps its hooks.

    :returns: ``None`` when Flask-Limiter's own switch ``RATELIMIT_ENABLED`` is off in the app's config.
    :raises ConfigurationError: the storage URI or options cannot be used.
    """
    from flask_limiter import Limiter
    from limits.errors import ConfigurationError as StorageConfigurationError

    uri = settings.rate_limit_storage_uri
    options: dict[str, Any] = dict(settings.rate_limit_storage_options)
    scheme, _, rest = uri.partition("://")
    if scheme in _REDIS_SCHEMES:
        options = {**REDIS_DEFAULTS, **options}
    limiter = Limiter(
        _unused_key,
        storage_uri=f"{SweptMemoryStorage.STORAGE_SCHEME[0]}://{rest}" if scheme == "memory" else uri,
        storage_options=options,
        strategy="fixed-window",
        headers_enabled=False,
        swallow_errors=False,
    )
    try:
        limiter.init_app(app)
    except (StorageConfigurationError, ValueError, TypeError, ImportError) as exc:
        # Not chained: limits quotes the URI whole in its messages ("unknown storage scheme : redis+x://:pw@..."),
        # and a traceback prints the cause; its message comes along here, redacted.
        raise ConfigurationError(
            PREFIX + "RATE_LIMIT_STORAGE_URI",
            f"{redact_uri(uri)!r} with the storage options given cannot be used: {redact_secrets(str(exc), uri)}",
        ) from None
    if not limiter.initialized:
        logger.warning(
            "jwtgate: JWTGATE_RATE_LIMIT is set, but Flask-Limiter is switched off in this app (RATELIMIT_ENABLED is "
            "false), so the gate applies no rate limits"
        )
        return None
    _detach_request_hooks(app, limiter)
    return LimitStore(limiter.storage, uri)


def _unused_key() -> str:
    # Flask-Limiter requires a key function; the gate computes its keys itself (bucket_for) and never calls this.
    raise NotImplementedError


def _bound_to(function: Callable[..., Any], limiter: Limiter) -> bool:
    if isinstance(function, partial):
        return bool(function.args) and function.args[0] is limiter
    return getattr(function, "__self__", None) is limiter


def _detach_request_hooks(app: Flask, limiter: Limiter) -> None:
    for registry in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        functions: list[Any] = registry.get(None, [])
        functions[:] = [function for function in functions if not _bound_to(function, limiter)]
