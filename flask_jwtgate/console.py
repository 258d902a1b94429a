"""The admin console at ``{prefix}/admin/``, and the two admin endpoints only it needs: provider status and the lint.

Threat model. The console is a page, its redirect and two static files, served to anyone who may reach the gate's
own endpoints (the IP allowlist and the failed-authentication limit still apply): they are the only views under the
prefix the gate marks public (:data:`~flask_jwtgate.state.PUBLIC_ATTRIBUTE`), and they carry no data at all, not even a
setting's value. Everything the console shows comes from the admin API, which it calls with the admin's token as a
bearer token; the token lives in the tab's ``sessionStorage``, never in a cookie, so there is no ambient credential
and no cross-site request forgery to defend against, and a closed tab forgets it. What the API returns is written into
the page as text (``textContent``), never as markup, and the Content-Security-Policy below lets no inline script or
style, no other origin and no Trusted-Types-less DOM sink run, so a hostile value in a setting, a token name or an
audit record stays text.

- ``GET {prefix}/admin/``: the page (public); ``GET {prefix}/admin`` redirects there (public).
- ``GET {prefix}/admin/static/<name>``: its script and style sheet (public); nothing else is served there.
- ``GET {prefix}/admin/providers``: each provider's keys and the state of its JWKS or introspection client (admins).
- ``GET {prefix}/admin/lint``: settings that are legal but probably wrong (``flask_jwtgate.lint``; admins).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for

from .keys import describe_key
from .lint import Finding, lint, rule_pattern
from .redaction import redact_uri
from .settings import DEFAULTS, PREFIX, RESTART_ONLY, ProviderSettings
from .state import BLUEPRINT_NAME, PUBLIC_ATTRIBUTE, GateState
from .views import guarded, no_store, require_admin

#: The console's Content-Security-Policy: its own script and style sheet only, no inline script or style, no frame,
#: no form submission (the script sends everything through fetch), and DOM sinks refused unless Trusted (none is).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'; "
    "trusted-types 'none'"
)
#: The headers of every console response (the page and its static files).
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: The static files, by name: nothing else is served (no path is ever joined from the request).
STATIC_FILES = {"console.js": "text/javascript", "console.css": "text/css", "favicon.svg": "image/svg+xml"}
#: The console's endpoints that are public (the page and its static files), under the gate's blueprint.
PUBLIC_ENDPOINTS = frozenset(
    {f"{BLUEPRINT_NAME}.console", f"{BLUEPRINT_NAME}.console_without_slash", f"{BLUEPRINT_NAME}.console_static"}
)


@dataclass(frozen=True)
class Field:
    """One setting on a console page.

    :param name: the key without ``JWTGATE_``.
    :param label: what the admin reads (the original app's wording where it has one).
    :param kind: the control: ``bool``, ``lines`` (a list, one item a line), ``text``, ``textarea``, ``number``,
        ``json``, ``secret`` or ``tristate`` (unset, true or false).
    :param help: one sentence on what it does.
    """

    name: str
    label: str
    kind: str
    help: str = ""

    @property
    def key(self) -> str:
        return PREFIX + self.name

    @property
    def restart_only(self) -> bool:
        return self.name in RESTART_ONLY

    @property
    def empty(self) -> str:
        """What an emptied control sends: ``null``, or for a list whose default is a list, ``[]``."""
        return "list" if self.kind == "lines" and DEFAULTS[self.name] is not None else "null"


@dataclass(frozen=True)
class Page:
    """One page (tab) of the console: its settings and the panel its script fills in, if any."""

    id: str
    title: str
    intro: str
    fields: tuple[Field, ...] = ()
    panel: str | None = None


PAGES = (
    Page(
        "providers",
        "Providers and keys",
        "Where tokens come from and how they are checked: a public key (PEM), a JWKS endpoint, or the provider's "
        "introspection endpoint. The status below is this process's view of each provider's keys.",
        (
            Field("PROVIDERS", "Providers", "json", "A list of provider objects; client secrets are shown masked, "
                  "and sending the mask back keeps the secret."),
            Field("PROVIDER_NAME", "Provider name (single provider)", "text", "For readability only."),
            Field("PUBLIC_KEY", "Public key (PEM)", "textarea", "-----BEGIN PUBLIC KEY----- ..."),
            Field("PUBLIC_KEY_FILE", "Public key file", "text", "A PEM file on every host that runs the app."),
            Field("JWKS_URL", "JWKS URL", "text", "The provider's JSON Web Key Set."),
            Field("INTROSPECTION_URL", "Introspection URL", "text", "RFC 7662: the provider says whether a token is "
                  "active."),
            Field("INTROSPECTION_CLIENT_ID", "Introspection client id", "text"),
            Field("INTROSPECTION_CLIENT_SECRET", "Introspection client secret", "secret", "Never shown; leave the "
                  "mask to keep it."),
            Field("ALGORITHMS", "Algorithms", "lines", "One a line, e.g. RS256; empty: from the key's type."),
            Field("ISSUER", "Issuer", "text", "The iss every token must carry."),
            Field("AUDIENCE", "Audience", "lines", "One a line: a token must carry one of them in aud."),
            Field("USERNAME_CLAIM", "Username attribute", "text", "The claim that holds the username, e.g. sub."),
            Field("GROUPS_CLAIM", "Groups attribute", "text", "The claim that holds the groups."),
            Field("LEEWAY", "Leeway (seconds)", "number", "Clock skew allowed on exp, nbf and iat."),
        ),
        panel="providers",
    ),
    Page(
        "test-token",
        "Test Token",
        "Paste a token to see every check the gate would make on it for one request, in order, and the decision. "
        "The token is not stored or logged.",
        panel="test-token",
    ),
    Page(
        "access",
        "Groups and IP",
        "Who may call the API (groups), who may only read (GET, HEAD, OPTIONS), who may make tokens, and from where.",
        (
            Field("ALLOWED_GROUPS", "Allow API access to groups", "lines", "One a line; empty: every authenticated "
                  "user."),
            Field("READ_ONLY_GROUPS", "Read-only groups", "lines", "Members may only use GET, HEAD and OPTIONS."),
            Field("TOKEN_CREATOR_GROUPS", "Allow token generation to groups", "lines", "Empty: see the global "
                  "toggle."),
            Field("ADMIN_GROUPS", "Admin groups", "lines", "May use this console and the admin API."),
            Field("IP_ALLOWLIST", "Restrict access to API by IP address", "lines", "Addresses or CIDR ranges, one "
                  "a line; empty: any address."),
            Field("PROXY_HEADER", "Reverse proxy compatibility: header", "text", "e.g. X-Forwarded-For or "
                  "Forwarded; believed only from the trusted proxies."),
            Field("TRUSTED_PROXIES", "Trusted proxies", "lines", "The proxies' addresses or ranges, one a line."),
        ),
    ),
    Page(
        "paths",
        "Paths",
        "Which paths the gate guards, which are public, which public ones still need a token, and which the gate "
        "leaves to the host's own authentication. Patterns: * one segment, ** any; an optional method first.",
        (
            Field("PROTECTED_PATHS", "Protected paths (the API)", "lines"),
            Field("PUBLIC_PATHS", "Public paths", "lines", "Open to anonymous callers."),
            Field("RESTRICTED_PUBLIC_PATHS", "Restrict access to public APIs", "lines", "Public paths on which a "
                  "token is required all the same; ** for all."),
            Field("BYPASS_PATHS", "Bypass API authentication", "lines", "The gate does not touch these at all."),
        ),
    ),
    Page(
        "global",
        "Global settings",
        "The switches of the original app's global settings.",
        (
            Field("ENABLED", "Enable REST API authentication", "bool", "Off: the gate does nothing on the API (its "
                  "own endpoints, this console included, stay guarded)."),
            Field("DISABLE_BASIC_AUTH", "Disable Basic authentication", "bool"),
            Field("ACCEPT_JWT", "Accept OAuth 2.0 tokens (JWT and introspection)", "bool"),
            Field("ACCEPT_API_TOKENS", "Accept the gate's API tokens", "bool"),
            Field("ACCEPT_PATS", "Allow personal access tokens", "bool"),
            Field("ALLOW_USER_TOKEN_CREATION", "Allow users to create tokens", "bool", "Off: only admins and the "
                  "token-generation groups."),
            Field("ALLOW_CORS_PREFLIGHT", "Let CORS preflights through", "bool"),
        ),
    ),
    Page(
        "rate-limits",
        "Rate limiting",
        "How many requests each token may make in a time frame, and how many failed attempts an address may make.",
        (
            Field("RATE_LIMIT", "Rate limit per token", "text", "e.g. 100/minute or 10/second;1000/hour; empty: off."),
            Field("RATE_LIMIT_GROUPS", "Limits per group", "json", "e.g. {\"service-accounts\": \"1000/minute\"}."),
            Field("AUTH_FAILURE_LIMIT", "Failed authentications per address", "text", "e.g. 20/minute; empty: off."),
            Field(
                "RATE_LIMIT_IPV6_PREFIX",
                "IPv6 clients counted per network of this prefix",
                "number",
                "64: one /64 (a customer's usual allocation) is one client; 128: every address.",
            ),
            Field("RATE_LIMIT_FAIL_OPEN", "Let requests through when the store is down", "bool"),
            Field("RATE_LIMIT_STORAGE_URI", "Storage", "text"),
            Field("RATE_LIMIT_STORAGE_OPTIONS", "Storage options", "json"),
        ),
    ),
    Page(
        "audit",
        "Audit logs",
        "Every request the gate handles, allowed or denied, and every change made here.",
        (
            Field("AUDIT_ENABLED", "Enable audit logs", "bool"),
            Field("AUDIT_RETENTION_DAYS", "Delete records older than (days)", "number", "Empty: keep."),
            Field("AUDIT_MAX_ENTRIES", "Keep at most (records)", "number", "Empty: no cap."),
            Field("AUDIT_PRUNE_INTERVAL", "Scheduler: seconds between prunes", "number", "0: only by hand."),
            Field("AUDIT_PRUNE_CHUNK_SIZE", "Rows deleted per transaction", "number"),
            Field("AUDIT_SYNC", "Write synchronously", "tristate"),
            Field("AUDIT_QUEUE_SIZE", "Queue size", "number"),
            Field("AUDIT_BATCH_SIZE", "Batch size", "number"),
            Field("AUDIT_FLUSH_INTERVAL", "Flush interval (seconds)", "number"),
            Field("AUDIT_SPOOL_DIR", "Spool folder", "text"),
            Field("AUDIT_SPOOL_MAX_BYTES", "Spool size limit (bytes)", "number"),
        ),
        panel="audit",
    ),
    Page(
        "tokens",
        "API tokens",
        "Tokens the gate issues: yours and everyone's. A new token's secret is shown once.",
        panel="tokens",
    ),
    Page(
        "history",
        "History and checks",
        "Every version of the run-time settings, which version each process runs, and settings that are legal but "
        "probably wrong.",
        (
            Field("RUNTIME_SETTINGS", "Run-time settings", "bool"),
            Field("URL_PREFIX", "URL prefix", "text"),
            Field("DATABASE_URI", "Database", "text"),
        ),
        panel="history",
    ),
)


_environment: jinja2.Environment | None = None


def _templates() -> jinja2.Environment:
    """The console's own template environment: the package's templates only (a host's template folder cannot
    replace them), everything escaped."""
    global _environment
    if _environment is None:
        _environment = jinja2.Environment(
            loader=jinja2.PackageLoader("flask_jwtgate", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
    return _environment


_static: dict[str, bytes] = {}


def _static_file(name: str) -> bytes:
    data = _static.get(name)
    if data is None:
        data = _static[name] = resources.files("flask_jwtgate").joinpath("static", name).read_bytes()
    return data


def secured(response: Response) -> Response:
    """The console's security headers on ``response``."""
    response.headers.update(SECURITY_HEADERS)
    return response


def lint_app(app: Flask, state: GateState, *, multiprocess: bool | None = None) -> list[Finding]:
    """The lint of ``app``'s settings in force, with its ``@gate.public`` views and the server's ``WEB_CONCURRENCY``."""
    own = BLUEPRINT_NAME + "."
    public_views = [
        rule_pattern(rule.rule, rule.methods)
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.startswith(own) and getattr(app.view_functions.get(rule.endpoint), PUBLIC_ATTRIBUTE, False)
    ]
    return lint(
        state.settings,
        public_views=public_views,
        multiprocess=multiprocess,
        web_concurrency=os.environ.get("WEB_CONCURRENCY"),
    )


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def provider_status(state: GateState, provider: ProviderSettings) -> dict[str, Any]:
    """One provider as the console shows it: how its tokens are checked and its key status in this process; never
    its client secret."""
    kind = "introspection" if provider.introspection_url else "jwks" if provider.jwks_url else "public_key"
    entry: dict[str, Any] = {
        "name": provider.name,
        "kind": kind,
        "algorithms": list(provider.algorithms),
        "issuer": provider.issuer,
        "audience": list(provider.audience),
        "username_claim": provider.username_claim,
        "groups_claim": provider.groups_claim,
        "leeway": provider.leeway,
        "cache_ttl": provider.cache_ttl,
        "directory_users": provider.directory_users,
    }
    now = state.clock()
    if provider.public_key is not None:
        entry["key"] = describe_key(provider.public_key)
    elif provider.jwks_url is not None:
        jwks = state.provider_clients.jwks.peek(provider)
        if jwks is None:
            entry["jwks"] = {"url": redact_uri(provider.jwks_url), "state": "not fetched yet", "keys": []}
        else:
            status = jwks.status()
            fresh, served = status["fresh_until"], status["served_until"]
            status["state"] = (
                "not fetched yet"
                if fresh is None
                else "fresh"
                if now < fresh
                else "stale (refreshing; still served)"
                if now < served
                else "expired"
            )
            for name in ("fetched_at", "fresh_until", "served_until"):
                status[name] = _iso(status[name])
            entry["jwks"] = status
    else:
        assert provider.introspection_url is not None
        client = state.provider_clients.introspection.peek(provider)
        status = (
            client.status()
            if client is not None
            else {"url": redact_uri(provider.introspection_url), "client_id": provider.client_id, "calls": 0}
        )
        status["last_call_at"] = _iso(status.get("last_call_at"))
        entry["introspection"] = status
    return entry


def install(bp: Blueprint, state: GateState) -> None:
    """Add the console and its endpoints to the gate's blueprint."""

    def console() -> Response:
        html = _templates().get_template("jwtgate/console.html").render(
            api=state.settings.url_prefix, pages=PAGES, static=state.settings.url_prefix + "/admin/static/"
        )
        return secured(Response(html, mimetype="text/html"))

    def console_static(name: str) -> Response:
        mimetype = STATIC_FILES.get(name)
        if mimetype is None:
            return secured(Response("not found\n", status=404, mimetype="text/plain"))
        return secured(Response(_static_file(name), mimetype=mimetype))

    def console_without_slash() -> Response:
        # What a browser is given when the slash is left off: the page, where Flask's own redirect would come only
        # after the gate had asked for credentials that a browser does not send.
        return secured(Response(status=308, headers={"Location": url_for(f"{BLUEPRINT_NAME}.console")}))

    # The only public views under the prefix: the policy lets anonymous callers reach them (after the IP allowlist
    # and the failed-authentication limit), and nothing they answer depends on who asks.
    public: Callable[..., Any]
    for public in (console, console_without_slash, console_static):
        setattr(public, PUBLIC_ATTRIBUTE, True)

    @guarded
    def providers() -> Response:
        require_admin(state)
        return no_store(jsonify(providers=[provider_status(state, p) for p in state.settings.providers]))

    @guarded
    def lint_view() -> Response:
        require_admin(state)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        findings = lint_app(app, state, multiprocess=bool(request.environ.get("wsgi.multiprocess")))
        return no_store(jsonify(findings=[finding.to_dict() for finding in findings]))

    bp.add_url_rule("/admin/", view_func=console, endpoint="console", methods=["GET"])
    bp.add_url_rule("/admin", view_func=console_without_slash, endpoint="console_without_slash", methods=["GET"])
    bp.add_url_rule("/admin/static/<name>", view_func=console_static, endpoint="console_static", methods=["GET"])
    bp.add_url_rule("/admin/providers", view_func=providers, methods=["GET"])
    bp.add_url_rule("/admin/lint", view_func=lint_view, endpoint="lint", methods=["GET"])
