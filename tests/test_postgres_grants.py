"""The README's PostgreSQL grants are enough: the gate runs as a user with exactly those, and nothing fails.

The README lists every table the gate makes and what its database user needs on each, in a ``sql`` block. This test
lets an owner make the tables, runs that block for a role and a schema of its own (in place of ``gate`` and
``public``), and then uses everything that writes as that role: audit records, API tokens (create, use, revoke),
run-time settings (a change, the processes' status), a prune that deletes. A missing grant shows as a refusal, or as
audit records spooled instead of stored.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from example_app import create_app
from flask_jwtgate.database import GateDatabase
from flask_jwtgate.testing import TestProvider

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_grants() -> str:
    found = re.findall(r"^<!-- example: sql .*?-->\n```sql\n(.*?)\n```$", README.read_text(), re.MULTILINE | re.DOTALL)
    assert len(found) == 1, "the README has one block of grants"
    return str(found[0])


@pytest.fixture
def gate_role(postgres_url: str, jwtgate_provider: TestProvider) -> Iterator[tuple[str, str]]:
    """A schema with the gate's tables made by an owner, and a login role with the README's grants on them:
    ``(the role's URL, the owner's URL)``, both in that schema."""
    name = f"jwtgate_grants_{uuid.uuid4().hex[:12]}"
    owner_url = sa.engine.make_url(postgres_url).update_query_dict({"options": f"-csearch_path={name}"})
    admin = sa.create_engine(postgres_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        connection.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
    try:
        owner_config = {"JWTGATE_DATABASE_URI": owner_url.render_as_string(hide_password=False)}
        owner = create_app({"TESTING": True, **owner_config, **jwtgate_provider.config()})
        database: GateDatabase = owner.extensions["jwtgate"].database
        assert database.tables_ready
        database.engine.dispose()
        grants = readme_grants().replace("public", f'"{name}"')
        grants = re.sub(r"\bgate\b", f'"{name}"', grants)
        with admin.begin() as connection:
            # As an admin connected to the database runs it: the tables are found on the search path.
            connection.exec_driver_sql(f'SET LOCAL search_path TO "{name}"')
            for statement in grants.split(";"):
                if statement.strip():
                    connection.exec_driver_sql(statement)
        yield (
            owner_url.set(username=name, password=None).render_as_string(hide_password=False),
            owner_url.render_as_string(hide_password=False),
        )
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
            connection.exec_driver_sql(f'DROP OWNED BY "{name}"')
            connection.exec_driver_sql(f'DROP ROLE "{name}"')
        admin.dispose()


def test_the_gate_runs_with_the_readme_grants(gate_role: tuple[str, str], jwtgate_provider: TestProvider) -> None:
    role_url, owner_url = gate_role
    app = create_app(
        {
            "TESTING": True,
            "JWTGATE_DATABASE_URI": role_url,
            "JWTGATE_AUDIT_MAX_ENTRIES": 1,  # so that the prune below deletes
            "SECRET_KEY": "test",
            **jwtgate_provider.config(),
        }
    )
    state = app.extensions["jwtgate"]
    client = app.test_client()
    bob, alice = jwtgate_provider.bearer("bob"), jwtgate_provider.bearer("alice")
    try:
        assert client.get("/rest/api/2/myself", headers=bob).status_code == 200
        created = client.post("/jwtgate/tokens", json={"name": "ci", "expires_in_days": 1}, headers=bob)
        assert created.status_code == 201, created.json
        assert created.json is not None
        api_token = {"Authorization": f"Bearer {created.json['token']}"}
        assert client.get("/rest/api/2/myself", headers=api_token).status_code == 200
        state.api_tokens.flush_last_used()
        revoked = client.delete(f"/jwtgate/tokens/{created.json['id']}", headers=bob)
        assert revoked.status_code == 204
        assert client.get("/rest/api/2/myself", headers=api_token).status_code == 401

        changed = client.put("/jwtgate/admin/settings", json={"JWTGATE_ALLOWED_GROUPS": []}, headers=alice)
        assert changed.status_code == 200, changed.json
        assert client.get("/jwtgate/admin/settings/status", headers=alice).status_code == 200
        assert client.get("/jwtgate/admin/audit?user=bob", headers=alice).status_code == 200
        pruned = client.post("/jwtgate/admin/audit/prune", headers=alice)
        assert pruned.status_code == 200, pruned.json
        assert pruned.json is not None and pruned.json["deleted"] > 0

        writer = state.audit.writer
        assert (writer.spooled, writer.dropped) == (0, 0), writer.status()
    finally:
        state.audit.close(timeout=5)
        state.database.engine.dispose()
    owner = sa.create_engine(owner_url)
    try:
        with owner.connect() as connection:
            tokens = connection.exec_driver_sql(
                "SELECT revoked_at IS NOT NULL, last_used_at IS NOT NULL FROM jwtgate_api_tokens"
            )
            assert tokens.fetchall() == [(True, True)]
            assert connection.exec_driver_sql("SELECT count(*) FROM jwtgate_settings").scalar_one() == 1
            assert connection.exec_driver_sql("SELECT count(*) FROM jwtgate_audit_log").scalar_one() >= 1
    finally:
        owner.dispose()
