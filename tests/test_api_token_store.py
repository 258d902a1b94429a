"""The API-token store on the gate's database: SQLite and the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import Clock
from flask import Flask

from flask_jwtgate.api_tokens import REVOCATION_DEADLINE, ApiTokenStore, api_tokens, hash_secret
from flask_jwtgate.database import GateDatabase
from flask_jwtgate.errors import InvalidToken, TemporarilyUnavailable


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GateDatabase]:
    app = Flask("token_store", instance_path=str(tmp_path))
    if request.param == "sqlite":
        database = GateDatabase(app, uri="sqlite:///tokens.db")
        database.start()
        yield database
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"jwtgate_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    database = GateDatabase(app, uri=url)
    database.engine.update_execution_options(schema_translate_map={None: schema})
    database.start()
    try:
        yield database
    finally:
        database.engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_the_secret_is_prefixed_random_and_stored_only_as_a_hash(database: GateDatabase, clock: Clock) -> None:
    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("alice", name="ci", expires_in_days=30)
    other_token, other_secret = store.create("alice", name="ci", expires_in_days=30)

    assert secret.startswith("jgt_") and len(secret) >= 4 + 43  # 256 random bits in base64url
    assert secret != other_secret and token.id != other_token.id
    with database.engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(sa.select(api_tokens))]
    assert len(rows) == 2
    for row in rows:
        assert secret not in str(row.values()) and secret[4:] not in str(row.values())
    assert {row["secret_hash"] for row in rows} == {hash_secret(secret), hash_secret(other_secret)}
    assert secret not in str(token.to_dict())


def test_a_token_authenticates_its_user_until_it_expires(database: GateDatabase, clock: Clock) -> None:
    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("bob", name="deploy", expires_in_days=1)

    assert store.authenticate(secret).username == "bob"
    clock.advance(86400 + 1)
    with pytest.raises(InvalidToken) as refused:
        store.authenticate(secret)
    assert refused.value.reason == "expired"


@pytest.mark.parametrize(
    "secret",
    ["jgt_", "jgt_short", "jgt_" + "A" * 43, "jgt_" + "A" * 42 + "!", "jgt_" + "A" * 44],
    ids=["empty", "short", "unknown", "bad-character", "too-long"],
)
def test_unknown_and_malformed_secrets_are_refused(database: GateDatabase, clock: Clock, secret: str) -> None:
    store = ApiTokenStore(database, clock=clock)
    store.create("bob", name="deploy", expires_in_days=1)

    with pytest.raises(InvalidToken) as refused:
        store.authenticate(secret)
    assert refused.value.reason in {"unknown_token", "malformed_token"}


def test_revocation_is_seen_by_another_process_within_the_deadline(database: GateDatabase, clock: Clock) -> None:
    creator, other_worker = ApiTokenStore(database, clock=clock), ApiTokenStore(database, clock=clock)
    token, secret = creator.create("carol", name="cron", expires_in_days=7)
    assert other_worker.authenticate(secret).username == "carol"  # now cached by the other worker

    assert creator.revoke(token.id) is True
    clock.advance(REVOCATION_DEADLINE)
    with pytest.raises(InvalidToken) as refused:
        other_worker.authenticate(secret)
    assert refused.value.reason == "revoked"
    assert creator.revoke(token.id) is False  # already revoked


def test_last_used_is_written_in_batches_not_per_request(database: GateDatabase, clock: Clock) -> None:
    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("dave", name="bot", expires_in_days=7)
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(database.engine, "before_cursor_execute", record)
    try:
        for _ in range(50):
            store.authenticate(secret)
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", record)
    assert not any(statement.lstrip().upper().startswith("UPDATE") for statement in statements)

    store.flush_last_used()
    (listed,) = store.list("dave")
    assert listed.last_used_at is not None
    assert listed.last_used_at.timestamp() == pytest.approx(clock.now)


def test_a_database_outage_refuses_api_tokens_after_the_deadline(tmp_path: Path, clock: Clock) -> None:
    app = Flask("token_store_outage", instance_path=str(tmp_path))
    database = GateDatabase(app, uri="sqlite:///tokens.db")
    database.start()
    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("erin", name="x", expires_in_days=1)
    assert store.authenticate(secret).username == "erin"

    (tmp_path / "tokens.db").unlink()
    (tmp_path / "tokens.db").mkdir()  # the file is gone and cannot come back: every query fails
    database.engine.dispose()
    database.tables_ready = False
    clock.advance(REVOCATION_DEADLINE + 1)
    with pytest.raises(TemporarilyUnavailable):
        store.authenticate(secret)
