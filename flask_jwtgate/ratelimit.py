"""Per-token rate limits, and a per-address limit on failed authentication, counted in Flask-Limiter's storage.

Threat model. A limit is only as good as its key: if the caller can choose the key, it can choose a fresh bucket.

- **An authenticated caller draws from its credential's bucket**, ``token:<provider>:<token_id>``. The limiter runs
  after the policy has decided (see ``_gate_request`` in ``extension.py``), so the key is always a *verified*
  identity's ``token_id``: a JWT's ``jti`` or the hash of its canonical spelling, never the raw header. Encoding
  variants of one token and every spelling of the Authorization header therefore share one bucket, two tokens of
  one user have two buckets, and an invalid token (even a forgery that copies a valid token's ``jti``) never
  reaches a bucket at all: it counts towards its address's failed-authentication limit instead.
- **An anonymous caller on a public path draws from its address's bucket**, ``address:<client>``, where the client
  is the address the policy resolved (``flask_jwtgate.addresses``): the proxy header is read only when the peer is
  a trusted proxy, so a forged ``X-Forwarded-For`` cannot pick a new bucket. ``<client>`` is
  :attr:`ClientAddress.limit_key`: an IPv4 address, or an IPv6 client's network of ``JWTGATE_RATE_LIMIT_IPV6_PREFIX``
  bits (``2001:db8:1:2::/64``), because whoever holds one IPv6 address usually holds its whole /64 and could take a
  fresh address, and so a fresh bucket, for every request. Callers whose address cannot be determined share one
  bucket, ``address:unknown``.
- **Method and path are not part of the key.** A token has one bucket for the whole API: ``HEAD`` counts like
  ``GET``, and like every other method.
- **Failed authentication is counted per resolved address**, ``failed:<client>`` (the same ``<client>``, so per
  IPv6 network too): every request whose credentials were refused (a 401 for credentials that were sent; a request
  without any does not count). Once an address has used up ``JWTGATE_AUTH_FAILURE_LIMIT``, every request from it
  that carries credentials gets 429 *before* any verification, a token the gate has cached included: otherwise a
  blocked guesser could still tell a valid token (200) from an invalid one (429).

Counting is Flask-Limiter's default strategy, a fixed window: one atomic increment per limit per request, which in
Redis is one round trip (a Lua ``INCRBY`` + ``EXPIRE``) and is exact however many workers and hosts share the
store; a request with credentials also reads its address's failure count. At a window's edge a caller can spend one
window's allowance just before it ends and the next just after.

The store. ``memory://`` counts in each process: under a server with several worker processes each counts alone,
so a token gets its limit once per process; the gate logs a warning the first time a request shows
``wsgi.multiprocess`` (PEP 3333), which gunicorn sets when it runs more than one worker. ``redis://`` is shared.
When the store cannot be reached the gate fails closed: 503 ``temporarily_unavailable``, reason
``rate_limit_unavailable``, because an unlimited API is what the limit exists to prevent. With
``JWTGATE_RATE_LIMIT_FAIL_OPEN`` it lets such requests through without a limit (and without ``RateLimit-*``
headers) instead. Either way it logs the outage, at most once a minute.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import limits.storage.memory
from limits import parse_many
from limits.storage import MemoryStorage, Storage

from .addresses import UNKNOWN, ClientAddress
from .errors import AuthenticationFailed, GateDenied, RateLimited, TemporarilyUnavailable
from .identity import Identity
from .redaction import redact_secrets, redact_uri
from .settings import Settings

if TYPE_CHECKING:
    from .policy import Decision, Gatekeeper, View

logger = logging.getLogger("flask_jwtgate")

#: Every key the gate writes starts with this (and the storage adds its own prefix, ``LIMITS:`` in Redis).
KEY_PREFIX = "jwtgate"
#: Longer bucket names (a long username, say) are hashed, so no caller-influenced value makes keys large.
_MAX_BUCKET_LENGTH = 200
#: A token id up to this long is used as it is (verification.py makes a JWT's: its jti up to 128, or a hash).
_MAX_TOKEN_ID_LENGTH = 160
#: How many window resets (each saves a round trip to the store) one process remembers before it starts over.
_MAX_REMEMBERED_RESETS = 10_000
_STORE_LOG_INTERVAL = 60.0
#: Seconds between two sweeps of expired counters out of memory storage.
_SWEEP_INTERVAL = 1.0


class Rule(NamedTuple):
    """One limit of a limit string: ``amount`` requests per window of ``expiry`` seconds."""

    text: str
    amount: int
    expiry: int
    #: Appended to the bucket to make the storage key, so that a changed limit starts a fresh count.
    suffix: str


def parse_rules(text: str) -> tuple[Rule, ...]:
    """Parse a limit in Flask-Limiter notation (``"10/second;1000/hour"``), shortest window first."""
    items = sorted(parse_many(text), key=lambda item: item.get_expiry())
    return tuple(
        Rule(str(item), item.amount, item.get_expiry(), f"/{item.amount}/{item.multiples}/{item.GRANULARITY.name}")
        for item in items
    )


class Quota(NamedTuple):
    """Where a caller stands after a request: the most constraining of the limits that apply to it."""

    limit: int
    remaining: int
    #: Whole seconds until the window resets.
    reset: int

    def headers(self) -> list[tuple[str, str]]:
        """The ``RateLimit-*`` fields (draft-ietf-httpapi-ratelimit-headers): ``Reset`` is in seconds, not a date."""
        return [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.reset)),
        ]


def rate_limited_headers(exc: RateLimited) -> list[tuple[str, str]]:
    """``Retry-After`` and the ``RateLimit-*`` fields for a 429."""
    return [("Retry-After", str(exc.retry_after)), *Quota(exc.limit, 0, exc.retry_after).headers()]


@dataclass(frozen=True)
class RateLimitRules:
    """The limits in force, from the settings.

    :param default: ``JWTGATE_RATE_LIMIT``: per token, and per address for anonymous callers.
    :param groups: ``JWTGATE_RATE_LIMIT_GROUPS`` in order: the first group the caller is in replaces the default.
    :param failures: ``JWTGATE_AUTH_FAILURE_LIMIT``, per address; empty when switched off.
    :param fail_open: ``JWTGATE_RATE_LIMIT_FAIL_OPEN``.

    ::

        rules = RateLimitRules.from_settings(settings)     # None when JWTGATE_RATE_LIMIT is not set
        rules.for_identity(identity)                       # the rules for this caller
    """

    default: tuple[Rule, ...]
    groups: tuple[tuple[str, tuple[Rule, ...]], ...] = ()
    failures: tuple[Rule, ...] = ()
    fail_open: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimitRules | None:
        if settings.rate_limit is None:
            return None
        return cls(
            default=parse_rules(settings.rate_limit),
            groups=tuple((group, parse_rules(limit)) for group, limit in settings.rate_limit_groups),
            failures=parse_rules(settings.auth_failure_limit) if settings.auth_failure_limit else (),
            fail_open=settings.rate_limit_fail_open,
        )

    def for_identity(self, identity: Identity) -> tuple[Rule, ...]:
        """The rules for ``identity``: its first override group's, else the default."""
        for group, rules in self.groups:
            if group in identity.groups:
                return rules
        return self.default


def bucket_for(identity: Identity, client: ClientAddress | None) -> str:
    """The bucket a request draws from: its verified credential's, or for an anonymous caller its address's."""
    if not identity.is_authenticated:
        return "address:" + (client.limit_key if client is not None else UNKNOWN)
    token_id = identity.token_id
    if token_id is not None and len(token_id) <= _MAX_TOKEN_ID_LENGTH:
        return f"token:{identity.provider or identity.auth_method}:{token_id}"
    if token_id is not None:
        bucket = f"token:{identity.provider or identity.auth_method}:{token_id}"
    else:  # a credential without an id of its own (Basic): the user it names
        bucket = f"user:{identity.auth_method}:{identity.username}"
    if len(bucket) > _MAX_BUCKET_LENGTH:
        bucket = "sha256:" + hashlib.sha256(bucket.encode("utf-8", "surrogatepass")).hexdigest()
    return bucket


def failure_bucket(client: ClientAddress) -> str:
    """The bucket that counts failed authentication from ``client``'s address (its IPv6 network)."""
    return "failed:" + client.limit_key


def counted_as(client: ClientAddress | None) -> str:
    """How a message names the address a count belongs to: an IPv6 client is counted with its network."""
    if client is not None and client.address is not None and client.limit_key != client.text:
        return f"this address's network ({client.limit_key})"
    return "this address"


def storage_key(bucket: str, rule: Rule) -> str:
    return f"{KEY_PREFIX}/{bucket}{rule.suffix}"


class LimitStore:
    """The rate-limit storage for one app, kept across settings changes (a new storage URI takes a restart).

    :param storage: the storage Flask-Limiter built from the URI and options (``flask_jwtgate.limiter``).
    :param uri: ``JWTGATE_RATE_LIMIT_STORAGE_URI``, for messages (its password is never shown).
    """

    def __init__(self, storage: Storage, uri: str) -> None:
        self.storage = storage
        self.uri = redact_uri(uri)
        self._raw_uri = uri  # only to redact the storage's own error messages, which may quote it
        self.in_memory = uri.startswith("memory://")
        #: Whether a request has shown what kind of server this process runs under (see :meth:`check_server`).
        self.server_checked = False
        self._last_failure_log = -math.inf

    def check_server(self, environ: Mapping[str, Any]) -> None:
        """Warn, once per process, when memory storage serves a server that runs several processes."""
        self.server_checked = True
        if self.in_memory and environ.get("wsgi.multiprocess"):
            logger.warning(
                "jwtgate: rate limits are counted in memory (JWTGATE_RATE_LIMIT_STORAGE_URI=%r), but %s runs this app "
                "in several processes (wsgi.multiprocess): each process counts alone, so every token gets its limit "
                "once per process. Set JWTGATE_RATE_LIMIT_STORAGE_URI to shared storage such as "
                "'redis://redis-host:6379/0'.",
                self.uri,
                environ.get("SERVER_SOFTWARE") or "the server",
            )

    def log_failure(self, exc: BaseException, fail_open: bool) -> None:
        """Log that the store failed: at most once a minute, an outage fails every request."""
        now = time.monotonic()
        if now - self._last_failure_log < _STORE_LOG_INTERVAL:
            return
        self._last_failure_log = now
        logger.error(
            "jwtgate: the rate-limit store %s failed (%s: %s); %s",
            self.uri,
            type(exc).__name__,
            redact_secrets(str(exc), self._raw_uri),
            "requests pass without a limit (JWTGATE_RATE_LIMIT_FAIL_OPEN)"
            if fail_open
            else "requests are refused with 503 until it is back",
        )


class GateLimiter:
    """Apply :class:`RateLimitRules` with a :class:`LimitStore`. One per settings version, like the policy.

    :param rules: the limits.
    :param store: where they are counted.
    :param clock: the current time in seconds, the gate's clock; the memory storage must agree with it (tests
        control both).

    ::

        limiter = GateLimiter(rules, store)
        limiter.precheck(environ, "GET", "/rest/api/2/myself", keeper, view)  # RateLimited: address blocked
        quota = limiter.hit(decision)                                    # RateLimited: bucket empty
        limiter.record_failure(error)                                    # after a refused authentication
    """

    def __init__(self, rules: RateLimitRules, store: LimitStore, clock: Callable[[], float] = time.time) -> None:
        self.rules = rules
        self.store = store
        self.storage = storage = store.storage
        self.clock = clock
        self._incr = storage.count if isinstance(storage, SweptMemoryStorage) else storage.incr
        self._get = storage.current if isinstance(storage, SweptMemoryStorage) else storage.get
        self._resets: dict[str, float] = {}

    # -- before the policy: the failed-authentication limit ----------------------------------------------------------

    def precheck(self, environ: Mapping[str, Any], method: str, path: str, keeper: Gatekeeper, view: View) -> None:
        """Refuse a request with credentials from an address that has used up its failed-authentication limit.

        Runs before the policy, so a blocked address costs no verification. Requests the gate does not handle
        (bypass and unprotected paths, gate off) and addresses the allowlist refuses anyway are not looked up.
        """
        if not self.store.server_checked:
            self.store.check_server(environ)
        failures = self.rules.failures
        if not failures or not environ.get("HTTP_AUTHORIZATION") or keeper.handles(method, path, view) is None:
            return
        # The address exactly as the policy resolves it, so a forged header cannot reset it; its key was made with
        # the (memoised) resolution.
        client = keeper.client_of(environ)
        if not client.allowed:  # the allowlist refuses this address anyway, without verifying anything
            return
        bucket = "failed:" + client.limit_key  # failure_bucket's, inlined: this runs on every request with credentials
        for rule in failures:
            key = f"{KEY_PREFIX}/{bucket}{rule.suffix}"
            try:
                count = self._get(key)
                if count < rule.amount:
                    continue
                now = self.clock()
                retry_after = max(1, math.ceil(self._reset_at(key, count, rule, now) - now))
            except Exception as exc:  # the store's failure, whatever its library calls it: never a 500
                self._store_failed(exc, client, None)
                return
            denied = RateLimited(
                f"too many failed authentication attempts from {counted_as(client)}; retry after {retry_after} seconds",
                limit=rule.amount,
                retry_after=retry_after,
                reason="too_many_failed_attempts",
            )
            denied.client = client
            raise denied

    def record_failure(self, exc: GateDenied) -> None:
        """Count a refused authentication against the address it came from (never raises)."""
        if (
            not self.rules.failures
            or not isinstance(exc, AuthenticationFailed)
            or not exc.credentials_present
            or exc.client is None
        ):
            return
        bucket = failure_bucket(exc.client)
        for rule in self.rules.failures:
            try:
                self.storage.incr(storage_key(bucket, rule), rule.expiry)
            except Exception as error:  # the request is refused already; a lost count is the lesser harm
                self.store.log_failure(error, self.rules.fail_open)
                return

    # -- after the policy: the caller's own limit ------------------------------------------------------------------

    def hit(self, decision: Decision) -> Quota | None:
        """Count one request against the bucket of the decision's identity.

        :returns: the quota for the ``RateLimit-*`` headers; ``None`` when the store failed and the gate fails open.
        :raises RateLimited: the bucket is empty.
        :raises TemporarilyUnavailable: the store failed and the gate fails closed.
        """
        identity = decision.identity
        if identity is None:  # the gate was not involved
            return None
        # This runs on every counted request: the common path asks the store one thing per limit, the increment.
        rules = self.rules
        token_id = identity.token_id
        if token_id is not None and identity.auth_method != "anonymous" and len(token_id) <= _MAX_TOKEN_ID_LENGTH:
            bucket = f"token:{identity.provider or identity.auth_method}:{token_id}"  # bucket_for's, inlined
        else:
            bucket = bucket_for(identity, decision.client)
        now = self.clock()
        resets = self._resets
        incr = self._incr
        quota: Quota | None = None
        for rule in rules.for_identity(identity) if rules.groups else rules.default:
            key = f"{KEY_PREFIX}/{bucket}{rule.suffix}"
            try:
                count = incr(key, rule.expiry)
                reset_at = resets.get(key)
                if count == 1 or reset_at is None or reset_at <= now:
                    reset_at = self._reset_at(key, count, rule, now)
            except Exception as exc:  # the store's failure, whatever its library calls it: never a 500
                self._store_failed(exc, decision.client, identity)
                return None
            reset = max(0, math.ceil(reset_at - now))
            if count > rule.amount:
                who = "this token" if identity.is_authenticated else counted_as(decision.client)
                denied = RateLimited(
                    f"{who} has used up its rate limit ({rule.text}); retry after {max(1, reset)} seconds",
                    limit=rule.amount,
                    retry_after=max(1, reset),
                )
                denied.client = decision.client
                denied.identity = identity
                raise denied
            if quota is None or rule.amount - count < quota.remaining:
                # Quota(...) without the named tuple's Python-level __new__: every counted request makes one.
                quota = tuple.__new__(Quota, (rule.amount, rule.amount - count, reset))
        return quota

    # -- helpers ------------------------------------------------------------------------------------------------------

    def _reset_at(self, key: str, count: int, rule: Rule, now: float) -> float:
        """When ``key``'s window ends. Asking the store costs a round trip in Redis, so each process remembers the
        answer until the window ends; a window this very request opened ends ``expiry`` seconds from now."""
        resets = self._resets
        if count == 1:
            reset_at = now + rule.expiry
        else:
            known = resets.get(key)
            if known is not None and known > now:
                return known
            # Redis reports whole seconds (TTL) and the store's clock may run a moment apart: never beyond the window.
            reset_at = min(self.storage.get_expiry(key), now + rule.expiry)
        if len(resets) >= _MAX_REMEMBERED_RESETS:
            resets.clear()
        resets[key] = reset_at
        return reset_at

    def _store_failed(self, exc: Exception, client: ClientAddress | None, identity: Identity | None) -> None:
        self.store.log_failure(exc, self.rules.fail_open)
        if self.rules.fail_open:
            return
        unavailable = TemporarilyUnavailable(
            "the rate-limit store cannot be reached; retry shortly", reason="rate_limit_unavailable"
        )
        unavailable.client = client
        unavailable.identity = identity
        raise unavailable from exc


class SweptMemoryStorage(MemoryStorage):
    """limits' memory storage with a cheaper fixed-window count, for ``memory://``.

    limits' own ``MemoryStorage.incr`` starts a new ``threading.Timer`` thread to expire counters whenever the
    previous one (10 ms) has run out, so a busy app starts a thread every 10 ms, and each start waits for the new
    thread to take the GIL: measured here under load, about 25 µs per request, more than the counting itself. Here
    :meth:`incr` and :meth:`get` (the two calls the gate makes on every request) work under one lock and start no
    thread, and the requests themselves sweep expired counters out about once a second. Everything else is limits'.
    ``flask_jwtgate.limiter`` hands this class to Flask-Limiter, under a scheme of its own, for ``memory://``.
    """

    STORAGE_SCHEME = ["jwtgate+memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        self._lock = threading.Lock()
        self._next_sweep = _memory_time() + _SWEEP_INTERVAL
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount`` to ``key``'s count; a count whose window has passed starts again (a new window)."""
        return self.count(key, expiry, amount)

    def get(self, key: str) -> int:
        """``key``'s count in its current window (0 once the window has passed)."""
        return self.current(key)

    # limits wraps incr() and get() of every storage class in a handler that turns the backend's errors into
    # StorageError; memory has no backend to fail, and the gate calls these two directly to save that layer.

    def count(self, key: str, expiry: float, amount: int = 1) -> int:
        """:meth:`incr`, unwrapped."""
        now: float = limits.storage.memory.time.time()  # type: ignore[attr-defined]  # as _memory_time, inlined
        if now >= self._next_sweep:
            self._sweep(now)
        with self._lock:
            if self.expirations.get(key, 0) <= now:
                self.storage[key] = amount
                self.expirations[key] = now + expiry
                return amount
            count = self.storage[key] + amount
            self.storage[key] = count
            return count

    def current(self, key: str) -> int:
        """:meth:`get`, unwrapped."""
        now: float = limits.storage.memory.time.time()  # type: ignore[attr-defined]  # as _memory_time, inlined
        with self._lock:
            if self.expirations.get(key, 0) <= now:
                return 0
            return self.storage.get(key, 0)

    def _sweep(self, now: float) -> None:
        with self._lock:
            self._next_sweep = now + _SWEEP_INTERVAL
            for key in [key for key, expires in self.expirations.items() if expires <= now]:
                del self.expirations[key]
                self.storage.pop(key, None)


def _memory_time() -> float:
    # The clock limits' memory storage expires counters by (tests point it at their own clock).
    now: float = limits.storage.memory.time.time()  # type: ignore[attr-defined]
    return now
