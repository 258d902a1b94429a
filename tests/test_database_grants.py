"""The PostgreSQL grants docs/deployment.md gives are all the gate needs: the tables are made by their owner, the
``GRANT`` statements of the page are run as they stand for a role of the test's own, and every part of the gate that
touches the database is then used as that role (requests and their audit records, API tokens, run-time settings, the
audit API, a prune). Nothing is refused, spooled or dropped."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from conftest import postgres_schema

from flask_jwtgate.audit.model import audit_log
from flask_jwtgate.database import metadata
from flask_jwtgate.testing import KeyPair, make_app

DEPLOYMENT = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"


def documented_grants(schema: str, role: str) -> list[str]:
    """The ``GRANT`` statements of the page's SQL block, for ``schema`` and ``role`` instead of the page's names."""
    block = DEPLOYMENT.read_text().split("```sql\n", 1)[1].split("```", 1)[0]
    grants = [line for line in block.splitlines() if line.startswith("GRANT ")]
    assert grants, "docs/deployment.md has no GRANT statements"
    return [
        grant.replace("SCHEMA jwtgate ", f'SCHEMA "{schema}" ').replace(" TO jwtgate_app;", f' TO "{role}";')
        for grant in grants
    ]


def test_the_documented_grants_are_all_the_gate_needs(
    postgres_url: str, jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: Callable[..., str], tmp_path: Path
) -> None:
    role = f"jwtgate_app_{uuid.uuid4().hex[:12]}"
    with postgres_schema(postgres_url) as owner_url:
        schema = sa.engine.make_url(owner_url).query["options"].split("=", 1)[1]
        owner = sa.create_engine(owner_url)
        metadata.create_all(owner)  # the first start, as the owner
        with owner.begin() as connection:
            connection.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
            for grant in documented_grants(schema, role):
                connection.exec_driver_sql(grant)
        try:
            app_url = sa.engine.make_url(owner_url).set(username=role, password=None)
            app, _gate = make_app(
                jwtgate_keys,
                JWTGATE_DATABASE_URI=app_url.render_as_string(hide_password=False),
                JWTGATE_AUDIT_SPOOL_DIR=str(tmp_path / "spool"),
                JWTGATE_AUDIT_SYNC=True,
                JWTGATE_AUDIT_MAX_ENTRIES=1,  # so that the prune deletes
            )
            state = app.extensions["jwtgate"]
            try:
                used = use_everything(app.test_client(), jwtgate_token_factory)
                status = state.audit.status()
            finally:
                state.audit.close(timeout=5)
                state.database.engine.dispose()
            assert used == {
                "request": 200, "create token": 201, "use token": 200, "list tokens": 200, "revoke token": 204,
                "change settings": 200, "revert settings": 200, "settings history": 200, "settings status": 200,
                "audit query": 200, "audit export": 200, "prune": 200,
            }
            assert (status["spooled"], status["dropped"], status["database_available"]) == (0, 0, True)
            with owner.connect() as connection:
                paths = [row.path for row in connection.execute(sa.select(audit_log.c.path).order_by(audit_log.c.id))]
            assert paths == ["/jwtgate/admin/audit", "/jwtgate/admin/audit/prune"]  # the prune deleted every older one
        finally:
            with owner.begin() as connection:
                connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
                connection.exec_driver_sql(f'DROP ROLE "{role}"')
            owner.dispose()


def use_everything(client: Any, token_factory: Callable[..., str]) -> dict[str, int]:
    """Every part of the gate that reads or writes its database, once; the status of each answer."""
    admin = {"Authorization": f"Bearer {token_factory('root', groups=['jwtgate-admins'])}"}
    used = {"request": client.get("/api/items", headers=admin).status_code}
    made = client.post("/jwtgate/tokens", json={"name": "grants", "expires_in_days": 1}, headers=admin)
    used["create token"] = made.status_code
    api = {"Authorization": f"Bearer {made.get_json()['token']}"}
    used["use token"] = client.get("/api/items", headers=api).status_code
    used["list tokens"] = client.get("/jwtgate/tokens", headers=admin).status_code  # writes last_used_at first
    used["revoke token"] = client.delete(f"/jwtgate/tokens/{made.get_json()['id']}", headers=admin).status_code
    changed = client.put("/jwtgate/admin/settings", json={"JWTGATE_READ_ONLY_GROUPS": ["viewers"]}, headers=admin)
    used["change settings"] = changed.status_code
    used["revert settings"] = client.post(
        "/jwtgate/admin/settings/revert", json={"version": 0}, headers=admin
    ).status_code
    used["settings history"] = client.get("/jwtgate/admin/settings/history", headers=admin).status_code
    used["settings status"] = client.get("/jwtgate/admin/settings/status", headers=admin).status_code
    used["audit query"] = client.get("/jwtgate/admin/audit", headers=admin).status_code
    used["audit export"] = client.get("/jwtgate/admin/audit?format=csv", headers=admin).status_code
    used["prune"] = client.post("/jwtgate/admin/audit/prune", headers=admin).status_code
    return used
