"""Where the gate keeps its tables (audit log, leases, API tokens, settings), and the engine it reaches them by.

Which database:

- ``JWTGate(app, db=db)``: the host's Flask-SQLAlchemy instance. The gate uses that instance's engine for the bind key
  ``"jwtgate"`` when the host configured one (``SQLALCHEMY_BINDS = {"jwtgate": "postgresql+psycopg://..."}``), and its
  default engine otherwise. ``JWTGATE_DATABASE_URI`` must then be unset: a second place to name the database would be
  silently ignored, so it is refused at start-up and the message points at the bind instead.
- Without ``db``: an engine of the gate's own, on ``JWTGATE_DATABASE_URI`` (default ``sqlite:///jwtgate.db``, a file
  in the app's instance folder, resolved the way Flask-SQLAlchemy resolves relative SQLite paths).
- Without ``db`` and without ``JWTGATE_DATABASE_URI`` in an app that is testing (``app.testing`` when the gate is
  installed): a private in-memory SQLite database (:data:`TESTING_URI`), which lives as long as the app. A test suite
  would otherwise write its audit records, tokens and settings into the instance folder's ``jwtgate.db``, where the
  next test run, and the development server, would find them. A test that wants a file, or PostgreSQL, names it.

Why the gate does not register a Flask-SQLAlchemy instance of its own, nor add a bind to the host's: Flask-SQLAlchemy
3.1 allows one ``SQLAlchemy`` per app (``init_app`` stores it as ``app.extensions["sqlalchemy"]`` and raises
"A 'SQLAlchemy' instance has already been registered on this Flask app" for a second). A gate that registered one
would fail when the host's was there first, and worse, break the host's own ``db.init_app(app)`` when the gate came
first. Binds do not help from the outside either: ``init_app`` reads ``SQLALCHEMY_BINDS`` once and creates every engine
there and then, so a bind the gate added to the config later would never get an engine. Hence: the host's instance
when it is handed over (with the ``"jwtgate"`` bind as the host's way to put the gate's tables elsewhere), and a plain
SQLAlchemy engine otherwise, which never touches ``app.extensions["sqlalchemy"]``.

Why SQLAlchemy Core tables in the gate's own :data:`metadata` rather than ``db.Model`` classes: the same tables work
with the host's instance and with the gate's engine; the audit writer runs in a background thread with no app context
and no use for the host's scoped session; and the host's ``db.create_all()`` / ``db.drop_all()`` (a test suite's
teardown, say) never create or wipe the audit log behind the gate's back. Alembic users who autogenerate migrations
should exclude the ``jwtgate_`` tables (``include_name``); the gate creates and upgrades its own.

Tables are created at start-up if missing. If the database cannot be reached then, the app still starts (requests
must not depend on the audit database) and creation is retried before the next write.

Fork safety (gunicorn ``--preload``, multiprocessing): a pooled connection must never be shared by two processes.
:attr:`GateDatabase.engine` notices that it is used in a new process and gives the pool a fresh start there with
``engine.dispose(close=False)``, SQLAlchemy's documented recipe: the parent's connections are left to the parent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import weakref
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine

from .errors import ConfigurationError
from .redaction import redact_secrets, redact_uri

logger = logging.getLogger("flask_jwtgate")

#: All of the gate's tables, whichever database they live in.
metadata = sa.MetaData()

#: The Flask-SQLAlchemy bind key a host can configure to give the gate's tables a database of their own.
BIND_KEY = "jwtgate"
DEFAULT_URI = "sqlite:///jwtgate.db"
#: Seconds the gate's own PostgreSQL engine waits for a connection, unless its URL says otherwise.
DEFAULT_CONNECT_TIMEOUT = 5
#: The database of a testing app that names none: in memory, one per app (a StaticPool: its one connection is it).
TESTING_URI = "sqlite://"
_URI_KEY = "JWTGATE_DATABASE_URI"


class DatabaseNotReady(RuntimeError):
    """The host's Flask-SQLAlchemy instance passed as ``db`` is not registered on the app (yet)."""


class GateDatabase:
    """The gate's database for one app: the engine to use, and the tables made on it.

    :param app: the app; held weakly (only to reach the host's engines, which Flask-SQLAlchemy keys by app).
    :param db: the host's Flask-SQLAlchemy instance, or ``None`` for an engine of the gate's own.
    :param uri: ``JWTGATE_DATABASE_URI``; must be ``None`` when ``db`` is given. ``None`` without ``db``:
        :data:`DEFAULT_URI` in the instance folder, or :data:`TESTING_URI` when ``app.testing`` is true.

    ::

        database = GateDatabase(app, db=None, uri="postgresql+psycopg://gate@db/gate")
        with database.engine.begin() as connection:
            connection.execute(audit_log.insert(), rows)
    """

    def __init__(self, app: Flask, *, db: Any = None, uri: str | None = None) -> None:
        if db is not None and uri is not None:
            raise ConfigurationError(
                _URI_KEY,
                "is set but JWTGate(app, db=db) shares the host's Flask-SQLAlchemy instance; unset it, or give the "
                f"gate's tables their own database with SQLALCHEMY_BINDS = {{{BIND_KEY!r}: {redact_uri(uri)!r}}}",
            )
        self._app = weakref.ref(app)
        self._db = db
        self._engine: Engine | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.tables_ready = False
        self.owns_engine = db is None
        #: The gate chose a throwaway database for a testing app: nothing of the app's is kept beyond it.
        self.temporary = db is None and uri is None and app.testing
        if db is None:
            self._engine = _make_engine(uri or (TESTING_URI if self.temporary else DEFAULT_URI), app.instance_path)
        else:
            registered = app.extensions.get("sqlalchemy")
            if registered is not None and registered is not db:
                raise RuntimeError(
                    "JWTGate(app, db=db) was given a Flask-SQLAlchemy instance other than the one registered on this "
                    "app; pass the app's own instance (app.extensions['sqlalchemy'])."
                )

    @property
    def engine(self) -> Engine:
        """The engine, fit for use in this process."""
        engine = self._engine
        if engine is None:
            engine = self._engine = self._host_engine()
        pid = os.getpid()
        if pid != self._pid:
            with self._lock:
                if pid != self._pid:
                    engine.dispose(close=False)
                    self._pid = pid
                    self.tables_ready = False  # an in-memory database starts empty in the new pool
        return engine

    @property
    def available(self) -> bool:
        """Whether an engine can be had now (the host's instance may not be registered on the app yet)."""
        if self._engine is not None:
            return True
        try:
            self.engine  # noqa: B018 - resolving is the check
        except DatabaseNotReady:
            return False
        return True

    @property
    def display_url(self) -> str:
        """The engine's URL for people: every password masked (:func:`~flask_jwtgate.redaction.redact_uri`)."""
        return redact_uri(self.engine.url.render_as_string(hide_password=False))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def name(self) -> str:
        """A short, stable name of this database (a hash of its URL, without the password): what is kept on disk for
        it (the audit spool) is kept apart from what is kept for another app's database in the same folder."""
        try:
            url = self.engine.url.render_as_string(hide_password=True)
        except DatabaseNotReady:
            url = f"host-db:{BIND_KEY}"
        return hashlib.sha256(url.encode()).hexdigest()[:12]

    def _host_engine(self) -> Engine:
        app = self._app()
        if app is None or "sqlalchemy" not in app.extensions:
            raise DatabaseNotReady(
                "the Flask-SQLAlchemy instance passed to JWTGate(app, db=db) is not registered on the app yet; call "
                "db.init_app(app) before the gate's first request"
            )
        with app.app_context():
            engines = self._db.engines
            engine: Engine = engines[BIND_KEY] if BIND_KEY in engines else engines[None]
        return engine

    def create_tables(self) -> None:
        """Create the gate's tables and indexes that are missing; safe to call from several processes at once."""
        if self.tables_ready:
            return
        engine = self.engine
        for attempt in range(3):
            try:
                metadata.create_all(engine, checkfirst=True)
                _add_missing_columns(engine)
                break
            except sa.exc.DBAPIError:
                # Two workers starting together both saw the table missing; the loser's CREATE fails. Look again.
                if attempt == 2:
                    raise
        self.tables_ready = True

    def start(self) -> None:
        """At start-up: create the tables if the database can be reached; otherwise log and retry at first use."""
        if not self.available:
            return
        try:
            self.create_tables()
        except sa.exc.SQLAlchemyError as exc:
            logger.warning(
                "jwtgate: the gate's database cannot be reached at start-up (%s); will retry", type(exc).__name__
            )
            return
        engine = self.engine
        if self.owns_engine and not isinstance(engine.pool, sa.pool.StaticPool):
            # No pooled connection survives into forked workers (gunicorn --preload). Not for an in-memory SQLite
            # database (a StaticPool): its one connection is the database.
            engine.dispose()


def _add_missing_columns(engine: Engine) -> None:
    """Upgrade tables made by an older version: add the columns it did not have (always nullable ones, which old
    rows leave NULL and the code reads as "made before this was kept")."""
    inspector = sa.inspect(engine)
    preparer = engine.dialect.identifier_preparer
    # The schema the tables were made in: a schema_translate_map moves them (the inspector does not follow it).
    translate = engine.get_execution_options().get("schema_translate_map") or {}
    for table in metadata.sorted_tables:
        schema = translate.get(table.schema, table.schema)
        present = {column["name"] for column in inspector.get_columns(table.name, schema=schema)}
        missing = [column for column in table.columns if column.name not in present]
        if not missing:
            continue
        with engine.begin() as connection:
            for column in missing:
                assert column.nullable and column.server_default is None, column  # old rows must be able to lack it
                kind = column.type.compile(dialect=engine.dialect)
                name = preparer.format_table(table, use_schema=False)
                if schema is not None:
                    name = f"{preparer.quote_schema(schema)}.{name}"
                connection.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {preparer.quote(column.name)} {kind}")
                logger.warning("jwtgate: upgraded table %s: added column %s", table.name, column.name)


def _make_engine(uri: str, instance_path: str) -> Engine:
    """The gate's own engine, with Flask-SQLAlchemy's driver defaults and a few of its own for the audit writer.

    Its errors are not chained to SQLAlchemy's: those can quote the URL whole, and a traceback prints the cause. The
    cause's message comes along, redacted.
    """
    try:
        url = sa.engine.make_url(uri)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            _URI_KEY,
            f"{redact_uri(uri)!r} is not a database URL such as 'postgresql+psycopg://user@host/db' or "
            f"'sqlite:///x.db' ({redact_secrets(str(exc), uri)})",
        ) from None
    options: dict[str, Any] = {}
    sqlite_file = False
    if url.drivername == "postgresql":
        # SQLAlchemy's default PostgreSQL driver is psycopg2; the gate's [postgresql] extra installs psycopg 3.
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            options["poolclass"] = sa.pool.StaticPool
            options["connect_args"] = {"check_same_thread": False}
        else:
            sqlite_file = True
            if not os.path.isabs(url.database):
                os.makedirs(instance_path, exist_ok=True)
                url = url.set(database=os.path.join(instance_path, url.database))
    else:
        # A database restarted under a running app leaves dead connections in the pool; test each before use.
        options["pool_pre_ping"] = True
        if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
            # libpq waits for ever for a server that does not answer; the gate's own engine does not (the URL's
            # connect_timeout, when it has one, wins).
            options["connect_args"] = {"connect_timeout": DEFAULT_CONNECT_TIMEOUT}
    try:
        engine = sa.create_engine(url, **options)
    except (ImportError, sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            _URI_KEY,
            f"cannot use {redact_uri(uri)!r}: {redact_secrets(str(exc), uri)}; for PostgreSQL install "
            "'flask-jwtgate[postgresql]' and use postgresql+psycopg://",
        ) from None
    if sqlite_file:
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL: readers (the admin API) never block the writer, and several worker processes can share the file;
    # synchronous=NORMAL is durable across a process crash and does not fsync on every commit.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()
