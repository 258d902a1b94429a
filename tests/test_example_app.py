"""The example mock Jira and its demo identity provider, as a user tries them: test client, CLI and a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import free_port
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from example_app.idp import AUDIENCE, ISSUER, KEY_ID, ensure_keys, key_paths, mint_token
from flask_jwtgate import JWTGate

Bearer = Callable[[str], dict[str, str]]
API = "/rest/api/2"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo IdP key pair for the module: making a 2048-bit RSA key for every test is slow."""
    instance = tmp_path_factory.mktemp("demo-instance")
    ensure_keys(str(instance))
    return instance / "demo-idp"


@pytest.fixture
def example_app_factory(tmp_path: Path, demo_keys: Path) -> Callable[..., Flask]:
    """Overrides conftest's factory: the same app, with the module's demo keys copied into its instance folder."""
    instance = tmp_path / "instance"
    shutil.copytree(demo_keys, instance / "demo-idp")

    def make(**config: Any) -> Flask:
        return create_app({"TESTING": True, **config}, instance_path=str(instance))

    return make


def auth(app: Flask, username: str, **options: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(app, username, **options)}"}


# -- the mock Jira ----------------------------------------------------------------------------------------------------


def test_server_info_is_public(example_client: FlaskClient) -> None:
    response = example_client.get(f"{API}/serverInfo")
    assert response.status_code == 200
    body = response.get_json()
    assert body["serverTitle"] == "Example Jira"
    assert body["version"]


@pytest.mark.parametrize(
    "path", ["/myself", "/issue/DEMO-1", "/search", "/project"], ids=["myself", "issue", "search", "project"]
)
def test_api_needs_a_token(example_client: FlaskClient, path: str) -> None:
    response = example_client.get(API + path)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("username", "groups"),
    [
        ("alice", ["jira-administrators", "jwtgate-admins"]),
        ("bob", ["jira-developers"]),
        ("carol", ["viewers"]),
    ],
)
def test_myself_shows_directory_groups(example_app: Flask, username: str, groups: list[str]) -> None:
    response = example_app.test_client().get(f"{API}/myself", headers=auth(example_app, username))
    assert response.status_code == 200
    assert response.get_json() == {"name": username, "groups": groups, "authMethod": "jwt"}


def test_myself_merges_token_groups_with_the_directory(example_app: Flask) -> None:
    response = example_app.test_client().get(f"{API}/myself", headers=auth(example_app, "bob", groups=["team-x"]))
    assert response.get_json()["groups"] == ["jira-developers", "team-x"]


@pytest.mark.parametrize(
    ("username", "password", "groups"),
    [("alice", "wonderland", ["jira-administrators", "jwtgate-admins"]), ("carol", "christmas", ["viewers"])],
)
def test_the_demo_directory_takes_basic_credentials(
    example_client: FlaskClient, username: str, password: str, groups: list[str]
) -> None:
    response = example_client.get(f"{API}/myself", auth=(username, password))
    assert response.status_code == 200
    assert response.get_json() == {"name": username, "groups": groups, "authMethod": "basic"}


@pytest.mark.parametrize(
    ("username", "password"), [("bob", "wonderland"), ("mallory", "builder"), ("bob", "builder\u00e9")]
)
def test_the_demo_directory_refuses_a_wrong_password(example_client: FlaskClient, username: str, password: str) -> None:
    response = example_client.get(f"{API}/myself", auth=(username, password))
    assert response.status_code == 401
    assert response.get_json()["reason"] == "bad_credentials"


def test_the_demo_directory_takes_its_personal_access_tokens(example_client: FlaskClient) -> None:
    from example_app.directory import demo_pat

    response = example_client.get(f"{API}/myself", headers={"Authorization": f"Bearer {demo_pat('bob')}"})
    assert response.status_code == 200
    assert response.get_json() == {"name": "bob", "groups": ["jira-developers"], "authMethod": "pat"}
    refused = example_client.get(f"{API}/myself", headers={"Authorization": "Bearer pat-demo-mallory"})
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_token"


def test_create_issue(example_app: Flask) -> None:
    client = example_app.test_client()
    headers = auth(example_app, "bob")
    created = client.post(
        f"{API}/issue", headers=headers, json={"fields": {"summary": "Printer on fire", "project": {"key": "OPS"}}}
    )
    assert created.status_code == 201
    body = created.get_json()
    assert body["key"] == "OPS-1"
    assert body["self"] == f"{API}/issue/OPS-1"
    read = client.get(f"{API}/issue/OPS-1", headers=headers)
    assert read.status_code == 200
    assert read.get_json()["fields"] == {"summary": "Printer on fire", "project": "OPS", "reporter": "bob"}


def seed_issue(app: Flask, headers: dict[str, str], summary: str) -> str:
    """Create an issue and return its key, found through search (so this does not depend on the create response)."""
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    client.post(f"{API}/issue", headers=headers, json={"fields": {"summary": summary, "project": {"key": "DEMO"}}})
    app.config["PROPAGATE_EXCEPTIONS"] = None
    issues = client.get(f"{API}/search", headers=headers).get_json()["issues"]
    (key,) = [issue["key"] for issue in issues if issue["fields"]["summary"] == summary]
    return str(key)


def test_issue_read_update_search_delete(example_app: Flask) -> None:
    client = example_app.test_client()
    headers = auth(example_app, "bob")
    key = seed_issue(example_app, headers, "Printer on fire")
    assert key.startswith("DEMO-")

    read = client.get(f"{API}/issue/{key}", headers=headers)
    assert read.status_code == 200
    assert read.get_json()["fields"] == {"summary": "Printer on fire", "project": "DEMO", "reporter": "bob"}

    updated = client.put(f"{API}/issue/{key}", headers=headers, json={"fields": {"summary": "Printer fixed"}})
    assert updated.status_code == 204
    assert client.get(f"{API}/issue/{key}", headers=headers).get_json()["fields"]["summary"] == "Printer fixed"

    search = client.get(f"{API}/search", headers=headers).get_json()
    assert search["total"] == 1
    assert [issue["key"] for issue in search["issues"]] == [key]

    deleted = client.delete(f"{API}/issue/{key}", headers=headers)
    assert deleted.status_code == 204
    gone = client.get(f"{API}/issue/{key}", headers=headers)
    assert gone.status_code == 404
    assert gone.get_json()["errorMessages"] == [f"Issue {key} does not exist"]
    assert client.get(f"{API}/search", headers=headers).get_json()["total"] == 0


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_unknown_issue_is_404(example_app: Flask, method: str) -> None:
    response = getattr(example_app.test_client(), method)(f"{API}/issue/NOPE-9", headers=auth(example_app, "bob"))
    assert response.status_code == 404
    assert response.get_json()["status"] == 404


def test_issue_without_summary_is_400(example_app: Flask) -> None:
    response = example_app.test_client().post(f"{API}/issue", headers=auth(example_app, "bob"), json={"fields": {}})
    assert response.status_code == 400


def test_projects(example_app: Flask) -> None:
    response = example_app.test_client().get(f"{API}/project", headers=auth(example_app, "carol"))
    assert response.status_code == 200
    assert [project["key"] for project in response.get_json()] == ["DEMO", "OPS"]


def test_read_only_user_can_read_but_not_write(example_app: Flask) -> None:
    client = example_app.test_client()
    headers = auth(example_app, "carol")
    assert client.get(f"{API}/myself", headers=headers).status_code == 200
    assert client.get(f"{API}/search", headers=headers).status_code == 200
    response = client.post(f"{API}/issue", headers=headers, json={"fields": {"summary": "x"}})
    assert response.status_code == 403
    body = response.get_json()
    assert body["error"] == "insufficient_scope"
    assert body["reason"] == "read_only"
    assert body["status"] == 403
    assert client.get(f"{API}/search", headers=auth(example_app, "bob")).get_json()["total"] == 0


def test_unknown_user_with_a_valid_token_is_a_user(example_app: Flask) -> None:
    response = example_app.test_client().get(f"{API}/myself", headers=auth(example_app, "zed"))
    assert response.status_code == 200
    assert response.get_json() == {"name": "zed", "groups": [], "authMethod": "jwt"}


def test_token_from_a_different_key_is_refused(example_app: Flask) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": int(time.time()), "exp": int(time.time()) + 600}
    token = jwt.encode(claims, other, algorithm="RS256", headers={"kid": KEY_ID})
    response = example_app.test_client().get(f"{API}/myself", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert response.get_json()["reason"] == "bad_signature"


@pytest.mark.parametrize(
    "claims",
    [{"iss": "https://evil.example"}, {"aud": "another-app"}, {"exp": int(time.time()) - 3600}],
    ids=["wrong-issuer", "wrong-audience", "expired"],
)
def test_demo_idp_tokens_with_wrong_claims_are_refused(example_app: Flask, claims: dict[str, Any]) -> None:
    headers = auth(example_app, "alice", extra_claims=claims)
    response = example_app.test_client().get(f"{API}/myself", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


# -- the demo identity provider ---------------------------------------------------------------------------------------


def test_jwks_is_public_and_verifies_minted_tokens(example_app: Flask) -> None:
    response = example_app.test_client().get("/idp/.well-known/jwks.json")
    assert response.status_code == 200
    (key,) = response.get_json()["keys"]
    assert key["kid"] == "demo-1"
    assert key["kty"] == "RSA"
    assert key["alg"] == "RS256"
    assert "d" not in key  # never the private part
    token = mint_token(example_app, "bob", groups=["g"])
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
    assert claims["sub"] == "bob"
    assert claims["groups"] == ["g"]
    assert jwt.get_unverified_header(token)["kid"] == "demo-1"


def test_key_pair_is_made_on_first_start_and_reused(tmp_path: Path) -> None:
    instance = str(tmp_path / "fresh-instance")
    private_path, public_path = key_paths(instance)
    assert not os.path.exists(public_path)
    first = create_app({"TESTING": True}, instance_path=instance)
    public_pem = Path(public_path).read_bytes()
    assert b"BEGIN PUBLIC KEY" in public_pem
    assert os.stat(private_path).st_mode & 0o077 == 0  # the private key is readable by its owner only
    token = mint_token(first, "bob")

    second = create_app({"TESTING": True}, instance_path=instance)
    assert Path(public_path).read_bytes() == public_pem
    jwks = [app.test_client().get("/idp/.well-known/jwks.json").get_json() for app in (first, second)]
    assert jwks[0] == jwks[1]
    response = second.test_client().get(f"{API}/myself", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_cli_mints_a_token_that_works(example_app: Flask) -> None:
    result = example_app.test_cli_runner().invoke(args=["idp", "mint", "bob", "--group", "qa", "--expires-in", "600"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600
    response = example_app.test_client().get(f"{API}/myself", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.get_json()["groups"] == ["jira-developers", "qa"]


def test_cli_check_config(example_app: Flask) -> None:
    result = example_app.test_cli_runner().invoke(args=["jwtgate", "check-config", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["providers"][0]["name"] == "demo-idp"
    assert summary["providers"][0]["issuer"] == ISSUER
    assert summary["read_only_groups"] == ["viewers"]
    assert summary["audit"]["enabled"] is True
    assert summary["audit"]["retention_days"] == 90
    assert summary["rate_limit"]["limit"] is None
    assert summary["credentials"]["basic"] is True  # the demo directory's passwords
    assert summary["credentials"]["personal_access_tokens"] is True  # and its personal access tokens
    assert summary["database"] == "sqlite://"  # a testing app's gate keeps its tables in memory


def test_cli_check_config_shows_no_password(example_app_factory: Callable[..., Flask]) -> None:
    app = example_app_factory(
        JWTGATE_RATE_LIMIT="100/minute",
        JWTGATE_RATE_LIMIT_STORAGE_URI="redis://:hunter2@127.0.0.1:6379/0",
        JWTGATE_DATABASE_URI="postgresql+psycopg://gate:s3cret@127.0.0.1:1/none?connect_timeout=1",
    )

    result = app.test_cli_runner().invoke(args=["jwtgate", "check-config", "--json"])

    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "s3cret" not in result.output
    summary = json.loads(result.output)
    assert summary["rate_limit"]["storage"] == "redis://:***@127.0.0.1:6379/0"
    assert summary["database"] == "postgresql+psycopg://gate:***@127.0.0.1:1/none?connect_timeout=1"
    assert summary["rate_limit"]["limit"] == "100/minute"


# -- the environment --------------------------------------------------------------------------------------------------


def test_environment_configures_the_gate(
    monkeypatch: pytest.MonkeyPatch, example_app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_READ_ONLY_GROUPS", '["viewers", "jira-developers"]')
    monkeypatch.setenv("FLASK_JWTGATE_ALLOWED_GROUPS", '["jira-developers", "jira-administrators"]')
    app = example_app_factory()
    client = app.test_client()
    bob = auth(app, "bob")
    assert client.get(f"{API}/myself", headers=bob).status_code == 200
    assert client.post(f"{API}/issue", headers=bob, json={"fields": {"summary": "x"}}).status_code == 403
    # alice is not read-only: her write passes the gate and reaches the view (404: no such issue).
    assert client.put(f"{API}/issue/DEMO-99", headers=auth(app, "alice"), json={}).status_code == 404
    denied = client.get(f"{API}/myself", headers=auth(app, "zed"))
    assert denied.status_code == 403
    assert denied.get_json()["reason"] == "group_not_allowed"


def test_environment_can_switch_the_gate_off(
    monkeypatch: pytest.MonkeyPatch, example_app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_ENABLED", "false")
    app = example_app_factory()
    assert JWTGate.settings(app).enabled is False
    assert app.test_client().get(f"{API}/project").status_code == 200


def test_explicit_config_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, example_app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_READ_ONLY_GROUPS", '["jira-developers"]')
    app = example_app_factory(JWTGATE_READ_ONLY_GROUPS=[])
    assert JWTGate.settings(app).read_only_groups == frozenset()


def flask_env(instance: Path, **extra: str) -> dict[str, str]:
    """The environment for the example app in a subprocess: none of ours, and ``instance`` as its instance folder
    (the repository's own is the developer's: a test never writes into it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    env.update(PYTHONUNBUFFERED="1", JWTGATE_EXAMPLE_INSTANCE_PATH=str(instance), **extra)
    return env


def test_flask_command_honours_the_environment(tmp_path: Path) -> None:
    # `flask --app example_app ...` finds the create_app factory; FLASK_JWTGATE_* reaches the gate.
    env = flask_env(
        tmp_path / "instance", FLASK_JWTGATE_READ_ONLY_GROUPS='["viewers", "jira-developers"]', FLASK_JWTGATE_LEEWAY="7"
    )
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "example_app", "jwtgate", "check-config", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["read_only_groups"] == ["jira-developers", "viewers"]
    assert summary["providers"][0]["leeway"] == 7
    # Not testing: the gate's database is a file in the instance folder.
    assert summary["database"] == f"sqlite:///{tmp_path / 'instance' / 'jwtgate.db'}"


def test_environment_makes_a_path_public(
    monkeypatch: pytest.MonkeyPatch, example_app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_PUBLIC_PATHS", '["GET /rest/api/2/project"]')
    app = example_app_factory()
    assert app.test_client().get(f"{API}/project").status_code == 200


# -- python -m example_app --------------------------------------------------------------------------------------------


def test_python_m_example_app_serves_and_prints_tokens(tmp_path: Path) -> None:
    port = free_port()
    stderr = (tmp_path / "stderr.txt").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "example_app"],
        cwd=ROOT,
        env=flask_env(tmp_path / "instance", PORT=str(port), HOST="127.0.0.1"),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("More tokens"):
                done.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert done.wait(timeout=60), f"no tokens printed; stderr: {(tmp_path / 'stderr.txt').read_text()}"
        output = "".join(lines)
        tokens = dict(re.findall(r"^export (ALICE|BOB|CAROL)_TOKEN='([^']+)'$", output, re.MULTILINE))
        assert set(tokens) == {"ALICE", "BOB", "CAROL"}, output
        base = f"http://127.0.0.1:{port}"
        assert re.search(f"^export JIRA={re.escape(base)}$", output, re.MULTILINE), output
        assert "curl -s $JIRA/rest/api/2/serverInfo" in output
        assert 'curl -s -H "Authorization: Bearer $BOB_TOKEN" $JIRA/rest/api/2/myself' in output
        assert '-H "Authorization: Bearer $CAROL_TOKEN"' in output
        assert f"curl -s -u bob:builder {base}/rest/api/2/myself" in output
        assert f'curl -s -H "Authorization: Bearer pat-demo-bob" {base}/rest/api/2/myself' in output

        request = urllib.request.Request(f"{base}{API}/myself", headers={"Authorization": f"Bearer {tokens['BOB']}"})
        body = None
        deadline = time.monotonic() + 30
        while body is None:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert response.status == 200
                    body = json.loads(response.read())
            except urllib.error.URLError as exc:
                if isinstance(exc, urllib.error.HTTPError) or time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)  # bounded polling until the server listens
        assert body == {"name": "bob", "groups": ["jira-developers"], "authMethod": "jwt"}

        anonymous = urllib.request.Request(f"{base}{API}/myself")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(anonymous, timeout=5)
        assert info.value.code == 401
        info.value.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
        reader.join(timeout=5)
        stderr.close()


def test_an_app_trusting_another_provider_writes_nothing_in_its_instance_folder(
    tmp_path: Path, jwtgate_provider: Any
) -> None:
    # The demo IdP makes its keys when something needs them, and the testing app's gate keeps its tables in memory.
    instance = tmp_path / "instance"
    app = create_app({"TESTING": True, **jwtgate_provider.config()}, instance_path=str(instance))
    response = app.test_client().get(f"{API}/myself", headers=jwtgate_provider.bearer("bob"))
    assert response.status_code == 200
    assert not instance.exists()
    # The demo IdP still works when asked: its keys are made then.
    assert app.test_client().get("/idp/.well-known/jwks.json").status_code == 200
    assert (instance / "demo-idp" / "public.pem").exists()
