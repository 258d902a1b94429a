"""Verifying a JWT with a provider's public key, and reading who it names.

Trust decisions, in the order they are made:

1. The token's shape is checked before anything is decoded: three base64url segments, bounded in size, so a hostile
   token costs little (``alg: none``, JWE, nested tokens, oversized or deeply nested headers stop here).
2. The provider is chosen by the token's ``iss`` (or is the only one). Keys are never tried in turn.
3. The algorithm must be one the *provider's configuration* allows; the header only says which of those it used.
   ``jwk``, ``jku``, ``x5u`` and ``x5c`` headers are never read, and any ``crit`` extension is refused.
4. PyJWT checks the signature with the provider's key object. Every PyJWT error is caught at its base class
   (``PyJWTError``): ``InvalidKeyError`` is not an ``InvalidTokenError``, and missing it would turn a forged token
   into a 500.
5. The token must be an access token (:func:`check_access_token`): an OpenID Connect ID token is signed by the same
   key, and its ``aud`` is the client's id, which an administrator may well have configured as the audience; it
   says who signed in to a client, not that the client may call this API. Providers that mark their tokens are
   believed: Keycloak's ``typ`` claim (``ID``, ``Refresh``, ``Offline``, ``Logout``) and Cognito's ``token_use``
   (anything but ``access``). The introspection path applies the same check to the provider's answer.
6. The claims are checked here rather than by PyJWT, because PyJWT coerces ``exp: "9999999999"`` with ``int()``:
   date claims must be JSON numbers. ``exp`` is required; ``nbf`` and ``iat`` are checked when present, ``iss`` and
   ``aud`` when present or configured.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import jwt
from jwt.exceptions import PyJWTError

from .errors import InvalidClaim, InvalidSignature, InvalidToken, TokenExpired
from .identity import Identity, freeze_claims
from .jwks import JWKSRegistry
from .settings import ProviderSettings

#: Larger tokens are refused before decoding; real access tokens are a few KiB at most.
MAX_TOKEN_LENGTH = 16 * 1024
MAX_HEADER_LENGTH = 2048
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*\Z")
#: base64url's two letters of its own to standard base64's, for binascii.
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
#: For a segment whose last group has 2 or 3 characters: the characters that group may end with, those whose bits past
#: the data are zero. Any other spelling decodes to the same bytes, so is not the one canonical form (RFC 7515 §2).
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
_ACCEPTED_TYPES = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
#: Keycloak's ``typ`` claim (any case) of the tokens it signs that are not access tokens (its access tokens say
#: ``Bearer``); ``id_token`` and ``refresh_token`` as some providers spell them.
NOT_ACCESS_TOKEN_TYPES = frozenset({"id", "id_token", "refresh", "refresh_token", "offline", "logout"})


@dataclass(frozen=True)
class VerifiedToken:
    """What a verified token says: who, in which groups (from the token alone), until when."""

    provider: str
    username: str
    groups: frozenset[str]
    claims: Mapping[str, Any]
    token_id: str
    expires_at: float
    auth_method: str = "jwt"
    #: False when the groups claim was present but not a list of strings (see :func:`groups_claim_is_malformed`).
    groups_complete: bool = True

    def __post_init__(self) -> None:
        # Cached and shared by every request with this token: nobody may change what the next request sees.
        object.__setattr__(self, "claims", freeze_claims(self.claims))

    @cached_property
    def identity(self) -> Identity:
        """The identity this token alone establishes (before the host's ``groups_loader`` adds groups)."""
        return Identity(
            self.username,
            self.groups,
            self.auth_method,
            self.token_id,
            self.provider,
            self.claims,
            self.groups_complete,
            self.groups,
        )

    def identity_with(self, loaded: frozenset[str]) -> Identity:
        """The identity with the groups the host's ``groups_loader`` gave as well.

        The last one made is kept with the groups it was made from: the requests of a caller whose groups have not
        changed share one immutable identity instead of each making its own (a group change still applies at once).
        """
        last: tuple[frozenset[str], Identity] | None = self.__dict__.get("_identity_with_loaded")
        if last is not None and (last[0] is loaded or last[0] == loaded):
            return last[1]
        identity = self.identity._replace(groups=self.groups | loaded)
        # Beside cached_property's entry, and like it past the frozen dataclass's __setattr__: a cache, not a field.
        self.__dict__["_identity_with_loaded"] = (loaded, identity)
        return identity


def canonical_token(token: str) -> str:
    """The one spelling of ``token`` that its encoding variants share.

    PyJWT accepts a signature with base64 padding appended (``...sig==``); that is the same signature, so it must be
    the same cache entry, identity and rate-limit bucket. Padding is stripped only where PyJWT would accept it, so the
    cache never makes a token valid that verification would refuse.
    """
    if not token.endswith("="):
        return token
    stripped = token.rstrip("=")
    padding = len(token) - len(stripped)
    signature = stripped.rpartition(".")[2]
    if padding > 2 or (len(signature) + padding) % 4:
        raise InvalidToken("the token's signature has invalid base64 padding", reason="malformed_token")
    return stripped


def _decode_segment(segment: str, name: str) -> bytes:
    rest = len(segment) % 4
    if not _SEGMENT.match(segment) or rest == 1:
        raise InvalidToken(f"the token's {name} is not base64url", reason="malformed_token")
    if rest and segment[-1] not in _CANONICAL_LAST[rest]:
        raise InvalidToken(f"the token's {name} is not canonical base64url", reason="malformed_token")
    return binascii.a2b_base64(segment.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (4 - rest if rest else 0))


def _decode_json_object(segment: str, name: str) -> dict[str, Any]:
    data = _decode_segment(segment, name)
    try:
        # What json.loads does with bytes (UTF-8, 16 or 32), with one decoder made once rather than one per call.
        value = _JSON.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise InvalidToken(f"the token's {name} is not a JSON object", reason="malformed_token") from exc
    if not isinstance(value, dict):
        raise InvalidToken(f"the token's {name} is not a JSON object", reason="malformed_token")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Decodes a token's header and payload: JSON's own constants (NaN, Infinity) are not JSON.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


class ParsedToken(NamedTuple):
    """A compact JWS, checked for shape and decoded, not yet verified."""

    header: dict[str, Any]
    payload: dict[str, Any]
    #: What the signature covers: the first two segments as sent.
    signing_input: bytes
    signature: bytes


def parse_token(token: str) -> ParsedToken:
    """Check a compact JWS's shape and decode it, once: verification uses these parts as they are, so nothing a
    later step reads can differ from what the signature was checked over."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken(f"the token is longer than {MAX_TOKEN_LENGTH} characters", reason="malformed_token")
    segments = token.split(".")
    if len(segments) == 5:
        raise InvalidToken("encrypted tokens (JWE) are not accepted", reason="unsupported_token")
    if len(segments) != 3 or not all(segments):
        raise InvalidToken("the token is not a JWT (header.payload.signature)", reason="malformed_token")
    if len(segments[0]) > MAX_HEADER_LENGTH:
        raise InvalidToken("the token's header is too large", reason="malformed_token")
    header = _decode_json_object(segments[0], "header")
    payload = _decode_json_object(segments[1], "payload")
    signature = _decode_segment(segments[2].rstrip("="), "signature")
    return ParsedToken(header, payload, f"{segments[0]}.{segments[1]}".encode("ascii"), signature)


def split_token(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a compact JWS's shape and return its unverified header and payload."""
    parsed = parse_token(token)
    return parsed.header, parsed.payload


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """Read a claim by name, or by a dotted path (``realm_access.roles``) when no claim has that literal name."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    # bool is an int in Python but not a NumericDate; strings are what PyJWT would have coerced; a 400-digit integer
    # is a number no float can hold.
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(name)
        return float(value)
    except (ValueError, OverflowError):
        raise InvalidClaim(
            f"the '{name}' claim must be a JSON number (seconds since the epoch)", claim=name
        ) from None


def check_access_token(claims: Mapping[str, Any]) -> None:
    """Refuse a token whose claims say it is not an access token: an OpenID Connect ID token above all.

    Keycloak's ``typ`` claim names the kind (``Bearer`` for access tokens; ``ID``, ``Refresh``, ``Offline``,
    ``Logout`` for the others); Cognito's ``token_use`` is ``access`` or ``id``, and anything but ``access`` (``null``
    included) is refused.
    The same check runs on a JWT's payload and on an introspection answer, with the same reason.

    :raises InvalidClaim: reason ``not_access_token``, naming the claim.
    """
    typ = claims.get("typ")
    if isinstance(typ, str) and typ.lower() in NOT_ACCESS_TOKEN_TYPES:
        raise InvalidClaim(
            f"the token is not an access token: its 'typ' claim says {_shown(typ)}",
            claim="typ",
            reason="not_access_token",
        )
    token_use = claims.get("token_use")
    if "token_use" in claims and not (isinstance(token_use, str) and token_use.lower() == "access"):
        raise InvalidClaim(
            f"the token is not an access token: its 'token_use' claim says {_shown(token_use)}, not 'access'",
            claim="token_use",
            reason="not_access_token",
        )


def _token_id(payload: Mapping[str, Any], token: str) -> str:
    """A verified token's id: its ``jti`` (when a usable string), else a hash of its canonical spelling."""
    jti = payload.get("jti")
    if isinstance(jti, str) and 0 < len(jti) <= 128:
        return "jti:" + jti
    return "sha256:" + hashlib.sha256(canonical_token(token).encode()).hexdigest()[:32]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_claims(claims: Mapping[str, Any], provider: ProviderSettings, now: float, require_exp: bool = True) -> float:
    """Check the registered claims against ``provider``; return ``exp`` (infinity when absent and not required:
    an introspection answer may omit it, RFC 7662 §2.2)."""
    leeway = provider.leeway
    exp = _number(claims, "exp")
    if exp is None:
        if require_exp:
            raise InvalidClaim("the token has no 'exp' claim; tokens without an expiry are refused", claim="exp")
        exp = math.inf
    if exp + leeway <= now:
        raise TokenExpired(f"the token expired {int(now - exp)} seconds ago (leeway {leeway} s)")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf - leeway > now:
        raise InvalidClaim(
            f"the token is not valid for another {int(nbf - now)} seconds", claim="nbf", reason="not_yet_valid"
        )
    iat = _number(claims, "iat")
    if iat is not None and iat - leeway > now:
        raise InvalidClaim("the token was issued in the future", claim="iat", reason="issued_in_future")
    if provider.issuer is not None:
        iss = claims.get("iss")
        if iss != provider.issuer:
            raise InvalidClaim(
                f"the token's issuer is not {provider.issuer!r}" if iss is not None else "the token has no 'iss' claim",
                claim="iss",
                reason="wrong_issuer",
            )
    if "aud" in claims or provider.audience:
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise InvalidClaim(
                "the token has no valid 'aud' claim" if aud is None else "the 'aud' claim must be a string or list",
                claim="aud",
                reason="wrong_audience",
            )
        if not provider.audience:
            raise InvalidClaim(
                f"the token names an audience but provider {provider.name!r} has none configured; set its 'audience'",
                claim="aud",
                reason="wrong_audience",
            )
        if not set(audiences) & set(provider.audience):
            raise InvalidClaim("the token is not meant for this audience", claim="aud", reason="wrong_audience")
    return exp


def claimed_username(claims: Mapping[str, Any], provider: ProviderSettings) -> str | None:
    """The provider's ``username_claim``, when it is a non-empty string."""
    username = _claim(claims, provider.username_claim)
    return username if isinstance(username, str) and username.strip() else None


def read_identity(claims: Mapping[str, Any], provider: ProviderSettings) -> tuple[str, frozenset[str]]:
    """The username (which must be a non-empty string) and the groups (a list of strings, or none at all)."""
    username = claimed_username(claims, provider)
    if username is None:
        raise InvalidClaim(
            f"the token's '{provider.username_claim}' claim (the provider's username_claim) is not a username",
            claim=provider.username_claim,
            reason="no_username",
        )
    groups: frozenset[str] = frozenset()
    if provider.groups_claim:
        value = _claim(claims, provider.groups_claim)
        if isinstance(value, (list, tuple)) and all(isinstance(g, str) for g in value):
            groups = frozenset(value)
    return username, groups


def groups_claim_is_malformed(claims: Mapping[str, Any], provider: ProviderSettings) -> bool:
    """Whether the groups claim is present but not a list of strings.

    Such a claim grants no group (a string ``"admins"`` must never become membership). But the gate cannot tell
    whether it would have made the caller read-only, so the policy treats that caller as read-only wherever
    read-only groups are configured: a malformed claim never widens access.
    """
    if not provider.groups_claim:
        return False
    value = _claim(claims, provider.groups_claim)
    return value is not None and not (isinstance(value, (list, tuple)) and all(isinstance(g, str) for g in value))


class JWTVerifier:
    """Verify compact JWS tokens against configured public-key and JWKS providers.

    :param providers: the providers that verify locally (those with a ``public_key`` or a ``jwks_url``).
    :param clock: returns the current time in seconds; injected by tests.
    :param jwks: the JWKS clients to take keys from (default: a registry of its own).

    ::

        verifier = JWTVerifier(settings.providers)
        verified = verifier.verify(token)  # raises InvalidToken (or a subclass) with a reason
        verified.username, verified.groups
    """

    def __init__(
        self,
        providers: Sequence[ProviderSettings],
        clock: Callable[[], float] = time.time,
        jwks: JWKSRegistry | None = None,
    ) -> None:
        self.providers = tuple(p for p in providers if p.public_key is not None or p.jwks_url is not None)
        self.by_issuer = {p.issuer: p for p in self.providers if p.issuer is not None}
        self.clock = clock
        #: Where JWKS providers' keys come from (shared across settings versions by the extension).
        self.jwks = jwks if jwks is not None else JWKSRegistry(clock=clock)
        self._algorithms = jwt.algorithms.get_default_algorithms()

    def select(self, payload: Mapping[str, Any]) -> ProviderSettings:
        """The one provider that may verify a token with this (unverified) payload."""
        if not self.providers:
            raise InvalidToken("no JWT provider is configured", reason="no_provider")
        if len(self.providers) == 1:
            return self.providers[0]
        iss = payload.get("iss")
        provider = self.by_issuer.get(iss) if isinstance(iss, str) else None
        if provider is None:
            raise InvalidClaim("the token's issuer is not a configured provider", claim="iss", reason="unknown_issuer")
        return provider

    def verify(self, token: str, parsed: ParsedToken | None = None) -> VerifiedToken:
        """Verify ``token`` and return what it says; raise :class:`InvalidToken` (with a reason) otherwise.

        :param parsed: ``parse_token(token)``, when the caller has it already.
        """
        if parsed is None:
            parsed = parse_token(token)
        header, payload = parsed.header, parsed.payload
        provider = self.select(payload)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise InvalidToken("unsigned tokens (alg 'none') are refused", reason="alg_none")
        if alg not in provider.algorithms:
            raise InvalidToken(
                f"the algorithm {alg!r} is not allowed for provider {provider.name!r}", reason="alg_not_allowed"
            )
        if "crit" in header or "b64" in header:
            raise InvalidToken("critical header extensions are not supported", reason="unsupported_header")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES):
            raise InvalidToken("the token's 'typ' header is not JWT", reason="unsupported_token")
        if "cty" in header:
            raise InvalidToken("nested tokens ('cty' header) are not accepted", reason="unsupported_token")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("the token's 'kid' header is not a string", reason="malformed_token")
        # A JWKS provider's key is chosen by kid and must itself be bound to alg (see flask_jwtgate.jwks).
        key = provider.public_key
        jwks = None
        if key is None:
            jwks = self.jwks.client(provider)
            key = jwks.key_for(kid, alg, provider.algorithms)
        # The signature is checked over the very bytes parsed above, by PyJWT's algorithm object for the one
        # algorithm the provider allows and the header names (PyJWT's decode_complete would parse the token again).
        try:
            algorithm = self._algorithms[alg]
            valid = algorithm.verify(parsed.signing_input, algorithm.prepare_key(key), parsed.signature)
        except (KeyError, PyJWTError, TypeError, ValueError) as exc:
            raise InvalidToken("the token could not be verified", reason="malformed_token") from exc
        if not valid:
            raise InvalidSignature(f"the signature does not verify with provider {provider.name!r}'s key")
        token_id = _token_id(payload, token)
        now = self.clock()
        try:
            check_access_token(payload)
            exp = check_claims(payload, provider, now)
            username, groups = read_identity(payload, provider)
        except InvalidToken as refused:
            # Signed by the provider's key, but refused for its claims: the audit log records whose token it was (with
            # no groups: it grants nothing).
            refused.identity = Identity(
                claimed_username(payload, provider), auth_method="jwt", token_id=token_id, provider=provider.name
            )
            raise
        if jwks is not None:
            # Cached no longer than cache_ttl, nor than the key set it was checked with is fresh: a token checked
            # with a stale set is checked again on its next use, against the refreshed set.
            exp = min(exp, now + provider.cache_ttl, jwks.trusted_until(kid, alg))
        return VerifiedToken(
            provider=provider.name,
            username=username,
            groups=groups,
            claims=payload,
            token_id=token_id,
            expires_at=exp,
            groups_complete=not groups_claim_is_malformed(payload, provider),
        )


class TokenCache:
    """A bounded LRU of verified tokens, keyed by canonical token; no entry outlives its token's ``exp``.

    Only :meth:`put` adds entries, and only verified tokens are put. A new cache is made whenever settings change,
    so a key removed or a rule tightened is never answered from an old entry.
    """

    def __init__(self, maxsize: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.maxsize = maxsize
        self.clock = clock
        self._entries: OrderedDict[str, VerifiedToken] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> VerifiedToken | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self.clock():
            with self._lock:
                self._entries.pop(key, None)
            return None
        try:
            self._entries.move_to_end(key)
        except KeyError:  # evicted by another thread between the two calls
            pass
        return entry

    def put(self, key: str, entry: VerifiedToken) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

