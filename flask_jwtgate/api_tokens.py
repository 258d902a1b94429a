"""API tokens issued by the gate itself (the seed's "OAuth 2.0 tokens").

Threat model and guarantees:

- A secret is ``jgt_`` followed by 256 random bits (``secrets.token_urlsafe(32)``). It is shown once, at creation, and
  never stored: the table holds its SHA-256, which is enough for a secret of that strength (no password stretching is
  needed to resist guessing 2^256 values). A presented secret is looked up by its hash and the stored hash is compared
  again in constant time.
- Revocation is seen by every worker and host within :data:`REVOCATION_DEADLINE` seconds. Each process keeps a cache
  of looked-up tokens, and at most once a second reads the revision counters (``flask_jwtgate.revisions``), one of
  which every revocation increments in the same transaction; a changed revision empties the cache. A lookup that was
  under way while the cache was emptied is not cached (it may have read the row before the revocation): the cache
  keeps only what was read after the last emptying began. If the counters cannot be read and the last successful read
  is older than the deadline, API tokens are refused with 503: the gate cannot tell whether a token was revoked, so it
  does not guess.
- ``last_used`` is kept in memory and written in batches (at most once a minute per process, and at exit), never one
  write per request.
- A token never carries more rights than the identity that made it. It belongs to ``(provider, username)`` (the
  provider ``None`` for the host directory's users), keeps the groups its maker's credential carried (a JWT's groups
  claim; never the ``groups_loader``'s, which are asked on every use, so a directory change applies at once), and is
  marked read-only when its maker was read-only. An admin making a token for someone else names its groups; without
  them, and without a directory to say, the token is read-only wherever read-only groups are configured.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .audit.model import UTCDateTime
from .credentials import TOKEN_PREFIX
from .database import GateDatabase, metadata
from .errors import InvalidToken, TemporarilyUnavailable
from .identity import Identity
from .revisions import DEADLINE, Revisions, bump

logger = logging.getLogger("flask_jwtgate")

_SECRET = re.compile(r"jgt_[A-Za-z0-9_-]{43}\Z")
#: Seconds within which a revocation is seen everywhere.
REVOCATION_DEADLINE = DEADLINE
LAST_USED_INTERVAL = 60.0
MAX_CACHED = 10_000
MAX_EXPIRY_DAYS = 3650
DEFAULT_EXPIRY_DAYS = 90
UTC = dt.timezone.utc

api_tokens = sa.Table(
    "jwtgate_api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("username", sa.String(255), nullable=False, index=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime()),
    sa.Column("last_used_at", UTCDateTime()),
    sa.Column("created_by", sa.String(255)),
    # The owner's provider: NULL for the host directory's users (and for tokens made before providers were kept).
    sa.Column("provider", sa.String(255)),
    # The maker's credential's groups (JSON list), and whether the token is read-only; NULL in tokens made before
    # they were kept (see Gatekeeper.authenticate_api_token).
    sa.Column("groups", sa.Text()),
    sa.Column("read_only", sa.Boolean()),
)
_TOKENS_REVISION = "api_tokens"
_MISSING = object()


@dataclass(frozen=True)
class ApiToken:
    """An API token as the gate shows it: never the secret, never its hash."""

    id: str
    name: str
    username: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    created_by: str | None = None
    #: The owner's provider; ``None`` for the host directory's users.
    provider: str | None = None
    groups: frozenset[str] = frozenset()
    #: ``None`` for a token made before the mark was kept.
    read_only: bool | None = False

    @property
    def credential_id(self) -> str:
        """What the gate knows the token by (``current_identity.token_id``, the audit log, the rate-limit bucket)."""
        return "api:" + self.id

    def to_dict(self) -> dict[str, Any]:
        def iso(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "name": self.name,
            "username": self.username,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
            "created_by": self.created_by,
            "provider": self.provider,
            "groups": sorted(self.groups),
            "read_only": self.read_only,
        }


def _flush_at_exit(store: weakref.ref[ApiTokenStore]) -> None:
    alive = store()
    if alive is not None:
        alive.flush_last_used()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _row_to_token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        name=row.name,
        username=row.username,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        created_by=row.created_by,
        provider=row.provider,
        groups=_load_groups(row.groups),
        read_only=row.read_only,
    )


def _load_groups(text: str | None) -> frozenset[str]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        value = []
    return frozenset(g for g in value if isinstance(g, str)) if isinstance(value, list) else frozenset()


def _refused(token: ApiToken, description: str, reason: str) -> InvalidToken:
    """The refusal of a token the secret matched: the audit log records whose token it was (with no groups: it grants
    nothing), so that an auditor can tell who still uses a revoked or expired token."""
    refused = InvalidToken(description, reason=reason)
    refused.identity = Identity(
        token.username, auth_method="api_token", token_id=token.credential_id, provider=token.provider
    )
    return refused


class ApiTokenStore:
    """Create, list, revoke and check API tokens in the gate's database.

    :param database: the gate's database.
    :param clock: the current time in seconds (injected by tests).
    :param revisions: the app's revision counters (default: a reader of its own).

    ::

        token, secret = store.create("alice", name="ci", expires_in_days=30)
        store.authenticate(secret).username  # "alice"
        store.revoke(token.id)
    """

    def __init__(
        self, database: GateDatabase, clock: Callable[[], float] = time.time, revisions: Revisions | None = None
    ) -> None:
        self.database = database
        self.clock = clock
        self.revisions = revisions if revisions is not None else Revisions(database, clock)
        self.revisions.subscribe(_TOKENS_REVISION, self._forget)
        self._cache: dict[str, tuple[str, ApiToken] | None] = {}
        #: Incremented whenever the cache is emptied: a lookup caches its row only if no emptying began meanwhile.
        self._generation = 0
        self._last_used: dict[str, float] = {}
        self._last_used_flushed = clock()
        self._lock = threading.Lock()
        atexit.register(_flush_at_exit, weakref.ref(self))

    # -- the request path -------------------------------------------------------------------------------------------

    def authenticate(self, secret: str) -> ApiToken:
        """The token behind ``secret``; raise :class:`InvalidToken` or :class:`TemporarilyUnavailable`."""
        if not _SECRET.match(secret):
            raise InvalidToken("the API token is malformed", reason="malformed_token")
        now = self.clock()
        revisions = self.revisions
        revisions.check(now)
        if not revisions.fresh(now):
            self._forget()
            raise TemporarilyUnavailable(
                "API tokens cannot be checked: the gate's database is unreachable", reason="token_store_unavailable"
            )
        digest = hash_secret(secret)
        found: Any = self._cache.get(digest, _MISSING)
        if found is _MISSING:
            generation = self._generation
            found = self._lookup(digest)
            with self._lock:
                if self._generation == generation:  # else the row may predate a revocation: use it once, keep none
                    if len(self._cache) >= MAX_CACHED:
                        self._cache.clear()
                    self._cache[digest] = found
        cached: tuple[str, ApiToken] | None = found
        if cached is None or not hmac.compare_digest(cached[0], digest):
            raise InvalidToken("the API token is not known", reason="unknown_token")
        token = cached[1]
        if token.revoked_at is not None:
            raise _refused(token, "the API token has been revoked", "revoked")
        if token.expires_at.timestamp() <= now:
            raise _refused(token, "the API token has expired", "expired")
        self._last_used[token.id] = now
        if now - self._last_used_flushed >= LAST_USED_INTERVAL:
            self.flush_last_used()
        return token

    def _lookup(self, digest: str) -> tuple[str, ApiToken] | None:
        try:
            with self.database.engine.connect() as connection:
                row = connection.execute(sa.select(api_tokens).where(api_tokens.c.secret_hash == digest)).first()
        except sa.exc.SQLAlchemyError as exc:
            raise TemporarilyUnavailable(
                "API tokens cannot be checked: the gate's database is unreachable", reason="token_store_unavailable"
            ) from exc
        return None if row is None else (row.secret_hash, _row_to_token(row))

    def _forget(self, revision: int | None = None) -> None:
        """Empty the cache (a token was revoked somewhere, or the revocations cannot be read)."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    # -- management -------------------------------------------------------------------------------------------------

    def create(
        self,
        username: str,
        *,
        name: str,
        expires_in_days: int,
        created_by: str | None = None,
        provider: str | None = None,
        groups: frozenset[str] = frozenset(),
        read_only: bool = False,
    ) -> tuple[ApiToken, str]:
        """Make a token; return it and its secret, which is shown this once and stored nowhere.

        :param provider: the owner's provider; ``None`` for a user of the host's directory.
        :param groups: the groups the token carries besides the directory's.
        :param read_only: the token may only read wherever read-only groups are configured.
        """
        now = dt.datetime.fromtimestamp(self.clock(), UTC)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(
            id=secrets.token_hex(8),
            name=name,
            username=username,
            created_at=now,
            expires_at=now + dt.timedelta(days=expires_in_days),
            created_by=created_by,
            provider=provider,
            groups=frozenset(groups),
            read_only=read_only,
        )
        self.database.create_tables()
        with self.database.engine.begin() as connection:
            connection.execute(
                api_tokens.insert().values(
                    id=token.id,
                    name=token.name,
                    username=token.username,
                    secret_hash=hash_secret(secret),
                    created_at=token.created_at,
                    expires_at=token.expires_at,
                    created_by=created_by,
                    provider=provider,
                    groups=json.dumps(sorted(token.groups)),
                    read_only=read_only,
                )
            )
        return token, secret

    def list(self, username: str | None = None) -> list[ApiToken]:
        """Tokens of ``username``, or of everyone; newest first."""
        self.database.create_tables()
        query = sa.select(api_tokens).order_by(api_tokens.c.created_at.desc(), api_tokens.c.id)
        if username is not None:
            query = query.where(api_tokens.c.username == username)
        self.flush_last_used()
        with self.database.engine.connect() as connection:
            return [_row_to_token(row) for row in connection.execute(query)]

    def get(self, token_id: str) -> ApiToken | None:
        self.database.create_tables()
        with self.database.engine.connect() as connection:
            row = connection.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).first()
        return None if row is None else _row_to_token(row)

    def revoke(self, token_id: str) -> bool:
        """Revoke a token everywhere (within the deadline); ``False`` if there is no such live token."""
        self.database.create_tables()
        now = dt.datetime.fromtimestamp(self.clock(), UTC)
        for attempt in range(2):
            try:
                with self.database.engine.begin() as connection:
                    changed = connection.execute(
                        api_tokens.update()
                        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                        .values(revoked_at=now)
                    ).rowcount
                    if changed:
                        bump(connection, _TOKENS_REVISION)
                break
            except sa.exc.IntegrityError:
                if attempt:  # two processes created the revision row at once; the second try finds it
                    raise
        self._forget()
        return bool(changed)

    def flush_last_used(self) -> None:
        """Write the pending ``last_used`` times in one batch; keep them for the next try if the database is down."""
        with self._lock:
            pending, self._last_used = self._last_used, {}
            self._last_used_flushed = self.clock()
        if not pending:
            return
        rows = [{"token_id": key, "used": dt.datetime.fromtimestamp(at, UTC)} for key, at in pending.items()]
        try:
            with self.database.engine.begin() as connection:
                connection.execute(
                    api_tokens.update()
                    .where(api_tokens.c.id == sa.bindparam("token_id"))
                    .values(last_used_at=sa.bindparam("used")),
                    rows,
                )
        except sa.exc.SQLAlchemyError:
            logger.warning("jwtgate: could not record when %d API tokens were last used; will retry", len(rows))
            with self._lock:
                for key, at in pending.items():
                    self._last_used.setdefault(key, at)
