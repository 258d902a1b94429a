"""Writing rows into the audit table: a batch per transaction, duplicates (by request id) skipped.

On SQLite the batch goes to the driver as plain tuples through ``Connection.exec_driver_sql``, many rows to a
statement (:class:`DriverInsert`); on PostgreSQL (psycopg) by ``COPY`` (:class:`CopyInsert`). SQLAlchemy's per-row
parameter processing would cost more than the rest of the audit log together, on a thread that shares the GIL with the
requests. The one conversion it would do, the time, is done here the same way (SQLite's text form of SQLAlchemy's
``DateTime``, made when the rows are, by :meth:`RowStore.times`; an aware ``datetime`` for ``timestamptz``). Other
databases get the portable SQLAlchemy Core statement.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..database import GateDatabase
from .model import COLUMNS, UTC, AuditRow, audit_log, row_time, utc_datetimes

Rows = Sequence[AuditRow]

#: Errors that say "the database cannot be reached now", as opposed to "this row is wrong".
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, sa.exc.TimeoutError)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is down or unreachable (spool and retry), not that a row is bad."""
    if isinstance(exc, UNAVAILABLE):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _sqlite_text(moment: dt.datetime | str) -> str:
    """A row's time as SQLAlchemy's SQLite ``DateTime`` keeps it, ``YYYY-MM-DD HH:MM:SS.ffffff``, in UTC."""
    if isinstance(moment, str):
        return moment
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]


class SqliteTimes:
    """Seconds to SQLite's text of them (as :func:`_sqlite_text`), the date and the time of day formatted once per
    second rather than once per row.

    ::

        SqliteTimes()([1800000000.25])   # ['2027-01-15 08:00:00.250000']
    """

    def __init__(self) -> None:
        # One attribute, read and replaced whole: request threads that spool make rows too.
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, seconds: Iterable[float]) -> list[str]:
        cached, prefix = self._second
        texts = []
        for when in seconds:
            whole = int(when)
            if whole != cached:
                cached, prefix = whole, time.strftime("%Y-%m-%d %H:%M:%S.", time.gmtime(whole))
            texts.append(f"{prefix}{int((when - whole) * 1_000_000):06d}")
        self._second = (cached, prefix)
        return texts


#: Rows per INSERT statement (its VALUES list): 50 rows of 18 columns stay under SQLite's oldest limit of 999
#: parameters. One statement per row would let go of the GIL around every row's ``sqlite3_step``, and each time the
#: writer thread wants it back it waits for a request thread to give it up: the requests would pay for the switches.
ROWS_PER_STATEMENT = 50


class DriverInsert:
    """Rows straight to the driver, :data:`ROWS_PER_STATEMENT` to a multi-row ``INSERT ... VALUES (...), (...)``.

    :param head: ``INSERT INTO table (columns)``.
    :param row_marks: one row's placeholders, ``(?, ?, ...)``.
    :param tail: what follows the VALUES list (``ON CONFLICT (request_id) DO NOTHING``).
    :param times: the records' seconds in the form the driver takes for the time column.
    :param text_times: whether that form is SQLite's text, so that a row holding a datetime (one replayed from the
        spool) is converted.
    """

    def __init__(
        self, head: str, row_marks: str, tail: str, times: Callable[[Sequence[float]], list[Any]], text_times: bool
    ) -> None:
        self.head = head
        self.row_marks = row_marks
        self.tail = tail
        self.times = times
        self.text_times = text_times
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        text = self._sql.get(rows)
        if text is None:
            # Only the gate's own, dialect-quoted names and placeholders: every value is a bound parameter.
            text = self._sql[rows] = f"{self.head} VALUES {', '.join([self.row_marks] * rows)} {self.tail}"
        return text

    def write(self, connection: sa.Connection, rows: Rows) -> None:
        width = len(COLUMNS)
        values: list[Any] = list(chain.from_iterable(rows))
        if self.text_times:
            times = values[0::width]
            if set(map(type, times)) != {str}:
                values[0::width] = list(map(_sqlite_text, times))
        size = ROWS_PER_STATEMENT * width
        whole = len(values) - len(values) % size
        if whole:
            statements = [tuple(values[i : i + size]) for i in range(0, whole, size)]
            connection.exec_driver_sql(self.sql(ROWS_PER_STATEMENT), statements)
        if whole < len(values):
            rest = tuple(values[whole:])
            connection.exec_driver_sql(self.sql(len(rest) // width), rest)


def _bind_none(value: None) -> None:
    return None


def _bind_none_quickly() -> None:
    """Give Python's sqlite3 an adapter for ``None`` that returns ``None``, unless it has one already.

    sqlite3 binds a ``None`` parameter through its adapter registry: finding no adapter, it asks for ``__adapt__`` and
    ``__conform__``, and the failed lookup on its protocol type formats an ``AttributeError`` that is thrown away.
    That is twice the cost of binding a string, and an audit row holds several ``None`` (no forwarding chain, no
    detail on an allowed request). With an adapter the registry answers at once; ``None`` is still bound as NULL, for
    every user of sqlite3 in the process, as before.
    """
    import sqlite3  # only where the gate writes to SQLite: a Python may be built without it

    key = (type(None), sqlite3.PrepareProtocol)
    if key not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _bind_none)


class CopyInsert(DriverInsert):
    """PostgreSQL with psycopg: a batch by ``COPY ... FROM STDIN``, which costs the server and the writer's thread
    about half what the multi-row INSERT does (measured on a 500-row batch: 15 against 22 to 26 µs a row in all, 3.5
    against 6 µs of the writer's CPU). ``COPY`` cannot skip a row whose request id is stored already (a batch replayed
    from the spool after a COMMIT whose answer was lost), so it runs in a savepoint, and a batch it refuses for a
    duplicate goes through the INSERT, which skips those rows.

    :param copy: ``COPY table (columns) FROM STDIN``.
    """

    def __init__(self, copy: str, head: str, row_marks: str, tail: str) -> None:
        super().__init__(head, row_marks, tail, utc_datetimes, text_times=False)
        self.copy = copy

    def write(self, connection: sa.Connection, rows: Rows) -> None:
        import psycopg
        from psycopg.errors import UniqueViolation

        try:
            with connection.begin_nested():
                driver = connection.connection.driver_connection
                with driver.cursor() as cursor, cursor.copy(self.copy) as copy:  # type: ignore[union-attr]
                    for row in rows:
                        copy.write_row(row)
        except UniqueViolation:
            super().write(connection, rows)
        except psycopg.Error as exc:
            # As SQLAlchemy raises the INSERT's errors, so that the writer tells a row the database refuses (written
            # one by one, the refused one counted) from an outage (spooled).
            raise sa.exc.DBAPIError.instance(self.copy, None, exc, psycopg.Error) from exc


def _driver_insert(engine: Engine) -> DriverInsert | None:
    """The driver-level INSERT for SQLite, the COPY for psycopg; ``None`` where only Core is known to work."""
    dialect = engine.dialect
    quote = dialect.identifier_preparer
    head = f"INSERT INTO {quote.format_table(audit_log)} ({', '.join(quote.quote(name) for name in COLUMNS)})"
    tail = f"ON CONFLICT ({quote.quote('request_id')}) DO NOTHING"
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        _bind_none_quickly()
        return DriverInsert(head, f"({', '.join('?' for _ in COLUMNS)})", tail, SqliteTimes(), text_times=True)
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        copy = f"COPY {quote.format_table(audit_log)} ({', '.join(quote.quote(name) for name in COLUMNS)}) FROM STDIN"
        return CopyInsert(copy, head, f"({', '.join('%s' for _ in COLUMNS)})", tail)
    return None


def _core_insert(engine: Engine) -> Any:
    """An INSERT that skips a row whose ``request_id`` is already stored (a replayed batch)."""
    name = engine.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(audit_log).on_conflict_do_nothing(index_elements=["request_id"])
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(audit_log).on_conflict_do_nothing(index_elements=["request_id"])
    if name in ("mysql", "mariadb"):
        return audit_log.insert().prefix_with("IGNORE")
    return audit_log.insert()


class RowStore:
    """Insert batches into the audit table of one :class:`GateDatabase`.

    :param database: the gate's database; its tables are (re)created before a write when they may be missing.

    ::

        store = RowStore(database)
        store.insert(to_rows(batch, request_ids.take(len(batch)), store.times))
    """

    def __init__(self, database: GateDatabase) -> None:
        self.database = database
        self._prepared: tuple[Engine, Any] | None = None

    def _statement(self, engine: Engine) -> Any:
        prepared = self._prepared
        if prepared is None or prepared[0] is not engine:
            prepared = self._prepared = (engine, _driver_insert(engine) or _core_insert(engine))
        return prepared[1]

    def times(self, seconds: Sequence[float]) -> list[Any]:
        """The records' times (seconds) in the form this store's INSERT takes: SQLite's text, or aware datetimes."""
        try:
            statement = self._statement(self.database.engine)
        except Exception:  # the host's database is not registered yet: rows hold datetimes, as every store takes
            return utc_datetimes(seconds)
        return statement.times(seconds) if isinstance(statement, DriverInsert) else utc_datetimes(seconds)

    def insert(self, rows: Rows) -> None:
        """Insert ``rows`` in one transaction; raise the database's error, unchanged, if it fails."""
        if not rows:
            return
        database = self.database
        try:
            if not database.tables_ready:
                database.create_tables()
            engine = database.engine
            statement = self._statement(engine)
            with engine.begin() as connection:
                if isinstance(statement, DriverInsert):
                    statement.write(connection, rows)
                else:
                    connection.execute(statement, [{**row._asdict(), "time": row_time(row)} for row in rows])
        except Exception:
            # The table may have been dropped, or the database replaced: check again before the next write.
            database.tables_ready = False
            raise

    def count(self) -> int:
        with self.database.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())
