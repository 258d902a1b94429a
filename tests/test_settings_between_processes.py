"""Run-time settings read and changed through a process that has not yet noticed another's change (every process
checks at most once a second): the admin API answers from the database's newest version, so an admin whose requests
land on different workers (the console behind a load balancer) never reads back an older version nor gets a 409 for a
version that is current."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from flask_jwtgate import JWTGate

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]
SETTINGS = "/jwtgate/admin/settings"


def two_processes(factory: AppFactory, tmp_path: Path, clock: Any) -> tuple[Any, Any]:
    """Two apps on one database, as two workers are; their clocks stand still, so neither checks for changes."""
    shared = {"clock": clock, "JWTGATE_DATABASE_URI": f"sqlite:///{tmp_path}/gate.db", "JWTGATE_AUDIT_ENABLED": False}
    return factory(**shared)[0].test_client(), factory(**shared)[0].test_client()


def test_a_change_made_in_one_process_is_read_back_and_built_on_in_another(
    jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, tmp_path: Path, clock: Any
) -> None:
    one, other = two_processes(jwtgate_app_factory, tmp_path, clock)
    admin = {"Authorization": f"Bearer {jwtgate_token_factory('alice', groups=['jwtgate-admins'], now=clock())}"}
    assert other.get(SETTINGS, headers=admin).get_json()["version"] == 0  # the other process has checked now

    saved = one.put(SETTINGS, json={"JWTGATE_READ_ONLY_GROUPS": ["viewers"], "version": 0}, headers=admin)
    assert saved.status_code == 200 and saved.get_json()["version"] == 1

    again = other.put(SETTINGS, json={"JWTGATE_ALLOWED_GROUPS": ["jwtgate-admins"], "version": 1}, headers=admin)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["version"] == 2 and again.get_json()["JWTGATE_READ_ONLY_GROUPS"] == ["viewers"]

    keys = one.get(SETTINGS + "/keys", headers=admin).get_json()
    assert keys["version"] == 2 and keys["keys"]["JWTGATE_ALLOWED_GROUPS"]["source"] == "runtime"

    third = other.put(SETTINGS, json={"JWTGATE_READ_ONLY_GROUPS": ["x"], "version": 2}, headers=admin)
    assert third.get_json()["version"] == 3
    restored = one.post(SETTINGS + "/revert", json={"version": 1}, headers=admin)
    assert restored.status_code == 200, restored.get_json()
    assert restored.get_json()["version"] == 4 and restored.get_json()["JWTGATE_READ_ONLY_GROUPS"] == ["viewers"]

    read = other.get(SETTINGS, headers=admin).get_json()
    assert (read["version"], read["JWTGATE_READ_ONLY_GROUPS"], read["JWTGATE_ALLOWED_GROUPS"]) == (4, ["viewers"], [])

def test_a_stale_version_is_still_refused(
    jwtgate_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, tmp_path: Path, clock: Any
) -> None:
    one, other = two_processes(jwtgate_app_factory, tmp_path, clock)
    admin = {"Authorization": f"Bearer {jwtgate_token_factory('alice', groups=['jwtgate-admins'], now=clock())}"}
    assert one.put(SETTINGS, json={"JWTGATE_READ_ONLY_GROUPS": ["a"], "version": 0}, headers=admin).status_code == 200
    stale = other.put(SETTINGS, json={"JWTGATE_READ_ONLY_GROUPS": ["b"], "version": 0}, headers=admin)
    assert stale.status_code == 409 and stale.get_json()["reason"] == "stale_version"
