"""JWKS providers: fetching a provider's JSON Web Key Set (RFC 7517), caching it, binding each key to its algorithms.

Which keys are trusted, and why
-------------------------------
Only the keys served at the provider's configured ``jwks_url``. A token's ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers
are never read, so a token cannot name its own key. The token's ``kid`` only *selects* among the provider's keys. A key
is used only if all of these hold:

- ``kty`` is ``RSA`` (at least 2048 bits), ``EC`` or ``OKP``: an ``oct`` (shared-secret) key in a JWKS is never used,
  so a public JWKS can never turn into an HMAC secret (RFC 8725 §2.1);
- ``use``, if present, is ``sig``, and ``key_ops``, if present, includes ``verify``;
- it holds no private members (``d``): a provider publishing private keys is misconfigured, and its key is skipped;
- the token's ``alg`` is one the provider's configured ``algorithms`` allow (checked by the verifier first) *and* the
  key's own ``alg`` when the key declares one, *and* fits the key's type and curve when it does not. So an RS256 key is
  never used for PS256 if it says ``alg: RS256``, and an EC P-384 key never verifies ES256.

Caching, refreshing and failure
-------------------------------
- A fetched set is fresh for the response's ``Cache-Control: max-age`` (less any ``Age``), or the provider's
  ``cache_ttl`` without one (or with one that is not ASCII digits, such as ``max-age=²``), clamped to
  ``[jwks_min_ttl, jwks_max_ttl]``: the floor stops a provider that says ``no-cache`` from being fetched on every
  request, the ceiling bounds how long a key the provider has removed (after a compromise) is still trusted.
- A token whose ``kid`` is not in the set triggers a refetch (a rotation has just happened), but at most one fetch is
  in flight per endpoint (single flight: concurrent callers wait for the same fetch) and a new fetch starts at most
  once per ``jwks_cooldown`` seconds. A flood of random ``kid``s therefore costs at most one fetch per cooldown, and
  the callers in between get 401 at once.
- While the endpoint is down, or answers garbage, the last good set keeps being served, for at most
  :data:`MAX_STALE` seconds past its freshness: long enough to ride out an outage, short enough that keys cannot be
  pinned for ever by keeping the endpoint unreachable. A failed fetch never replaces or clears the cached set.
- With nothing cached and the fetch failing, the answer is 503 ``temporarily_unavailable``, and further attempts wait
  for the cooldown, so a dead endpoint is not hammered.

Why not ``jwt.PyJWKClient``
---------------------------
PyJWKClient (PyJWT 2.15) guards each client with one ``RLock`` that ``get_signing_key`` holds *across the network
call*: the lock is per client, not global, so one provider does not stall another, but within a provider every caller
(including those whose key is cached) queues behind a fetch. When the set expires and the endpoint hangs, the waiting
requests are served one after another, each paying its own full timeout (30 s by default): a convoy. It also drops the
cached set once its lifespan passes, so an outage longer than the lifespan turns into refusals, and it ignores
Cache-Control, reads an unbounded body and infers ``HS256`` for ``oct`` keys (harmless only because the verifier never
allows HMAC). This module keeps the state per endpoint in an immutable snapshot that readers take without a lock;
the lock guards only the bookkeeping of who fetches, and is never held while fetching. Fetches run in a short-lived
daemon thread, so:

- callers whose key is cached never wait, not even while the set is being refreshed (a stale set is served and the
  refresh runs in the background);
- callers that need the fetch (unknown ``kid``, nothing cached) wait for it at most ``timeout`` plus a small margin;
- a slow endpoint stalls only the requests that need its new keys, never another provider's.

Times for freshness and cooldowns come from the injected clock (tests control them); network timeouts are real time.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from .ascii_numbers import parse_whole
from .errors import InvalidToken, TemporarilyUnavailable
from .keys import MIN_RSA_BITS, SUPPORTED_ALGORITHMS, PublicKey, describe_key, fits
from .outbound import OutboundError, fetch
from .redaction import redact_uri
from .registry import ClientRegistry
from .settings import ProviderSettings

logger = logging.getLogger("flask_jwtgate")

#: A JWK Set larger than this is refused (real ones are a few KiB).
MAX_JWKS_BYTES = 256 * 1024
#: Keys beyond this many in one set are ignored.
MAX_KEYS = 100
MAX_KID_LENGTH = 256
#: How long past its freshness a cached set is still served while the endpoint cannot be reached.
MAX_STALE = 24 * 3600
#: How much longer than the fetch timeout a caller waits for a fetch in flight.
WAIT_MARGIN = 1.0

_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
_PARSER_ALGORITHM: dict[str, str | None] = {"RSA": "RS256", "EC": None, "OKP": "EdDSA"}  # EC: inferred from crv
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class JWKSFetchError(Exception):
    """A JWKS fetch failed; the message (never containing a secret) goes to the log."""


@dataclass(frozen=True)
class JWKSKey:
    """One usable key of a set, with the algorithms it may verify (its own ``alg``, or all its type fits)."""

    kid: str | None
    key: PublicKey = field(repr=False)
    algorithms: frozenset[str]


@dataclass(frozen=True)
class KeySet:
    """An immutable snapshot of a fetched set: replaced whole, so readers need no lock."""

    keys: tuple[JWKSKey, ...]
    fetched_at: float
    fresh_until: float

    def find(self, kid: str | None) -> tuple[JWKSKey, ...]:
        if kid is None:
            # A token without a kid may only use a set of exactly one key (RFC 7515 §4.1.4 leaves the choice to us).
            return self.keys if len(self.keys) == 1 else ()
        return tuple(k for k in self.keys if k.kid == kid)


def parse_jwk(entry: object) -> JWKSKey:
    """Build one verification key from a JWK, or raise ``ValueError`` saying why it is not usable."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    kty = entry.get("kty")
    if kty not in _KEY_TYPES:
        raise ValueError(f"kty {kty!r} is not RSA, EC or OKP (shared-secret keys are never trusted)")
    if entry.keys() & _PRIVATE_MEMBERS:
        raise ValueError("it contains private key material; a JWKS must hold public keys only")
    use = entry.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"its use is {use!r}, not 'sig'")
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise ValueError("its key_ops do not include 'verify'")
    kid = entry.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH):
        raise ValueError("its kid is not a short string")
    alg = entry.get("alg")
    if alg is not None and alg not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"its alg {alg!r} is not an accepted signature algorithm")
    try:
        # PyJWK builds the key object; the algorithm named here only picks the parser for the key type (PyJWK would
        # infer only Ed25519 for OKP). Whether the key may verify the declared alg is decided below, by ``fits``.
        key: Any = PyJWK(entry, algorithm=_PARSER_ALGORITHM[kty]).key
    except (PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"it is not a readable {kty} key ({type(exc).__name__})") from exc
    if not isinstance(key, PublicKey):
        raise ValueError(f"{type(key).__name__} is not a supported public key")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    if alg is not None:
        if not fits(alg, key):
            raise ValueError(f"its alg {alg} does not fit the key's type or curve")
        algorithms = frozenset({alg})
    else:
        algorithms = frozenset(a for a in SUPPORTED_ALGORITHMS if fits(a, key))
    return JWKSKey(kid, key, algorithms)


def parse_jwks(body: bytes) -> tuple[tuple[JWKSKey, ...], list[str]]:
    """Parse a JWK Set; return the usable keys and why the others were skipped.

    :raises JWKSFetchError: the body is not a JWK Set at all (the cached set is then kept).
    """
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise JWKSFetchError("the answer is not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JWKSFetchError("the answer is not a JWK Set (a JSON object with a 'keys' list)")
    keys: list[JWKSKey] = []
    skipped: list[str] = []
    for index, entry in enumerate(data["keys"][:MAX_KEYS]):
        try:
            keys.append(parse_jwk(entry))
        except ValueError as exc:
            kid = entry.get("kid") if isinstance(entry, dict) else None
            skipped.append(f"key {index} (kid {kid!r}): {exc}")
    return tuple(keys), skipped


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: HTTP's optional whitespace (RFC 9110 §5.6.3): str.strip() would also take Unicode spaces.
_OWS = " \t"


def cache_lifetime(cache_control: str | None, age: str | None, default: float, floor: float, ceiling: float) -> float:
    """Seconds a set stays fresh: ``max-age`` less ``Age`` (``no-cache``/``no-store``: 0), else ``default``;
    always clamped to ``[floor, ceiling]``.

    Both are delta-seconds, ASCII digits (RFC 9111 §1.2.2, :mod:`flask_jwtgate.ascii_numbers`). One that cannot be
    read (``max-age=²``, ``Age: ¹``, ``max-age=-1``, twenty digits) makes the answer's lifetime unknown, so the
    provider's ``default`` (its ``cache_ttl``) applies, as without the header; the keys themselves are still used.
    """
    lifetime: float = default
    if cache_control:
        directives = [d.strip(_OWS).lower() for d in cache_control.split(",")]
        if "no-store" in directives or "no-cache" in directives:
            lifetime = 0
        else:
            for directive in directives:
                name, _, value = directive.partition("=")
                if name.strip(_OWS) == "max-age":
                    max_age = parse_whole(value.strip(_OWS).strip('"'))
                    age_text = (age or "").strip(_OWS)
                    aged = parse_whole(age_text) if age_text else 0
                    if max_age is not None and aged is not None:
                        lifetime = max_age - aged
                    break
    return float(min(max(lifetime, floor), ceiling))


class _Flight:
    """One fetch in progress; callers that need its result wait on ``done``."""

    def __init__(self) -> None:
        self.done = threading.Event()


class JWKSClient:
    """The keys of one JWKS endpoint: cached, refreshed, and never fetched by more than one thread at a time.

    :param url: the endpoint (http or https).
    :param timeout: seconds for the fetch; callers that need the fetch wait at most this (plus a margin).
    :param min_ttl: the floor on the response's ``max-age``.
    :param max_ttl: the ceiling on it.
    :param default_ttl: freshness when the response has no ``Cache-Control``.
    :param cooldown: at least this many seconds between the starts of two fetches.
    :param clock: the current time in seconds (freshness and cooldown); injected by tests.

    ::

        client = JWKSClient("https://idp.example/jwks.json")
        key = client.key_for(header.get("kid"), "RS256")   # a cryptography public key, or InvalidToken / 503
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        min_ttl: float = 60,
        max_ttl: float = 3600,
        default_ttl: float = 300,
        cooldown: float = 10,
        clock: Callable[[], float] = time.time,
        max_bytes: int = MAX_JWKS_BYTES,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.default_ttl = default_ttl
        self.cooldown = cooldown
        self.clock = clock
        self.max_bytes = max_bytes
        #: The last good set; replaced whole by a successful fetch, never cleared by a failed one.
        self.keys: KeySet | None = None
        #: How many fetches were started (for tests and operators).
        self.fetches = 0
        self._lock = threading.Lock()  # guards the three fields below; never held while fetching
        self._flight: _Flight | None = None
        self._next_fetch = -math.inf
        self._last_error: str | None = None

    # -- the caller's side -------------------------------------------------------------------------------------------

    def key_for(self, kid: object, alg: str, allowed: Collection[str] | None = None) -> PublicKey:
        """The key that may verify a token with this ``kid`` header and ``alg``.

        :param allowed: the provider's configured algorithms (``alg`` must be one; the verifier checks it first).
        :raises InvalidToken: malformed or unknown ``kid``, or a key whose algorithm is not ``alg`` (401).
        :raises TemporarilyUnavailable: the keys cannot be fetched and nothing cached can serve (503).
        """
        if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH):
            raise InvalidToken("the token's 'kid' header is not a key id", reason="malformed_token")
        if allowed is not None and alg not in allowed:
            raise InvalidToken(f"the algorithm {alg!r} is not allowed for this provider", reason="alg_not_allowed")
        now = self.clock()
        keys = self.keys
        if keys is not None and now < keys.fresh_until + MAX_STALE:
            if kid is None and len(keys.keys) > 1:
                raise InvalidToken(
                    "the token has no 'kid' header and the provider publishes several keys", reason="missing_kid"
                )
            found = keys.find(kid)
            if found:
                if now >= keys.fresh_until:
                    self._start_fetch(now)  # stale: serve it, refresh in the background
                return _bind(found, kid, alg)
        # The kid is unknown (a rotation?), or nothing usable is cached: only a fetch can help.
        flight = self._start_fetch(now)
        if flight is not None and not flight.done.wait(self.timeout + WAIT_MARGIN):
            raise TemporarilyUnavailable(
                "the identity provider's keys could not be fetched in time", reason="keys_unavailable"
            )
        keys = self.keys
        if keys is not None and self.clock() < keys.fresh_until + MAX_STALE:
            found = keys.find(kid)
            if found:
                return _bind(found, kid, alg)
            if self._last_error is None:
                raise InvalidToken(
                    "the token's key id is not one of the provider's keys"
                    if kid is not None
                    else "the token has no 'kid' header and the provider publishes no single key it could use",
                    reason="unknown_key",
                )
        raise TemporarilyUnavailable(
            "the identity provider's keys cannot be fetched right now and none that fit are cached",
            reason="keys_unavailable",
        )

    def trusted_until(self, kid: object, alg: str) -> float:
        """Until when the current set vouches for the key ``kid`` for ``alg``: the set's freshness, or ``-inf`` if the
        set no longer holds that key. A verified token is cached no longer than this, so a token checked with a stale
        set (during an outage or a refresh) is checked again, and a withdrawn key stops being trusted everywhere."""
        keys = self.keys
        if keys is None or (kid is not None and not isinstance(kid, str)):
            return -math.inf
        if any(alg in k.algorithms for k in keys.find(kid)):
            return keys.fresh_until
        return -math.inf

    # -- fetching ---------------------------------------------------------------------------------------------------

    def _start_fetch(self, now: float) -> _Flight | None:
        """Join the fetch in flight, or start one unless the cooldown forbids it; ``None``: no fetch to wait for."""
        with self._lock:
            if self._flight is not None:
                return self._flight
            if now < self._next_fetch:
                return None
            flight = self._flight = _Flight()
            self._next_fetch = now + self.cooldown
            self.fetches += 1
        try:
            threading.Thread(target=self._run, args=(flight,), name="jwtgate-jwks-fetch", daemon=True).start()
        except RuntimeError:  # no thread can be started: fetch here rather than not at all
            self._run(flight)
        return flight

    def _run(self, flight: _Flight) -> None:
        try:
            keys = self._fetch()
        except Exception as exc:  # a failure in a thread must never escape, and must never clear the cached keys
            message = str(exc) if isinstance(exc, (JWKSFetchError, OutboundError)) else type(exc).__name__
            logger.warning("jwtgate: JWKS fetch from %s failed: %s", redact_uri(self.url), message)
            with self._lock:
                self._last_error = message
                self._flight = None
        else:
            with self._lock:
                self.keys = keys
                self._last_error = None
                self._flight = None
        finally:
            flight.done.set()

    def _fetch(self) -> KeySet:
        result = fetch(
            self.url,
            timeout=self.timeout,
            max_bytes=self.max_bytes,
            headers={"Accept": "application/jwk-set+json, application/json"},
        )
        if 300 <= result.status < 400:
            raise JWKSFetchError(f"the endpoint answered a redirect ({result.status}); redirects are not followed")
        if result.status != 200:
            raise JWKSFetchError(f"the endpoint answered HTTP {result.status}")
        keys, skipped = parse_jwks(result.body)
        if skipped:
            logger.info("jwtgate: JWKS %s: skipped %s", redact_uri(self.url), "; ".join(skipped))
        if not keys:
            logger.warning("jwtgate: JWKS %s holds no usable signing key; its tokens are refused", redact_uri(self.url))
        lifetime = cache_lifetime(
            result.headers.get("Cache-Control"), result.headers.get("Age"), self.default_ttl, self.min_ttl, self.max_ttl
        )
        now = self.clock()
        return KeySet(keys, now, now + lifetime)

    def status(self) -> dict[str, Any]:
        """What an admin may see of this client: the endpoint, the keys' ids and algorithms, when the set was fetched
        and until when it is fresh (then served stale for at most :data:`MAX_STALE` more), the last failure. Never a
        key's material beyond its type."""
        keys = self.keys
        with self._lock:
            error, fetching = self._last_error, self._flight is not None
        return {
            "url": redact_uri(self.url),
            "fetches": self.fetches,
            "fetching": fetching,
            "last_error": error,
            "fetched_at": keys.fetched_at if keys is not None else None,
            "fresh_until": keys.fresh_until if keys is not None else None,
            "served_until": keys.fresh_until + MAX_STALE if keys is not None else None,
            "keys": [
                {"kid": k.kid, "algorithms": sorted(k.algorithms), **describe_key(k.key)} for k in keys.keys
            ]
            if keys is not None
            else [],
        }

    def wait_idle(self, timeout: float) -> bool:
        """Wait (real time, at most ``timeout``) until no fetch is in flight; for tests and graceful shutdown."""
        flight = self._flight
        return flight is None or flight.done.wait(timeout)


def _bind(found: tuple[JWKSKey, ...], kid: str | None, alg: str) -> PublicKey:
    for candidate in found:
        if alg in candidate.algorithms:
            return candidate.key
    raise InvalidToken(
        f"the provider's key {kid!r} is not for {alg}" if kid is not None else f"the provider's key is not for {alg}",
        reason="alg_key_mismatch",
    )


class JWKSRegistry(ClientRegistry[JWKSClient]):
    """One :class:`JWKSClient` per endpoint and fetch options, shared by every settings version of an app (see
    :mod:`flask_jwtgate.registry`)."""

    def _identity(self, provider: ProviderSettings) -> Hashable | None:
        if provider.jwks_url is None:
            return None
        return (
            provider.jwks_url, provider.timeout, provider.jwks_min_ttl, provider.jwks_max_ttl, provider.jwks_cooldown,
            provider.cache_ttl,
        )

    def _make(self, provider: ProviderSettings) -> JWKSClient:
        assert provider.jwks_url is not None
        return JWKSClient(
            provider.jwks_url,
            timeout=provider.timeout,
            min_ttl=provider.jwks_min_ttl,
            max_ttl=provider.jwks_max_ttl,
            default_ttl=provider.cache_ttl,
            cooldown=provider.jwks_cooldown,
            clock=self.clock,
        )
