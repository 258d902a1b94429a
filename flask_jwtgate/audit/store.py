"""Writing rows into the audit table: a batch per transaction, duplicates (by request id) skipped.

On SQLite and PostgreSQL (psycopg) the batch goes to the driver as plain tuples through
``Connection.exec_driver_sql``, many rows to a statement (:class:`DriverInsert`). SQLAlchemy's per-row parameter
processing would cost more than the rest of the audit log together, on a thread that shares the GIL with the requests.
The one conversion it would do, the time, is done here the same way (SQLite's text form of SQLAlchemy's ``DateTime``;
an aware ``datetime`` for ``timestamptz``). Other databases get the portable SQLAlchemy Core statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..database import GateDatabase
from .model import COLUMNS, AuditRow, audit_log

Rows = Sequence[AuditRow]

#: Errors that say "the database cannot be reached now", as opposed to "this row is wrong".
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, sa.exc.TimeoutError)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is down or unreachable (spool and retry), not that a row is bad."""
    if isinstance(exc, UNAVAILABLE):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _sqlite_row(row: AuditRow) -> tuple[Any, ...]:
    # SQLAlchemy's SQLite DateTime stores "YYYY-MM-DD HH:MM:SS.ffffff"; rows are made in UTC (model.to_row).
    return (row[0].isoformat(" ", "microseconds")[:26], *row[1:])


#: Rows per INSERT statement (its VALUES list): 50 rows of 18 columns stay under SQLite's oldest limit of 999
#: parameters. One statement per row would let go of the GIL around every row's ``sqlite3_step``, and each time the
#: writer thread wants it back it waits for a request thread to give it up: the requests would pay for the switches.
ROWS_PER_STATEMENT = 50


class DriverInsert:
    """Rows straight to the driver, :data:`ROWS_PER_STATEMENT` to a multi-row ``INSERT ... VALUES (...), (...)``.

    :param head: ``INSERT INTO table (columns)``.
    :param row_marks: one row's placeholders, ``(?, ?, ...)``.
    :param tail: what follows the VALUES list (``ON CONFLICT (request_id) DO NOTHING``).
    :param convert: the per-row conversion the driver needs, if any.
    """

    def __init__(
        self, head: str, row_marks: str, tail: str, convert: Callable[[AuditRow], tuple[Any, ...]] | None
    ) -> None:
        self.head = head
        self.row_marks = row_marks
        self.tail = tail
        self.convert = convert
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        text = self._sql.get(rows)
        if text is None:
            # Only the gate's own, dialect-quoted names and placeholders: every value is a bound parameter.
            text = self._sql[rows] = f"{self.head} VALUES {', '.join([self.row_marks] * rows)} {self.tail}"
        return text

    def write(self, connection: sa.Connection, rows: Rows) -> None:
        values: Sequence[tuple[Any, ...]] = [self.convert(row) for row in rows] if self.convert else rows
        size = ROWS_PER_STATEMENT
        whole = len(values) - len(values) % size
        if whole:
            groups = [tuple(chain.from_iterable(values[i : i + size])) for i in range(0, whole, size)]
            connection.exec_driver_sql(self.sql(size), groups)
        if whole < len(values):
            rest = values[whole:]
            connection.exec_driver_sql(self.sql(len(rest)), tuple(chain.from_iterable(rest)))


def _driver_insert(engine: Engine) -> DriverInsert | None:
    """The driver-level INSERT for SQLite and psycopg; ``None`` where only Core is known to work."""
    dialect = engine.dialect
    quote = dialect.identifier_preparer
    head = f"INSERT INTO {quote.format_table(audit_log)} ({', '.join(quote.quote(name) for name in COLUMNS)})"
    tail = f"ON CONFLICT ({quote.quote('request_id')}) DO NOTHING"
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        return DriverInsert(head, f"({', '.join('?' for _ in COLUMNS)})", tail, _sqlite_row)
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        return DriverInsert(head, f"({', '.join('%s' for _ in COLUMNS)})", tail, None)
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
        store.insert([to_row(pending, request_ids.next()) for pending in batch])
    """

    def __init__(self, database: GateDatabase) -> None:
        self.database = database
        self._prepared: tuple[Engine, Any] | None = None

    def _statement(self, engine: Engine) -> Any:
        prepared = self._prepared
        if prepared is None or prepared[0] is not engine:
            prepared = self._prepared = (engine, _driver_insert(engine) or _core_insert(engine))
        return prepared[1]

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
                    connection.execute(statement, [row._asdict() for row in rows])
        except Exception:
            # The table may have been dropped, or the database replaced: check again before the next write.
            database.tables_ready = False
            raise

    def count(self) -> int:
        with self.database.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())
