"""How every process learns that something changed: one counter per kind of change, in the gate's database.

A change that other processes (workers, hosts) must see increments its counter in the same transaction that makes it
(:func:`bump`). Each process reads all the counters at most once per :data:`INTERVAL` (one small query, never one per
request) and tells the listeners of every counter that moved. So a change is seen everywhere within
``INTERVAL`` plus one request, with no message bus: the database the change lives in is the channel.

If the read fails, the process keeps what it has; :meth:`Revisions.fresh` says whether the last successful read is
recent enough (``DEADLINE``) for a listener that must not guess, such as the API tokens' revocation.

A database that hangs (a server that takes the connection and never answers, a network that drops everything) must
not hang the requests that do not need it. So the read runs in a short-lived thread of its own, and the request that
started it waits for it at most :data:`READ_WAIT` seconds, then goes on with what the process has; while a read is
under way no other is started, and no other request waits for it. With a database that answers, the read is over
long before that, so a change is in force for the very request that noticed it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from .database import DatabaseNotReady, GateDatabase, metadata

#: Seconds within which a change is seen everywhere.
DEADLINE = 2.0
#: How often a process reads the counters (well inside the deadline).
INTERVAL = 1.0
#: At most this many seconds a request waits for a read of the counters (see the module's docstring).
READ_WAIT = 1.0

logger = logging.getLogger("flask_jwtgate")

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
        #: Set when the read under way (if any) is over, and the process that started it.
        self._reading: threading.Event | None = None
        self._reading_pid = 0

    def subscribe(self, name: str, listener: Listener) -> None:
        """Call ``listener(revision)`` whenever ``name``'s counter is seen to move (and on the first read)."""
        self._listeners.setdefault(name, []).append(listener)

    def after_read(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every successful read (a heartbeat's clock)."""
        self._after_read.append(callback)

    def check(self, now: float | None = None) -> None:
        """Read the counters if the last read is older than :data:`INTERVAL`; tell the listeners what moved. Waits
        for the read at most :data:`READ_WAIT` seconds, and not at all while an earlier read is still under way."""
        now = self.clock() if now is None else now
        if now < self.due:
            return
        with self._lock:
            if now < self.due:
                return
            self.due = now + INTERVAL
            pid = os.getpid()
            if self._reading is not None and not self._reading.is_set() and self._reading_pid == pid:
                return  # the database is slow or hangs: the read under way will tell the listeners when it can
            done = self._reading = threading.Event()
            self._reading_pid = pid  # after a fork, the parent's read is not this process's
        reader = threading.Thread(target=self._read, args=(now, done), name="jwtgate-revisions", daemon=True)
        try:
            reader.start()
        except RuntimeError:  # no thread to be had (the interpreter is shutting down): read here
            self._read(now, done)
            return
        done.wait(READ_WAIT)

    def _read(self, now: float, done: threading.Event) -> None:
        try:
            try:
                self.database.create_tables()
                with self.database.engine.connect() as connection:
                    current = {row.name: row.revision for row in connection.execute(sa.select(revisions))}
            except (sa.exc.SQLAlchemyError, DatabaseNotReady):
                return  # keep what we have; fresh() says how old it is
            with self._lock:
                self._confirmed = max(self._confirmed, now)
                moved = [
                    name
                    for name in self._listeners
                    if name not in self._seen or current.get(name, 0) != self._seen[name]
                ]
                for name in moved:
                    self._seen[name] = current.get(name, 0)
            for name in moved:
                for listener in self._listeners[name]:
                    listener(self._seen[name])
            for callback in self._after_read:
                callback()
        except Exception:  # a listener failed, on a thread of its own: say so in the log
            logger.exception("jwtgate: applying a change read from the gate's database failed")
        finally:
            done.set()

    def fresh(self, now: float | None = None) -> bool:
        """Whether the counters were read successfully within :data:`DEADLINE`."""
        now = self.clock() if now is None else now
        return now - self._confirmed <= DEADLINE

    def forget(self) -> None:
        """Read the counters on the next :meth:`check`, whatever the interval."""
        self.due = float("-inf")
