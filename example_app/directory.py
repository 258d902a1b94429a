"""The demo user directory: it only adds groups; any identity the gate authenticates is a user."""

from __future__ import annotations

#: username -> groups. ``alice`` administers, ``bob`` develops, ``carol`` may only read.
DEMO_USERS: dict[str, frozenset[str]] = {
    "alice": frozenset({"jira-administrators", "jwtgate-admins"}),
    "bob": frozenset({"jira-developers"}),
    "carol": frozenset({"viewers"}),
}


def groups_of(username: str) -> frozenset[str]:
    return DEMO_USERS.get(username, frozenset())
