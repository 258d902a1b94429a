"""The ``jwtgate`` pytest plugin (``pytest11`` entry point) works in a host project's own test suite."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flask import Flask

from flask_jwtgate import JWTGate, current_identity
from flask_jwtgate.testing import Clock, KeyPair, TestProvider

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
    result.stdout.fnmatch_lines_random(
        [
            "*jwtgate_keys*",
            "*jwtgate_token_factory*",
            "*jwtgate_app_factory*",
            "*jwtgate_provider -- *",
            "*jwtgate_provider_factory -- *",
            "*jwtgate_clock -- *",
            "*jwtgate_mock_idp -- *",
            "*jwtgate_mock_idp_factory -- *",
        ]
    )


# -- fixtures for the host's own app ----------------------------------------------------------------------------------

#: A host project: its own app factory (module ``hostapp``), its conftest with the two-line app fixture, its tests.
HOST_APP = '''
import time

from flask import Flask, jsonify

from flask_jwtgate import JWTGate, current_identity

DIRECTORY = {"carol": ["viewers"]}


def create_app(config=None, *, clock=time.time):
    app = Flask(__name__)
    app.config.update(
        JWTGATE_PUBLIC_KEY_FILE="/etc/hostapp/idp-public.pem",   # production's provider: not readable in tests
        JWTGATE_ISSUER="https://sso.hostapp.example",
        JWTGATE_READ_ONLY_GROUPS=["viewers"],
    )
    app.config.update(config or {})
    gate = JWTGate(app, clock=clock)
    gate.groups_loader(lambda username: DIRECTORY.get(username, []))

    @app.route("/notes", methods=["GET", "POST"])
    def notes():
        return jsonify(user=current_identity.username, groups=sorted(current_identity.groups),
                       provider=current_identity.provider, claims=dict(current_identity.claims))

    return app
'''

HOST_CONFTEST = '''
import pytest

from hostapp import create_app


@pytest.fixture
def app(jwtgate_provider, jwtgate_clock):
    return create_app({"TESTING": True, **jwtgate_provider.config()}, clock=jwtgate_clock)
'''

HOST_APP_TESTS = '''
from flask_jwtgate.testing import TestProvider  # imported into a test module, it is not collected as a test class


def test_token_of_the_test_provider(app, jwtgate_provider):
    response = app.test_client().get("/notes", headers=jwtgate_provider.bearer("bob", groups=["devs"]))
    assert response.status_code == 200
    body = response.get_json()
    assert (body["user"], body["groups"], body["provider"]) == ("bob", ["devs"], "test")
    assert body["claims"]["iss"] == jwtgate_provider.issuer and body["claims"]["aud"] == jwtgate_provider.audience


def test_directory_groups_apply(app, jwtgate_provider):
    assert app.test_client().post("/notes", headers=jwtgate_provider.bearer("carol")).status_code == 403


def test_claims_are_merged_last(app, jwtgate_provider):
    headers = jwtgate_provider.bearer("bob", claims={"iss": "https://elsewhere.example"})
    assert app.test_client().get("/notes", headers=headers).status_code == 401


def test_clock_expires_tokens(app, jwtgate_provider, jwtgate_clock):
    headers = jwtgate_provider.bearer("bob", expires_in=60)
    client = app.test_client()
    assert client.get("/notes", headers=headers).status_code == 200
    jwtgate_clock.advance(60 + 59)            # a second before exp plus the leeway: still in
    assert client.get("/notes", headers=headers).status_code == 200
    jwtgate_clock.advance(1)
    assert client.get("/notes", headers=headers).get_json()["reason"] == "expired"


def test_tokens_are_minted_on_the_clock(app, jwtgate_provider, jwtgate_clock):
    jwtgate_clock.advance(86400)              # a day on: a token minted now is valid now, for the gate
    assert app.test_client().get("/notes", headers=jwtgate_provider.bearer("bob")).status_code == 200


def test_a_provider_shaped_like_keycloak(jwtgate_provider_factory, jwtgate_clock):
    from hostapp import create_app

    keycloak = jwtgate_provider_factory(
        key="ec256", name="keycloak", username_claim="preferred_username", groups_claim="realm_access.roles"
    )
    app = create_app({"TESTING": True, **keycloak.config()}, clock=jwtgate_clock)
    token = keycloak.mint("f81d4fae", claims={"preferred_username": "dana"}, groups=["devs"])
    body = app.test_client().get("/notes", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert (body["user"], body["groups"], body["provider"]) == ("dana", ["devs"], "keycloak")
    assert body["claims"]["realm_access"] == {"roles": ["devs"]}
'''


def test_host_app_trusts_the_test_provider_through_its_own_factory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(hostapp=HOST_APP, conftest=HOST_CONFTEST, test_host_app=HOST_APP_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=6)


def test_config_trusts_the_test_provider_alone(jwtgate_keys: dict[str, KeyPair], tmp_path: Path) -> None:
    # The app's own single provider (key file, issuer, audience) from its config: config() clears it, so that its
    # tokens are not trusted beside the test provider's, and its file is never read.
    production = TestProvider(jwtgate_keys["ec256"], issuer="https://sso.example", audience="prod-api")
    key_file = tmp_path / "prod.pem"
    key_file.write_text(production.key.public_pem)
    own = {
        "JWTGATE_PUBLIC_KEY_FILE": str(key_file),
        "JWTGATE_ISSUER": production.issuer,
        "JWTGATE_AUDIENCE": production.audience,
    }
    test = TestProvider(jwtgate_keys["rsa"])
    app = Flask("host_with_its_own_provider")
    app.config.update(TESTING=True, **own)
    app.config.update(test.config())
    gate = JWTGate(app)
    app.add_url_rule("/api", "api", lambda: {"user": current_identity.username})
    assert [p.name for p in gate.settings(app).providers] == ["test"]
    client = app.test_client()
    assert client.get("/api", headers=test.bearer("bob")).get_json() == {"user": "bob"}
    assert client.get("/api", headers=production.bearer("bob")).status_code == 401


def test_clock_is_still_until_moved() -> None:
    clock = Clock(100.0)
    assert clock() == clock() == 100.0
    clock.advance(2.5)
    assert clock() == 102.5
    before = time.time()
    started = Clock()()
    assert before - 1 <= started <= time.time() and started == int(started)
