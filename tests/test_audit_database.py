"""Which database the gate uses: the host's Flask-SQLAlchemy instance when passed (its "jwtgate" bind if configured),
its own engine otherwise, never clashing with a host instance registered on the same app; and the start-up checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from audit_helpers import audit_of, audit_rows, row_count
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_jwtgate import ConfigurationError, JWTGate
from flask_jwtgate.testing import KeyPair

Keys = dict[str, KeyPair]


@pytest.fixture
def host_app(jwtgate_keys: Keys, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """``make(**config) -> app``: a host app with one API route; engines are disposed afterwards."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask("host_app", instance_path=str(tmp_path / "instance"))
        app.config.update(
            TESTING=True,
            JWTGATE_PROVIDERS=[{"name": "test", "public_key": jwtgate_keys["rsa"].public_pem}],
            JWTGATE_AUDIT_SPOOL_DIR=str(tmp_path / "spool"),
        )
        app.config.update(config)
        app.add_url_rule("/api/items", "items", lambda: "ok")
        made.append(app)
        return app

    yield make
    for app in made:
        state = app.extensions.get("jwtgate")
        if state is not None and state.audit is not None:
            state.audit.close(timeout=5)
        if state is not None and state.database is not None and state.database.owns_engine:
            state.database.engine.dispose()
        db = app.extensions.get("sqlalchemy")
        if db is not None:
            with app.app_context():
                for engine in db.engines.values():
                    engine.dispose()


def test_the_gate_shares_the_hosts_database_when_given_its_instance(
    host_app: Callable[..., Flask], audit_database_uri: str
) -> None:
    app = host_app(SQLALCHEMY_DATABASE_URI=audit_database_uri)
    db = SQLAlchemy(app)

    class Note(db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

    with app.app_context():
        db.create_all()
    JWTGate(app, db=db)

    assert app.test_client().get("/api/items").status_code == 401

    with app.app_context():
        assert audit_of(app).database.engine is db.engine
        assert row_count(db.engine) == 1
        db.drop_all()  # the host's own teardown leaves the audit log alone
        assert row_count(db.engine) == 1
        assert sa.inspect(db.engine).has_table("jwtgate_audit_log")


def test_the_hosts_jwtgate_bind_gives_the_gate_a_database_of_its_own(
    host_app: Callable[..., Flask], audit_database_uri: str, tmp_path: Path
) -> None:
    app = host_app(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/host.db", SQLALCHEMY_BINDS={"jwtgate": audit_database_uri}
    )
    db = SQLAlchemy(app)
    JWTGate(app, db=db)

    app.test_client().get("/api/items")

    with app.app_context():
        assert audit_of(app).database.engine is db.engines["jwtgate"]
        assert row_count(db.engines["jwtgate"]) == 1
        assert not sa.inspect(db.engine).has_table("jwtgate_audit_log")


@pytest.mark.parametrize("gate_first", [True, False])
def test_a_host_instance_that_is_not_passed_does_not_clash_with_the_gates_own(
    host_app: Callable[..., Flask], audit_database_uri: str, tmp_path: Path, gate_first: bool
) -> None:
    app = host_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/host.db", JWTGATE_DATABASE_URI=audit_database_uri)
    db = SQLAlchemy()
    if gate_first:
        JWTGate(app)
        db.init_app(app)  # Flask-SQLAlchemy allows one instance per app: the gate must not have taken the slot
    else:
        db.init_app(app)
        JWTGate(app)

    app.test_client().get("/api/items")

    assert app.extensions["sqlalchemy"] is db
    assert len(audit_rows(app)) == 1
    assert str(audit_of(app).database.engine.url) != str(
        db._app_engines[app][None].url  # the host's engine, untouched
    )


def test_the_hosts_instance_may_be_initialised_after_the_gate(
    host_app: Callable[..., Flask], audit_database_uri: str
) -> None:
    app = host_app(SQLALCHEMY_DATABASE_URI=audit_database_uri)
    db = SQLAlchemy()
    JWTGate(app, db=db)
    db.init_app(app)  # the factory pattern in the other order

    assert app.test_client().get("/api/items").status_code == 401

    assert len(audit_rows(app)) == 1


def test_a_database_uri_next_to_a_shared_instance_is_refused(host_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = host_app(SQLALCHEMY_DATABASE_URI="sqlite://", JWTGATE_DATABASE_URI=f"sqlite:///{tmp_path}/gate.db")
    db = SQLAlchemy(app)

    with pytest.raises(ConfigurationError) as raised:
        JWTGate(app, db=db)

    assert raised.value.key == "JWTGATE_DATABASE_URI"
    assert "SQLALCHEMY_BINDS" in raised.value.message


def test_another_instance_than_the_apps_own_is_refused(host_app: Callable[..., Flask]) -> None:
    app = host_app(SQLALCHEMY_DATABASE_URI="sqlite://")
    SQLAlchemy(app)

    with pytest.raises(RuntimeError, match="other than the one registered"):
        JWTGate(app, db=SQLAlchemy())


def test_by_default_the_gate_keeps_a_sqlite_file_in_the_instance_folder(
    host_app: Callable[..., Flask], tmp_path: Path
) -> None:
    # An app that is not testing (a testing one gets a database in memory: tests/test_testing_database.py).
    app = host_app(TESTING=False, JWTGATE_AUDIT_SYNC=True)
    JWTGate(app)

    app.test_client().get("/api/items")

    assert audit_of(app).database.engine.url.database == str(tmp_path / "instance" / "jwtgate.db")
    assert len(audit_rows(app)) == 1


def test_a_plain_postgresql_url_uses_psycopg_3(host_app: Callable[..., Flask], postgres_url: str) -> None:
    app = host_app(JWTGATE_DATABASE_URI=postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    JWTGate(app)

    assert audit_of(app).database.engine.url.drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("JWTGATE_DATABASE_URI", "not a url"),
        ("JWTGATE_DATABASE_URI", "oracle+nosuchdriver://x"),
        ("JWTGATE_AUDIT_SYNC", "sometimes"),
        ("JWTGATE_AUDIT_QUEUE_SIZE", 0),
        ("JWTGATE_AUDIT_BATCH_SIZE", "lots"),
        ("JWTGATE_AUDIT_FLUSH_INTERVAL", 0),
        ("JWTGATE_AUDIT_FLUSH_INTERVAL", "soon"),
        ("JWTGATE_AUDIT_SPOOL_MAX_BYTES", -1),
        ("JWTGATE_AUDIT_SPOOL_DIR", 42),
    ],
)
def test_bad_settings_are_refused_at_start_up_naming_the_key(
    host_app: Callable[..., Flask], key: str, value: object
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        JWTGate(host_app(**{key: value}))

    assert raised.value.key == key


def test_settings_from_the_environment_are_read(host_app: Callable[..., Flask]) -> None:
    app = host_app(JWTGATE_AUDIT_SYNC="false", JWTGATE_AUDIT_FLUSH_INTERVAL="0.5", JWTGATE_AUDIT_BATCH_SIZE="50")
    JWTGate(app)

    settings = JWTGate.settings(app)
    assert (settings.audit_sync, settings.audit_flush_interval, settings.audit_batch_size) == (False, 0.5, 50)
    assert audit_of(app).status()["mode"] == "background"


def test_an_unreachable_database_at_start_up_does_not_stop_the_app(
    host_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = host_app(
        JWTGATE_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1",
        JWTGATE_RUNTIME_SETTINGS=False,
    )
    JWTGate(app)

    assert "database cannot be reached at start-up (OperationalError)" in caplog.text
    assert app.test_client().get("/api/items").status_code == 401
    assert audit_of(app).status()["spooled"] == 1


def test_an_in_memory_database_keeps_its_tables_after_start_up(host_app: Callable[..., Flask]) -> None:
    app = host_app(JWTGATE_DATABASE_URI="sqlite://")
    JWTGate(app)

    assert app.test_client().get("/api/items").status_code == 401

    assert len(audit_rows(app)) == 1
    assert audit_of(app).status()["spooled"] == 0


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgresql+psycopg://gate@db.invalid/gate", 5),
        ("postgresql://gate@db.invalid/gate?connect_timeout=2", "2"),  # the URL's own wins
    ],
)
def test_the_gates_own_postgresql_engine_never_waits_for_ever_to_connect(
    tmp_path: Path, uri: str, expected: object
) -> None:
    from flask_jwtgate.database import _make_engine

    engine = _make_engine(uri, str(tmp_path))
    seen: list[dict[str, Any]] = []

    def capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.append(dict(cparams))
        raise ConnectionRefusedError("not connecting: the parameters are what is looked at")

    sa.event.listen(engine, "do_connect", capture)
    with pytest.raises(ConnectionRefusedError):
        engine.connect()
    engine.dispose()
    assert seen[0]["connect_timeout"] == expected
