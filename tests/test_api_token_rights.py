"""An API token never carries more rights than the identity that made it.

It keeps its maker's own groups (the JWT's groups claim; the directory's are asked at each use) and a read-only mark
when its maker was read-only. An admin making one for another user names its groups; without them, and without a
``groups_loader`` that speaks for that user, the token is read-only wherever read-only groups are configured.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from flask_jwtgate import JWTGate
from flask_jwtgate.api_tokens import hash_secret

TOKENS = "/jwtgate/tokens"
AppFactory = Callable[..., tuple[Flask, JWTGate]]
Headers = Callable[..., dict[str, str]]


@pytest.fixture
def jwt(jwtgate_token_factory: Callable[..., str]) -> Headers:
    return lambda username, groups=(): {
        "Authorization": f"Bearer {jwtgate_token_factory(username, groups=list(groups))}"
    }


def create(client: FlaskClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(TOKENS, json={"name": "ci", "expires_in_days": 1, **body}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    created: dict[str, Any] = response.get_json()
    return created


def writes(client: FlaskClient, secret: str) -> tuple[int, str | None]:
    response = client.delete("/api/items", headers={"Authorization": f"Bearer {secret}"})
    return response.status_code, (response.get_json() or {}).get("reason")


def test_a_token_keeps_its_makers_groups_from_the_jwt(jwtgate_app_factory: AppFactory, jwt: Headers) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_ALLOWED_GROUPS=["staff"], JWTGATE_READ_ONLY_GROUPS=["viewers"])
    client = app.test_client()
    staff = create(client, jwt("bob", ["staff"]))
    assert (staff["groups"], staff["read_only"]) == (["staff"], False)
    assert writes(client, staff["token"]) == (200, None)
    # A read-only caller cannot make one at all: creating is a write (and the gate's endpoints get the policy).
    refused = client.post(TOKENS, json={"name": "ci"}, headers=jwt("carol", ["staff", "viewers"]))
    assert (refused.status_code, refused.get_json()["reason"]) == (403, "read_only")


def test_an_admins_token_for_another_user_carries_the_groups_it_names(
    jwtgate_app_factory: AppFactory, jwt: Headers
) -> None:
    app, _gate = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    client = app.test_client()
    admin = jwt("root", ["jwtgate-admins"])
    named = create(client, admin, username="dave", groups=["writers"])
    assert (named["username"], named["groups"], named["read_only"]) == ("dave", ["writers"], False)
    assert writes(client, named["token"]) == (200, None)
    # No groups named and no directory to say them: read-only wherever read-only groups are configured.
    unnamed = create(client, admin, username="erin")
    assert (unnamed["groups"], unnamed["read_only"]) == ([], True)
    assert writes(client, unnamed["token"]) == (403, "read_only")
    assert client.get("/api/items", headers={"Authorization": f"Bearer {unnamed['token']}"}).status_code == 200


def test_with_a_groups_loader_an_admins_token_for_another_user_takes_the_directorys_groups(
    jwtgate_app_factory: AppFactory, jwt: Headers
) -> None:
    app, gate = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    directory = {"erin": ["writers"]}
    gate.groups_loader(lambda username: directory.get(username, []))
    client = app.test_client()
    made = create(client, jwt("root", ["jwtgate-admins"]), username="erin")
    assert made["read_only"] is False
    assert writes(client, made["token"]) == (200, None)
    directory["erin"] = ["viewers"]  # a directory change applies at once
    assert writes(client, made["token"]) == (403, "read_only")


@pytest.mark.parametrize("body", [{"groups": ["jwtgate-admins"]}, {"provider": None}, {"username": "root"}])
def test_only_admins_name_a_tokens_groups_or_owner(
    jwtgate_app_factory: AppFactory, jwt: Headers, body: dict[str, Any]
) -> None:
    app, _gate = jwtgate_app_factory()
    response = app.test_client().post(
        TOKENS, json={"name": "ci", "expires_in_days": 1, **body}, headers=jwt("bob", ["staff"])
    )
    if body == {"provider": None}:  # bob's own provider is the directory: that is himself, allowed
        assert response.status_code == 201
        return
    assert (response.status_code, response.get_json()["reason"]) == (403, "not_admin")


@pytest.mark.parametrize(
    ("field", "value"),
    [("groups", "admins"), ("groups", [""]), ("groups", ["a\x00b"]), ("groups", ["x"] * 101), ("provider", "nope")],
)
def test_invalid_groups_or_provider_are_400_naming_the_field(
    jwtgate_app_factory: AppFactory, jwt: Headers, field: str, value: Any
) -> None:
    app, _gate = jwtgate_app_factory()
    response = app.test_client().post(
        TOKENS,
        json={"name": "ci", "expires_in_days": 1, "username": "dave", field: value},
        headers=jwt("root", ["jwtgate-admins"]),
    )
    assert response.status_code == 400
    assert field in response.get_json()["error_description"]


OLD_SCHEMA = """CREATE TABLE jwtgate_api_tokens (
    id VARCHAR(32) NOT NULL PRIMARY KEY, name VARCHAR(200) NOT NULL, username VARCHAR(255) NOT NULL,
    secret_hash VARCHAR(64) NOT NULL UNIQUE, created_at DATETIME NOT NULL, expires_at DATETIME NOT NULL,
    revoked_at DATETIME, last_used_at DATETIME, created_by VARCHAR(255))"""


@pytest.mark.parametrize("loader", [False, True], ids=["no-loader", "loader"])
def test_a_table_from_before_is_upgraded_and_its_tokens_are_read_only_unless_the_directory_speaks(
    jwtgate_app_factory: AppFactory, tmp_path: Path, loader: bool
) -> None:
    uri = f"sqlite:///{tmp_path}/old.db"
    secret = "jgt_" + "A" * 43
    engine = sa.create_engine(uri)
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as connection:
        connection.exec_driver_sql(OLD_SCHEMA)
        connection.execute(
            sa.text(
                "INSERT INTO jwtgate_api_tokens (id, name, username, secret_hash, created_at, expires_at) "
                "VALUES ('0123456789abcdef', 'old', 'carol', :hash, :now, :later)"
            ),
            {"hash": hash_secret(secret), "now": now.isoformat(), "later": (now + dt.timedelta(days=9)).isoformat()},
        )
    engine.dispose()
    app, gate = jwtgate_app_factory(JWTGATE_DATABASE_URI=uri, JWTGATE_READ_ONLY_GROUPS=["viewers"])
    if loader:
        gate.groups_loader(lambda username: ["writers"])
    client = app.test_client()
    assert client.get("/api/items", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert writes(client, secret) == ((200, None) if loader else (403, "read_only"))
    inspector = sa.inspect(app.extensions["jwtgate"].database.engine)
    columns = {column["name"] for column in inspector.get_columns("jwtgate_api_tokens")}
    assert {"provider", "groups", "read_only"} <= columns
