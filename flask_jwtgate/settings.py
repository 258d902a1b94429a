"""The ``JWTGATE_*`` settings, read once into a frozen, validated object.

Every key of the contract is validated here, at start-up, so that a bad value fails with the key's name and what would
be valid, never at the first request. The keys and their defaults are documented once, in the README's table.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .addresses import DEFAULT_IPV6_PREFIX, IPV6_PREFIX_RANGE, IPNetwork, parse_networks
from .ascii_numbers import parse_decimal, parse_whole
from .errors import ConfigurationError
from .keys import PublicKey, check_algorithms, default_algorithms, fits, load_public_key, read_public_key_file
from .paths import PathPattern, compile_patterns
from .redaction import redact_uri

PREFIX = "JWTGATE_"
#: One segment of JWTGATE_URL_PREFIX: URL-unreserved characters only (RFC 3986 §2.3).
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+\Z")

DEFAULTS: dict[str, Any] = {
    "ENABLED": True,
    "PROTECTED_PATHS": ["/**"],
    "PROVIDERS": [],
    "PROVIDER_NAME": "default",
    "PUBLIC_KEY": None,
    "PUBLIC_KEY_FILE": None,
    "JWKS_URL": None,
    "INTROSPECTION_URL": None,
    "INTROSPECTION_CLIENT_ID": None,
    "INTROSPECTION_CLIENT_SECRET": None,
    "ALGORITHMS": None,
    "ISSUER": None,
    "AUDIENCE": None,
    "USERNAME_CLAIM": "sub",
    "GROUPS_CLAIM": "groups",
    "LEEWAY": 60,
    "ACCEPT_JWT": True,
    "ACCEPT_API_TOKENS": True,
    "ACCEPT_PATS": True,
    "DISABLE_BASIC_AUTH": False,
    "ALLOW_USER_TOKEN_CREATION": True,
    "ALLOWED_GROUPS": [],
    "READ_ONLY_GROUPS": [],
    "TOKEN_CREATOR_GROUPS": [],
    "ADMIN_GROUPS": ["jwtgate-admins"],
    "IP_ALLOWLIST": [],
    "PROXY_HEADER": None,
    "TRUSTED_PROXIES": [],
    "PUBLIC_PATHS": [],
    "RESTRICTED_PUBLIC_PATHS": [],
    "BYPASS_PATHS": [],
    "RATE_LIMIT": None,
    "RATE_LIMIT_STORAGE_URI": "memory://",
    "RATE_LIMIT_STORAGE_OPTIONS": {},
    "RATE_LIMIT_GROUPS": {},
    "RATE_LIMIT_FAIL_OPEN": False,
    "RATE_LIMIT_IPV6_PREFIX": DEFAULT_IPV6_PREFIX,
    "AUTH_FAILURE_LIMIT": "20/minute",
    "AUDIT_ENABLED": True,
    "AUDIT_RETENTION_DAYS": 90,
    "AUDIT_MAX_ENTRIES": 1_000_000,
    "AUDIT_PRUNE_INTERVAL": 3600,
    "AUDIT_PRUNE_CHUNK_SIZE": 5000,
    "AUDIT_SYNC": None,
    "AUDIT_QUEUE_SIZE": 10_000,
    "AUDIT_BATCH_SIZE": 500,
    "AUDIT_FLUSH_INTERVAL": 1.0,
    "AUDIT_SPOOL_DIR": None,
    "AUDIT_SPOOL_MAX_BYTES": 256 * 1024 * 1024,
    "DATABASE_URI": None,
    "URL_PREFIX": "/jwtgate",
    "RUNTIME_SETTINGS": True,
    "ALLOW_CORS_PREFLIGHT": True,
}

#: The settings an admin cannot change at run time (``flask_jwtgate.runtime``): where the run-time settings themselves
#: live, what is built once at start-up (the blueprint, the rate-limit storage, the audit writer), and the switch.
RESTART_ONLY = frozenset(
    {
        "DATABASE_URI", "URL_PREFIX", "RUNTIME_SETTINGS", "RATE_LIMIT_STORAGE_URI", "RATE_LIMIT_STORAGE_OPTIONS",
        "AUDIT_SYNC", "AUDIT_QUEUE_SIZE", "AUDIT_BATCH_SIZE", "AUDIT_FLUSH_INTERVAL", "AUDIT_SPOOL_DIR",
        "AUDIT_SPOOL_MAX_BYTES",
    }
)
#: What is shown in place of a secret: a client secret is never shown back, logged or written into the history.
MASK = "********"

#: The keys of one entry of ``JWTGATE_PROVIDERS``.
PROVIDER_FIELDS = frozenset(
    {
        "name", "public_key", "public_key_file", "jwks_url", "introspection_url", "client_id", "client_secret",
        "algorithms", "issuer", "audience", "username_claim", "groups_claim", "leeway", "cache_ttl",
        # JWKS and introspection providers (flask_jwtgate.jwks, flask_jwtgate.introspection); see _remote_fields.
        "timeout", "jwks_min_ttl", "jwks_max_ttl", "jwks_cooldown", "client_auth", "opaque_tokens",
        "allowed_client_ids",
        # Whether the provider's usernames are the host directory's (see ProviderSettings.directory_users).
        "directory_users",
    }
)
_SHORTHAND = {
    "PROVIDER_NAME": "name", "PUBLIC_KEY": "public_key", "PUBLIC_KEY_FILE": "public_key_file",
    "JWKS_URL": "jwks_url", "INTROSPECTION_URL": "introspection_url", "INTROSPECTION_CLIENT_ID": "client_id",
    "INTROSPECTION_CLIENT_SECRET": "client_secret", "ALGORITHMS": "algorithms", "ISSUER": "issuer",
    "AUDIENCE": "audience", "USERNAME_CLAIM": "username_claim", "GROUPS_CLAIM": "groups_claim", "LEEWAY": "leeway",
}
#: The single-provider shorthand keys, without the prefix.
SHORTHAND_KEYS = tuple(_SHORTHAND)
#: The shorthand keys that say where keys come from; the other shorthand keys only describe that provider.
_KEY_SOURCES = ("PUBLIC_KEY", "PUBLIC_KEY_FILE", "JWKS_URL", "INTROSPECTION_URL")
#: What may surround a number in an environment variable (str.strip() would also take Unicode spaces).
_ASCII_SPACE = " \t\r\n"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ProviderSettings:
    """One identity provider: how its tokens are verified and read."""

    name: str
    public_key: PublicKey | None = None
    jwks_url: str | None = None
    introspection_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    algorithms: tuple[str, ...] = ()
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    username_claim: str = "sub"
    groups_claim: str | None = "groups"
    leeway: int = 60
    cache_ttl: int = 300
    #: Seconds for a call to the JWKS or introspection endpoint.
    timeout: float = 5.0
    #: Floor and ceiling on a JWKS response's max-age, and the least time between two JWKS fetches.
    jwks_min_ttl: int = 60
    jwks_max_ttl: int = 3600
    jwks_cooldown: int = 10
    #: How the gate authenticates to the introspection endpoint: "client_secret_basic" or "client_secret_post".
    client_auth: str = "client_secret_basic"
    #: Whether tokens that are not JWTs go to this introspection provider (None: when it is the only one).
    opaque_tokens: bool | None = None
    #: Non-empty: an introspected token's client_id must be one of these.
    allowed_client_ids: tuple[str, ...] = ()
    #: Whether this provider's usernames are the host directory's: its users then get the ``groups_loader``'s groups
    #: and own the API tokens made for the directory user of that name. With a single provider this is the default;
    #: with several, each must say it (an ``alice`` of a partner's provider is not the host's ``alice`` by default).
    directory_users: bool = True


@dataclass(frozen=True)
class Settings:
    """The gate's effective settings. Build with :meth:`from_mapping`; never mutated, replaced whole on change."""

    enabled: bool
    protected_paths: tuple[PathPattern, ...]
    providers: tuple[ProviderSettings, ...]
    accept_jwt: bool
    accept_api_tokens: bool
    accept_pats: bool
    disable_basic_auth: bool
    allow_user_token_creation: bool
    allowed_groups: frozenset[str]
    read_only_groups: frozenset[str]
    token_creator_groups: frozenset[str]
    admin_groups: frozenset[str]
    ip_allowlist: tuple[IPNetwork, ...]
    proxy_header: str | None
    trusted_proxies: tuple[IPNetwork, ...]
    public_paths: tuple[PathPattern, ...]
    restricted_public_paths: tuple[PathPattern, ...]
    bypass_paths: tuple[PathPattern, ...]
    rate_limit: str | None
    rate_limit_storage_uri: str
    #: Keyword arguments for the storage (Flask-Limiter's ``storage_options``), e.g. ``key_prefix`` or timeouts.
    rate_limit_storage_options: tuple[tuple[str, Any], ...]
    #: ``(group, limit)`` in the configured order: the first group the caller is in replaces ``rate_limit``.
    rate_limit_groups: tuple[tuple[str, str], ...]
    rate_limit_fail_open: bool
    #: IPv6 clients are counted per network of this many bits (IPv4 clients per address).
    rate_limit_ipv6_prefix: int
    auth_failure_limit: str | None
    audit_enabled: bool
    audit_retention_days: int | None
    audit_max_entries: int | None
    audit_prune_interval: int
    audit_prune_chunk_size: int
    audit_sync: bool | None
    audit_queue_size: int
    audit_batch_size: int
    audit_flush_interval: float
    audit_spool_dir: str | None
    audit_spool_max_bytes: int
    database_uri: str | None
    url_prefix: str
    runtime_settings: bool
    allow_cors_preflight: bool
    #: The raw values these settings were built from, keyed by full config name.
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Settings:
        """Validate ``config`` (Flask's ``app.config``), with ``overrides`` (constructor keywords) taking precedence.

        :raises ConfigurationError: naming the first invalid key and what would be valid.
        """
        check_known_keys(config)
        raw = {PREFIX + name: config.get(PREFIX + name, default) for name, default in DEFAULTS.items()}
        for name, value in (overrides or {}).items():
            raw[PREFIX + name.upper()] = value
        v = _Reader(raw)
        proxy_header = v.optional_text("PROXY_HEADER")
        trusted = parse_networks(raw[PREFIX + "TRUSTED_PROXIES"], PREFIX + "TRUSTED_PROXIES")
        if proxy_header and not trusted:
            raise ConfigurationError(
                PREFIX + "PROXY_HEADER",
                "is set but JWTGATE_TRUSTED_PROXIES is empty; list the proxies' addresses (e.g. ['10.0.0.0/8']) "
                "so that a caller cannot forge its own address",
            )
        if trusted and not proxy_header:
            raise ConfigurationError(
                PREFIX + "TRUSTED_PROXIES",
                "is set but JWTGATE_PROXY_HEADER is not, so no proxy header is ever read and the proxies' own address "
                "is taken for every client's; set JWTGATE_PROXY_HEADER to the header the proxies write (e.g. "
                "'X-Forwarded-For' or 'Forwarded'), or remove JWTGATE_TRUSTED_PROXIES",
            )
        url_prefix = v.text("URL_PREFIX")
        segments = url_prefix.split("/")
        if segments[0] or not all(_PREFIX_SEGMENT.match(s) and s not in (".", "..") for s in segments[1:]):
            # Flask reads '<...>' in a prefix as a URL variable, and a client spells '%', spaces or dot segments in
            # ways that routing and the path rules would each read their own way: plain segments only.
            raise ConfigurationError(
                PREFIX + "URL_PREFIX",
                "must look like '/jwtgate' or '/api/gate': '/' and segments of letters, digits, '-', '_', '.' and '~' "
                f"(no '.' or '..' segment, no trailing '/'), not {url_prefix!r}",
            )
        rate_limit = v.optional_text("RATE_LIMIT")
        if rate_limit is not None:
            _check_rate_limit(rate_limit, PREFIX + "RATE_LIMIT")
        rate_limit_groups = _rate_limit_groups(raw[PREFIX + "RATE_LIMIT_GROUPS"], rate_limit)
        auth_failure_limit = v.optional_text("AUTH_FAILURE_LIMIT")
        if auth_failure_limit is not None:
            _check_rate_limit(auth_failure_limit, PREFIX + "AUTH_FAILURE_LIMIT")
        return cls(
            enabled=v.boolean("ENABLED"),
            protected_paths=v.paths("PROTECTED_PATHS"),
            providers=_providers(raw),
            accept_jwt=v.boolean("ACCEPT_JWT"),
            accept_api_tokens=v.boolean("ACCEPT_API_TOKENS"),
            accept_pats=v.boolean("ACCEPT_PATS"),
            disable_basic_auth=v.boolean("DISABLE_BASIC_AUTH"),
            allow_user_token_creation=v.boolean("ALLOW_USER_TOKEN_CREATION"),
            allowed_groups=v.groups("ALLOWED_GROUPS"),
            read_only_groups=v.groups("READ_ONLY_GROUPS"),
            token_creator_groups=v.groups("TOKEN_CREATOR_GROUPS"),
            admin_groups=v.groups("ADMIN_GROUPS"),
            ip_allowlist=parse_networks(raw[PREFIX + "IP_ALLOWLIST"], PREFIX + "IP_ALLOWLIST"),
            proxy_header=proxy_header,
            trusted_proxies=trusted,
            public_paths=v.paths("PUBLIC_PATHS"),
            restricted_public_paths=v.paths("RESTRICTED_PUBLIC_PATHS"),
            bypass_paths=v.paths("BYPASS_PATHS"),
            rate_limit=rate_limit,
            rate_limit_storage_uri=v.text("RATE_LIMIT_STORAGE_URI"),
            rate_limit_storage_options=_storage_options(raw[PREFIX + "RATE_LIMIT_STORAGE_OPTIONS"]),
            rate_limit_groups=rate_limit_groups,
            rate_limit_fail_open=v.boolean("RATE_LIMIT_FAIL_OPEN"),
            rate_limit_ipv6_prefix=v.integer("RATE_LIMIT_IPV6_PREFIX", *IPV6_PREFIX_RANGE),
            auth_failure_limit=auth_failure_limit,
            audit_enabled=v.boolean("AUDIT_ENABLED"),
            audit_retention_days=v.optional_integer("AUDIT_RETENTION_DAYS", minimum=1),
            audit_max_entries=v.optional_integer("AUDIT_MAX_ENTRIES", minimum=1),
            audit_prune_interval=v.integer("AUDIT_PRUNE_INTERVAL", minimum=0),
            audit_prune_chunk_size=v.integer("AUDIT_PRUNE_CHUNK_SIZE", minimum=1),
            audit_sync=None if raw[PREFIX + "AUDIT_SYNC"] is None else v.boolean("AUDIT_SYNC"),
            audit_queue_size=v.integer("AUDIT_QUEUE_SIZE", minimum=1),
            audit_batch_size=v.integer("AUDIT_BATCH_SIZE", minimum=1),
            audit_flush_interval=v.seconds("AUDIT_FLUSH_INTERVAL"),
            audit_spool_dir=v.optional_text("AUDIT_SPOOL_DIR"),
            audit_spool_max_bytes=v.integer("AUDIT_SPOOL_MAX_BYTES", minimum=0),
            database_uri=v.optional_text("DATABASE_URI"),
            url_prefix=url_prefix,
            runtime_settings=v.boolean("RUNTIME_SETTINGS"),
            allow_cors_preflight=v.boolean("ALLOW_CORS_PREFLIGHT"),
            raw=raw,
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def check_known_keys(config: Mapping[str, Any]) -> None:
    """Refuse a ``JWTGATE_*`` key that is not a setting: a misspelt security setting must never be silently ignored."""
    for key in config:
        if isinstance(key, str) and key.startswith(PREFIX) and key[len(PREFIX) :] not in DEFAULTS:
            # Compared without the prefix, which every key shares and which would make any two look alike.
            near = difflib.get_close_matches(key[len(PREFIX) :], DEFAULTS, n=1, cutoff=0.6)
            hint = f"did you mean {PREFIX}{near[0]}?" if near else "see the README's configuration table for the keys"
            raise ConfigurationError(key, f"is not a setting of flask-jwtgate; {hint}")


def _check_rate_limit(value: str, key: str) -> None:
    """Refuse a limit string that Flask-Limiter cannot parse, or one that allows nothing (``0/minute``)."""
    from limits import parse_many

    try:
        items = parse_many(value)
    except ValueError as exc:
        raise ConfigurationError(
            key, f"{value!r} is not a limit such as '100/minute' or '10/second;1000/hour'"
        ) from exc
    if not items or any(item.amount < 1 for item in items):
        raise ConfigurationError(key, f"{value!r} allows no request at all; every limit needs an amount of 1 or more")


def _rate_limit_groups(value: object, rate_limit: str | None) -> tuple[tuple[str, str], ...]:
    key = PREFIX + "RATE_LIMIT_GROUPS"
    if not isinstance(value, Mapping) or not all(isinstance(group, str) and group for group in value):
        raise ConfigurationError(
            key, f"must map group names to limits, such as {{'service-accounts': '1000/minute'}}, not {value!r}"
        )
    for group, limit in value.items():
        if not isinstance(limit, str) or not limit:
            raise ConfigurationError(key, f"the limit for group {group!r} must be a string such as '1000/minute'")
        _check_rate_limit(limit, key)
    if value and rate_limit is None:
        raise ConfigurationError(
            key, "overrides JWTGATE_RATE_LIMIT, which is not set; set it too (rate limiting is off without it)"
        )
    return tuple(value.items())


def _storage_options(value: object) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, Mapping) or not all(isinstance(name, str) and name for name in value):
        raise ConfigurationError(
            PREFIX + "RATE_LIMIT_STORAGE_OPTIONS",
            f"must be an object of storage keyword arguments, such as {{'socket_timeout': 1}}, not {value!r}",
        )
    return tuple(value.items())


class _Reader:
    """Typed access to the raw values, each failure naming its key."""

    def __init__(self, raw: Mapping[str, Any], prefix: str = PREFIX) -> None:
        self.raw = raw
        self.prefix = prefix

    def _get(self, name: str) -> tuple[str, Any]:
        return self.prefix + name, self.raw[self.prefix + name]

    def boolean(self, name: str) -> bool:
        key, value = self._get(name)
        if isinstance(value, bool):
            return value
        if type(value) is int and value in (0, 1):  # from_prefixed_env reads FLASK_JWTGATE_ENABLED=0 as JSON
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigurationError(key, f"must be true or false, not {value!r}")

    def integer(self, name: str, minimum: int = 0, maximum: int | None = None) -> int:
        key, value = self._get(name)
        if isinstance(value, str):  # from the environment, when it is not JSON: ASCII digits only
            value = parse_whole(value.strip(_ASCII_SPACE))
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            allowed = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ConfigurationError(
                key, f"must be a whole number {allowed} (in ASCII digits), not {self.raw[key]!r}"
            )
        return value

    def optional_integer(self, name: str, minimum: int = 0) -> int | None:
        return None if self._get(name)[1] is None else self.integer(name, minimum)

    def seconds(self, name: str) -> float:
        """A positive duration in seconds, whole or fractional (``0.5``, ``"2"``)."""
        key, value = self._get(name)
        if isinstance(value, str):  # from the environment, when it is not JSON: ASCII digits and a point only
            value = parse_decimal(value.strip(_ASCII_SPACE))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
            raise ConfigurationError(
                key, f"must be a number of seconds between 0 (exclusive) and 3600, not {self.raw[key]!r}"
            )
        return float(value)

    def text(self, name: str) -> str:
        key, value = self._get(name)
        if not isinstance(value, str) or not value:
            raise ConfigurationError(key, f"must be a non-empty string, not {value!r}")
        return value

    def optional_text(self, name: str) -> str | None:
        return None if self._get(name)[1] in (None, "") else self.text(name)

    def groups(self, name: str) -> frozenset[str]:
        key, value = self._get(name)
        if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(g, str) and g for g in value):
            raise ConfigurationError(
                key, f"must be a list of group names such as ['viewers'] (JSON in the environment), not {value!r}"
            )
        return frozenset(value)

    def paths(self, name: str) -> tuple[PathPattern, ...]:
        key, value = self._get(name)
        return compile_patterns(value, key)


def _providers(raw: Mapping[str, Any]) -> tuple[ProviderSettings, ...]:
    key = PREFIX + "PROVIDERS"
    entries = raw[key]
    if not isinstance(entries, (list, tuple)):
        raise ConfigurationError(key, f"must be a list of provider objects, not {type(entries).__name__}")
    providers = [_provider(entry, f"{key}[{index}]") for index, entry in enumerate(entries)]
    # Whether each provider says if its users are the directory's (the shorthand provider cannot).
    explicit = ["directory_users" in entry for entry in entries]
    if any(raw[PREFIX + name] for name in _KEY_SOURCES):
        # A key left unset is None and falls to the provider's default; a key whose default is not None (the claims,
        # the leeway, the name) is None only when set so, and passes on: JWTGATE_GROUPS_CLAIM = None switches the
        # groups claim off, as "groups_claim": None does in JWTGATE_PROVIDERS, and the others are refused.
        shorthand = {
            attr: raw[PREFIX + name]
            for name, attr in _SHORTHAND.items()
            if raw[PREFIX + name] is not None or DEFAULTS[name] is not None
        }
        providers.append(_provider(shorthand, PREFIX + "<single provider>", shorthand=True))
        explicit.append(False)
    else:
        for name in _SHORTHAND:
            if name not in _KEY_SOURCES and raw[PREFIX + name] not in (None, DEFAULTS[name]):
                raise ConfigurationError(
                    PREFIX + name,
                    "describes the single provider, but none is configured: set JWTGATE_PUBLIC_KEY_FILE, "
                    "JWTGATE_PUBLIC_KEY, JWTGATE_JWKS_URL or JWTGATE_INTROSPECTION_URL too, or put the provider with "
                    "this field in JWTGATE_PROVIDERS",
                )
    names = [p.name for p in providers]
    for name in names:
        if names.count(name) > 1:
            raise ConfigurationError(key, f"two providers are named {name!r}; names must be unique")
    _check_remote_providers(providers, key)
    if len(providers) > 1:
        unsaid = [p.name for p, said in zip(providers, explicit, strict=True) if not said]
        if unsaid:
            raise ConfigurationError(
                key,
                f"with several providers each must say whether its users are the host directory's users: add "
                f"'directory_users': true or false to {unsaid} (true: its 'alice' is the directory's 'alice', gets "
                "the groups_loader's groups and owns her API tokens; false: its users are its own)"
                + (
                    f"; the {providers[-1].name!r} provider comes from the shorthand keys (JWTGATE_PUBLIC_KEY, ...): "
                    "move it into JWTGATE_PROVIDERS to say it"
                    if not explicit[-1] and any(raw[PREFIX + name] for name in _KEY_SOURCES)
                    else ""
                ),
            )
    verifying = [p for p in providers if p.introspection_url is None]
    if len(verifying) > 1:
        issuers = [p.issuer for p in verifying]
        if None in issuers or len(set(issuers)) != len(issuers):
            raise ConfigurationError(
                key,
                "with several JWT providers each needs its own 'issuer': a token is verified by the one provider its "
                "'iss' names, never by trying every key",
            )
    return tuple(providers)


def _provider(entry: object, where: str, shorthand: bool = False) -> ProviderSettings:
    def key_of(attr: str) -> str:
        if shorthand:
            return PREFIX + next(name for name, a in _SHORTHAND.items() if a == attr)
        return f"{where}.{attr}"

    if not isinstance(entry, Mapping):
        raise ConfigurationError(where, f"must be an object with 'name' and a key or endpoint, not {entry!r}")
    unknown = set(entry) - PROVIDER_FIELDS
    if unknown:
        raise ConfigurationError(where, f"unknown field(s) {sorted(unknown)}; valid: {sorted(PROVIDER_FIELDS)}")
    name = entry.get("name", "default" if shorthand else None)
    if not isinstance(name, str) or not name:
        raise ConfigurationError(key_of("name"), "every provider needs a non-empty 'name'")
    sources = [s for s in ("public_key", "public_key_file", "jwks_url", "introspection_url") if entry.get(s)]
    if len(sources) != 1:
        raise ConfigurationError(
            where if not shorthand else PREFIX + "PUBLIC_KEY",
            f"provider {name!r} needs exactly one of public_key, public_key_file, jwks_url or introspection_url"
            + (f" (it has {', '.join(sources)})" if sources else ""),
        )
    public: PublicKey | None = None
    if entry.get("public_key"):
        public = load_public_key(entry["public_key"], key_of("public_key"))
    elif entry.get("public_key_file"):
        public = read_public_key_file(entry["public_key_file"], key_of("public_key_file"))
    for url_field in ("jwks_url", "introspection_url"):
        url = entry.get(url_field)
        if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
            shown = redact_uri(url) if isinstance(url, str) else url
            raise ConfigurationError(key_of(url_field), f"must be an http(s) URL, not {shown!r}")
    remote = _remote_fields(entry, name, key_of)
    algorithms: tuple[str, ...]
    if entry.get("introspection_url") and entry.get("algorithms") is not None:
        raise ConfigurationError(
            key_of("algorithms"),
            f"provider {name!r} is an introspection provider: the provider checks signatures, so 'algorithms' does "
            "not apply; remove it",
        )
    if entry.get("algorithms") is None:
        # A JWKS provider's key types are only known once fetched: RS256 is what Keycloak, Azure AD, Okta and Auth0
        # sign with by default; any other algorithm must be configured, never inferred from a key or a token.
        algorithms = default_algorithms(public) if public is not None else ("RS256",) if entry.get("jwks_url") else ()
    else:
        algorithms = check_algorithms(entry["algorithms"], key_of("algorithms"))
    if public is not None:
        for algorithm in algorithms:
            if not fits(algorithm, public):
                raise ConfigurationError(
                    key_of("algorithms"),
                    f"{algorithm} does not fit provider {name!r}'s {type(public).__name__.lstrip('_')}; "
                    f"use {list(default_algorithms(public))}",
                )
    issuer = entry.get("issuer")
    if issuer is not None and (not isinstance(issuer, str) or not issuer):
        raise ConfigurationError(key_of("issuer"), f"must be the issuer string, not {issuer!r}")
    audience = entry.get("audience")
    if isinstance(audience, str):
        audience = [audience]
    if audience is not None and (
        not isinstance(audience, (list, tuple)) or not all(isinstance(a, str) and a for a in audience)
    ):
        raise ConfigurationError(key_of("audience"), f"must be a string or a list of strings, not {audience!r}")
    username_claim = entry.get("username_claim", "sub")
    if not isinstance(username_claim, str) or not username_claim:
        raise ConfigurationError(
            key_of("username_claim"), f"must be a claim name such as 'sub', not {username_claim!r}"
        )
    groups_claim = entry.get("groups_claim", "groups")
    if groups_claim is not None and (not isinstance(groups_claim, str) or not groups_claim):
        raise ConfigurationError(key_of("groups_claim"), f"must be a claim name or null, not {groups_claim!r}")
    directory_users = entry.get("directory_users", True)
    if not isinstance(directory_users, bool):
        raise ConfigurationError(key_of("directory_users"), f"must be true or false, not {directory_users!r}")
    numbers = {}
    for attr, default in (("leeway", 60), ("cache_ttl", 300)):
        value = entry.get(attr, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 86400:
            raise ConfigurationError(key_of(attr), f"must be whole seconds between 0 and 86400, not {value!r}")
        numbers[attr] = value
    return ProviderSettings(
        name=name,
        public_key=public,
        jwks_url=entry.get("jwks_url"),
        introspection_url=entry.get("introspection_url"),
        algorithms=algorithms,
        issuer=issuer,
        audience=tuple(audience or ()),
        username_claim=username_claim,
        groups_claim=groups_claim,
        leeway=numbers["leeway"],
        cache_ttl=numbers["cache_ttl"],
        directory_users=directory_users,
        **remote,
    )


# -- JWKS and introspection providers ----------------------------------------------------------------------------------

_CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_JWKS_ONLY = ("jwks_min_ttl", "jwks_max_ttl", "jwks_cooldown")
_INTROSPECTION_ONLY = ("client_id", "client_secret", "client_auth", "opaque_tokens", "allowed_client_ids")


def _remote_fields(entry: Mapping[str, Any], name: str, key_of: Callable[[str], str]) -> dict[str, Any]:
    """Validate the fields of a provider reached over the network; return them as ``ProviderSettings`` keywords."""
    jwks = bool(entry.get("jwks_url"))
    introspection = bool(entry.get("introspection_url"))
    for attr in ("jwks_url", "introspection_url"):
        url = entry.get(attr)
        if url:
            try:
                parts = urlsplit(url)
                usable = bool(parts.hostname) and not parts.fragment and (parts.port is None or parts.port > 0)
            except ValueError:  # a bracket left open, or a port that is not ASCII digits up to 65535
                usable = False
            if not usable:
                raise ConfigurationError(
                    key_of(attr),
                    f"must be an absolute http(s) URL with a host, a port (if any) from 1 to 65535 and no fragment, "
                    f"not {redact_uri(url)!r}",
                )
    for attr in _JWKS_ONLY if not jwks else ():
        if entry.get(attr) is not None:
            raise ConfigurationError(key_of(attr), "applies only to JWKS providers (with a jwks_url); remove it")
    for attr in _INTROSPECTION_ONLY if not introspection else ():
        if entry.get(attr) is not None:
            raise ConfigurationError(
                key_of(attr), "applies only to introspection providers (with an introspection_url); remove it"
            )
    if not jwks and not introspection and entry.get("timeout") is not None:
        raise ConfigurationError(key_of("timeout"), "applies only to JWKS and introspection providers; remove it")
    fields: dict[str, Any] = {}
    timeout = entry.get("timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise ConfigurationError(key_of("timeout"), f"must be seconds, more than 0 and at most 60, not {timeout!r}")
    fields["timeout"] = float(timeout)
    for attr, default, low, high in (
        ("jwks_min_ttl", 60, 0, 86400), ("jwks_max_ttl", 3600, 1, 7 * 86400), ("jwks_cooldown", 10, 1, 3600)
    ):
        value = entry.get(attr, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigurationError(key_of(attr), f"must be whole seconds between {low} and {high}, not {value!r}")
        fields[attr] = value
    if fields["jwks_min_ttl"] > fields["jwks_max_ttl"]:
        raise ConfigurationError(
            key_of("jwks_min_ttl"),
            f"({fields['jwks_min_ttl']}) must not exceed jwks_max_ttl ({fields['jwks_max_ttl']})",
        )
    if introspection:
        for attr in ("client_id", "client_secret"):
            value = entry.get(attr)
            if not isinstance(value, str) or not value:
                raise ConfigurationError(
                    key_of(attr),
                    f"introspection provider {name!r} needs its {attr} at the provider (RFC 7662 requires the caller "
                    "to authenticate)",
                )
            fields[attr] = value
        client_auth = entry.get("client_auth", "client_secret_basic")
        if client_auth not in _CLIENT_AUTH_METHODS:
            raise ConfigurationError(
                key_of("client_auth"), f"must be one of {list(_CLIENT_AUTH_METHODS)}, not {client_auth!r}"
            )
        fields["client_auth"] = client_auth
        opaque = entry.get("opaque_tokens")
        if opaque is not None and not isinstance(opaque, bool):
            raise ConfigurationError(key_of("opaque_tokens"), f"must be true or false, not {opaque!r}")
        fields["opaque_tokens"] = opaque
        clients = entry.get("allowed_client_ids", [])
        if isinstance(clients, str):
            clients = [clients]
        if not isinstance(clients, (list, tuple)) or not all(isinstance(c, str) and c for c in clients):
            raise ConfigurationError(key_of("allowed_client_ids"), f"must be a list of client ids, not {clients!r}")
        fields["allowed_client_ids"] = tuple(clients)
    return fields


def _check_remote_providers(providers: list[ProviderSettings], key: str) -> None:
    """Rules across providers: one issuer names one provider; at most one takes opaque tokens."""
    issuers = [p.issuer for p in providers if p.issuer is not None]
    for issuer in issuers:
        if issuers.count(issuer) > 1:
            raise ConfigurationError(
                key, f"two providers have the issuer {issuer!r}; a token's 'iss' must name exactly one provider"
            )
    opaque = [p.name for p in providers if p.opaque_tokens]
    if len(opaque) > 1:
        raise ConfigurationError(
            key,
            f"providers {opaque} all set opaque_tokens; a token that is not a JWT names no issuer, so exactly one "
            "provider may receive them (the token is never sent to several)",
        )
