"""Retention: delete audit records older than ``JWTGATE_AUDIT_RETENTION_DAYS`` and beyond ``JWTGATE_AUDIT_MAX_ENTRIES``.

One prune at a time across every worker and host, decided by the database, not by each process:

- **Leases** are rows of ``jwtgate_leases`` (name, holder, expires_at). A lease is taken by one atomic
  ``UPDATE ... SET holder = me WHERE name = ? AND (expires_at < now OR holder = me)``, or by an ``INSERT`` of the row
  when there is none (the primary key lets one of two racing inserts through). This works the same on PostgreSQL
  (the second UPDATE waits for the first's row lock, then re-checks its WHERE and matches nothing) and on SQLite
  (one writer at a time), so both run one code path and one test suite. A holder that dies loses the lease when it
  expires; a live holder renews it after every chunk.
- **The schedule** is the lease ``audit-prune-due``: whoever moves its expiry from the past to ``now + interval`` owns
  this interval's prune, so the whole fleet prunes once per ``JWTGATE_AUDIT_PRUNE_INTERVAL``, not once per process.
- **The lock** is the lease ``audit-prune``, held while deleting, by scheduled and manual prunes alike (``flask jwtgate
  audit prune``, ``POST /admin/audit/prune``); a second prune meanwhile is refused, not queued.
- **Chunks**: at most ``JWTGATE_AUDIT_PRUNE_CHUNK_SIZE`` ids per ``DELETE``, each chunk its own short transaction,
  so deleting millions of rows never holds a long lock and the writers go on inserting in between.

Times come from the gate's clock (``JWTGate(app, clock=...)``), so tests move time instead of waiting for it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from ..database import GateDatabase
from .model import UTC, audit_log, leases

PRUNE_LOCK = "audit-prune"
PRUNE_DUE = "audit-prune-due"
#: How long a prune may go without renewing its lock before another process may take it over.
LOCK_TTL = 300.0


class Lease:
    """A named lease in ``jwtgate_leases``.

    :param database: the gate's database.
    :param name: the lease's name.
    :param holder: who takes it, unique per app (e.g. host and a random part); the process id is added on use,
        so that workers forked from one app (gunicorn ``--preload``) are different holders.
    :param clock: the current time in seconds.

    ::

        lock = Lease(database, "audit-prune", holder="web-1:ab12", clock=time.time)
        if lock.acquire(ttl=300):
            try:
                ...
            finally:
                lock.release()
    """

    def __init__(self, database: GateDatabase, name: str, holder: str, clock: Callable[[], float]) -> None:
        self.database = database
        self.name = name
        self._holder = holder
        self.clock = clock

    @property
    def holder(self) -> str:
        return f"{self._holder}:{os.getpid()}"[-64:]

    def acquire(self, ttl: float, *, reentrant: bool = True) -> bool:
        """Take the lease for ``ttl`` seconds if it is free (or expired, or already ours when ``reentrant``)."""
        now = self.clock()
        c = leases.c
        free = c.expires_at < now
        if reentrant:
            free = sa.or_(free, c.holder == self.holder)
        with self.database.engine.begin() as connection:
            result = connection.execute(
                leases.update().where(c.name == self.name, free).values(holder=self.holder, expires_at=now + ttl)
            )
            if result.rowcount == 1:
                return True
            exists = connection.execute(sa.select(c.name).where(c.name == self.name)).first()
        if exists is not None:
            return False
        try:
            with self.database.engine.begin() as connection:
                connection.execute(leases.insert().values(name=self.name, holder=self.holder, expires_at=now + ttl))
        except sa.exc.IntegrityError:
            return False  # another process inserted it first
        return True

    def release(self) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(
                leases.update()
                .where(leases.c.name == self.name, leases.c.holder == self.holder)
                .values(expires_at=0.0)
            )


@dataclass(frozen=True)
class PruneResult:
    """What one prune deleted."""

    by_age: int
    by_count: int

    @property
    def deleted(self) -> int:
        return self.by_age + self.by_count


class Pruner:
    """Apply the retention rules to one database.

    :param database: the gate's database.
    :param holder: this app's lease holder name (the process id is added on use).
    :param clock: the gate's clock.

    ::

        pruner = Pruner(database, holder="web-1:ab12", clock=time.time)
        if pruner.claim_scheduled(interval=3600):
            result = pruner.prune(retention_days=90, max_entries=1_000_000, chunk_size=5000)
    """

    def __init__(self, database: GateDatabase, holder: str, clock: Callable[[], float]) -> None:
        self.database = database
        self.clock = clock
        self.lock = Lease(database, PRUNE_LOCK, holder, clock)
        self.schedule = Lease(database, PRUNE_DUE, holder, clock)

    def claim_scheduled(self, interval: int) -> bool:
        """Whether this process owns the prune due now (and the next one is ``interval`` seconds away)."""
        return self.schedule.acquire(interval, reentrant=False)

    def prune(self, retention_days: int | None, max_entries: int | None, chunk_size: int) -> PruneResult | None:
        """Delete what the rules say; ``None`` if another prune holds the lock."""
        if not self.lock.acquire(LOCK_TTL, reentrant=False):
            return None
        try:
            by_age = by_count = 0
            if retention_days is not None:
                cutoff = dt.datetime.fromtimestamp(self.clock() - retention_days * 86400.0, UTC)
                by_age = self._delete_chunks(audit_log.c.time < cutoff, chunk_size)
            if max_entries is not None:
                with self.database.engine.connect() as connection:
                    newest_to_drop = connection.execute(
                        sa.select(audit_log.c.id).order_by(audit_log.c.id.desc()).offset(max_entries).limit(1)
                    ).scalar()
                if newest_to_drop is not None:
                    by_count = self._delete_chunks(audit_log.c.id <= newest_to_drop, chunk_size)
            return PruneResult(by_age, by_count)
        finally:
            self.lock.release()

    def _delete_chunks(self, condition: sa.ColumnElement[bool], chunk_size: int) -> int:
        deleted = 0
        engine = self.database.engine
        while True:
            with engine.begin() as connection:
                ids = list(connection.execute(sa.select(audit_log.c.id).where(condition).limit(chunk_size)).scalars())
                if not ids:
                    return deleted
                connection.execute(audit_log.delete().where(audit_log.c.id.in_(ids)))
            deleted += len(ids)
            self.lock.acquire(LOCK_TTL)  # renew: still ours, still alive
