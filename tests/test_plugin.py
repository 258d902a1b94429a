"""The ``jwtgate`` pytest plugin (``pytest11`` entry point) works in a host project's own test suite."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

HOST_TESTS = """
from __future__ import annotations

from flask import jsonify

from flask_jwtgate import current_identity


def test_keys_cover_every_type(jwtgate_keys):
    assert {name: pair.algorithm for name, pair in jwtgate_keys.items()} == {
        "rsa": "RS256", "ec256": "ES256", "ec384": "ES384", "ed25519": "EdDSA",
    }
    assert "BEGIN PUBLIC KEY" in jwtgate_keys["rsa"].public_pem


def test_user_may_write(jwtgate_app_factory, jwtgate_token_factory):
    app, gate = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    token = jwtgate_token_factory("bob", groups=["developers"])
    response = app.test_client().post("/api/items", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.get_json() == {"user": "bob", "groups": ["developers"]}


def test_read_only_user_may_not_write(jwtgate_app_factory, jwtgate_token_factory):
    app, gate = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    headers = {"Authorization": f"Bearer {jwtgate_token_factory('carol', groups=['viewers'])}"}
    client = app.test_client()
    assert client.get("/api/items", headers=headers).status_code == 200
    response = client.post("/api/items", headers=headers)
    assert response.status_code == 403
    assert response.get_json()["error"] == "insufficient_scope"
    assert response.get_json()["reason"] == "read_only"


def test_host_adds_its_own_routes_and_hooks(jwtgate_app_factory, jwtgate_token_factory):
    app, gate = jwtgate_app_factory()

    @gate.groups_loader
    def groups(username):
        return ["staff"]

    @app.get("/api/profile")
    def profile():
        return jsonify(user=current_identity.username, groups=sorted(current_identity.groups))

    token = jwtgate_token_factory("dana", key="rsa", expires_in=60)
    response = app.test_client().get("/api/profile", headers={"Authorization": f"Bearer {token}"})
    assert response.get_json() == {"user": "dana", "groups": ["staff"]}
    assert app.test_client().get("/api/status").get_json() == {"ok": True, "user": None}
    assert app.test_client().get("/api/profile").status_code == 401
"""


def test_plugin_fixtures_in_a_host_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_host_api=HOST_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=4)
    assert result.ret == pytest.ExitCode.OK


def test_plugin_is_loaded_from_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_host_api=HOST_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "--fixtures")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*jwtgate_keys*", "*jwtgate_token_factory*", "*jwtgate_app_factory*"])
