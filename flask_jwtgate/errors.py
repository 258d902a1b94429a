"""The one exception hierarchy behind every refusal and every bad setting.

Each class names what failed and carries its HTTP meaning (``status_code`` and the RFC 6750 ``error`` code), a
machine-readable ``reason`` that the audit log and the error JSON share, and a ``description`` safe to show to the
caller: it never contains a token or a secret.
"""

from __future__ import annotations

from typing import Any


class JWTGateError(Exception):
    """Base class of every error the gate raises."""


class ConfigurationError(JWTGateError, ValueError):
    """A ``JWTGATE_*`` setting is invalid; raised at start-up, naming the key and what would be valid."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class GateDenied(JWTGateError):
    """The gate refuses the request; subclasses fix the status and the RFC 6750 error code."""

    status_code: int = 403
    error: str = "access_denied"
    reason: str = "denied"
    #: Set by the policy once known, for the audit log: the resolved client address and, for refusals after
    #: authentication (groups, read-only), who was refused; for a credential refused although recognised (a JWT
    #: whose signature verifies but whose claims do not, a revoked or expired API token), whose it was, with no groups.
    client: Any = None
    identity: Any = None

    def __init__(self, description: str, *, reason: str | None = None, **details: Any) -> None:
        super().__init__(description)
        self.description = description
        if reason is not None:
            self.reason = reason
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of the error response (the contract's shape, plus the reason code)."""
        return {
            "error": self.error,
            "error_description": self.description,
            "status": self.status_code,
            "reason": self.reason,
        }


class AuthenticationFailed(GateDenied):
    """The request carries no usable credentials (401)."""

    status_code = 401
    error = "invalid_token"
    reason = "invalid_token"
    #: Whether the credentials were present at all: RFC 6750 §3.1 says a challenge to a request without any
    #: authentication information carries no error code.
    credentials_present = True


class MissingCredentials(AuthenticationFailed):
    """No Authorization header on a path that needs one."""

    error = "invalid_request"
    reason = "missing_credentials"
    credentials_present = False


class InvalidRequest(AuthenticationFailed):
    """The Authorization header is malformed or uses a scheme the gate does not accept."""

    error = "invalid_request"
    reason = "malformed_credentials"


class InvalidToken(AuthenticationFailed):
    """The token is malformed, forged, expired, or fails a claim check."""


class TokenExpired(InvalidToken):
    """The token's ``exp`` (plus leeway) has passed."""

    reason = "expired"


class InvalidSignature(InvalidToken):
    """The signature does not verify with the provider's key."""

    reason = "bad_signature"


class InvalidClaim(InvalidToken):
    """A claim is missing, of the wrong type, or has the wrong value."""

    reason = "invalid_claim"

    def __init__(self, description: str, *, claim: str, reason: str | None = None) -> None:
        super().__init__(description, reason=reason, claim=claim)
        self.claim = claim


class AccessDenied(GateDenied):
    """Authenticated (or not needed), but a policy rule refuses the request (403)."""


class InsufficientScope(GateDenied):
    """The caller may read but not write (403 ``insufficient_scope``)."""

    error = "insufficient_scope"
    reason = "read_only"


class TemporarilyUnavailable(GateDenied):
    """A provider's keys or introspection endpoint cannot be reached and nothing cached can serve (503)."""

    status_code = 503
    error = "temporarily_unavailable"
    reason = "provider_unavailable"


class RateLimited(GateDenied):
    """The caller has used up a rate limit (429): its token's, or its address's limit on failed authentication.

    :param limit: the number of requests the exhausted window allows.
    :param retry_after: whole seconds until that window resets (the ``Retry-After`` header).
    """

    status_code = 429
    error = "too_many_requests"
    reason = "rate_limited"

    def __init__(self, description: str, *, limit: int, retry_after: int, reason: str | None = None) -> None:
        super().__init__(description, reason=reason, limit=limit, retry_after=retry_after)
        self.limit = limit
        self.retry_after = retry_after


class InvalidParameter(GateDenied):
    """A query parameter or body field sent to one of the gate's own endpoints is invalid (400).

    :param parameter: the name of the parameter, as the caller sent it.
    """

    status_code = 400
    error = "invalid_request"
    reason = "invalid_parameter"

    def __init__(self, parameter: str, description: str) -> None:
        super().__init__(description, parameter=parameter)
        self.parameter = parameter

    def to_dict(self) -> dict[str, Any]:
        """The error body, naming the parameter (a client such as the console shows the error next to it)."""
        return {**super().to_dict(), "parameter": self.parameter}


class Conflict(GateDenied):
    """The operation is already under way elsewhere, e.g. another process is pruning the audit log (409)."""

    status_code = 409
    error = "conflict"
    reason = "conflict"
