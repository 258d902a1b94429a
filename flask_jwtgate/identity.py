"""Who the gate decided the caller is."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


class Identity(NamedTuple):
    """The caller of the current request, as ``current_identity`` shows it. Immutable.

    (A named tuple rather than a dataclass: one is made per request, and this is the cheapest immutable record.)

    :param username: the name the provider's ``username_claim`` (or the host's validator) gave; ``None`` when anonymous.
    :param groups: the token's groups merged with those the host's ``groups_loader`` returned.
    :param auth_method: ``"jwt"``, ``"introspection"``, ``"api_token"``, ``"pat"``, ``"basic"`` or ``"anonymous"``.
    :param token_id: a stable id of the credential (a JWT's ``jti`` or a hash), never the secret.
    :param provider: the provider that vouched for the token, if any.
    :param claims: the verified claims of a JWT; empty otherwise.
    :param groups_complete: ``False`` when the token's groups claim was malformed: the caller then counts as read-only
        wherever read-only groups are configured.
    """

    username: str | None
    groups: frozenset[str] = frozenset()
    auth_method: str = "anonymous"
    token_id: str | None = None
    provider: str | None = None
    claims: Mapping[str, Any] = _NO_CLAIMS
    groups_complete: bool = True

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
