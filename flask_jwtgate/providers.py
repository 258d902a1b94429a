"""Which provider vouches for a bearer token: local verification (public key, JWKS) or introspection.

The routing rules, and why they are safe
----------------------------------------
- A JWT (three segments) goes to the provider its ``iss`` names; with a single JWT provider, to that one (which then
  checks ``iss`` itself when it has an ``issuer``). Keys and providers are never tried in turn.
- A JWT also goes to an introspection provider when its ``iss`` names that provider, or when no provider verifies
  JWTs locally and there is exactly one introspection provider (a custom provider issuing JWTs with an introspection
  endpoint). If that provider has an ``issuer`` and the token names another, the token is refused without being sent:
  a token meant for someone else is never shown to a provider that did not issue it.
- Any other token (opaque, or an encrypted JWE) goes to the one introspection provider that takes opaque tokens: the
  one marked ``opaque_tokens: true``, or the only introspection provider when none is marked. With several and none
  marked, opaque tokens are refused (401 ``no_provider``): an opaque token names no issuer, and sending it to every
  provider in turn would show one provider's tokens to the others.

A gate-issued API token (``jgt_``) or a host PAT must be recognised *before* this router is asked, or it would be
sent to the introspection provider.

Every answer is a :class:`VerifiedToken` whose ``expires_at`` says how long it may be cached: ``exp`` for a
public-key JWT; also no longer than ``cache_ttl`` for a JWKS JWT (so a key the provider has withdrawn stops being
trusted for cached tokens too) and for an introspected token (so a revocation is seen within ``cache_ttl``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .errors import InvalidClaim, InvalidToken
from .introspection import IntrospectionRegistry, introspection_key, verify_introspected
from .jwks import JWKSRegistry
from .settings import ProviderSettings
from .verification import MAX_TOKEN_LENGTH, JWTVerifier, ParsedToken, VerifiedToken, canonical_token, parse_token


class ProviderClients:
    """The network clients of one app (JWKS key sets, introspection caches), kept across settings changes.

    :param clock: the current time in seconds; injected by tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.jwks = JWKSRegistry(clock=clock)
        self.introspection = IntrospectionRegistry(clock=clock)

    def retain(self, providers: Sequence[ProviderSettings]) -> None:
        """Drop the clients of providers that are no longer configured."""
        self.jwks.retain(providers)
        self.introspection.retain(providers)


class ProviderRouter:
    """Route a bearer token to the provider that may vouch for it, and return what that provider says.

    :param providers: the configured providers.
    :param clock: the current time in seconds; injected by tests.
    :param clients: the app's network clients (default: new ones, with empty caches).

    ::

        router = ProviderRouter(settings.providers)
        verified = router.verify(token)          # InvalidToken (401) or TemporarilyUnavailable (503) otherwise
        cache.put(router.cache_key(token), verified)
    """

    def __init__(
        self,
        providers: Sequence[ProviderSettings],
        clock: Callable[[], float] = time.time,
        clients: ProviderClients | None = None,
    ) -> None:
        self.clock = clock
        self.clients = clients if clients is not None else ProviderClients(clock=clock)
        self.jwt = JWTVerifier(providers, clock=clock, jwks=self.clients.jwks)
        self.introspectors = tuple(p for p in providers if p.introspection_url is not None)
        self.by_issuer = {p.issuer: p for p in providers if p.issuer is not None}
        marked = [p for p in self.introspectors if p.opaque_tokens]
        unmarked = [p for p in self.introspectors if p.opaque_tokens is None]
        self.opaque_provider: ProviderSettings | None = (
            marked[0] if marked else unmarked[0] if len(self.introspectors) == 1 and unmarked else None
        )

    @property
    def takes_opaque_tokens(self) -> bool:
        """Whether a token that is not a JWT has a provider to go to."""
        return self.opaque_provider is not None

    @staticmethod
    def cache_key(token: str) -> str:
        """The spelling all encoding variants of ``token`` share (see :func:`canonical_token`)."""
        return canonical_token(token) if token.count(".") == 2 else introspection_key(token)

    def route(self, token: str, parsed: ParsedToken | None = None) -> ProviderSettings | None:
        """The introspection provider that must answer for ``token``, or ``None`` when it is verified locally.

        :param parsed: ``parse_token(token)`` of a JWT, when the caller has it already.
        """
        if token.count(".") != 2:
            if self.opaque_provider is None:
                return None  # the local verifier refuses it with the precise reason (JWE, not a JWT)
            if len(token) > MAX_TOKEN_LENGTH:
                raise InvalidToken(f"the token is longer than {MAX_TOKEN_LENGTH} characters", reason="malformed_token")
            return self.opaque_provider
        if not self.introspectors:
            return None
        iss = (parsed or parse_token(token)).payload.get("iss")
        named = self.by_issuer.get(iss) if isinstance(iss, str) else None
        if named is not None:
            return named if named.introspection_url is not None else None
        if self.jwt.providers:
            return None  # the local verifier picks the only JWT provider, or refuses the unknown issuer
        if len(self.introspectors) == 1:
            only = self.introspectors[0]
            if only.issuer is not None and iss is not None:
                raise InvalidClaim(
                    f"the token's issuer is not {only.issuer!r}", claim="iss", reason="wrong_issuer"
                )
            return only
        raise InvalidClaim("the token's issuer is not a configured provider", claim="iss", reason="unknown_issuer")

    def verify(self, token: str) -> VerifiedToken:
        """What the responsible provider says about ``token``.

        :raises InvalidToken: the token is not valid (401), with a reason.
        :raises TemporarilyUnavailable: the provider's keys or endpoint cannot be reached (503).
        """
        parsed = parse_token(token) if token.count(".") == 2 else None
        provider = self.route(token, parsed)
        if provider is not None:
            client = self.clients.introspection.client(provider)
            return verify_introspected(client, provider, token, self.cache_key(token), self.clock)
        if parsed is None and not self.jwt.providers:
            raise InvalidToken("the token is not a JWT and no provider takes opaque tokens", reason="no_provider")
        return self.jwt.verify(token, parsed)
