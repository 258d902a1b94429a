"""The "Test Token" tool: every check the gate would make on a token, in order, and why it passed or failed.

It never decides anything itself. The verdicts come from the gate's own code paths (the same provider routing,
verification, caches and policy as a real request), run on a synthetic request; this module only reads the token's
unverified header and claims to *describe* each step, and marks where the real check stopped. So the tool and the gate
cannot disagree.

It never echoes the token: the report names it by kind, length and a short SHA-256 fingerprint. Values read from the
token (``kid``, ``iss``, ...) are the caller's own and are shown as data, shortened; :func:`render_text` also strips
control characters so that a hostile ``kid`` cannot rewrite a terminal.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import GateDenied, InvalidClaim, TokenExpired
from .identity import Identity
from .policy import PLAIN_VIEW, READ_METHODS, Gatekeeper, View, is_read_only, outside_allowed_groups
from .ratelimit import GateLimiter, StoreUnavailable, bucket_for, failure_bucket, storage_key
from .verification import MAX_TOKEN_LENGTH, split_token

PASS, FAIL, SKIP, INFO = "pass", "fail", "not checked", "info"
_CLAIM_ORDER = ("exp", "nbf", "iat", "iss", "aud")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Refusals that happen before any claim is read: the token as a whole (signature, key, provider) failed.
_SIGNATURE_REASONS = frozenset(
    {
        "alg_none", "alg_not_allowed", "bad_signature", "unsupported_header", "unknown_key", "alg_key_mismatch",
        "missing_kid", "keys_unavailable", "provider_unavailable", "introspection_unavailable", "inactive_token",
        "client_not_allowed",
    }
)
#: The claims that say what kind of token it is (verification.check_access_token), shown on the "token type" step.
_TYPE_CLAIMS = ("typ", "token_use", "token_type")


@dataclass
class Check:
    step: str
    outcome: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"step": self.step, "outcome": self.outcome, "detail": self.detail}


@dataclass
class Report:
    """The tool's answer: ``valid`` (the token), ``allowed`` (the request), and each check in order."""

    token: dict[str, Any]
    request: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    valid: bool = False
    allowed: bool = False
    identity: Identity | None = None
    decision: dict[str, Any] = field(default_factory=dict)

    def add(self, step: str, outcome: str, detail: str) -> None:
        self.checks.append(Check(step, outcome, detail))

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "allowed": self.allowed,
            "decision": self.decision,
            "token": self.token,
            "request": self.request,
            "identity": self.identity.to_dict() if self.identity is not None else None,
            "checks": [check.to_dict() for check in self.checks],
        }


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def token_kind(token: str) -> str:
    if token.startswith("jgt_"):
        return "api_token"
    dots = token.count(".")
    return {2: "jwt", 4: "jwe"}.get(dots, "opaque")


def explain(
    keeper: Gatekeeper,
    token: str,
    *,
    method: str = "GET",
    path: str = "/",
    ip: str | None = None,
    view: View = PLAIN_VIEW,
    limiter: GateLimiter | None = None,
) -> Report:
    """Run ``token`` through the gate as a ``method path`` request from ``ip`` and describe every check.

    :param keeper: the app's current policy object (its caches and providers are the real ones).
    :param view: what the policy knows of the view that ``path`` routes to (public, the gate's own, ...).
    :param limiter: the app's rate limiter, to show the caller's bucket (read, never counted).
    """
    now = keeper.clock()
    method = method.upper()
    report = Report(
        token={
            "kind": token_kind(token),
            "length": len(token),
            "fingerprint": "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:16],
        },
        request={"method": method, "path": path, "ip": ip},
    )
    report.add("token kind", INFO, report.token["kind"])
    identity = _explain_token(keeper, token, report, now)
    report.valid = identity is not None
    report.identity = identity
    _explain_policy(keeper, token, method, path, ip, view, identity, report)
    if limiter is not None and identity is not None:
        report.checks.insert(len(report.checks) - 1, _describe_bucket(limiter, identity, keeper, ip))
    return report


def _describe_bucket(limiter: GateLimiter, identity: Identity, keeper: Gatekeeper, ip: str | None) -> Check:
    """The caller's bucket, and its address's failed-authentication bucket, with their counts (read, not counted)."""
    client = keeper.addresses.resolve(ip or "127.0.0.1", None)
    counted = [(bucket_for(identity, client), limiter.rules.for_identity(identity), "used")]
    if limiter.rules.failures:
        counted.append((failure_bucket(client), limiter.rules.failures, "failed authentications"))
    described = []
    for bucket, rules, what in counted:
        parts = []
        for rule in rules:
            try:
                used = limiter.store.read(storage_key(bucket, rule))
            except StoreUnavailable:  # the circuit breaker: a store that hangs costs the admin no timeout either
                return Check("rate limit", FAIL, "the rate-limit store failed a moment ago and is not asked again yet")
            except Exception:  # the store's failure, whatever its library calls it
                return Check("rate limit", FAIL, f"bucket {bucket}: the rate-limit store cannot be read")
            parts.append(f"{used}/{rule.amount} {what} ({rule.text})")
        described.append(f"bucket {bucket}: " + "; ".join(parts))
    return Check("rate limit", INFO, "; ".join(described))


def _explain_token(keeper: Gatekeeper, token: str, report: Report, now: float) -> Identity | None:
    header: dict[str, Any] = {}
    payload: dict[str, Any] = {}
    kind = report.token["kind"]
    if kind == "jwt" and len(token) <= MAX_TOKEN_LENGTH:
        try:
            header, payload = split_token(token)
        except GateDenied as exc:
            report.add("format", FAIL, exc.description)
        else:
            report.add("format", PASS, "three base64url segments with JSON header and payload")
            shown = " ".join(f"{name}={_show(header.get(name))}" for name in ("alg", "kid", "typ"))
            report.add("header", INFO, shown)
    provider = None
    if kind in ("jwt", "jwe", "opaque"):
        try:
            provider = keeper.providers.route(token)
            if provider is None and payload:  # verified locally: which provider's key would be used
                provider = keeper.providers.jwt.select(payload)
        except GateDenied as exc:
            report.add("provider", FAIL, f"{exc.description} [{exc.reason}]")
        else:
            if provider is not None:
                how = "introspection" if provider.introspection_url else "jwks" if provider.jwks_url else "public key"
                report.add("provider", PASS, f"{provider.name!r} ({how})")
    try:
        identity = keeper.authenticate(f"Bearer {token}")
    except GateDenied as exc:
        verified_locally = kind == "jwt" and provider is not None and provider.introspection_url is None
        _describe_failure(keeper, exc, kind, header, payload, report, now, verified_locally)
        return None
    if kind == "jwt" and identity.auth_method == "jwt":
        report.add("signature", PASS, f"verified with {identity.provider!r}'s key, kid={_show(header.get('kid'))}")
    if identity.auth_method in ("jwt", "introspection"):
        report.add("token type", PASS, _describe_token_type(identity.claims))
    _describe_claims(keeper, identity.provider, payload, report, now, failed=None)
    report.add("username", PASS, repr(identity.username))
    report.add("groups", INFO, _describe_groups(keeper, identity, payload))
    if not identity.groups_complete:
        report.add("groups claim", FAIL, "present but not a list of strings: no group from it, and read-only applies")
    return identity


def _describe_failure(
    keeper: Gatekeeper,
    exc: GateDenied,
    kind: str,
    header: Mapping[str, Any],
    payload: Mapping[str, Any],
    report: Report,
    now: float,
    verified_locally: bool = False,
) -> None:
    if exc.reason == "not_access_token":  # an ID (refresh, ...) token: its signature was good, its kind is not
        if verified_locally:
            report.add("signature", PASS, f"verified, kid={_show(header.get('kid'))}")
        report.add("token type", FAIL, f"{exc.description} [{exc.reason}]")
        report.decision = {"status": exc.status_code, "error": exc.error, "reason": exc.reason}
        return
    claim = exc.claim if isinstance(exc, InvalidClaim) else "exp" if isinstance(exc, TokenExpired) else None
    provider_failed = any(c.step == "provider" and c.outcome == FAIL for c in report.checks)
    if exc.reason in _SIGNATURE_REASONS or claim is None or provider_failed:
        step = "signature" if exc.reason in _SIGNATURE_REASONS and not provider_failed else "token"
        report.add(step, FAIL, f"{exc.description} [{exc.reason}]")
        report.decision = {"status": exc.status_code, "error": exc.error, "reason": exc.reason}
        return
    if kind == "jwt":
        report.add("signature", PASS, f"verified, kid={_show(header.get('kid'))}")
    provider_name = None
    providers = keeper.settings.providers
    if len(providers) == 1:
        provider_name = providers[0].name
    _describe_claims(keeper, provider_name, payload, report, now, failed=(claim, exc))


def _describe_claims(
    keeper: Gatekeeper,
    provider_name: str | None,
    payload: Mapping[str, Any],
    report: Report,
    now: float,
    failed: tuple[str, GateDenied] | None,
) -> None:
    provider = next((p for p in keeper.settings.providers if p.name == provider_name), None)
    leeway = provider.leeway if provider is not None else 60
    reached_failure = False
    for name in (*_CLAIM_ORDER, "username"):
        if reached_failure:
            report.add(name, SKIP, "an earlier check failed")
            continue
        username_claim = provider.username_claim if provider is not None and name == "username" else None
        if failed is not None and failed[0] in (name, username_claim):
            exc = failed[1]
            report.add(name, FAIL, f"{exc.description} [{exc.reason}]")
            report.decision = {"status": exc.status_code, "error": exc.error, "reason": exc.reason}
            reached_failure = True
            continue
        if name == "username":
            continue
        value = payload.get(name)
        if name in ("exp", "nbf", "iat"):
            if value is None:
                report.add(name, PASS if name != "exp" else FAIL, "absent")
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                delta = int(value - now)
                when = f"in {delta} s" if delta >= 0 else f"{-delta} s ago"
                report.add(name, PASS, f"{int(value)} ({when}; leeway {leeway} s)")
            else:
                report.add(name, PASS, _show(value))
        else:
            expected = (provider.issuer if name == "iss" else list(provider.audience)) if provider else None
            report.add(name, PASS, f"{_show(value)} (expected {_show(expected) if expected else 'not configured'})")


def _describe_token_type(claims: Mapping[str, Any]) -> str:
    shown = [f"{name}={_show(claims[name], 40)}" for name in _TYPE_CLAIMS if name in claims]
    if not shown:
        return "an access token (no typ or token_use claim says otherwise)"
    return "an access token: " + ", ".join(shown)


def _describe_groups(keeper: Gatekeeper, identity: Identity, payload: Mapping[str, Any]) -> str:
    provider = next((p for p in keeper.settings.providers if p.name == identity.provider), None)
    from_token: set[str] = set()
    if provider is not None and provider.groups_claim:
        value = payload.get(provider.groups_claim)
        if isinstance(value, (list, tuple)):
            from_token = {g for g in value if isinstance(g, str)}
    parts = []
    for group in sorted(identity.groups):
        source = "token" if group in from_token else "groups_loader"
        parts.append(f"{group} ({source})")
    return ", ".join(parts) if parts else "none"


def _explain_policy(
    keeper: Gatekeeper,
    token: str,
    method: str,
    path: str,
    ip: str | None,
    view: View,
    identity: Identity | None,
    report: Report,
) -> None:
    s = keeper.settings
    route = keeper.route(method, path)
    if view.own:
        report.add("gate's own endpoint", INFO, "always decided by the gate, whatever the switch and path rules say")
    else:
        report.add("gate enabled", PASS if s.enabled else INFO, "on" if s.enabled else "off: the gate does nothing")
        report.add("bypass paths", INFO, "matches: the gate does nothing" if route.bypass else "no match")
        report.add("protected paths", INFO, "matches" if route.protected else "no match: the gate does nothing")
    client = keeper.addresses.resolve(ip or "127.0.0.1", None)
    verdict = "allowed" if client.allowed else "not allowed"
    report.add("ip allowlist", PASS if client.allowed else FAIL, f"{client}: {verdict}")
    public = view.public if view.own else route.public or view.public
    report.add(
        "public paths",
        INFO,
        ("public, but restricted: authentication required" if route.restricted and not view.own else "public")
        if public
        else "not public",
    )
    if identity is not None:
        if s.allowed_groups:
            outside = outside_allowed_groups(s, identity)
            detail = "not a member" if outside else f"member of {sorted(identity.groups & s.allowed_groups)}"
            report.add("allowed groups", FAIL if outside else PASS, detail)
        else:
            report.add("allowed groups", INFO, "not configured")
        if is_read_only(s, identity):
            report.add("read-only groups", PASS if method in READ_METHODS else FAIL, f"read-only caller; {method}")
        else:
            report.add("read-only groups", INFO, "not a read-only caller")
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "REMOTE_ADDR": ip or "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
    }
    try:
        decision = keeper.check(environ, method, path, view)
    except GateDenied as exc:
        report.allowed = False
        report.decision = {"status": exc.status_code, "error": exc.error, "reason": exc.reason}
        report.add("decision", FAIL, f"{exc.status_code} {exc.error}: {exc.description} [{exc.reason}]")
        return
    report.allowed = True
    report.decision = {"status": 200, "reason": "allowed" if decision.identity is not None else "not_gated"}
    report.add("decision", PASS, "allowed" if decision.identity is not None else "allowed: the gate is not involved")


def render_text(report: Report) -> str:
    """The report as plain text for a terminal, control characters removed."""
    lines = [
        f"token: {report.token['kind']}, {report.token['length']} characters, {report.token['fingerprint']}",
        f"request: {report.request['method']} {report.request['path']} from {report.request['ip'] or '127.0.0.1'}",
        "",
    ]
    width = max((len(check.step) for check in report.checks), default=10)
    for check in report.checks:
        lines.append(f"  {check.step:<{width}}  {check.outcome.upper():<12} {check.detail}")
    lines.append("")
    valid, allowed = ("yes" if flag else "no" for flag in (report.valid, report.allowed))
    lines.append(f"token valid: {valid}; request allowed: {allowed}")
    return "\n".join(_CONTROL.sub("?", line) for line in lines)
