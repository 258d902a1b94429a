"""The demo user directory: groups, and the host's own credentials (passwords and personal access tokens).

Any identity the gate authenticates is a user; the directory only adds groups. The passwords and personal access
tokens below are a demo, so that the example app shows every kind of credential the gate takes: they are public
(they are in this file), so never expose the example app beyond your own machine. A real directory keeps salted,
slow password hashes (``werkzeug.security.check_password_hash``) and only hashes of its tokens.
"""

from __future__ import annotations

import hashlib
import hmac

#: username -> groups. ``alice`` administers, ``bob`` develops, ``carol`` may only read.
DEMO_USERS: dict[str, frozenset[str]] = {
    "alice": frozenset({"jira-administrators", "jwtgate-admins"}),
    "bob": frozenset({"jira-developers"}),
    "carol": frozenset({"viewers"}),
}

#: username -> password, for Basic credentials (``curl -u bob:builder``). Demo only.
DEMO_PASSWORDS: dict[str, str] = {"alice": "wonderland", "bob": "builder", "carol": "christmas"}

#: The demo personal access tokens (what Jira calls PATs): SHA-256 of the token -> its user. Demo only; the tokens
#: themselves are ``pat-demo-<username>`` (see :func:`demo_pat`).
DEMO_PATS: dict[str, str] = {
    hashlib.sha256(f"pat-demo-{username}".encode()).hexdigest(): username for username in DEMO_USERS
}


def groups_of(username: str) -> frozenset[str]:
    return DEMO_USERS.get(username, frozenset())


def check_password(username: str, password: str) -> bool:
    """The demo directory's password check (the gate's ``basic_auth_validator``)."""
    expected = DEMO_PASSWORDS.get(username)
    # compare_digest on bytes: it refuses str with non-ASCII characters, which a caller may send.
    return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


def pat_owner(token: str) -> str | None:
    """The user of a demo personal access token, or ``None`` (the gate's ``pat_validator``)."""
    return DEMO_PATS.get(hashlib.sha256(token.encode()).hexdigest())


def demo_pat(username: str) -> str:
    """The demo personal access token of ``username``."""
    return f"pat-demo-{username}"
