"""The gate agrees with a small reference model of the README's rule order, over generated settings and requests.

The model (:func:`expected`) is plain Python written from the README ("How a request is decided", "Security model",
"API tokens, personal access tokens and Basic") and ``flask_jwtgate.policy``'s docstring, and calls nothing of the
package. It knows the request vocabulary below by heart: which view Flask routes each method and path to, and which
paths another layer may read in each non-canonical spelling (the README's readings, listed by hand). Path patterns
are matched by ``tests/path_reference.py``, the regular-expression matcher the gate used before its own was
rewritten.

Hypothesis generates a configuration (the master switch; protected, public, restricted-public and bypass paths;
allowed and read-only groups; an IP allowlist; a proxy header with its trusted proxies; the credential switches and
validators; the CORS switch; whether the partner provider's users are the directory's) and a few requests (method,
method overrides, a CORS preflight, path, peer address, ``X-Forwarded-For`` and ``Forwarded`` chains, and a
credential: JWTs of two providers with various groups, a malformed groups claim, expired, forged, for another
audience; gate-issued API tokens, of a read-only maker among them, and a revoked one; host PATs; Basic; malformed
headers; none). A real app is built for each configuration, and for each request the gate's answer (status, reason,
which view ran, and who the view saw) must be the model's.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from conftest import Clock
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from path_reference import exact_match, tight_match

from flask_jwtgate import GateDenied, JWTGate, current_identity, request_denied
from flask_jwtgate.testing import KeyPair

NOW = 1_800_000_000.0
CORP_ISSUER = "https://corp.example"
PARTNER_ISSUER = "https://partner.example"
CORP_AUDIENCE = "my-api"
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
WRITE_METHODS = ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"]
METHODS = ["GET", "HEAD", "OPTIONS", *WRITE_METHODS]
#: The host's user directory (the groups_loader's answer), and its Basic passwords.
DIRECTORY = {"alice": {"ops"}, "bob": set(), "carol": {"viewers"}, "mallory": set(), "erin": {"ops", "devs"}}
PASSWORDS = {user: f"pw-{user}" for user in DIRECTORY}

# -- the routes of the app under test, as the model knows them -------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """A URL rule of the app: its endpoint, its methods (HEAD goes with GET; OPTIONS is Flask's unless listed)."""

    endpoint: str
    methods: frozenset[str]
    public: bool = False  # @gate.public
    own: bool = False  # one of the gate's own endpoints

    def allows(self, method: str) -> bool:
        return method in self.methods or (method == "HEAD" and "GET" in self.methods) or method == "OPTIONS"

    def flask_answers_options(self) -> bool:
        return "OPTIONS" not in self.methods


API_METHODS = frozenset({"GET", *WRITE_METHODS})
#: path -> the rules that route it (one or two: the gate's tokens endpoint is two rules, GET and POST).
ROUTES: dict[str, list[Route]] = {
    "/api/items": [Route("items", API_METHODS)],
    "/api/items/7": [Route("item", API_METHODS)],
    "/api/status": [Route("status", frozenset({"GET"}), public=True)],
    "/api/cors": [Route("cors", frozenset({"GET", "OPTIONS"}))],  # a view that answers OPTIONS itself
    "/pub/docs": [Route("docs", frozenset({"GET", "POST"}))],
    "/health": [Route("health", frozenset({"GET"}))],
    "/jwtgate/whoami": [Route("jwtgate.whoami", frozenset({"GET"}), own=True)],
    "/jwtgate/tokens": [
        Route("jwtgate.list_tokens", frozenset({"GET"}), own=True),
        Route("jwtgate.create_token", frozenset({"POST"}), own=True),
    ],
}
#: Werkzeug merges repeated slashes by redirecting (308) to the merged path, where a rule there takes the method.
REDIRECTS = {"/api//items": "/api/items", "/jwtgate//whoami": "/jwtgate/whoami"}
#: What another layer may read in each non-canonical spelling besides itself (README, "Security model", Paths): decoded
#: once more, ``\\`` as ``/``, ``;params`` dropped, ``//`` merged, dot segments resolved, the trailing slash dropped.
#: Case is the matcher's business (tightening rules match in any case).
OTHER_READINGS = {
    "/api//items": {"/api/items"},
    "/api/./items": {"/api/items"},
    "/pub/../api/items": {"/api/items"},
    "/api/items/": {"/api/items"},
    "/api\\items": {"/api/items"},
    "/api/items/%37": {"/api/items/7"},
    "/pub/docs;x": {"/pub/docs"},
    "/jwtgate//whoami": {"/jwtgate/whoami"},
}
#: What the client sends for a PATH_INFO that the test client would otherwise decode.
SENT_AS = {"/api/items/%37": "/api/items/%2537"}
PATHS = [*ROUTES, *ROUTES, "/nothing", "/API/items", "/JWTGATE/whoami", *OTHER_READINGS]


def routed(method: str, path: str) -> Route | None:
    """The rule Flask runs for ``method path`` (``None``: a 404, 405 or redirect, which no view of the app handles)."""
    return next((r for r in ROUTES.get(path, []) if r.allows(method)), None)


def flask_status(method: str, path: str) -> int:
    """What Flask answers where no view runs."""
    if path in REDIRECTS:
        return 308 if routed(method, REDIRECTS[path]) is not None else 405
    if path in ROUTES:
        return 405
    return 404


def canonical(path: str) -> bool:
    """README: no ``//``, no ``.`` or ``..`` segment, no ``%``, ``\\`` or control characters."""
    return (
        "//" not in path
        and not {".", ".."} & set(path.split("/"))
        and not any(c in path for c in "%\\")
        and all(" " < c != "\x7f" for c in path)
    )


def loosens(patterns: list[str], method: str, path: str) -> bool:
    """Bypass and public rules: the canonical spelling only, exactly and case-sensitively."""
    return canonical(path) and any(exact_match(p, method, path) for p in patterns)


def tightens(patterns: list[str], method: str, path: str) -> bool:
    """Protected and restricted-public rules: any reading, in any case."""
    spellings = {path, *OTHER_READINGS.get(path, ())}
    return any(tight_match(p, method, s) for p in patterns for s in spellings)


# -- addresses --------------------------------------------------------------------------------------------------------

TRUSTED = ["10.0.0.0/8", "2001:db8:ffff::/48"]
PEERS = [
    "203.0.113.5", "203.0.113.5", "203.0.113.5", "10.0.0.1", "10.9.9.9", "2001:db8::1", "::ffff:203.0.113.5",
    "2001:db8:ffff::1", "127.0.0.1",
]  # fmt: skip
#: Each header value with its hops, left to right, as the README says they are read (``None``: not an address, or
#: a malformed hop, which makes the client unknown if the resolution reaches it).
XFF_HOPS: dict[str | None, list[str | None]] = {
    None: [],
    "198.51.100.7": ["198.51.100.7"],
    "198.51.100.7, 10.0.0.2": ["198.51.100.7", "10.0.0.2"],
    "203.0.113.9, 198.51.100.7": ["203.0.113.9", "198.51.100.7"],
    "bogus": [None],
    "bogus, 198.51.100.7": [None, "198.51.100.7"],
    "198.51.100.7, bogus, 10.0.0.2": ["198.51.100.7", None, "10.0.0.2"],
    "10.0.0.2, 10.0.0.3": ["10.0.0.2", "10.0.0.3"],
    "[2001:db8::5]:443": ["2001:db8::5"],
    "198.51.100.7:8080": ["198.51.100.7"],
    "::ffff:198.51.100.7": ["198.51.100.7"],
}
FORWARDED_HOPS: dict[str | None, list[str | None]] = {
    None: [],
    "for=198.51.100.7": ["198.51.100.7"],
    'for="[2001:db8::5]:4711"': ["2001:db8::5"],
    "for=198.51.100.7;proto=https, for=10.0.0.2": ["198.51.100.7", "10.0.0.2"],
    "For=203.0.113.9, for=198.51.100.7": ["203.0.113.9", "198.51.100.7"],
    "for=unknown": [None],
    "for=_hidden, for=198.51.100.7": [None, "198.51.100.7"],
    'for="198.51.100.7': [None],  # a quoted string left open: the whole header is unreadable
    "for=2001:db8::5": [None],  # IPv6 must be quoted and bracketed
    "by=10.0.0.2": [None],  # an element without for=
    "for=10.0.0.2;for=10.0.0.3": [None],  # for= twice in one element
}


def address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    parsed = ipaddress.ip_address(text)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped  # README: IPv4-mapped IPv6 addresses are normalised
    return parsed


def inside(text: str | None, networks: list[str]) -> bool:
    return text is not None and any(address(text) in ipaddress.ip_network(n) for n in networks)


def client_address(config: Config, call: Call) -> str | None:
    """README: the peer, unless it is a trusted proxy and the configured header is set; then the header right to left,
    skipping trusted hops (all of them trusted: the leftmost); a malformed hop makes the client unknown (``None``)."""
    client: str | None = call.peer
    hops = {"X-Forwarded-For": XFF_HOPS[call.xff], "Forwarded": FORWARDED_HOPS[call.forwarded]}.get(
        config.proxy_header or "", []
    )
    if hops and inside(client, TRUSTED):
        for hop in reversed(hops):
            client = hop
            if not inside(hop, TRUSTED):
                break
    return client


# -- credentials ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """What the caller sends. ``kind``: jwt, api, pat, basic, raw (a header as it is), or none."""

    kind: str
    name: str = ""  # jwt: the provider; api: the token's maker; pat and basic: the user; raw: the header
    user: str = ""
    groups: tuple[str, ...] | str | None = None  # a JWT's groups claim: a list, a malformed string, or absent
    variant: str = "ok"  # jwt: ok, expired, forged, wrong_audience; basic: ok, wrong


GROUPS = ["devs", "ops", "viewers"]
USERS = ["alice", "bob", "carol"]
group_claims = st.none() | st.lists(st.sampled_from(GROUPS), unique=True, max_size=2).map(tuple) | st.just("viewers")
valid_jwts = st.builds(
    Credential, st.just("jwt"), st.sampled_from(["corp", "corp", "partner"]), st.sampled_from(USERS), group_claims
)
credentials = st.one_of(
    valid_jwts, valid_jwts, valid_jwts,
    st.builds(Credential, st.just("jwt"), st.just("corp"), st.sampled_from(USERS), group_claims,
              st.sampled_from(["expired", "forged", "wrong_audience"])),
    st.builds(Credential, st.just("api"), st.sampled_from(["bob", "carol", "mallory", "erin"])),
    st.builds(Credential, st.just("api"), st.sampled_from(["bob", "carol", "mallory", "erin", "revoked", "unknown"])),
    st.builds(Credential, st.just("pat"), st.sampled_from(["alice", "carol", "nobody"])),
    st.builds(Credential, st.just("basic"), st.sampled_from(["alice", "carol"]),
              variant=st.sampled_from(["ok", "wrong"]))
    | st.builds(Credential, st.just("raw"), st.sampled_from(["Bearer two tokens", "Digest abc"])),
    st.just(Credential("none")),
    st.just(Credential("none")),
)  # fmt: skip

#: The API tokens, as their makers made them through ``POST /jwtgate/tokens`` (see ``issue_api_tokens``): the
#: owner's provider (``None``: a directory user), the owner, the groups its maker's credential carried, and whether it
#: is read-only (its maker's groups claim was malformed, so its maker counted as read-only).
API_TOKENS = {
    "bob": (None, "bob", {"devs"}, False),
    "carol": (None, "carol", {"viewers"}, False),
    "mallory": (None, "mallory", set(), True),
    "erin": ("partner", "erin", {"devs"}, False),
}


@dataclass(frozen=True)
class Who:
    """The caller as the model sees it."""

    username: str | None
    groups: frozenset[str] = frozenset()
    auth_method: str = "anonymous"
    provider: str | None = None
    complete: bool = True  # False: its groups cannot be fully known (read-only wherever read-only groups exist)


ANONYMOUS = Who(None)


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


def directory_groups(config: Config, provider: str | None, username: str) -> frozenset[str]:
    """README: the ``groups_loader`` speaks for the host directory's users only: PATs, Basic, tokens made for
    directory users, and providers whose ``directory_users`` is true (corp; the partner when the config says so)."""
    speaks = config.groups_loader and (
        provider in (None, "corp") or (provider == "partner" and config.partner_directory_users)
    )
    return frozenset(DIRECTORY.get(username, set())) if speaks else frozenset()


def authenticate(config: Config, credential: Credential) -> Who | Refusal:
    """README, "API tokens, personal access tokens and Basic" and "Security model"."""
    kind = credential.kind
    if kind == "raw":
        return Refusal(401, "unsupported_scheme" if credential.name.startswith("Digest") else "malformed_credentials")
    if kind == "basic":
        if config.disable_basic_auth:
            return Refusal(401, "basic_disabled")
        if not config.basic_validator:
            return Refusal(401, "basic_not_configured")
        if credential.variant != "ok":
            return Refusal(401, "bad_credentials")
        return Who(credential.name, directory_groups(config, None, credential.name), "basic")
    if kind == "api":
        if not config.accept_api_tokens:
            return Refusal(401, "token_kind_disabled")
        if credential.name == "revoked":
            return Refusal(401, "revoked")
        if credential.name not in API_TOKENS:
            return Refusal(401, "unknown_token")
        provider, owner, groups, read_only = API_TOKENS[credential.name]
        return Who(owner, groups | directory_groups(config, provider, owner), "api_token", provider, not read_only)
    if kind == "pat":
        # A token that is not a JWT is the host's to recognise; without an introspection provider there is nothing
        # else it could be. With PATs switched off (and a validator to say what they are), it is refused as a kind
        # switched off.
        if config.pat_validator and not config.accept_pats:
            return Refusal(401, "token_kind_disabled")
        if config.pat_validator and credential.name in DIRECTORY:
            return Who(credential.name, directory_groups(config, None, credential.name), "pat")
        return Refusal(401, "unknown_token")
    assert kind == "jwt"
    if not config.accept_jwt:
        return Refusal(401, "token_kind_disabled")
    if credential.variant == "forged":
        return Refusal(401, "bad_signature")
    if credential.variant == "expired":
        return Refusal(401, "expired")
    if credential.variant == "wrong_audience":
        return Refusal(401, "wrong_audience")
    claim = credential.groups
    # README: groups must be a list of strings; anything else means no groups and, where read-only groups are
    # configured, a read-only caller.
    own = frozenset(claim) if isinstance(claim, tuple) else frozenset()
    provider = credential.name
    groups = own | directory_groups(config, provider, credential.user)
    return Who(credential.user, groups, "jwt", provider, complete=not isinstance(claim, str))


# -- the model --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    enabled: bool = True
    protected: list[str] = field(default_factory=lambda: ["/**"])
    public: list[str] = field(default_factory=list)
    restricted: list[str] = field(default_factory=list)
    bypass: list[str] = field(default_factory=list)
    allowed_groups: list[str] = field(default_factory=list)
    read_only_groups: list[str] = field(default_factory=list)
    allowlist: list[str] = field(default_factory=list)
    proxy_header: str | None = None
    accept_jwt: bool = True
    accept_api_tokens: bool = True
    accept_pats: bool = True
    disable_basic_auth: bool = False
    allow_cors_preflight: bool = True
    groups_loader: bool = True
    pat_validator: bool = True
    basic_validator: bool = True
    partner_directory_users: bool = False

    def flask_config(self) -> dict[str, Any]:
        return {
            "JWTGATE_ENABLED": self.enabled,
            "JWTGATE_PROTECTED_PATHS": self.protected,
            "JWTGATE_PUBLIC_PATHS": self.public,
            "JWTGATE_RESTRICTED_PUBLIC_PATHS": self.restricted,
            "JWTGATE_BYPASS_PATHS": self.bypass,
            "JWTGATE_ALLOWED_GROUPS": self.allowed_groups,
            "JWTGATE_READ_ONLY_GROUPS": self.read_only_groups,
            "JWTGATE_IP_ALLOWLIST": self.allowlist,
            "JWTGATE_PROXY_HEADER": self.proxy_header,
            "JWTGATE_TRUSTED_PROXIES": TRUSTED if self.proxy_header else [],
            "JWTGATE_ACCEPT_JWT": self.accept_jwt,
            "JWTGATE_ACCEPT_API_TOKENS": self.accept_api_tokens,
            "JWTGATE_ACCEPT_PATS": self.accept_pats,
            "JWTGATE_DISABLE_BASIC_AUTH": self.disable_basic_auth,
            "JWTGATE_ALLOW_CORS_PREFLIGHT": self.allow_cors_preflight,
        }


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    peer: str
    xff: str | None
    forwarded: str | None
    credential: Credential
    #: ("header", name, value) or ("query", name, value): a method override, which no rule may believe.
    override: tuple[str, str, str] | None = None
    preflight: bool = False  # Origin and Access-Control-Request-Method


@dataclass(frozen=True)
class Outcome:
    status: int
    reason: str | None = None
    #: The endpoint whose view ran, and who it saw: (username, sorted groups, auth_method, provider).
    view: str | None = None
    identity: tuple[Any, ...] | None = None


def expected(config: Config, call: Call) -> Outcome:
    """The README's rule order ("How a request is decided"), step by step."""
    method, path = call.method, call.path
    route = routed(method, path)
    own = route is not None and route.own
    # 1-3: the switch, bypass paths and protected paths; never for the gate's own endpoints.
    if not own and (
        not config.enabled or loosens(config.bypass, method, path) or not tightens(config.protected, method, path)
    ):
        return served(route, call, ANONYMOUS)
    # 4: the client address.
    if config.allowlist and not inside(client_address(config, call), config.allowlist):
        return refused(Refusal(403, "ip_not_allowed"))
    # 7's inputs: public by path or view (never the gate's own endpoints), unless restricted.
    public = not own and (loosens(config.public, method, path) or (route is not None and route.public))
    restricted = public and tightens(config.restricted, method, path)
    public = public and not restricted
    if call.credential.kind == "none":
        # 5: a preflight without credentials, where Flask answers OPTIONS itself.
        preflight = method == "OPTIONS" and call.preflight and config.allow_cors_preflight
        if preflight and route is not None and route.flask_answers_options():
            return served(route, call, ANONYMOUS)
        if public:
            return served(route, call, ANONYMOUS)
        return refused(Refusal(401, "public_restricted" if restricted else "missing_credentials"))
    # 6: credentials sent must be valid, even on a public path.
    who = authenticate(config, call.credential)
    if isinstance(who, Refusal):
        return refused(who)
    if public:  # 7: group rules do not apply to public paths
        return served(route, call, who)
    # 8: allowed groups.
    if config.allowed_groups and not who.groups & set(config.allowed_groups):
        return refused(Refusal(403, "group_not_allowed"))
    # 9: read-only groups: GET, HEAD and OPTIONS only, whatever an override says; a caller whose groups cannot be
    # known is read-only too.
    if config.read_only_groups and (who.groups & set(config.read_only_groups) or not who.complete):
        named = {method} | ({call.override[2].strip().upper()} if call.override else set())
        if not named <= READ_METHODS:
            return refused(Refusal(403, "read_only"))
    return served(route, call, who)


def refused(refusal: Refusal) -> Outcome:
    return Outcome(refusal.status, refusal.reason)


def served(route: Route | None, call: Call, who: Who) -> Outcome:
    """What the app answers once the gate lets the request through."""
    if route is None:
        return Outcome(flask_status(call.method, call.path))
    if call.method == "OPTIONS" and route.flask_answers_options():
        return Outcome(200)  # Flask's own answer: no view runs
    identity = (who.username, sorted(who.groups), who.auth_method, who.provider)
    if route.endpoint == "jwtgate.create_token":
        # README: a caller authenticated by an API token cannot create another one.
        if who.auth_method == "api_token":
            return Outcome(403, "token_chaining", route.endpoint)
        return Outcome(201, None, route.endpoint)
    if route.endpoint == "jwtgate.list_tokens":
        return Outcome(200, None, route.endpoint)
    return Outcome(200, None, route.endpoint, identity)


# -- the real app ---------------------------------------------------------------------------------------------------


@dataclass
class Keys:
    corp: KeyPair
    partner: KeyPair
    attacker: Any

    def providers(self, partner_directory_users: bool) -> list[dict[str, Any]]:
        return [
            {"name": "corp", "public_key": self.corp.public_pem, "issuer": CORP_ISSUER, "audience": CORP_AUDIENCE,
             "directory_users": True},
            {"name": "partner", "public_key": self.partner.public_pem, "issuer": PARTNER_ISSUER,
             "directory_users": partner_directory_users},
        ]  # fmt: skip


class World:
    """What every generated app shares: the keys, the clock, the database with the API tokens, their secrets."""

    def __init__(self, keys: Keys, clock: Clock, database_uri: str) -> None:
        self.keys = keys
        self.clock = clock
        self.database_uri = database_uri
        self.api_secrets: dict[str, str] = {}
        self.minted: dict[tuple[Any, ...], str] = {}

    def __repr__(self) -> str:  # a falsifying example shows the config and the requests, not the keys
        return "World()"

    def app(self, config: Config) -> Flask:
        app = Flask("policy_model")
        app.config.update(
            TESTING=True,
            JWTGATE_PROVIDERS=self.keys.providers(config.partner_directory_users),
            JWTGATE_DATABASE_URI=self.database_uri,
            JWTGATE_AUDIT_ENABLED=False,  # not the subject here, and a write per request
            JWTGATE_RUNTIME_SETTINGS=False,  # the configuration is the generated one, not a stored one
            **config.flask_config(),
        )
        gate = JWTGate(app, clock=self.clock)
        if config.groups_loader:
            gate.groups_loader(lambda username: DIRECTORY.get(username, set()))
        if config.pat_validator:
            gate.pat_validator(lambda token: token.removeprefix("hpat-") if token.removeprefix("hpat-") in DIRECTORY
                               else None)  # fmt: skip
        if config.basic_validator:
            gate.basic_auth_validator(lambda username, password: PASSWORDS.get(username) == password)

        def seen() -> Any:
            return jsonify(
                username=current_identity.username,
                groups=sorted(current_identity.groups),
                auth_method=current_identity.auth_method,
                provider=current_identity.provider,
            )

        app.add_url_rule("/api/items", "items", seen, methods=sorted(API_METHODS))
        app.add_url_rule("/api/items/<int:item>", "item", lambda item: seen(), methods=sorted(API_METHODS))
        app.add_url_rule("/api/status", "status", gate.public(lambda: seen()), methods=["GET"])
        app.add_url_rule("/api/cors", "cors", lambda: seen(), methods=["GET", "OPTIONS"])
        app.add_url_rule("/pub/docs", "docs", lambda: seen(), methods=["GET", "POST"])
        app.add_url_rule("/health", "health", lambda: seen(), methods=["GET"])
        # Which view ran, the gate's own included.
        ran: list[str] = []
        app.extensions["policy_model_ran"] = ran
        for endpoint, view in list(app.view_functions.items()):
            app.view_functions[endpoint] = _recording(view, endpoint, ran)
        return app

    def authorization(self, credential: Credential) -> str | None:
        kind = credential.kind
        if kind == "none":
            return None
        if kind == "raw":
            return credential.name
        if kind == "basic":
            password = PASSWORDS[credential.name] if credential.variant == "ok" else "wrong"
            return "Basic " + base64.b64encode(f"{credential.name}:{password}".encode()).decode()
        if kind == "pat":
            return f"Bearer hpat-{credential.name}"
        if kind == "api":
            return "Bearer " + self.api_secrets.get(credential.name, "jgt_" + "A" * 43)
        return "Bearer " + self.jwt(credential.name, credential.user, credential.groups, credential.variant)

    def jwt(self, provider: str, user: str, groups: tuple[str, ...] | str | None, variant: str = "ok") -> str:
        """A provider's token, minted once (signing is the slow part of a request)."""
        key = (provider, user, groups, variant)
        if key not in self.minted:
            self.minted[key] = self._mint(provider, user, groups, variant)
        return self.minted[key]

    def _mint(self, provider: str, user: str, groups: tuple[str, ...] | str | None, variant: str) -> str:
        issued = int(NOW) - 7200 if variant == "expired" else int(NOW)
        claims: dict[str, Any] = {"sub": user, "iat": issued, "exp": issued + 3600, "jti": f"{provider}:{user}"}
        if groups is not None:
            claims["groups"] = list(groups) if isinstance(groups, tuple) else groups
        if provider == "corp":
            claims.update(iss=CORP_ISSUER, aud="other-api" if variant == "wrong_audience" else CORP_AUDIENCE)
            key = self.keys.attacker if variant == "forged" else self.keys.corp.private_key
            return jwt.encode(claims, key, algorithm="RS256")
        claims["iss"] = PARTNER_ISSUER
        return jwt.encode(claims, self.keys.partner.private_key, algorithm=self.keys.partner.algorithm)

    def send(self, app: Flask, call: Call) -> Outcome:
        """Send ``call`` to ``app``; the outcome as the caller sees it (the reason of a body-less HEAD refusal from
        the ``request_denied`` signal)."""
        headers: dict[str, str] = {}
        query = ""
        authorization = self.authorization(call.credential)
        if authorization is not None:
            headers["Authorization"] = authorization
        if call.xff is not None:
            headers["X-Forwarded-For"] = call.xff
        if call.forwarded is not None:
            headers["Forwarded"] = call.forwarded
        if call.preflight:
            headers.update({"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"})
        if call.override is not None:
            where, name, value = call.override
            if where == "header":
                headers[name] = value
            else:
                query = f"{name}={value}"  # as it is: '%5Fmethod' is '_method' to the app
        ran: list[str] = app.extensions["policy_model_ran"]
        ran.clear()
        denied: list[GateDenied] = []
        body = {"name": "model", "expires_in_days": 1} if call.method == "POST" else None
        with request_denied.connected_to(lambda sender, error: denied.append(error), app):
            response = app.test_client().open(
                SENT_AS.get(call.path, call.path), method=call.method, headers=headers, query_string=query, json=body,
                environ_overrides={"REMOTE_ADDR": call.peer},
            )
        assert len(ran) <= 1
        payload = response.get_json(silent=True) if call.method != "HEAD" else None
        reason = denied[0].reason if denied else (payload or {}).get("reason")
        if payload is not None and reason is not None:
            assert payload["reason"] == reason
        view = ran[0] if ran else None
        identity = None
        if view is not None and payload is not None and "auth_method" in payload:
            identity = (payload["username"], payload["groups"], payload["auth_method"], payload["provider"])
        return Outcome(response.status_code, reason, view, identity)


def _recording(view: Any, endpoint: str, ran: list[str]) -> Any:
    @functools.wraps(view)  # and so its marks (@gate.public)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        ran.append(endpoint)
        return view(*args, **kwargs)

    return wrapped


@pytest.fixture(scope="module")
def world(jwtgate_keys: dict[str, KeyPair], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    made = World(
        Keys(jwtgate_keys["rsa"], jwtgate_keys["ec256"], attacker),
        Clock(NOW),
        f"sqlite:///{tmp_path_factory.mktemp('policy-model')}/jwtgate.db",
    )
    issue_api_tokens(made)
    yield made


def issue_api_tokens(world: World) -> None:
    """Have each token's maker make it through ``POST /jwtgate/tokens``, on an app with the partner's users not the
    directory's and no read-only groups (so that a maker whose groups claim is malformed may make one, read-only)."""
    app = world.app(Config())
    client = app.test_client()
    makers = {
        "bob": world.jwt("corp", "bob", ("devs",)),
        "carol": world.jwt("corp", "carol", ("viewers",)),
        "mallory": world.jwt("corp", "mallory", "viewers"),
        "erin": world.jwt("partner", "erin", ("devs",)),
        "revoked": world.jwt("corp", "bob", ("devs",)),
    }
    for name, maker in makers.items():
        headers = {"Authorization": f"Bearer {maker}"}
        made = client.post("/jwtgate/tokens", json={"name": name, "expires_in_days": 30}, headers=headers)
        assert made.status_code == 201, made.get_json()
        body = made.get_json()
        world.api_secrets[name] = body["token"]
        if name in API_TOKENS:
            provider, owner, groups, read_only = API_TOKENS[name]
            assert (body["provider"], body["username"], set(body["groups"]), body["read_only"]) == (
                provider, owner, groups, read_only,
            )  # fmt: skip
        else:
            assert client.delete(f"/jwtgate/tokens/{body['id']}", headers=headers).status_code == 204
    dispose(app)


def dispose(app: Flask) -> None:
    state = app.extensions["jwtgate"]
    if state.api_tokens is not None:
        state.api_tokens.flush_last_used()
    state.database.engine.dispose()


# -- the property ------------------------------------------------------------------------------------------------------

PROTECTED = [["/**"], ["/**"], ["/api/**"], ["/api/*"], ["GET,POST /api/**", "/pub/**"], ["/pub/**", "/health"],
             ["/api/**", "/jwtgate/**"]]  # fmt: skip
PUBLIC = [[], [], ["/pub/**"], ["/api/items"], ["GET /api/**"], ["/jwtgate/**", "/health"], ["/api/items/*"]]
RESTRICTED = [[], [], ["**"], ["/api/**"], ["POST /pub/**"], ["/API/STATUS"], ["/jwtgate/**"]]
BYPASS = [[], [], ["/health"], ["/api/items/7"], ["DELETE /api/**"], ["/jwtgate/**"], ["/pub/**"]]
ALLOWED = [[], [], ["devs", "ops", "viewers"], ["devs"], ["ops", "viewers"]]
READ_ONLY = [[], ["viewers"], ["ops"], ["viewers", "devs"]]
ALLOWLISTS = [
    [], [], [], [], [], [], ["198.51.100.0/24", "203.0.113.5"], ["203.0.113.5", "2001:db8::/32"], ["10.0.0.0/8"],
    ["203.0.113.0/24", "::1"],
]  # fmt: skip
mostly_true = st.sampled_from([True, True, True, False])

configs = st.builds(
    Config,
    enabled=st.sampled_from([True] * 7 + [False]),
    protected=st.sampled_from(PROTECTED),
    public=st.sampled_from(PUBLIC),
    restricted=st.sampled_from(RESTRICTED),
    bypass=st.sampled_from(BYPASS),
    allowed_groups=st.sampled_from(ALLOWED),
    read_only_groups=st.sampled_from(READ_ONLY),
    allowlist=st.sampled_from(ALLOWLISTS),
    proxy_header=st.sampled_from([None, "X-Forwarded-For", "Forwarded"]),
    accept_jwt=mostly_true,
    accept_api_tokens=mostly_true,
    accept_pats=mostly_true,
    disable_basic_auth=st.sampled_from([False, False, False, True]),
    allow_cors_preflight=mostly_true,
    groups_loader=mostly_true,
    pat_validator=mostly_true,
    basic_validator=mostly_true,
    partner_directory_users=st.booleans(),
)
overrides = st.none() | st.tuples(
    st.just("header"), st.sampled_from(["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]),
    st.sampled_from(["DELETE", "get", "PROPFIND"]),
) | st.tuples(st.just("query"), st.sampled_from(["_method", "%5Fmethod"]), st.sampled_from(["PUT", "HEAD"]))
#: Every method and path that some view of the app takes (the others are refused or routed nowhere).
ROUTED = [(method, path) for path in ROUTES for method in METHODS if routed(method, path) is not None]
method_and_path = st.tuples(st.sampled_from(METHODS), st.sampled_from(PATHS)) | st.sampled_from(ROUTED)
calls = st.builds(
    lambda method_and_path, **fields: Call(*method_and_path, **fields),
    method_and_path,
    peer=st.sampled_from(PEERS),
    xff=st.sampled_from(list(XFF_HOPS)),
    forwarded=st.sampled_from(list(FORWARDED_HOPS)),
    credential=credentials,
    override=st.sampled_from([None, None]) | overrides,
    preflight=st.booleans(),
)


def comparable(call: Call, outcome: Outcome) -> Outcome:
    """What can be compared: a HEAD response has no body to show who the view saw (GET shows it)."""
    return dataclasses.replace(outcome, identity=None) if call.method == "HEAD" else outcome


def outcome_event(outcome: Outcome) -> str:
    if outcome.reason is not None:
        return outcome.reason
    return f"{outcome.status} {outcome.view or 'no view'}"


@settings(
    max_examples=int(os.environ.get("POLICY_MODEL_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # the explain phase costs a minute
)
@given(config=configs, requests=st.lists(calls, min_size=1, max_size=6))
def test_the_gate_decides_as_the_readme_says(world: World, config: Config, requests: list[Call]) -> None:
    app = world.app(config)
    try:
        for call in requests:
            want = comparable(call, expected(config, call))
            event(outcome_event(want))  # `pytest --hypothesis-show-statistics`: every rule should show up
            assert world.send(app, call) == want, call
    finally:
        dispose(app)


def test_the_model_knows_the_apps_routes(world: World) -> None:
    """The model's routing table is the app's: with the gate off, every method and path reaches the view the model
    names, or gets the status it names."""
    app = world.app(Config(enabled=False))
    try:
        for path in dict.fromkeys(PATHS):
            if path.startswith("/jwtgate"):
                continue  # the gate's own endpoints are always gated: the property covers them
            for method in METHODS:
                call = Call(method, path, "203.0.113.5", None, None, Credential("none"))
                want = comparable(call, served(routed(method, path), call, ANONYMOUS))
                assert world.send(app, call) == want, (method, path)
    finally:
        dispose(app)

