"""Who may do what in the example Jira: written as a host app's own tests, with the plugin's public fixtures only."""

from __future__ import annotations

from flask.testing import FlaskClient

from flask_jwtgate.testing import Clock, TestProvider

API = "/rest/api/2"
ISSUE = {"fields": {"summary": "Printer on fire", "project": {"key": "DEMO"}}}


def test_server_info_needs_no_token(client: FlaskClient) -> None:
    assert client.get(f"{API}/serverInfo").status_code == 200


def test_the_api_needs_a_token(client: FlaskClient) -> None:
    response = client.get(f"{API}/myself")
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "missing_credentials"


def test_groups_come_from_the_token_and_the_directory(client: FlaskClient, jwtgate_provider: TestProvider) -> None:
    # bob is a jira-developer in the app's directory; the token adds a group of its own.
    response = client.get(f"{API}/myself", headers=jwtgate_provider.bearer("bob", groups=["on-call"]))
    assert response.status_code == 200
    assert response.json == {"name": "bob", "groups": ["jira-developers", "on-call"], "authMethod": "jwt"}


def test_a_developer_files_an_issue(client: FlaskClient, jwtgate_provider: TestProvider) -> None:
    response = client.post(f"{API}/issue", json=ISSUE, headers=jwtgate_provider.bearer("bob"))
    assert response.status_code == 201
    assert response.json is not None and response.json["key"] == "DEMO-1"


def test_a_viewer_reads_but_does_not_write(client: FlaskClient, jwtgate_provider: TestProvider) -> None:
    headers = jwtgate_provider.bearer("carol")  # in the directory's read-only group "viewers"
    assert client.get(f"{API}/project", headers=headers).status_code == 200
    response = client.post(f"{API}/issue", json=ISSUE, headers=headers)
    assert response.status_code == 403
    assert response.json is not None and response.json["reason"] == "read_only"


def test_a_read_only_group_in_the_token_counts_too(client: FlaskClient, jwtgate_provider: TestProvider) -> None:
    response = client.post(f"{API}/issue", json=ISSUE, headers=jwtgate_provider.bearer("dave", groups=["viewers"]))
    assert response.status_code == 403


def test_a_token_for_another_api_is_refused(client: FlaskClient, jwtgate_provider: TestProvider) -> None:
    response = client.get(f"{API}/myself", headers=jwtgate_provider.bearer("bob", claims={"aud": "another-api"}))
    assert response.status_code == 401
    assert response.json is not None and response.json["error"] == "invalid_token"


def test_a_token_expires_on_the_gate_clock(
    client: FlaskClient, jwtgate_provider: TestProvider, jwtgate_clock: Clock
) -> None:
    headers = jwtgate_provider.bearer("bob", expires_in=300)
    assert client.get(f"{API}/myself", headers=headers).status_code == 200
    jwtgate_clock.advance(300 + 60 + 1)  # past exp and the gate's default leeway of 60 s
    response = client.get(f"{API}/myself", headers=headers)
    assert response.status_code == 401
    assert response.json is not None and response.json["reason"] == "expired"


def test_an_api_token_acts_for_its_maker(client: FlaskClient, jwtgate_provider: TestProvider) -> None:
    body = {"name": "ci", "expires_in_days": 1}
    created = client.post("/jwtgate/tokens", json=body, headers=jwtgate_provider.bearer("bob"))
    assert created.status_code == 201
    assert created.json is not None
    response = client.get(f"{API}/myself", headers={"Authorization": f"Bearer {created.json['token']}"})
    assert response.json == {"name": "bob", "groups": ["jira-developers"], "authMethod": "api_token"}


def test_refusals_are_in_the_audit_log(client: FlaskClient, jwtgate_provider: TestProvider) -> None:
    client.delete(f"{API}/issue/DEMO-1", headers=jwtgate_provider.bearer("carol"))
    # alice administers the gate (jwtgate-admins in the app's directory).
    response = client.get("/jwtgate/admin/audit?user=carol", headers=jwtgate_provider.bearer("alice"))
    assert response.status_code == 200
    assert response.json is not None
    [entry] = response.json["entries"]
    assert (entry["method"], entry["path"], entry["status"], entry["reason"]) == (
        "DELETE", f"{API}/issue/DEMO-1", 403, "read_only",
    )
