"""flask-jwtgate: an API-authentication gate for Flask REST services."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    AccessDenied,
    AuthenticationFailed,
    ConfigurationError,
    GateDenied,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    JWTGateError,
    RateLimited,
    TemporarilyUnavailable,
)
from .extension import JWTGate, current_identity
from .identity import Identity
from .signals import request_authenticated, request_denied, settings_changed, token_created, token_revoked

try:
    #: The installed distribution's version: one number, kept in pyproject.toml.
    __version__ = version("flask-jwtgate")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "ConfigurationError",
    "GateDenied",
    "Identity",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "JWTGate",
    "JWTGateError",
    "RateLimited",
    "TemporarilyUnavailable",
    "current_identity",
    "request_authenticated",
    "request_denied",
    "settings_changed",
    "token_created",
    "token_revoked",
]
