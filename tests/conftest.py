"""Shared fixtures. The ``jwtgate_*`` fixtures (keys, token factory, app factory) come from the package's own
pytest plugin, ``flask_jwtgate.testing``, exactly as a host app's tests get them."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from flask_jwtgate.testing import Clock
from flask_jwtgate.testing_idp import MockIdentityProvider

#: Where the suite's clocks start: a fixed time, so that a test's times (and its audit rows) read the same every run.
FIXED_START = 1_800_000_000.0


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Make parameter ids afresh in every run. pytest keeps the ids it made on the parametrize mark and, in another run
    in the same process (mutmut's, .ci/mutation), escapes them once more: an id with a backslash then names no test."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        origin = getattr(mark, "_param_ids_from", None)
        if origin is not None and getattr(origin, "_param_ids_generated", None) is not None:
            object.__setattr__(origin, "_param_ids_generated", None)


@pytest.fixture
def clock() -> Clock:
    """The plugin's controllable clock, at :data:`FIXED_START`."""
    return Clock(FIXED_START)


@pytest.fixture
def idp(jwtgate_mock_idp_factory: Callable[..., MockIdentityProvider], clock: Clock) -> MockIdentityProvider:
    """The mock identity provider (``jwtgate_mock_idp``), on the test's clock."""
    return jwtgate_mock_idp_factory(clock=clock)


@pytest.fixture
def window_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The gate's clock, which limits' memory storage follows too (rate-limit windows move with it)."""
    import limits.storage.memory

    clock = Clock(time.time())
    monkeypatch.setattr(limits.storage.memory, "time", SimpleNamespace(time=clock))
    return clock


@pytest.fixture
def bearer() -> Callable[[str], dict[str, str]]:
    """``bearer(token)`` → the Authorization header dict."""
    return lambda token: {"Authorization": f"Bearer {token}"}


@pytest.fixture
def example_app_factory(tmp_path: Any) -> Callable[..., Flask]:
    """``make(**config) -> app``: the example mock Jira with its demo IdP keys in a temporary instance folder."""

    def make(**config: Any) -> Flask:
        app = create_app({"TESTING": True, **config}, instance_path=str(tmp_path / "instance"))
        return app

    return make


@pytest.fixture
def example_app(example_app_factory: Callable[..., Flask]) -> Flask:
    return example_app_factory()


@pytest.fixture
def example_client(example_app: Flask) -> FlaskClient:
    return example_app.test_client()


# -- real services ---------------------------------------------------------------------------------------------------
# Tests that need Redis or PostgreSQL skip with a clear reason where the service is missing; .ci/run sets
# JWTGATE_REQUIRE_SERVICES=1, which turns such a skip into a failure, because there the services exist.

REDIS_URL = os.environ.get("JWTGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("JWTGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def service_missing(name: str, why: str) -> None:
    """Skip (or, under JWTGATE_REQUIRE_SERVICES=1, fail) because ``name`` cannot be reached."""
    message = f"{name} is not available ({why}); start it or unset JWTGATE_REQUIRE_SERVICES"
    if os.environ.get("JWTGATE_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


_SERVICE_SKIP = re.compile(r"(?:Skipped: )?(\S+) is not available \(")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say how many tests a missing service kept from running, and which services: a green run without PostgreSQL
    or Redis has not run the tests that need them."""
    missing: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        found = _SERVICE_SKIP.match(reason)
        if found:
            missing[found.group(1)] += 1
    if not missing:
        return
    total = sum(missing.values())
    names = ", ".join(f"{name} ({count})" for name, count in missing.most_common())
    terminalreporter.write_sep("=", "services missing", yellow=True)
    terminalreporter.write_line(
        f"{total} test{'s' if total != 1 else ''} did not run because a service is missing: {names}. "
        "Start them (README: Quick start) and run again; JWTGATE_REQUIRE_SERVICES=1 makes a missing "
        "service a failure."
    )


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    """The URL of a real Redis server (flushed of the gate's keys by the tests that use it)."""
    try:
        import redis
    except ImportError:
        service_missing("Redis", "the 'redis' package is not installed")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing("Redis", f"{REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own in the shared Redis, deleted afterwards."""
    import redis

    prefix = f"jwtgate-test-{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def require_postgres() -> str:
    """The SQLAlchemy URL of a real PostgreSQL database, or skip (fail under JWTGATE_REQUIRE_SERVICES=1)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        service_missing("PostgreSQL", "the 'psycopg' package is not installed")
    import sqlalchemy as sa

    url = sa.engine.make_url(POSTGRES_URL)
    host, port = url.host or "127.0.0.1", url.port or 5432
    if not _port_open(host, port):
        service_missing("PostgreSQL", f"nothing listens on {host}:{port}")
    return POSTGRES_URL


@pytest.fixture
def postgres_url() -> str:
    """The SQLAlchemy URL of a real PostgreSQL database."""
    return require_postgres()


# -- the audit log's databases ----------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_database_uri(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """An empty database for the gate's tables: a SQLite file, or a schema of its own on the real PostgreSQL (so that
    tests never see each other's rows); the whole audit test set runs on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jwtgate-test.db"
        return
    yield request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """The real PostgreSQL, in a schema of this test's own (dropped afterwards): ``postgres_url`` with a search_path."""
    with postgres_schema(postgres_url) as url:
        yield url


@contextmanager
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A schema of its own on the real PostgreSQL, dropped afterwards: ``postgres_url`` with a search_path."""
    import sqlalchemy as sa

    schema = f"jwtgate_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        url = sa.engine.make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_audit_database_uri(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Like ``audit_database_uri``, for a module's shared fixture (e.g. a history that several tests only read)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('audit')}/jwtgate-test.db"
        return
    with postgres_schema(require_postgres()) as url:
        yield url


#: For a test whose subject is not the database (input validation, access rules): it runs on SQLite alone.
SQLITE_ONLY = pytest.mark.parametrize("audit_database_uri", ["sqlite"], indirect=True)


@pytest.fixture
def audit_app_factory(
    jwtgate_keys: Any, audit_database_uri: str, tmp_path: Any
) -> Iterator[Callable[..., tuple[Flask, Any]]]:
    """``make(clock=None, **config) -> (app, gate)``: the plugin's test API on ``audit_database_uri``, spooling into
    the test's temporary folder. Writers are closed and engines disposed afterwards (no connection outlives a test)."""
    from flask_jwtgate.testing import make_app

    made: list[Flask] = []

    def make(*, clock: Callable[[], float] | None = None, **config: Any) -> tuple[Flask, Any]:
        config.setdefault("JWTGATE_DATABASE_URI", audit_database_uri)
        config.setdefault("JWTGATE_AUDIT_SPOOL_DIR", str(tmp_path / "spool"))
        app, gate = make_app(jwtgate_keys, clock=clock, **config)
        made.append(app)
        return app, gate

    yield make
    for app in made:
        state = app.extensions["jwtgate"]
        if state.audit is not None:
            state.audit.close(timeout=5)
        if state.database is not None and state.database.available:
            state.database.engine.dispose()
