"""An identity is (provider, username): a partner's ``alice`` is not the host's ``alice``.

With two providers, ``corp`` (its users are the host directory's) and ``partner`` (its users are its own), a partner
token with ``sub=alice`` must not get the directory's groups for the host's alice, nor see or revoke her API tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from flask_jwtgate import ConfigurationError, JWTGate
from flask_jwtgate.audit.model import audit_log
from flask_jwtgate.testing import KeyPair

CORP, PARTNER = "https://corp.example", "https://partner.example"
TOKENS = "/jwtgate/tokens"
Keys = dict[str, KeyPair]


def providers(keys: Keys, *, partner_is_directory: bool = False) -> list[dict[str, Any]]:
    return [
        {"name": "corp", "public_key": keys["rsa"].public_pem, "issuer": CORP, "directory_users": True},
        {
            "name": "partner",
            "public_key": keys["ec256"].public_pem,
            "issuer": PARTNER,
            "directory_users": partner_is_directory,
        },
    ]


@pytest.fixture
def loader_calls() -> list[tuple[Any, ...]]:
    return []


@pytest.fixture
def make(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_keys: Keys, loader_calls: list[tuple[Any, ...]]
) -> Callable[..., Flask]:
    def make(two_arguments: bool = False, **config: Any) -> Flask:
        config.setdefault("JWTGATE_PROVIDERS", providers(jwtgate_keys))
        app, gate = jwtgate_app_factory(**config)
        directory = {"alice": ["jwtgate-admins"], "bob": ["devs"]}
        if two_arguments:

            @gate.groups_loader
            def groups_of(username: str, provider: str | None) -> list[str]:
                loader_calls.append((username, provider))
                return directory.get(username, [])

        else:

            @gate.groups_loader
            def groups(username: str) -> list[str]:
                loader_calls.append((username,))
                return directory.get(username, [])

        return app

    return make


@pytest.fixture
def token(jwtgate_token_factory: Callable[..., str]) -> Callable[..., dict[str, str]]:
    def make(username: str, provider: str = "corp", **options: Any) -> dict[str, str]:
        key, issuer = ("rsa", CORP) if provider == "corp" else ("ec256", PARTNER)
        return {"Authorization": f"Bearer {jwtgate_token_factory(username, key=key, issuer=issuer, **options)}"}

    return make


def create(client: FlaskClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(TOKENS, json={"name": "ci", "expires_in_days": 1, **body}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    created: dict[str, Any] = response.get_json()
    return created


def test_a_partners_alice_gets_none_of_the_directorys_alice(
    make: Callable[..., Flask], token: Callable[..., dict[str, str]]
) -> None:
    client = make().test_client()
    host_alice, partner_alice = token("alice", "corp"), token("alice", "partner")
    assert client.get("/jwtgate/whoami", headers=host_alice).get_json()["groups"] == ["jwtgate-admins"]
    shown = client.get("/jwtgate/whoami", headers=partner_alice).get_json()
    assert (shown["username"], shown["provider"], shown["groups"]) == ("alice", "partner", [])
    refused = client.get("/jwtgate/admin/audit/status", headers=partner_alice)
    assert (refused.status_code, refused.get_json()["reason"]) == (403, "not_admin")


def test_api_tokens_belong_to_provider_and_username(
    make: Callable[..., Flask], token: Callable[..., dict[str, str]]
) -> None:
    app = make()
    client = app.test_client()
    host_bob, partner_bob = token("bob", "corp"), token("bob", "partner")
    hers = create(client, host_bob)
    theirs = create(client, partner_bob)
    assert (hers["provider"], theirs["provider"]) == (None, "partner")

    listed = client.get(TOKENS, headers=partner_bob).get_json()["tokens"]
    assert [t["id"] for t in listed] == [theirs["id"]]
    assert [t["id"] for t in client.get(TOKENS, headers=host_bob).get_json()["tokens"]] == [hers["id"]]
    # Not visible, so not revocable: the same 404 as an id that does not exist.
    response = client.delete(f"{TOKENS}/{hers['id']}", headers=partner_bob)
    assert (response.status_code, response.get_json()["reason"]) == (404, "not_found")
    assert client.get("/api/items", headers={"Authorization": f"Bearer {hers['token']}"}).status_code == 200

    # The partner's API token is the partner's bob: no directory groups.
    partner_api = {"Authorization": f"Bearer {theirs['token']}"}
    shown = client.get("/jwtgate/whoami", headers=partner_api).get_json()
    assert (shown["provider"], shown["groups"]) == ("partner", [])
    # A token made on the command line for "bob" is the directory's bob's.
    result = app.test_cli_runner().invoke(args=["jwtgate", "tokens", "create", "bob", "--name", "cli"])
    assert result.exit_code == 0, result.output
    ids = {t["id"] for t in client.get(TOKENS, headers=host_bob).get_json()["tokens"]}
    assert len(ids) == 2 and hers["id"] in ids
    assert [t["id"] for t in client.get(TOKENS, headers=partner_bob).get_json()["tokens"]] == [theirs["id"]]


def test_a_provider_marked_as_the_directorys_shares_its_users(
    make: Callable[..., Flask], token: Callable[..., dict[str, str]], jwtgate_keys: Keys
) -> None:
    client = make(JWTGATE_PROVIDERS=providers(jwtgate_keys, partner_is_directory=True)).test_client()
    hers = create(client, token("alice", "corp"))
    assert client.get("/jwtgate/whoami", headers=token("alice", "partner")).get_json()["groups"] == ["jwtgate-admins"]
    listed = client.get(TOKENS, headers=token("alice", "partner")).get_json()["tokens"]
    assert [t["id"] for t in listed] == [hers["id"]]


def test_the_groups_loader_is_told_the_provider(
    make: Callable[..., Flask], token: Callable[..., dict[str, str]], loader_calls: list[tuple[Any, ...]]
) -> None:
    client = make(two_arguments=True).test_client()
    assert client.get("/api/items", headers=token("bob", "corp")).status_code == 200
    assert client.get("/api/items", headers=token("bob", "partner")).status_code == 200  # not a directory user
    made = create(client, token("alice", "corp"))
    loader_calls.clear()
    assert client.get("/api/items", headers={"Authorization": f"Bearer {made['token']}"}).status_code == 200
    assert loader_calls == [("alice", None)]  # an API token of the directory's alice: the directory's user


def test_the_one_argument_loader_still_works_and_is_asked_for_directory_users_only(
    make: Callable[..., Flask], token: Callable[..., dict[str, str]], loader_calls: list[tuple[Any, ...]]
) -> None:
    client = make().test_client()
    assert client.get("/api/items", headers=token("bob", "partner")).status_code == 200
    assert loader_calls == []
    assert client.get("/api/items", headers=token("bob", "corp")).status_code == 200
    assert loader_calls == [("bob",)]


def test_audit_records_carry_the_provider(make: Callable[..., Flask], token: Callable[..., dict[str, str]]) -> None:
    app = make()
    client = app.test_client()
    client.get("/api/items", headers=token("alice", "corp"))
    client.get("/api/items", headers=token("alice", "partner"))
    with app.extensions["jwtgate"].database.engine.connect() as connection:
        rows = connection.execute(sa.select(audit_log.c.username, audit_log.c.provider).order_by(audit_log.c.id))
        assert [tuple(row) for row in rows] == [("alice", "corp"), ("alice", "partner")]


def test_two_providers_must_say_whether_their_users_are_the_directorys(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_keys: Keys
) -> None:
    entries = providers(jwtgate_keys)
    del entries[1]["directory_users"]
    with pytest.raises(ConfigurationError) as info:
        jwtgate_app_factory(JWTGATE_PROVIDERS=entries)
    assert info.value.key == "JWTGATE_PROVIDERS"
    assert "'directory_users'" in info.value.message and "['partner']" in info.value.message
    entries[1]["directory_users"] = "yes"
    with pytest.raises(ConfigurationError) as info:
        jwtgate_app_factory(JWTGATE_PROVIDERS=entries)
    assert info.value.key == "JWTGATE_PROVIDERS[1].directory_users"
