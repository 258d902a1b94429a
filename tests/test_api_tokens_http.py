"""Gate-issued API tokens through the HTTP API (``/jwtgate/tokens``), on SQLite and the real PostgreSQL.

Each test runs on a SQLite file of its own and on a PostgreSQL schema of its own (``postgres_schema_url``), so the
second app of the revocation test shares the very database the first one writes to.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import SQLITE_ONLY, Clock
from flask import Flask, jsonify
from flask.testing import FlaskClient

from flask_jwtgate import JWTGate, current_identity
from flask_jwtgate.api_tokens import LAST_USED_INTERVAL, REVOCATION_DEADLINE, api_tokens, hash_secret
from flask_jwtgate.revisions import INTERVAL as REVISION_INTERVAL

TOKENS = "/jwtgate/tokens"
ADMIN = "root"
ADMIN_GROUPS = ["jwtgate-admins"]
UTC = dt.timezone.utc
AppFactory = Callable[..., Flask]
Headers = Callable[..., dict[str, str]]




@pytest.fixture
def directory() -> dict[str, list[str]]:
    """The host's user directory, read by the groups_loader on every call: tests change it to change groups."""
    return {"alice": ["devs"], "bob": ["devs"], "carol": ["token-makers"], ADMIN: []}


@pytest.fixture
def make_app(
    audit_app_factory: Callable[..., tuple[Flask, JWTGate]], directory: dict[str, list[str]], clock: Clock
) -> AppFactory:
    """``make(**config) -> app`` on the test's database (``audit_app_factory``: every app of a test shares it) and
    the test's clock, with a ``groups_loader`` over ``directory`` and a ``GET /api/me`` view showing
    ``current_identity``."""

    def make(**config: Any) -> Flask:
        app, gate = audit_app_factory(clock=clock, **config)

        @gate.groups_loader
        def groups(username: str) -> list[str]:
            return directory.get(username, [])

        @app.get("/api/me")
        def me() -> Any:
            return jsonify(
                username=current_identity.username,
                groups=sorted(current_identity.groups),
                auth_method=current_identity.auth_method,
                token_id=current_identity.token_id,
            )

        return app

    return make


@pytest.fixture
def jwt_auth(jwtgate_token_factory: Callable[..., str], clock: Clock) -> Headers:
    """``jwt_auth(username, groups=[...])``: an Authorization header with a JWT issued at the test clock's now."""

    def make(username: str, groups: list[str] | None = None) -> dict[str, str]:
        token = jwtgate_token_factory(username, groups=groups or [], now=clock.now)
        return {"Authorization": f"Bearer {token}"}

    return make


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def create(
    client: FlaskClient, headers: dict[str, str], name: str = "ci", expires_in_days: int = 30, **extra: Any
) -> dict[str, Any]:
    """POST /tokens and return the body of the 201."""
    response = client.post(TOKENS, json={"name": name, "expires_in_days": expires_in_days, **extra}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def rows(app: Flask) -> list[dict[str, Any]]:
    """Every row of the API-token table, as the database holds it."""
    with app.extensions["jwtgate"].database.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.select(api_tokens))]


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, UTC).isoformat()


# -- creation ---------------------------------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_stores_only_its_hash(
    make_app: AppFactory, jwt_auth: Headers, clock: Clock
) -> None:
    app = make_app()
    client = app.test_client()

    response = client.post(TOKENS, json={"name": "ci pipeline", "expires_in_days": 30}, headers=jwt_auth("alice"))

    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    secret = body["token"]
    assert secret.startswith("jgt_") and len(secret) - len("jgt_") >= 43
    assert body["name"] == "ci pipeline"
    assert body["username"] == "alice" and body["created_by"] == "alice"
    assert body["created_at"] == iso(clock.now)
    assert body["expires_at"] == iso(clock.now + 30 * 86400)
    assert body["revoked_at"] is None and body["last_used_at"] is None

    listed = client.get(TOKENS, headers=jwt_auth("alice"))
    assert listed.status_code == 200
    assert listed.headers["Cache-Control"] == "no-store"
    (shown,) = listed.get_json()["tokens"]
    assert shown == {key: value for key, value in body.items() if key != "token"}
    assert secret not in listed.get_data(as_text=True) and secret[4:] not in listed.get_data(as_text=True)

    (row,) = rows(app)
    assert row["id"] == body["id"] and row["username"] == "alice"
    assert row["secret_hash"] == hash_secret(secret)
    assert secret not in repr(row) and secret[4:] not in repr(row)


def test_two_tokens_never_share_a_secret_or_an_id(make_app: AppFactory, jwt_auth: Headers) -> None:
    client = make_app().test_client()

    first, second = create(client, jwt_auth("alice")), create(client, jwt_auth("alice"))

    assert first["token"] != second["token"] and first["id"] != second["id"]


# -- using a token ----------------------------------------------------------------------------------------------------


def test_token_authenticates_as_its_user_with_groups_resolved_at_use_time(
    make_app: AppFactory, jwt_auth: Headers, directory: dict[str, list[str]]
) -> None:
    app = make_app(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    client = app.test_client()
    created = create(client, jwt_auth("alice"))
    secret = created["token"]

    response = client.get("/api/me", headers=bearer(secret))
    assert response.status_code == 200
    assert response.get_json() == {
        "username": "alice",
        "groups": ["devs"],
        "auth_method": "api_token",
        "token_id": "api:" + created["id"],
    }
    assert client.post("/api/items", headers=bearer(secret)).status_code == 200

    directory["alice"] = ["viewers", "ops"]  # the directory changes; the token stays the same

    assert client.get("/api/me", headers=bearer(secret)).get_json()["groups"] == ["ops", "viewers"]
    refused = client.post("/api/items", headers=bearer(secret))
    assert refused.status_code == 403
    assert refused.get_json()["reason"] == "read_only"


def test_whoami_shows_the_api_token_identity_without_the_secret(make_app: AppFactory, jwt_auth: Headers) -> None:
    client = make_app().test_client()
    created = create(client, jwt_auth("alice"))

    response = client.get("/jwtgate/whoami", headers=bearer(created["token"]))

    assert response.status_code == 200
    assert response.get_json() == {
        "username": "alice",
        "groups": ["devs"],
        "auth_method": "api_token",
        "token_id": "api:" + created["id"],
        "provider": None,
    }
    assert created["token"][4:] not in response.get_data(as_text=True)


def test_an_unknown_api_token_is_refused(make_app: AppFactory) -> None:
    client = make_app().test_client()

    response = client.get("/api/items", headers=bearer("jgt_" + "A" * 43))

    assert response.status_code == 401
    assert response.get_json()["reason"] == "unknown_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# -- listing ----------------------------------------------------------------------------------------------------------


def test_users_list_their_own_tokens_and_admins_list_anyones(
    make_app: AppFactory, jwt_auth: Headers, clock: Clock
) -> None:
    client = make_app().test_client()
    for username, name in [("alice", "a1"), ("bob", "b1"), ("alice", "a2"), (ADMIN, "r1")]:
        groups = ADMIN_GROUPS if username == ADMIN else None
        create(client, jwt_auth(username, groups), name=name)
        clock.advance(1)
    admin = jwt_auth(ADMIN, ADMIN_GROUPS)

    def names(headers: dict[str, str], query: str = "") -> list[str]:
        response = client.get(TOKENS + query, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert all("token" not in shown for shown in response.get_json()["tokens"])
        return [shown["name"] for shown in response.get_json()["tokens"]]

    assert names(jwt_auth("alice")) == ["a2", "a1"]  # newest first
    assert names(jwt_auth("alice"), "?username=alice") == ["a2", "a1"]
    assert names(jwt_auth("bob")) == ["b1"]
    assert names(admin) == ["r1", "a2", "b1", "a1"]
    assert names(admin, "?username=bob") == ["b1"]
    assert names(admin, "?username=nobody") == []


def test_a_non_admin_cannot_list_another_users_tokens(make_app: AppFactory, jwt_auth: Headers) -> None:
    client = make_app().test_client()
    create(client, jwt_auth("bob"), name="bob's")

    response = client.get(TOKENS + "?username=bob", headers=jwt_auth("alice"))

    assert response.status_code == 403
    assert response.get_json()["reason"] == "not_admin"
    assert "bob's" not in response.get_data(as_text=True)


def test_listing_needs_credentials(make_app: AppFactory) -> None:
    response = make_app().test_client().get(TOKENS)

    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"


# -- revocation -------------------------------------------------------------------------------------------------------


def test_revoke_own_token_then_it_is_refused_as_revoked(make_app: AppFactory, jwt_auth: Headers, clock: Clock) -> None:
    app = make_app()
    client = app.test_client()
    created = create(client, jwt_auth("alice"))
    assert client.get("/api/items", headers=bearer(created["token"])).status_code == 200

    response = client.delete(f"{TOKENS}/{created['id']}", headers=jwt_auth("alice"))

    assert response.status_code == 204 and response.get_data() == b""
    refused = client.get("/api/items", headers=bearer(created["token"]))
    assert refused.status_code == 401
    assert refused.get_json()["reason"] == "revoked"
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    (row,) = rows(app)
    assert row["revoked_at"] is not None and row["revoked_at"].timestamp() == pytest.approx(clock.now)
    (shown,) = client.get(TOKENS, headers=jwt_auth("alice")).get_json()["tokens"]
    assert shown["revoked_at"] == iso(clock.now)


@pytest.mark.parametrize(
    "token_id", ["0123456789abcdef", "x" * 65, "a%20b%C3%A9"], ids=["unknown", "too-long", "odd-characters"]
)
def test_revoking_an_unknown_token_is_404(make_app: AppFactory, jwt_auth: Headers, token_id: str) -> None:
    response = make_app().test_client().delete(f"{TOKENS}/{token_id}", headers=jwt_auth("alice"))

    assert response.status_code == 404
    assert response.get_json()["reason"] == "not_found"


def test_a_nul_byte_in_a_token_id_or_username_filter_is_not_a_database_outage(
    make_app: AppFactory, jwt_auth: Headers
) -> None:
    """PostgreSQL refuses NUL in text; that is the caller's input, not the database being down (503)."""
    client = make_app().test_client()

    revoked = client.delete(f"{TOKENS}/abc%00def", headers=jwt_auth("alice"))
    listed = client.get(TOKENS + "?username=bo%00b", headers=jwt_auth(ADMIN, ADMIN_GROUPS))

    assert (revoked.status_code, revoked.get_json()["reason"]) == (404, "not_found")
    assert (listed.status_code, listed.get_json()) == (200, {"tokens": []})


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": "c\x00i"}, "name"), ({"name": "ci", "username": "bo\x00b"}, "username")],
    ids=["name", "username"],
)
def test_a_nul_byte_in_a_new_tokens_fields_is_refused_or_stored_never_a_503(
    make_app: AppFactory, jwt_auth: Headers, body: dict[str, Any], field: str
) -> None:
    app = make_app()

    response = app.test_client().post(TOKENS, json=body, headers=jwt_auth(ADMIN, ADMIN_GROUPS))

    assert response.status_code in (201, 400), response.get_data(as_text=True)
    if response.status_code == 400:
        assert response.get_json()["reason"] == "invalid_parameter"
        assert response.get_json()["error_description"].startswith(field)
        assert rows(app) == []
    else:
        assert [row[field] for row in rows(app)] == [body[field]]


def test_another_users_token_is_404_to_a_non_admin_and_revocable_by_an_admin(
    make_app: AppFactory, jwt_auth: Headers
) -> None:
    app = make_app()
    client = app.test_client()
    created = create(client, jwt_auth("bob"))

    probed = client.delete(f"{TOKENS}/{created['id']}", headers=jwt_auth("alice"))

    assert probed.status_code == 404
    assert probed.get_json()["reason"] == "not_found"
    assert rows(app)[0]["revoked_at"] is None
    assert client.get("/api/items", headers=bearer(created["token"])).status_code == 200

    by_admin = client.delete(f"{TOKENS}/{created['id']}", headers=jwt_auth(ADMIN, ADMIN_GROUPS))

    assert by_admin.status_code == 204
    assert client.get("/api/items", headers=bearer(created["token"])).get_json()["reason"] == "revoked"


def test_revocation_is_seen_by_a_second_app_on_the_same_database_within_the_deadline(
    make_app: AppFactory, jwt_auth: Headers, clock: Clock
) -> None:
    first, second = make_app(), make_app()
    first_client, second_client = first.test_client(), second.test_client()
    created = create(first_client, jwt_auth("alice"))
    secret = created["token"]
    assert second_client.get("/api/items", headers=bearer(secret)).status_code == 200  # known to, and cached by, both
    assert first_client.get("/api/items", headers=bearer(secret)).status_code == 200

    assert first_client.delete(f"{TOKENS}/{created['id']}", headers=jwt_auth("alice")).status_code == 204
    assert first_client.get("/api/items", headers=bearer(secret)).get_json()["reason"] == "revoked"
    clock.advance(REVOCATION_DEADLINE)

    refused = second_client.get("/api/items", headers=bearer(secret))
    assert refused.status_code == 401
    assert refused.get_json()["reason"] == "revoked"


def test_a_lookup_under_way_across_a_revocation_does_not_keep_the_token_alive(
    make_app: AppFactory, jwt_auth: Headers, clock: Clock
) -> None:
    # The race: a lookup reads the row, another process revokes the token, another request of this process reads the
    # new revision and empties the cache, and only then does the slow lookup finish. It must not cache what it read.
    first, second = make_app(), make_app()
    first_client = first.test_client()
    doomed = create(first_client, jwt_auth("alice"))
    other = create(first_client, jwt_auth("bob"))
    assert first_client.get("/api/items", headers=bearer(other["token"])).status_code == 200  # revision read once

    store = first.extensions["jwtgate"].api_tokens
    real_lookup = store._lookup
    read, release = threading.Event(), threading.Event()

    def slow_lookup(digest: str) -> Any:
        row = real_lookup(digest)
        if digest == hash_secret(doomed["token"]):
            read.set()  # the row is read, before the revocation
            release.wait(10)
        return row

    store._lookup = slow_lookup  # type: ignore[method-assign]
    slow: list[int] = []
    thread = threading.Thread(
        target=lambda: slow.append(first.test_client().get("/api/items", headers=bearer(doomed["token"])).status_code)
    )
    thread.start()
    assert read.wait(10)
    assert second.test_client().delete(f"{TOKENS}/{doomed['id']}", headers=jwt_auth("alice")).status_code == 204
    clock.advance(REVOCATION_DEADLINE)
    assert first_client.get("/api/items", headers=bearer(other["token"])).status_code == 200  # sees the revocation
    release.set()
    thread.join(10)
    assert slow == [200]  # that request read the row before the revocation: it was valid then

    refused = first_client.get("/api/items", headers=bearer(doomed["token"]))
    assert refused.status_code == 401
    assert refused.get_json()["reason"] == "revoked"


def test_a_token_created_by_one_app_is_accepted_by_another_at_once(make_app: AppFactory, jwt_auth: Headers) -> None:
    first, second = make_app(), make_app()
    created = create(first.test_client(), jwt_auth("alice"))

    response = second.test_client().get("/api/me", headers=bearer(created["token"]))

    assert response.status_code == 200
    assert response.get_json()["username"] == "alice"


# -- expiry and last_used ---------------------------------------------------------------------------------------------


def test_token_expires_after_expires_in_days(make_app: AppFactory, jwt_auth: Headers, clock: Clock) -> None:
    client = make_app().test_client()
    created = create(client, jwt_auth("alice"), expires_in_days=1)
    assert created["expires_at"] == iso(clock.now + 86400)

    clock.advance(86400 - 1)
    assert client.get("/api/items", headers=bearer(created["token"])).status_code == 200
    clock.advance(1)

    refused = client.get("/api/items", headers=bearer(created["token"]))
    assert refused.status_code == 401
    assert refused.get_json()["reason"] == "expired"


def test_api_token_requests_read_the_revision_counters_at_most_once_an_interval(
    make_app: AppFactory, jwt_auth: Headers, clock: Clock
) -> None:
    """The token store reads revocations through the app's revision counters, which every request checks anyway:
    one read per interval, not one for the app and another for the tokens."""
    app = make_app()
    client = app.test_client()
    secret = create(client, jwt_auth("alice"))["token"]
    engine = app.extensions["jwtgate"].database.engine
    reads: list[str] = []

    def record(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "jwtgate_revisions" in statement:
            reads.append(statement)

    clock.advance(REVISION_INTERVAL)  # a read is due
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(10):
            assert client.get("/api/items", headers=bearer(secret)).status_code == 200
            clock.advance(REVISION_INTERVAL / 20)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(reads) == 1


def test_last_used_is_kept_without_a_write_per_request(make_app: AppFactory, jwt_auth: Headers, clock: Clock) -> None:
    started = clock.now
    app = make_app()
    client = app.test_client()
    created = create(client, jwt_auth("alice"))
    engine = app.extensions["jwtgate"].database.engine
    token_updates: list[str] = []

    def record(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE") and "jwtgate_api_tokens" in statement:
            token_updates.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(50):
            assert client.get("/api/items", headers=bearer(created["token"])).status_code == 200
            clock.advance(0.5)
        assert token_updates == []  # 50 uses within the batching interval: no write at all
        clock.advance(started + LAST_USED_INTERVAL + 1 - clock.now)
        assert client.get("/api/items", headers=bearer(created["token"])).status_code == 200
        used_at = clock.now
        assert len(token_updates) == 1  # one batch for the whole minute
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)

    (row,) = rows(app)
    assert row["last_used_at"] is not None and row["last_used_at"].timestamp() == pytest.approx(used_at)
    clock.advance(5)
    (shown,) = client.get(TOKENS, headers=jwt_auth("alice")).get_json()["tokens"]
    assert shown["last_used_at"] == iso(used_at)


@SQLITE_ONLY
def test_during_a_database_outage_api_tokens_get_503_token_store_unavailable_after_the_deadline(
    make_app: AppFactory, jwt_auth: Headers, clock: Clock, tmp_path: Path
) -> None:
    app = make_app()
    client = app.test_client()
    secret = create(client, jwt_auth("alice"))["token"]
    assert client.get("/api/items", headers=bearer(secret)).status_code == 200
    database = app.extensions["jwtgate"].database

    (tmp_path / "jwtgate-test.db").unlink()
    (tmp_path / "jwtgate-test.db").mkdir()  # gone, and cannot come back: every query fails
    database.engine.dispose()
    database.tables_ready = False
    clock.advance(REVISION_INTERVAL + 0.1)
    within = client.get("/api/items", headers=bearer(secret))
    clock.advance(REVOCATION_DEADLINE)
    after = client.get("/api/items", headers=bearer(secret))

    assert within.status_code == 200  # the revision read failed, but the deadline has not passed
    assert after.status_code == 503
    assert after.get_json() == {
        "error": "temporarily_unavailable",
        "error_description": "API tokens cannot be checked: the gate's database is unreachable",
        "status": 503,
        "reason": "token_store_unavailable",
    }
    assert after.headers["Cache-Control"] == "no-store"


# -- validation -------------------------------------------------------------------------------------------------------


@SQLITE_ONLY  # validation only: refused before the database is asked
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in_days": 30}, "name"),
        ({"name": "", "expires_in_days": 30}, "name"),
        ({"name": "   ", "expires_in_days": 30}, "name"),
        ({"name": "x" * 201, "expires_in_days": 30}, "name"),
        ({"name": 7, "expires_in_days": 30}, "name"),
        ({"name": ["ci"], "expires_in_days": 30}, "name"),
        ({"name": "ci", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "ci", "expires_in_days": -1}, "expires_in_days"),
        ({"name": "ci", "expires_in_days": 3651}, "expires_in_days"),
        ({"name": "ci", "expires_in_days": "7"}, "expires_in_days"),
        ({"name": "ci", "expires_in_days": True}, "expires_in_days"),
        ({"name": "ci", "expires_in_days": 1.5}, "expires_in_days"),
        ({"name": "ci", "expires_in_days": None}, "expires_in_days"),
        ({"name": "ci", "expires_in_days": 10**30}, "expires_in_days"),
        ({"name": "ci", "username": 5}, "username"),
        ({"name": "ci", "username": "u" * 256}, "username"),
    ],
    ids=[
        "name-missing",
        "name-empty",
        "name-blank",
        "name-too-long",
        "name-number",
        "name-list",
        "days-zero",
        "days-negative",
        "days-3651",
        "days-string",
        "days-true",
        "days-float",
        "days-null",
        "days-huge",
        "username-number",
        "username-too-long",
    ],
)
def test_invalid_body_is_400_naming_the_field_and_creates_nothing(
    make_app: AppFactory, jwt_auth: Headers, body: dict[str, Any], field: str
) -> None:
    app = make_app()

    response = app.test_client().post(TOKENS, json=body, headers=jwt_auth("alice"))

    assert response.status_code == 400
    error = response.get_json()
    assert error["error"] == "invalid_request" and error["reason"] == "invalid_parameter"
    assert error["error_description"].startswith(field)
    assert rows(app) == []


@SQLITE_ONLY  # validation only: refused before the database is asked
@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("name=ci&expires_in_days=7", "application/x-www-form-urlencoded"),
        ('{"name": "ci"', "application/json"),
        ('["ci", 7]', "application/json"),
        ('"ci"', "application/json"),
        ("", "application/json"),
        ('{"name": "ci", "expires_in_days": 7}', "text/plain"),
    ],
    ids=["form", "truncated-json", "json-array", "json-string", "empty", "json-as-text"],
)
def test_body_that_is_not_a_json_object_is_400(
    make_app: AppFactory, jwt_auth: Headers, data: str, content_type: str
) -> None:
    app = make_app()

    response = app.test_client().post(TOKENS, data=data, content_type=content_type, headers=jwt_auth("alice"))

    assert response.status_code == 400
    assert response.get_json()["reason"] == "invalid_parameter"
    assert "body" in response.get_json()["error_description"]
    assert rows(app) == []


@pytest.mark.parametrize(("days", "name_length"), [(1, 1), (3650, 200)], ids=["shortest", "longest"])
def test_bounds_are_accepted(
    make_app: AppFactory, jwt_auth: Headers, clock: Clock, days: int, name_length: int
) -> None:
    created = create(make_app().test_client(), jwt_auth("alice"), name="n" * name_length, expires_in_days=days)

    assert created["expires_at"] == iso(clock.now + days * 86400)
    assert created["name"] == "n" * name_length


def test_expiry_defaults_to_90_days(make_app: AppFactory, jwt_auth: Headers, clock: Clock) -> None:
    response = make_app().test_client().post(TOKENS, json={"name": "ci"}, headers=jwt_auth("alice"))

    assert response.status_code == 201
    assert response.get_json()["expires_at"] == iso(clock.now + 90 * 86400)


def test_a_non_admin_cannot_create_a_token_for_another_user(make_app: AppFactory, jwt_auth: Headers) -> None:
    app = make_app()

    response = app.test_client().post(
        TOKENS, json={"name": "ci", "expires_in_days": 7, "username": "bob"}, headers=jwt_auth("alice")
    )

    assert response.status_code == 403
    assert response.get_json()["reason"] == "not_admin"
    assert rows(app) == []


def test_an_admin_creates_a_token_for_any_user_and_it_carries_that_users_groups(
    make_app: AppFactory, jwt_auth: Headers
) -> None:
    app = make_app()
    client = app.test_client()

    created = create(client, jwt_auth(ADMIN, ADMIN_GROUPS), username="bob")

    assert created["username"] == "bob" and created["created_by"] == ADMIN
    me = client.get("/api/me", headers=bearer(created["token"])).get_json()
    assert me["username"] == "bob" and me["groups"] == ["devs"]  # bob's groups, never the admin's
    assert [shown["id"] for shown in client.get(TOKENS, headers=jwt_auth("bob")).get_json()["tokens"]] == [
        created["id"]
    ]


@SQLITE_ONLY  # who may create tokens: access rules, not the database
@pytest.mark.parametrize("admin_in_loader", [False, True], ids=["admin-by-jwt-claim", "admin-by-groups-loader"])
def test_an_api_token_cannot_create_tokens(
    make_app: AppFactory, jwt_auth: Headers, directory: dict[str, list[str]], admin_in_loader: bool
) -> None:
    if admin_in_loader:
        directory[ADMIN] = ADMIN_GROUPS
    app = make_app()
    client = app.test_client()
    created = create(client, jwt_auth(ADMIN, ADMIN_GROUPS))

    response = client.post(TOKENS, json={"name": "child", "expires_in_days": 3650}, headers=bearer(created["token"]))

    assert response.status_code == 403
    assert response.get_json()["reason"] == "token_chaining"
    assert [row["name"] for row in rows(app)] == ["ci"]


def test_creating_needs_credentials(make_app: AppFactory) -> None:
    app = make_app()

    response = app.test_client().post(TOKENS, json={"name": "ci", "expires_in_days": 7})

    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"
    assert rows(app) == []


# -- who may create tokens: the toggles -------------------------------------------------------------------------------


@SQLITE_ONLY  # who may create tokens: access rules, not the database
@pytest.mark.parametrize(
    ("config", "username", "groups", "allowed"),
    [
        ({}, "alice", ["devs"], True),
        ({"JWTGATE_ALLOW_USER_TOKEN_CREATION": False}, "alice", ["devs"], False),
        ({"JWTGATE_ALLOW_USER_TOKEN_CREATION": False}, ADMIN, ADMIN_GROUPS, True),
        ({"JWTGATE_TOKEN_CREATOR_GROUPS": ["token-makers"]}, "alice", ["devs"], False),
        ({"JWTGATE_TOKEN_CREATOR_GROUPS": ["token-makers"]}, "carol", ["token-makers"], True),
        ({"JWTGATE_TOKEN_CREATOR_GROUPS": ["token-makers"]}, ADMIN, ADMIN_GROUPS, True),
        (
            {"JWTGATE_ALLOW_USER_TOKEN_CREATION": False, "JWTGATE_TOKEN_CREATOR_GROUPS": ["token-makers"]},
            "alice",
            ["devs"],
            False,
        ),
        (
            {"JWTGATE_ALLOW_USER_TOKEN_CREATION": False, "JWTGATE_TOKEN_CREATOR_GROUPS": ["token-makers"]},
            "carol",
            ["token-makers"],
            True,
        ),
        ({"JWTGATE_ALLOW_USER_TOKEN_CREATION": False, "JWTGATE_ADMIN_GROUPS": ["ops"]}, "dave", ["ops"], True),
        ({"JWTGATE_ALLOW_USER_TOKEN_CREATION": False, "JWTGATE_ADMIN_GROUPS": ["ops"]}, ADMIN, ADMIN_GROUPS, False),
    ],
    ids=[
        "default-user",
        "user-creation-off-user",
        "user-creation-off-admin",
        "creator-groups-non-member",
        "creator-groups-member",
        "creator-groups-admin",
        "both-non-member",
        "both-member",
        "custom-admin-group-member",
        "custom-admin-group-default-group-is-not-admin",
    ],
)
def test_who_may_create_tokens_follows_the_toggles(
    make_app: AppFactory,
    jwt_auth: Headers,
    config: dict[str, Any],
    username: str,
    groups: list[str],
    allowed: bool,
) -> None:
    app = make_app(**config)

    response = app.test_client().post(
        TOKENS, json={"name": "ci", "expires_in_days": 7}, headers=jwt_auth(username, groups)
    )

    if allowed:
        assert response.status_code == 201, response.get_data(as_text=True)
        assert [row["username"] for row in rows(app)] == [username]
    else:
        assert response.status_code == 403
        assert response.get_json()["reason"] == "token_creation_denied"
        assert rows(app) == []


def test_creator_groups_can_come_from_the_groups_loader(
    make_app: AppFactory, jwt_auth: Headers, directory: dict[str, list[str]]
) -> None:
    client = make_app(JWTGATE_TOKEN_CREATOR_GROUPS=["token-makers"]).test_client()
    body = {"name": "ci", "expires_in_days": 7}
    assert client.post(TOKENS, json=body, headers=jwt_auth("alice")).status_code == 403

    directory["alice"] = ["token-makers"]

    assert client.post(TOKENS, json=body, headers=jwt_auth("alice")).status_code == 201


@SQLITE_ONLY  # who may create tokens: access rules, not the database
@pytest.mark.parametrize(
    "config",
    [{"JWTGATE_ALLOW_USER_TOKEN_CREATION": False}, {"JWTGATE_TOKEN_CREATOR_GROUPS": ["token-makers"]}],
    ids=["user-creation-off", "creator-groups"],
)
def test_an_admin_creates_tokens_for_others_whatever_the_toggles(
    make_app: AppFactory, jwt_auth: Headers, config: dict[str, Any]
) -> None:
    app = make_app(**config)
    client = app.test_client()

    created = create(client, jwt_auth(ADMIN, ADMIN_GROUPS), username="alice")

    assert created["username"] == "alice"
    assert client.get("/api/me", headers=bearer(created["token"])).get_json()["username"] == "alice"
    # the toggles govern creation, not use: alice's admin-made token works though alice may not create one
    refused = client.post(TOKENS, json={"name": "mine", "expires_in_days": 7}, headers=jwt_auth("alice"))
    assert refused.status_code == 403 and refused.get_json()["reason"] == "token_creation_denied"
