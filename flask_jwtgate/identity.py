"""Who the gate decided the caller is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class FrozenClaims(dict[str, Any]):
    """A read-only dict of verified claims: shared by every request with the same cached token, so no view may
    change what the next one sees. A dict subclass so that ``jsonify(current_identity.claims)`` still works."""

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("verified claims are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly

    def __hash__(self) -> int:  # type: ignore[override]
        return id(self)


#: The claims of every identity that has none (anonymous callers, API tokens, PATs, Basic): read-only, and JSON like a
#: JWT's (``jsonify(current_identity.claims)`` works for every caller).
NO_CLAIMS: Mapping[str, Any] = FrozenClaims()


def freeze_claims(value: Any) -> Any:
    """A deep read-only copy of decoded JSON: objects become :class:`FrozenClaims`, arrays tuples."""
    if isinstance(value, dict):
        return FrozenClaims({key: freeze_claims(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(freeze_claims(item) for item in value)
    return value


class Identity(NamedTuple):
    """The caller of the current request, as ``current_identity`` shows it. Immutable.

    (A named tuple rather than a dataclass: one is made per request, and this is the cheapest immutable record.)

    :param username: the name the provider's ``username_claim`` (or the host's validator) gave; ``None`` when anonymous.
    An identity is (provider, username): two providers' users of the same name are different callers, unless the
    admin says that a provider's users are the host directory's users (the provider's ``directory_users``).

    :param username: the name the provider's ``username_claim`` (or the host's validator) gave; ``None`` when anonymous.
    :param groups: the credential's own groups merged with those the host's ``groups_loader`` returned.
    :param auth_method: ``"jwt"``, ``"introspection"``, ``"api_token"``, ``"pat"``, ``"basic"`` or ``"anonymous"``.
    :param token_id: a stable id of the credential (a JWT's ``jti`` or a hash), never the secret.
    :param provider: the provider that vouched for the user: the token's provider, or for an API token the provider
        of the user it belongs to; ``None`` for the host's own users (PATs, Basic, tokens made for them).
    :param claims: the verified claims of a JWT; empty otherwise.
    :param groups_complete: ``False`` when the caller's groups cannot be fully known (a malformed groups claim, or an
        API token made by a read-only caller, or for another user without naming its groups): the caller then counts
        as read-only wherever read-only groups are configured.
    :param token_groups: the groups the credential itself carries (a token's groups claim, an API token's stored
        groups), without the ``groups_loader``'s: what an API token made by this caller keeps.
    """

    username: str | None
    groups: frozenset[str] = frozenset()
    auth_method: str = "anonymous"
    token_id: str | None = None
    provider: str | None = None
    claims: Mapping[str, Any] = NO_CLAIMS
    groups_complete: bool = True
    token_groups: frozenset[str] = frozenset()

    @property
    def is_authenticated(self) -> bool:
        return self.auth_method != "anonymous"

    def to_dict(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "groups": sorted(self.groups),
            "auth_method": self.auth_method,
            "token_id": self.token_id,
            "provider": self.provider,
        }


ANONYMOUS = Identity(username=None)
