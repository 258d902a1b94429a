"""The API-token store on the gate's database: SQLite and the real PostgreSQL."""

from __future__ import annotations

import atexit
import hmac
import secrets
import uuid
import weakref
from collections.abc import Iterator
from hmac import compare_digest as hmac_compare_digest
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import Clock
from flask import Flask

from flask_jwtgate import api_tokens as api_tokens_module
from flask_jwtgate.api_tokens import (
    LAST_USED_INTERVAL,
    REVOCATION_DEADLINE,
    ApiTokenStore,
    _flush_at_exit,
    api_tokens,
    hash_secret,
)
from flask_jwtgate.database import GateDatabase
from flask_jwtgate.errors import InvalidToken, TemporarilyUnavailable
from flask_jwtgate.revisions import INTERVAL as REVISION_INTERVAL

#: For the tests whose subject is not the database.
SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


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

    authenticated = store.authenticate(secret)
    assert authenticated.username == "bob"
    assert authenticated.read_only is False and authenticated.groups == frozenset()  # unless made otherwise
    clock.advance(86400 - 1)
    assert store.authenticate(secret).username == "bob"
    clock.advance(1)  # its expiry: no longer valid
    with pytest.raises(InvalidToken) as refused:
        store.authenticate(secret)
    assert (refused.value.reason, refused.value.description) == ("expired", "the API token has expired")


@SQLITE_ONLY  # validation, and a lookup that finds nothing
@pytest.mark.parametrize(
    ("secret", "reason", "description"),
    [
        ("jgt_", "malformed_token", "the API token is malformed"),
        ("jgt_short", "malformed_token", "the API token is malformed"),
        ("jgt_" + "A" * 43, "unknown_token", "the API token is not known"),
        ("jgt_" + "A" * 42 + "!", "malformed_token", "the API token is malformed"),
        ("jgt_" + "A" * 44, "malformed_token", "the API token is malformed"),
    ],
    ids=["empty", "short", "unknown", "bad-character", "too-long"],
)
def test_unknown_and_malformed_secrets_are_refused(
    database: GateDatabase, clock: Clock, secret: str, reason: str, description: str
) -> None:
    store = ApiTokenStore(database, clock=clock)
    store.create("bob", name="deploy", expires_in_days=1)

    with pytest.raises(InvalidToken) as refused:
        store.authenticate(secret)
    assert (refused.value.reason, refused.value.description) == (reason, description)


def test_revocation_is_seen_by_another_process_within_the_deadline(database: GateDatabase, clock: Clock) -> None:
    creator, other_worker = ApiTokenStore(database, clock=clock), ApiTokenStore(database, clock=clock)
    token, secret = creator.create("carol", name="cron", expires_in_days=7)
    assert other_worker.authenticate(secret).username == "carol"  # now cached by the other worker

    assert creator.revoke(token.id) is True
    clock.advance(REVOCATION_DEADLINE)
    with pytest.raises(InvalidToken) as refused:
        other_worker.authenticate(secret)
    assert (refused.value.reason, refused.value.description) == ("revoked", "the API token has been revoked")
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


@SQLITE_ONLY
def test_last_used_is_written_by_the_first_request_a_full_interval_after_the_last_write(
    database: GateDatabase, clock: Clock
) -> None:
    store = ApiTokenStore(database, clock=clock)  # its last write: now
    token, secret = store.create("dave", name="bot", expires_in_days=7)

    clock.advance(LAST_USED_INTERVAL - 1)
    store.authenticate(secret)
    unwritten = store.get(token.id)
    clock.advance(1)
    store.authenticate(secret)
    written = store.get(token.id)

    assert unwritten is not None and unwritten.last_used_at is None
    assert written is not None and written.last_used_at is not None
    assert written.last_used_at.timestamp() == pytest.approx(clock.now)


@SQLITE_ONLY
def test_last_used_time_is_the_clocks_whatever_the_local_time_zone(
    database: GateDatabase, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("gus", name="bot", expires_in_days=7)
    store.authenticate(secret)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        store.flush_last_used()
    finally:
        monkeypatch.undo()
        time.tzset()
    used = store.get(token.id)
    assert used is not None and used.last_used_at is not None
    assert used.last_used_at.timestamp() == pytest.approx(clock.now)


@SQLITE_ONLY
def test_last_used_times_that_cannot_be_written_are_kept_for_the_next_write(
    database: GateDatabase, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("ivy", name="bot", expires_in_days=7)
    store.authenticate(secret)
    used_at = clock.now

    def unreachable(*args: object) -> None:
        raise sa.exc.OperationalError("UPDATE", {}, Exception("the database is gone"))

    sa.event.listen(database.engine, "before_cursor_execute", unreachable)
    try:
        with caplog.at_level("WARNING", logger="flask_jwtgate"):
            store.flush_last_used()
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", unreachable)
    clock.advance(5)
    store.flush_last_used()

    assert [r.getMessage() for r in caplog.records] == [
        "jwtgate: could not record when 1 API tokens were last used; will retry"
    ]
    written = store.get(token.id)
    assert written is not None and written.last_used_at is not None
    assert written.last_used_at.timestamp() == pytest.approx(used_at)


@SQLITE_ONLY
def test_the_lookup_cache_holds_at_most_max_cached_entries(
    database: GateDatabase, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown secrets are cached too (as unknown), and callers choose them: the cache is emptied when full."""
    monkeypatch.setattr(api_tokens_module, "MAX_CACHED", 3)
    store = ApiTokenStore(database, clock=clock)
    sizes = []
    for n in range(4):
        with pytest.raises(InvalidToken):
            store.authenticate("jgt_" + f"{n:043d}")
        sizes.append(len(store._cache))
    assert sizes == [1, 2, 3, 1]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("stored", "groups"),
    [('"admins"', set()), ('{"admins": true}', set()), ("7", set()), ("not json", set()), ('["ops", 7]', {"ops"})],
    ids=repr,
)
def test_a_malformed_groups_column_grants_no_group(
    database: GateDatabase, clock: Clock, stored: str, groups: set[str]
) -> None:
    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("hal", name="ci", expires_in_days=1, groups=frozenset({"ops"}))
    with database.engine.begin() as connection:
        connection.execute(api_tokens.update().where(api_tokens.c.id == token.id).values(groups=stored))

    assert store.authenticate(secret).groups == groups
    listed = store.get(token.id)
    assert listed is not None and listed.groups == groups


@SQLITE_ONLY
def test_a_store_writes_last_used_when_the_process_exits(
    database: GateDatabase, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the store registers with ``atexit`` is what the interpreter runs at exit: it writes what is pending."""
    registered: list[tuple[object, tuple[object, ...]]] = []
    monkeypatch.setattr(atexit, "register", lambda function, *args: registered.append((function, args)))
    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("erin", name="bot", expires_in_days=7)
    store.authenticate(secret)

    for function, args in registered:  # the process exits
        function(*args)  # type: ignore[operator]

    written = store.get(token.id)
    assert written is not None and written.last_used_at is not None
    assert written.last_used_at.timestamp() == pytest.approx(clock.now)


@SQLITE_ONLY
def test_last_used_is_written_at_exit(database: GateDatabase, clock: Clock) -> None:
    """The function the store registers with ``atexit``: it writes what is pending, and does nothing once the store
    is gone."""
    store = ApiTokenStore(database, clock=clock)
    _, secret = store.create("erin", name="bot", expires_in_days=7)
    store.authenticate(secret)
    _flush_at_exit(weakref.ref(store))
    (listed,) = ApiTokenStore(database, clock=clock).list("erin")
    assert listed.last_used_at is not None and listed.last_used_at.timestamp() == pytest.approx(clock.now)

    class Gone:
        pass

    _flush_at_exit(weakref.ref(Gone()))  # type: ignore[arg-type]  # a store collected before exit: nothing to do


def break_sqlite_file(database: GateDatabase, path: Path) -> None:
    """The database file is gone and cannot come back: every query from now on fails."""
    path.unlink()
    path.mkdir()
    database.engine.dispose()
    database.tables_ready = False


@SQLITE_ONLY
def test_a_database_outage_is_ridden_out_for_the_deadline_then_api_tokens_are_refused(
    database: GateDatabase, tmp_path: Path, clock: Clock
) -> None:
    """The revision read may fail for up to REVOCATION_DEADLINE: a revocation made meanwhile would be seen within it
    anyway. After that the gate cannot tell whether a token was revoked, and refuses (503), never guesses."""
    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("erin", name="x", expires_in_days=1)
    assert store.authenticate(secret).username == "erin"

    break_sqlite_file(database, tmp_path / "tokens.db")
    clock.advance(REVISION_INTERVAL + 0.1)  # the revision is read again, and the read fails
    assert store.authenticate(secret).username == "erin"  # still within the deadline
    clock.advance(REVOCATION_DEADLINE - REVISION_INTERVAL)
    with pytest.raises(TemporarilyUnavailable) as refused:
        store.authenticate(secret)
    assert refused.value.reason == "token_store_unavailable"
    assert refused.value.status_code == 503


@SQLITE_ONLY
def test_a_lookup_that_fails_is_503_token_store_unavailable(
    database: GateDatabase, tmp_path: Path, clock: Clock
) -> None:
    """The revisions were read a moment ago, so they are fresh; then the database goes, and a token not yet cached
    cannot be looked up: 503, never a 500 nor a guess."""
    store = ApiTokenStore(database, clock=clock)
    _, seen = store.create("erin", name="x", expires_in_days=1)
    _, unseen = store.create("erin", name="y", expires_in_days=1)
    assert store.authenticate(seen).username == "erin"

    break_sqlite_file(database, tmp_path / "tokens.db")
    with pytest.raises(TemporarilyUnavailable) as refused:
        store.authenticate(unseen)
    assert refused.value.status_code == 503
    assert refused.value.to_dict() == {
        "error": "temporarily_unavailable",
        "error_description": "API tokens cannot be checked: the gate's database is unreachable",
        "status": 503,
        "reason": "token_store_unavailable",
    }


@SQLITE_ONLY
def test_the_stored_hash_is_compared_in_constant_time(
    database: GateDatabase, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret is found by its hash, then the stored hash is compared with ``hmac.compare_digest`` (an ``==``
    would leak, by its timing, how much of a guessed hash matches), and its answer decides."""
    store = ApiTokenStore(database, clock=clock)
    token, secret = store.create("gus", name="ci", expires_in_days=1)
    with database.engine.connect() as connection:
        stored = connection.execute(sa.select(api_tokens.c.secret_hash).where(api_tokens.c.id == token.id)).scalar()
    compared: list[tuple[object, object]] = []
    answer = [True]

    def compare_digest(a: object, b: object) -> bool:
        compared.append((a, b))
        return answer[0] and hmac_compare_digest(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    monkeypatch.setattr(secrets, "compare_digest", compare_digest)  # the same function, under its other name

    assert store.authenticate(secret).username == "gus"
    assert compared == [(stored, hash_secret(secret))]
    answer[0] = False  # the comparison's answer is the one that counts
    with pytest.raises(InvalidToken) as refused:
        store.authenticate(secret)
    assert refused.value.reason == "unknown_token"


@SQLITE_ONLY
def test_tokens_are_listed_newest_first_and_those_made_at_once_by_id(database: GateDatabase, clock: Clock) -> None:
    store = ApiTokenStore(database, clock=clock)
    older, _ = store.create("fay", name="older", expires_in_days=7)
    clock.advance(60)
    at_once = [store.create("fay", name=f"t{n}", expires_in_days=7)[0] for n in range(8)]
    listed = store.list("fay")
    assert [token.id for token in listed] == [*sorted(token.id for token in at_once), older.id]
    assert [token.id for token in store.list()] == [token.id for token in listed]


@SQLITE_ONLY
def test_revocation_time_is_the_clocks_whatever_the_local_time_zone(
    database: GateDatabase, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    store = ApiTokenStore(database, clock=clock)
    token, _ = store.create("gus", name="bot", expires_in_days=7)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert store.revoke(token.id) is True
    finally:
        monkeypatch.undo()
        time.tzset()
    revoked = store.get(token.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert revoked.revoked_at.timestamp() == pytest.approx(clock.now)


@SQLITE_ONLY
def test_revocation_retries_once_when_the_revision_row_is_made_at_once_elsewhere(
    database: GateDatabase, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes may create the revision row at the same moment: the loser tries again, once; a second
    conflict is an error, never a loop."""
    import flask_jwtgate.api_tokens as module

    store = ApiTokenStore(database, clock=clock)
    token, _ = store.create("hal", name="bot", expires_in_days=7)
    calls: list[int] = []

    def conflicting(connection: object, name: str) -> None:
        calls.append(1)
        raise sa.exc.IntegrityError("INSERT", {}, Exception("duplicate revision row"))

    monkeypatch.setattr(module, "bump", conflicting)
    with pytest.raises(sa.exc.IntegrityError):
        store.revoke(token.id)
    assert len(calls) == 2
    assert store.get(token.id).revoked_at is None  # type: ignore[union-attr]  # each attempt rolled back
