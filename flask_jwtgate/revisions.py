"""How every process learns that something changed: one counter per kind of change, in the gate's database.

A change that other processes (workers, hosts) must see increments its counter in the same transaction that makes it
(:func:`bump`). Each process reads all the counters at most once per :data:`INTERVAL` (one small query, never one per
request) and tells the listeners of every counter that moved. So a change is seen everywhere within
``INTERVAL`` plus one request, with no message bus: the database the change lives in is the channel.

If the read fails, the process keeps what it has; :meth:`Revisions.fresh` says whether the last successful read is
recent enough (``DEADLINE``) for a listener that must not guess, such as the API tokens' revocation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from .database import DatabaseNotReady, GateDatabase, metadata

#: Seconds within which a change is seen everywhere.
DEADLINE = 2.0
#: How often a process reads the counters (well inside the deadline).
INTERVAL = 1.0

#: One row per kind of change other processes must notice; ``revision`` only ever grows.
revisions = sa.Table(
    "jwtgate_revisions",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("revision", sa.BigInteger(), nullable=False),
)

Listener = Callable[[int], None]


def bump(connection: sa.Connection, name: str) -> None:
    """Increment ``name``'s counter, inside the caller's transaction (the change and its notice commit together)."""
    updated = connection.execute(
        revisions.update().where(revisions.c.name == name).values(revision=revisions.c.revision + 1)
    ).rowcount
    if not updated:
        connection.execute(revisions.insert().values(name=name, revision=1))


class Revisions:
    """The counters as this process last read them, and who to tell when one moves.

    :param database: the gate's database.
    :param clock: the current time in seconds (injected by tests).

    ::

        revisions.subscribe("api_tokens", lambda revision: cache.clear())
        revisions.check()            # at most one query per INTERVAL; listeners run here
        revisions.fresh()            # False when the counters could not be read for DEADLINE seconds
    """

    def __init__(self, database: GateDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock
        self._listeners: dict[str, list[Listener]] = {}
        self._after_read: list[Callable[[], None]] = []
        self._seen: dict[str, int] = {}
        #: When the next read is due (on the gate's clock): the request path compares with this and nothing else.
        self.due = float("-inf")
        self._confirmed = float("-inf")
        self._lock = threading.Lock()

    def subscribe(self, name: str, listener: Listener) -> None:
        """Call ``listener(revision)`` whenever ``name``'s counter is seen to move (and on the first read)."""
        self._listeners.setdefault(name, []).append(listener)

    def after_read(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every successful read (a heartbeat's clock)."""
        self._after_read.append(callback)

    def check(self, now: float | None = None) -> None:
        """Read the counters if the last read is older than :data:`INTERVAL`; tell the listeners what moved."""
        now = self.clock() if now is None else now
        if now < self.due:
            return
        with self._lock:
            if now < self.due:
                return
            self.due = now + INTERVAL
            try:
                self.database.create_tables()
                with self.database.engine.connect() as connection:
                    current = {row.name: row.revision for row in connection.execute(sa.select(revisions))}
            except (sa.exc.SQLAlchemyError, DatabaseNotReady):
                return  # keep what we have; fresh() says how old it is
            self._confirmed = now
            moved = [
                name for name in self._listeners if name not in self._seen or current.get(name, 0) != self._seen[name]
            ]
            for name in moved:
                self._seen[name] = current.get(name, 0)
        for name in moved:
            for listener in self._listeners[name]:
                listener(self._seen[name])
        for callback in self._after_read:
            callback()

    def fresh(self, now: float | None = None) -> bool:
        """Whether the counters were read successfully within :data:`DEADLINE`."""
        now = self.clock() if now is None else now
        return now - self._confirmed <= DEADLINE

    def forget(self) -> None:
        """Read the counters on the next :meth:`check`, whatever the interval."""
        self.due = float("-inf")
