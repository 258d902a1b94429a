"""Run-time settings: validated as at start-up, versioned, reverted, switched off, and in force in every process.

Most tests run two apps on one database (a SQLite file, and a PostgreSQL schema of their own): the second stands for
another worker or host. The gunicorn test runs the example app under a real server with two workers.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Clock
from flask import Flask
from flask.testing import FlaskClient
from servers import Gunicorn

from example_app import create_app
from example_app.idp import mint_token
from flask_jwtgate import JWTGate, settings_changed
from flask_jwtgate.audit.model import audit_log
from flask_jwtgate.revisions import DEADLINE
from flask_jwtgate.runtime import settings_versions
from flask_jwtgate.settings import MASK
from flask_jwtgate.testing import KeyPair
from flask_jwtgate.testing_idp import MockIdentityProvider

SETTINGS = "/jwtgate/admin/settings"
AppFactory = Callable[..., Flask]
Keys = dict[str, KeyPair]


@pytest.fixture
def make(audit_app_factory: Callable[..., tuple[Flask, JWTGate]], clock: Clock) -> AppFactory:
    """``make(**config) -> app`` on the test's database (a SQLite file, or a PostgreSQL schema of its own: every app
    of the test shares it) and the test's clock."""
    return lambda **config: audit_app_factory(clock=clock, **config)[0]


@pytest.fixture
def admin(jwtgate_token_factory: Callable[..., str], clock: Clock) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwtgate_token_factory('root', groups=['jwtgate-admins'], now=clock.now)}"}


@pytest.fixture
def viewer(jwtgate_token_factory: Callable[..., str], clock: Clock) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwtgate_token_factory('carol', groups=['viewers'], now=clock.now)}"}


def put(client: FlaskClient, admin: dict[str, str], **body: Any) -> Any:
    return client.put(SETTINGS, json=body, headers=admin)


def version_of(client: FlaskClient, admin: dict[str, str]) -> int:
    version: int = client.get(SETTINGS, headers=admin).get_json()["version"]
    return version


def writes(client: FlaskClient, headers: dict[str, str]) -> int:
    status: int = client.post("/api/items", headers=headers).status_code
    return status


# -- validation --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("JWTGATE_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----", "PEM"),
        ("JWTGATE_IP_ALLOWLIST", ["10.0.0.1/8"], "did you mean 10.0.0.0/8"),
        ("JWTGATE_PUBLIC_PATHS", ["no-slash"], "starts with '/'"),
        ("JWTGATE_RATE_LIMIT", "lots/minute", "not a limit"),
        ("JWTGATE_READONLY_GROUPS", ["viewers"], "did you mean JWTGATE_READ_ONLY_GROUPS"),
        ("JWTGATE_URL_PREFIX", "/gate", "restart"),
        ("JWTGATE_ENABLED", "maybe", "true or false"),
    ],
)
def test_an_invalid_change_is_400_naming_the_key_and_changes_nothing(
    make: AppFactory, admin: dict[str, str], viewer: dict[str, str], key: str, value: Any, says: str
) -> None:
    app = make()
    client = app.test_client()
    assert put(client, admin, version=0, JWTGATE_READ_ONLY_GROUPS=["viewers"]).status_code == 200
    before = client.get(SETTINGS, headers=admin).get_json()

    response = put(client, admin, version=1, JWTGATE_ALLOWED_GROUPS=["staff"], **{key: value})

    assert response.status_code == 400
    body = response.get_json()
    assert body["reason"] == "invalid_parameter" and key in body["error_description"]
    assert says in body["error_description"]
    assert client.get(SETTINGS, headers=admin).get_json() == before  # the valid half did not go in either
    assert writes(client, viewer) == 403
    with app.extensions["jwtgate"].database.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(settings_versions)).scalar() == 1


def test_a_stale_version_is_409_and_a_lost_race_too(
    make: AppFactory, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first_app, second_app = make(), make()
    first, second = first_app.test_client(), second_app.test_client()
    assert version_of(second, admin) == 0
    # The race: the first app's version 1 commits after the second read the newest version for its own change.
    monkeypatch.setattr(second_app.extensions["jwtgate"].runtime, "load", lambda: True)
    assert put(first, admin, version=0, JWTGATE_READ_ONLY_GROUPS=["viewers"]).get_json()["version"] == 1
    stale = put(first, admin, version=0, JWTGATE_READ_ONLY_GROUPS=["others"])
    assert (stale.status_code, stale.get_json()["reason"]) == (409, "stale_version")
    # So its own next version would be 1 too: the database refuses the second version 1.
    raced = put(second, admin, JWTGATE_ALLOWED_GROUPS=["staff", "jwtgate-admins"])
    assert (raced.status_code, raced.get_json()["reason"]) == (409, "stale_version")
    assert first.get(SETTINGS, headers=admin).get_json()["JWTGATE_ALLOWED_GROUPS"] == []


def test_history_lists_every_change_and_revert_restores_a_version(
    make: AppFactory, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    client = make().test_client()
    put(client, admin, version=0, JWTGATE_READ_ONLY_GROUPS=["viewers"])
    put(client, admin, version=1, JWTGATE_ALLOWED_GROUPS=["viewers", "jwtgate-admins"])
    assert writes(client, viewer) == 403

    history = client.get(f"{SETTINGS}/history", headers=admin).get_json()
    assert [v["version"] for v in history["versions"]] == [2, 1]
    assert history["versions"][1]["changes"] == [{"key": "JWTGATE_READ_ONLY_GROUPS", "old": [], "new": ["viewers"]}]
    assert history["versions"][0]["changed_by"] == "root"

    reverted = client.post(f"{SETTINGS}/revert", json={"version": 0}, headers=admin)
    assert reverted.status_code == 200
    assert reverted.get_json()["version"] == 3
    assert reverted.get_json()["JWTGATE_READ_ONLY_GROUPS"] == []
    assert writes(client, viewer) == 200
    back = client.post(f"{SETTINGS}/revert", json={"version": 1}, headers=admin).get_json()
    assert (back["version"], back["JWTGATE_READ_ONLY_GROUPS"], back["JWTGATE_ALLOWED_GROUPS"]) == (4, ["viewers"], [])
    assert writes(client, viewer) == 403
    latest = client.get(f"{SETTINGS}/history?limit=1", headers=admin).get_json()["versions"]
    assert [(v["version"], v["reverted_to"]) for v in latest] == [(4, 1)]
    missing = client.post(f"{SETTINGS}/revert", json={"version": 99}, headers=admin)
    assert (missing.status_code, missing.get_json()["reason"]) == (400, "invalid_parameter")


def test_every_change_is_audited_and_signalled(make: AppFactory, admin: dict[str, str]) -> None:
    app = make()
    client = app.test_client()
    seen: list[int] = []

    def receiver(sender: Flask, settings: Any, version: int) -> None:
        seen.append(version)

    settings_changed.connect(receiver, app)
    put(client, admin, version=0, JWTGATE_READ_ONLY_GROUPS=["viewers"])
    client.post(f"{SETTINGS}/revert", json={"version": 0}, headers=admin)
    assert seen == [1, 2]
    with app.extensions["jwtgate"].database.engine.connect() as connection:
        rows = connection.execute(
            sa.select(audit_log.c.username, audit_log.c.reason, audit_log.c.detail)
            .where(audit_log.c.decision == "system")
            .order_by(audit_log.c.id)
        ).all()
    assert [(r.username, r.reason) for r in rows] == [("root", "settings_changed")] * 2
    assert rows[0].detail == "settings version 1: JWTGATE_READ_ONLY_GROUPS: [] -> ['viewers']"
    assert "reverts to version 0" in rows[1].detail


def test_the_off_switch(make: AppFactory, admin: dict[str, str], viewer: dict[str, str]) -> None:
    app = make(JWTGATE_RUNTIME_SETTINGS=False, JWTGATE_READ_ONLY_GROUPS=["viewers"])
    client = app.test_client()
    shown = client.get(SETTINGS, headers=admin).get_json()
    assert (shown["version"], shown["JWTGATE_READ_ONLY_GROUPS"]) == (0, ["viewers"])
    for response in (
        put(client, admin, JWTGATE_READ_ONLY_GROUPS=[]),
        client.post(f"{SETTINGS}/revert", json={"version": 0}, headers=admin),
    ):
        assert (response.status_code, response.get_json()["reason"]) == (403, "runtime_settings_off")
    assert writes(client, viewer) == 403
    result = app.test_cli_runner().invoke(args=["jwtgate", "settings", "set", "READ_ONLY_GROUPS", "[]"])
    assert result.exit_code == 1 and "switched off" in result.output
    # Stored versions from when it was on are not applied while it is off.
    other = make(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    assert put(other.test_client(), admin, JWTGATE_READ_ONLY_GROUPS=[]).status_code == 200
    assert (
        writes(make(JWTGATE_RUNTIME_SETTINGS=False, JWTGATE_READ_ONLY_GROUPS=["viewers"]).test_client(), viewer) == 403
    )


def test_only_admins_read_or_change_settings(make: AppFactory, viewer: dict[str, str]) -> None:
    client = make().test_client()
    for response in (
        client.get(SETTINGS, headers=viewer),
        client.get(SETTINGS),
        put(client, viewer, JWTGATE_ENABLED=False),
    ):
        assert response.status_code in (401, 403)
    assert client.get(SETTINGS).get_json()["reason"] == "missing_credentials"
    assert client.get(SETTINGS, headers=viewer).get_json()["reason"] == "not_admin"


# -- propagation -------------------------------------------------------------------------------------------------------


def test_another_process_applies_a_change_within_the_deadline(
    make: AppFactory, admin: dict[str, str], viewer: dict[str, str], clock: Clock
) -> None:
    first, second = make().test_client(), make().test_client()
    assert writes(second, viewer) == 200  # the second app has read the settings (version 0)
    assert put(first, admin, version=0, JWTGATE_READ_ONLY_GROUPS=["viewers"]).status_code == 200
    assert writes(first, viewer) == 403  # at once where it was made
    clock.advance(DEADLINE / 2)
    assert writes(second, viewer) == 403  # within the deadline everywhere else
    status = second.get(f"{SETTINGS}/status", headers=admin).get_json()
    assert status["version"] == 1 and status["error"] is None
    assert [p["version"] for p in status["processes"]] == [1]  # one process here, both apps on it, at version 1


def test_a_version_one_process_cannot_apply_leaves_it_on_the_last_good_one(
    make: AppFactory,
    admin: dict[str, str],
    viewer: dict[str, str],
    clock: Clock,
    jwtgate_keys: Keys,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key_file = tmp_path / "idp.pem"
    key_file.write_text(jwtgate_keys["rsa"].public_pem)
    first, second = make(), make()
    first_client, second_client = first.test_client(), second.test_client()
    assert put(first_client, admin, version=0, JWTGATE_READ_ONLY_GROUPS=["viewers"]).status_code == 200
    clock.advance(DEADLINE)
    assert writes(second_client, viewer) == 403  # version 1 everywhere
    # Version 2 is valid where it is made; the file is gone by the time the other process reads it.
    changed = put(
        first_client,
        admin,
        version=1,
        JWTGATE_PROVIDERS=[],
        JWTGATE_PUBLIC_KEY_FILE=str(key_file),
        JWTGATE_READ_ONLY_GROUPS=[],
    )
    assert changed.status_code == 200, changed.get_data(as_text=True)
    key_file.unlink()
    clock.advance(DEADLINE)
    with caplog.at_level(logging.ERROR, "flask_jwtgate"):
        assert writes(second_client, viewer) == 403  # still version 1's rules
    assert "version 2 cannot be applied in this process" in caplog.text
    status = second_client.get(f"{SETTINGS}/status", headers=admin).get_json()
    assert status["version"] == 1
    assert "JWTGATE_PUBLIC_KEY_FILE" in status["error"]
    assert writes(first_client, viewer) == 200  # version 2 where it could be applied


def test_caches_of_the_settings_go_and_the_provider_caches_stay(make: AppFactory, idp: MockIdentityProvider) -> None:
    app = make(JWTGATE_PROVIDERS=[idp.jwks_provider("jwks")])
    client = app.test_client()
    token = {"Authorization": f"Bearer {idp.mint_jwt('dave')}"}
    assert client.get("/api/items", headers=token).status_code == 200  # verified, and now cached
    fetches = idp.hits["jwks"]
    runtime = app.extensions["jwtgate"].runtime

    runtime.change({"JWTGATE_ACCEPT_JWT": False}, based_on=None, by="test")
    refused = client.get("/api/items", headers=token)
    assert (refused.status_code, refused.get_json()["reason"]) == (401, "token_kind_disabled")  # not from the cache
    runtime.change({"JWTGATE_ACCEPT_JWT": True, "JWTGATE_READ_ONLY_GROUPS": ["viewers"]}, based_on=None, by="test")
    assert client.get("/api/items", headers=token).status_code == 200
    assert idp.hits["jwks"] == fetches  # the JWKS key set outlived both changes


# -- secrets -----------------------------------------------------------------------------------------------------------


def test_client_secrets_are_masked_kept_by_the_mask_and_stored_encrypted(
    make: AppFactory, admin: dict[str, str], idp: MockIdentityProvider
) -> None:
    introspection = idp.introspection_provider("idp", directory_users=False)
    local = {"name": "local", "public_key": app_key_pem(make), "directory_users": True}
    app = make(JWTGATE_PROVIDERS=[local, introspection], SECRET_KEY="app-secret")
    client = app.test_client()
    shown = client.get(SETTINGS, headers=admin).get_json()["JWTGATE_PROVIDERS"]
    assert shown[1]["client_secret"] == MASK and introspection["client_secret"] not in json.dumps(shown)

    # The whole value sent back as shown, with a change elsewhere: the secret in force stays.
    shown[1]["cache_ttl"] = 60
    assert put(client, admin, JWTGATE_PROVIDERS=shown).status_code == 200
    opaque = {"Authorization": f"Bearer {idp.mint_opaque('dave')}"}
    assert client.get("/api/items", headers=opaque).status_code == 200
    # A new secret: stored encrypted, never in clear, and usable by another app with the same SECRET_KEY.
    shown[1]["client_secret"] = "a-new-secret-typed-by-an-admin"
    assert put(client, admin, JWTGATE_PROVIDERS=shown).status_code == 200
    with app.extensions["jwtgate"].database.engine.connect() as connection:
        stored = " ".join(row.overrides + row.changes for row in connection.execute(sa.select(settings_versions)))
    assert "a-new-secret-typed-by-an-admin" not in stored
    assert introspection["client_secret"] not in stored  # the config's secret is referred to, never copied
    other = make(JWTGATE_PROVIDERS=[local, introspection], SECRET_KEY="app-secret")
    provider = other.extensions["jwtgate"].settings.providers[1]
    assert provider.client_secret == "a-new-secret-typed-by-an-admin"


def test_a_new_secret_needs_the_apps_secret_key(make: AppFactory, admin: dict[str, str]) -> None:
    client = make().test_client()
    response = put(
        client,
        admin,
        JWTGATE_PROVIDERS=[
            {
                "name": "idp",
                "introspection_url": "https://idp.example/introspect",
                "client_id": "gate",
                "client_secret": "s3cret",
                "directory_users": False,
            },
            {"name": "test", "public_key": app_key_pem(make), "directory_users": True},
        ],
    )
    assert response.status_code == 400
    assert "SECRET_KEY" in response.get_json()["error_description"]


def app_key_pem(make: AppFactory) -> str:
    pem: str = make().config["JWTGATE_PROVIDERS"][0]["public_key"]
    return pem


# -- failing closed ----------------------------------------------------------------------------------------------------


def test_until_the_stored_settings_are_read_the_gate_refuses(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_token_factory: Callable[..., str], tmp_path: Path
) -> None:
    app, _gate = jwtgate_app_factory(
        JWTGATE_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1",
        JWTGATE_AUDIT_SPOOL_DIR=str(tmp_path / "spool"),
    )
    response = app.test_client().get("/api/items", headers={"Authorization": f"Bearer {jwtgate_token_factory()}"})
    assert (response.status_code, response.get_json()["reason"]) == (503, "settings_unavailable")


# -- several workers -------------------------------------------------------------------------------------------------


def test_every_gunicorn_worker_applies_a_change_within_two_seconds(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    app = create_app(instance_path=str(instance))
    admin, carol = mint_token(app, "alice"), mint_token(app, "bob")  # bob writes: not in a read-only group yet
    server = Gunicorn(
        tmp_path,
        {
            "JWTGATE_EXAMPLE_INSTANCE_PATH": str(instance),
            "FLASK_JWTGATE_DATABASE_URI": f"sqlite:///{tmp_path}/gate.db",
        },
        workers=2,
    )

    def call(method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    issue = {"fields": {"summary": "hello", "project": {"key": "DEMO"}}}
    try:
        server.wait_until_serving()
        assert {call("POST", "/rest/api/2/issue", carol, issue)[0] for _ in range(8)} == {201}
        status, body = call("PUT", SETTINGS, admin, {"JWTGATE_READ_ONLY_GROUPS": ["viewers", "jira-developers"]})
        assert status == 200, body
        changed_at = time.monotonic()
        time.sleep(DEADLINE)  # the deadline under test: every worker must have applied the change by now
        refused = [call("POST", "/rest/api/2/issue", carol, issue) for _ in range(12)]
        elapsed = time.monotonic() - changed_at
        _, status_body = call("GET", f"{SETTINGS}/status", admin)
    finally:
        server.stop()
    assert {status for status, _ in refused} == {403}, server.logs()
    assert all(body["reason"] == "read_only" for _, body in refused)
    workers = [p for p in status_body["processes"] if p["version"] == 1]
    assert len(workers) >= 2, status_body  # both workers report the new version
    assert elapsed < DEADLINE + 5


@pytest.mark.parametrize(
    "change",
    [
        {"JWTGATE_ACCEPT_JWT": False},
        {"JWTGATE_ALLOWED_GROUPS": ["staff"]},
        {"JWTGATE_READ_ONLY_GROUPS": ["jwtgate-admins"]},
        {"JWTGATE_IP_ALLOWLIST": ["10.0.0.0/8"]},
        {"JWTGATE_ADMIN_GROUPS": ["ops"]},
    ],
    ids=["jwts-off", "allowed-groups", "read-only", "allowlist", "admin-groups"],
)
def test_an_admin_cannot_lock_themselves_out(make: AppFactory, admin: dict[str, str], change: dict[str, Any]) -> None:
    client = make().test_client()
    response = put(client, admin, version=0, **change)
    assert (response.status_code, response.get_json()["reason"]) == (409, "would_lock_out")
    assert version_of(client, admin) == 0


def test_after_secret_key_changes_the_cli_reverts_to_a_version_this_process_can_apply(
    make: AppFactory, admin: dict[str, str], idp: MockIdentityProvider
) -> None:
    introspection = idp.introspection_provider("idp", directory_users=False)
    local = {"name": "local", "public_key": app_key_pem(make), "directory_users": True}
    app = make(JWTGATE_PROVIDERS=[local, introspection], SECRET_KEY="old-secret-key")
    shown = app.test_client().get(SETTINGS, headers=admin).get_json()["JWTGATE_PROVIDERS"]
    shown[1]["client_secret"] = "typed-by-an-admin"
    assert put(app.test_client(), admin, JWTGATE_PROVIDERS=shown).status_code == 200  # version 1, sealed

    # SECRET_KEY rotated: the stored secret cannot be read, so the process does not know version 1 and refuses all.
    rotated = make(JWTGATE_PROVIDERS=[local, introspection], SECRET_KEY="new-secret-key")
    client = rotated.test_client()
    refused = client.get("/api/items", headers=admin)
    assert (refused.status_code, refused.get_json()["reason"]) == (503, "settings_unavailable")
    result = rotated.test_cli_runner().invoke(args=["jwtgate", "settings", "revert", "0"])

    assert result.exit_code == 0, result.output
    assert "settings version 2 (the overrides of version 0) is in force" in result.output
    assert client.get("/api/items", headers=admin).status_code == 200
    assert rotated.extensions["jwtgate"].settings.providers[1].client_secret == introspection["client_secret"]
    # Version 1 itself cannot be restored with this key: refused, naming why, from the API and the CLI alike.
    response = client.post(f"{SETTINGS}/revert", json={"version": 1}, headers=admin)
    assert response.status_code == 400
    assert "version 1 cannot be restored here" in response.get_json()["error_description"]
    result = rotated.test_cli_runner().invoke(args=["jwtgate", "settings", "revert", "1"])
    assert result.exit_code == 1 and "cannot be decrypted" in result.output
