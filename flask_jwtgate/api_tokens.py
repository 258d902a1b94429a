"""API tokens issued by the gate itself (the seed's "OAuth 2.0 tokens").

Threat model and guarantees:

- A secret is ``jgt_`` followed by 256 random bits (``secrets.token_urlsafe(32)``). It is shown once, at creation, and
  never stored: the table holds its SHA-256, which is enough for a secret of that strength (no password stretching is
  needed to resist guessing 2^256 values). A presented secret is looked up by its hash and the stored hash is compared
  again in constant time.
- Revocation is seen by every worker and host within :data:`REVOCATION_DEADLINE` seconds. Each process keeps a cache
  of looked-up tokens, and at most once a second reads one row, the revision of the token table, which every
  revocation increments in the same transaction; a changed revision empties the cache. If that read fails and the
  last successful one is older than the deadline, API tokens are refused with 503: the gate cannot tell whether a token
  was revoked, so it does not guess.
- ``last_used`` is kept in memory and written in batches (at most once a minute per process, and at exit), never one
  write per request.
- Groups are not stored with the token: the host's ``groups_loader`` is asked on every use, so a group change applies
  to existing tokens at once.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import hmac
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

logger = logging.getLogger("flask_jwtgate")

_SECRET = re.compile(r"jgt_[A-Za-z0-9_-]{43}\Z")
#: Seconds within which a revocation is seen everywhere.
REVOCATION_DEADLINE = 2.0
#: How often a process reads the revision (well inside the deadline).
REVISION_INTERVAL = 1.0
LAST_USED_INTERVAL = 60.0
MAX_CACHED = 10_000
MAX_EXPIRY_DAYS = 3650
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
)

#: One row per kind of change other processes must notice; ``revision`` only ever grows.
revisions = sa.Table(
    "jwtgate_revisions",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("revision", sa.BigInteger(), nullable=False),
)
_TOKENS_REVISION = "api_tokens"


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
    )


class ApiTokenStore:
    """Create, list, revoke and check API tokens in the gate's database.

    :param database: the gate's database.
    :param clock: the current time in seconds (injected by tests).

    ::

        token, secret = store.create("alice", name="ci", expires_in_days=30)
        store.authenticate(secret).username  # "alice"
        store.revoke(token.id)
    """

    def __init__(self, database: GateDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock
        self._cache: dict[str, tuple[str, ApiToken] | None] = {}
        self._revision: int | None = None
        self._revision_checked = float("-inf")
        self._revision_confirmed = float("-inf")
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
        self._check_revision(now)
        digest = hash_secret(secret)
        if digest in self._cache:
            cached = self._cache[digest]
        else:
            cached = self._lookup(digest)
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = cached
        if cached is None or not hmac.compare_digest(cached[0], digest):
            raise InvalidToken("the API token is not known", reason="unknown_token")
        token = cached[1]
        if token.revoked_at is not None:
            raise InvalidToken("the API token has been revoked", reason="revoked")
        if token.expires_at.timestamp() <= now:
            raise InvalidToken("the API token has expired", reason="expired")
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

    def _check_revision(self, now: float) -> None:
        if now - self._revision_checked < REVISION_INTERVAL:
            return
        with self._lock:
            if now - self._revision_checked < REVISION_INTERVAL:
                return
            self._revision_checked = now
            try:
                self.database.create_tables()
                with self.database.engine.connect() as connection:
                    revision = connection.execute(
                        sa.select(revisions.c.revision).where(revisions.c.name == _TOKENS_REVISION)
                    ).scalar()
            except sa.exc.SQLAlchemyError:
                if now - self._revision_confirmed > REVOCATION_DEADLINE:
                    self._cache.clear()
                    raise TemporarilyUnavailable(
                        "API tokens cannot be checked: the gate's database is unreachable",
                        reason="token_store_unavailable",
                    ) from None
                return
            self._revision_confirmed = now
            if revision != self._revision:
                self._revision = revision
                self._cache.clear()

    # -- management -------------------------------------------------------------------------------------------------

    def create(
        self, username: str, *, name: str, expires_in_days: int, created_by: str | None = None
    ) -> tuple[ApiToken, str]:
        """Make a token; return it and its secret, which is shown this once and stored nowhere."""
        now = dt.datetime.fromtimestamp(self.clock(), UTC)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(
            id=secrets.token_hex(8),
            name=name,
            username=username,
            created_at=now,
            expires_at=now + dt.timedelta(days=expires_in_days),
            created_by=created_by,
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
                        self._bump_revision(connection)
                break
            except sa.exc.IntegrityError:
                if attempt:  # two processes created the revision row at once; the second try finds it
                    raise
        self._cache.clear()
        return bool(changed)

    @staticmethod
    def _bump_revision(connection: sa.Connection) -> None:
        updated = connection.execute(
            revisions.update()
            .where(revisions.c.name == _TOKENS_REVISION)
            .values(revision=revisions.c.revision + 1)
        ).rowcount
        if not updated:
            connection.execute(revisions.insert().values(name=_TOKENS_REVISION, revision=1))

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
