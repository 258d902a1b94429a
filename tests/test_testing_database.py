"""A testing app's gate keeps nothing in the instance folder: its tables in memory, its spool in a temporary folder.

Without this, every test that made an app wrote audit rows, tokens and settings into ``instance/jwtgate.db``, where
the next run (and the development server, ``python -m example_app``) found them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from flask_jwtgate import JWTGate
from flask_jwtgate.testing import KeyPair

TokenFactory = Callable[..., str]


def start(instance: Path, keys: dict[str, KeyPair], **config: Any) -> Flask:
    app = Flask("testing_database", instance_path=str(instance))
    app.config.update(JWTGATE_PROVIDERS=[{"name": "test", "public_key": keys["rsa"].public_pem}], **config)
    JWTGate(app)
    app.add_url_rule("/api", "api", lambda: {"ok": True}, methods=["GET", "POST"])
    return app


def tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


def test_a_testing_app_keeps_its_tables_in_memory(
    tmp_path: Path, jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory
) -> None:
    instance = tmp_path / "instance"
    app = start(instance, jwtgate_keys, TESTING=True)
    headers = {"Authorization": f"Bearer {jwtgate_token_factory('bob')}"}
    client = app.test_client()
    assert client.get("/api", headers=headers).status_code == 200
    assert client.get("/api").status_code == 401
    created = client.post("/jwtgate/tokens", json={"name": "ci", "expires_in_days": 1}, headers=headers)
    assert created.status_code == 201
    state = app.extensions["jwtgate"]
    assert state.database.engine.url.render_as_string() == "sqlite://"
    with state.database.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT status FROM jwtgate_audit_log ORDER BY id").fetchall()
    assert [row[0] for row in rows] == [200, 401, 201]  # the audit log works, in memory
    assert tree(instance) == []


def test_each_testing_app_has_a_database_of_its_own(
    tmp_path: Path, jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory
) -> None:
    headers = {"Authorization": f"Bearer {jwtgate_token_factory('bob')}"}
    first = start(tmp_path / "instance", jwtgate_keys, TESTING=True)
    second = start(tmp_path / "instance", jwtgate_keys, TESTING=True)
    created = first.test_client().post("/jwtgate/tokens", json={"name": "ci", "expires_in_days": 1}, headers=headers)
    assert created.json is not None
    secret = {"Authorization": f"Bearer {created.json['token']}"}
    assert first.test_client().get("/api", headers=secret).status_code == 200
    assert second.test_client().get("/api", headers=secret).status_code == 401


def test_an_app_that_is_not_testing_keeps_its_tables_in_the_instance_folder(
    tmp_path: Path, jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory
) -> None:
    instance = tmp_path / "instance"
    app = start(instance, jwtgate_keys, JWTGATE_AUDIT_SYNC=True)
    assert app.test_client().get("/api").status_code == 401
    state = app.extensions["jwtgate"]
    assert state.database.engine.url.database == str(instance / "jwtgate.db")
    assert "jwtgate.db" in tree(instance)
    assert state.audit.writer.spool.directory.startswith(str(instance / "jwtgate-audit-spool"))
    state.database.engine.dispose()


def test_a_testing_app_uses_the_database_it_names(tmp_path: Path, jwtgate_keys: dict[str, KeyPair]) -> None:
    named = tmp_path / "named.db"
    app = start(tmp_path / "instance", jwtgate_keys, TESTING=True, JWTGATE_DATABASE_URI=f"sqlite:///{named}")
    assert app.test_client().get("/api").status_code == 401
    assert named.exists()
    assert tree(tmp_path / "instance") == []
    app.extensions["jwtgate"].database.engine.dispose()


def test_a_testing_app_spools_outside_the_instance_folder(tmp_path: Path, jwtgate_keys: dict[str, KeyPair]) -> None:
    # A database that cannot be opened: the record goes to the spool, which is not in the instance folder.
    instance = tmp_path / "instance"
    unreachable = f"sqlite:///{tmp_path}/no-such-folder/gate.db"
    broken = {"TESTING": True, "JWTGATE_DATABASE_URI": unreachable, "JWTGATE_RUNTIME_SETTINGS": False}
    app = start(instance, jwtgate_keys, **broken)
    writer = app.extensions["jwtgate"].audit.writer
    spool = Path(writer.spool.directory)
    try:
        assert app.test_client().get("/api").status_code == 401
        assert writer.spooled == 1
        assert spool.is_relative_to(tempfile.gettempdir()) and not spool.is_relative_to(instance)
        assert [path.suffix for path in spool.iterdir()] == [".jsonl"]
        assert tree(instance) == []
    finally:
        shutil.rmtree(spool.parent, ignore_errors=True)
    # Two testing apps never share a spool (one test's records are never replayed into another's database).
    other = start(instance, jwtgate_keys, **broken)
    assert os.path.dirname(other.extensions["jwtgate"].audit.writer.spool.directory) != str(spool.parent)
