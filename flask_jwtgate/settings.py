"""The ``JWTGATE_*`` settings, read once into a frozen, validated object.

Every key of the contract is validated here, at start-up, so that a bad value fails with the key's name and what would
be valid, never at the first request. The keys and their defaults are documented once, in the README's table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .addresses import IPNetwork, parse_networks
from .errors import ConfigurationError
from .keys import PublicKey, check_algorithms, default_algorithms, fits, load_public_key, read_public_key_file
from .paths import PathPattern, compile_patterns

PREFIX = "JWTGATE_"

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
    "AUDIT_ENABLED": True,
    "AUDIT_RETENTION_DAYS": 90,
    "AUDIT_MAX_ENTRIES": 1_000_000,
    "AUDIT_PRUNE_INTERVAL": 3600,
    "DATABASE_URI": None,
    "URL_PREFIX": "/jwtgate",
    "RUNTIME_SETTINGS": True,
    "ALLOW_CORS_PREFLIGHT": True,
}

#: The keys of one entry of ``JWTGATE_PROVIDERS``.
PROVIDER_FIELDS = frozenset(
    {
        "name", "public_key", "public_key_file", "jwks_url", "introspection_url", "client_id", "client_secret",
        "algorithms", "issuer", "audience", "username_claim", "groups_claim", "leeway", "cache_ttl",
    }
)
_SHORTHAND = {
    "PROVIDER_NAME": "name", "PUBLIC_KEY": "public_key", "PUBLIC_KEY_FILE": "public_key_file",
    "JWKS_URL": "jwks_url", "INTROSPECTION_URL": "introspection_url", "INTROSPECTION_CLIENT_ID": "client_id",
    "INTROSPECTION_CLIENT_SECRET": "client_secret", "ALGORITHMS": "algorithms", "ISSUER": "issuer",
    "AUDIENCE": "audience", "USERNAME_CLAIM": "username_claim", "GROUPS_CLAIM": "groups_claim", "LEEWAY": "leeway",
}
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
    audit_enabled: bool
    audit_retention_days: int | None
    audit_max_entries: int | None
    audit_prune_interval: int
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
        url_prefix = v.text("URL_PREFIX")
        if not url_prefix.startswith("/") or url_prefix.endswith("/") or "//" in url_prefix:
            raise ConfigurationError(PREFIX + "URL_PREFIX", f"must look like '/jwtgate', not {url_prefix!r}")
        rate_limit = v.optional_text("RATE_LIMIT")
        if rate_limit is not None:
            _check_rate_limit(rate_limit)
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
            audit_enabled=v.boolean("AUDIT_ENABLED"),
            audit_retention_days=v.optional_integer("AUDIT_RETENTION_DAYS", minimum=1),
            audit_max_entries=v.optional_integer("AUDIT_MAX_ENTRIES", minimum=1),
            audit_prune_interval=v.integer("AUDIT_PRUNE_INTERVAL", minimum=0),
            database_uri=v.optional_text("DATABASE_URI"),
            url_prefix=url_prefix,
            runtime_settings=v.boolean("RUNTIME_SETTINGS"),
            allow_cors_preflight=v.boolean("ALLOW_CORS_PREFLIGHT"),
            raw=raw,
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _check_rate_limit(value: str) -> None:
    try:
        from limits import parse_many
    except ImportError:  # pragma: no cover - the limiter is an optional extra
        return
    try:
        parse_many(value)
    except ValueError as exc:
        raise ConfigurationError(
            PREFIX + "RATE_LIMIT", f"{value!r} is not a limit such as '100/minute' or '10/second;1000/hour'"
        ) from exc


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

    def integer(self, name: str, minimum: int = 0) -> int:
        key, value = self._get(name)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigurationError(key, f"must be a whole number >= {minimum}, not {value!r}")
        return value

    def optional_integer(self, name: str, minimum: int = 0) -> int | None:
        return None if self._get(name)[1] is None else self.integer(name, minimum)

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
    if any(raw[PREFIX + name] for name in ("PUBLIC_KEY", "PUBLIC_KEY_FILE", "JWKS_URL", "INTROSPECTION_URL")):
        shorthand = {attr: raw[PREFIX + name] for name, attr in _SHORTHAND.items() if raw[PREFIX + name] is not None}
        providers.append(_provider(shorthand, PREFIX + "<single provider>", shorthand=True))
    names = [p.name for p in providers]
    for name in names:
        if names.count(name) > 1:
            raise ConfigurationError(key, f"two providers are named {name!r}; names must be unique")
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
            raise ConfigurationError(key_of(url_field), f"must be an http(s) URL, not {url!r}")
    if entry.get("jwks_url") or entry.get("introspection_url"):
        # Issue 3 adds these provider kinds; until then, refuse rather than silently accept nothing.
        raise ConfigurationError(
            key_of("jwks_url" if entry.get("jwks_url") else "introspection_url"),
            "JWKS and introspection providers are not supported by this version; configure public_key",
        )
    algorithms: tuple[str, ...]
    if entry.get("algorithms") is None:
        algorithms = default_algorithms(public) if public is not None else ()
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
        client_id=entry.get("client_id"),
        client_secret=entry.get("client_secret"),
        algorithms=algorithms,
        issuer=issuer,
        audience=tuple(audience or ()),
        username_claim=username_claim,
        groups_claim=groups_claim,
        leeway=numbers["leeway"],
        cache_ttl=numbers["cache_ttl"],
    )
