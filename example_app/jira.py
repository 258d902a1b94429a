"""A mock of a few Jira REST endpoints, enough to show what the gate lets through."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from flask import Blueprint, abort, jsonify, request, url_for

from flask_jwtgate import JWTGate, current_identity

PROJECTS = [{"key": "DEMO", "name": "Demo project"}, {"key": "OPS", "name": "Operations"}]


class IssueStore:
    """Issues in memory, one store per app."""

    def __init__(self) -> None:
        self.issues: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.counter = itertools.count(1)

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            number = next(self.counter)
            key = f"{fields['project']}-{number}"
            issue = {"id": str(10000 + number), "key": key, "fields": fields}
            self.issues[key] = issue
            return issue


def create_blueprint(gate: JWTGate) -> Blueprint:
    bp = Blueprint("jira", __name__, url_prefix="/rest/api/2")
    store = IssueStore()

    def find(key: str) -> dict[str, Any]:
        issue = store.issues.get(key)
        if issue is None:
            abort(404, description=f"Issue {key} does not exist")
        return issue

    @bp.get("/serverInfo")
    @gate.public
    def server_info() -> Any:
        return jsonify(baseUrl=request.host_url.rstrip("/"), version="9.12.0-mock", serverTitle="Example Jira")

    @bp.get("/myself")
    def myself() -> Any:
        return jsonify(
            name=current_identity.username,
            groups=sorted(current_identity.groups),
            authMethod=current_identity.auth_method,
        )

    @bp.post("/issue")
    def create_issue() -> Any:
        body = request.get_json(silent=True) or {}
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict) or not isinstance(fields.get("summary"), str):
            return jsonify(errorMessages=["fields.summary is required"]), 400
        project = fields.get("project", {})
        project_key = project.get("key", "DEMO") if isinstance(project, dict) else "DEMO"
        issue = store.create(
            {"summary": fields["summary"], "project": project_key, "reporter": current_identity.username}
        )
        return jsonify({"id": issue["id"], "key": issue["key"], "self": url_for(".get_issue", key=issue["key"])}), 201

    @bp.get("/issue/<key>")
    def get_issue(key: str) -> Any:
        return jsonify(find(key))

    @bp.put("/issue/<key>")
    def update_issue(key: str) -> Any:
        issue = find(key)
        body = request.get_json(silent=True) or {}
        fields = body.get("fields") if isinstance(body, dict) else None
        if isinstance(fields, dict) and isinstance(fields.get("summary"), str):
            issue["fields"]["summary"] = fields["summary"]
        return "", 204

    @bp.delete("/issue/<key>")
    def delete_issue(key: str) -> Any:
        find(key)
        store.issues.pop(key, None)
        return "", 204

    @bp.get("/search")
    def search() -> Any:
        issues = list(store.issues.values())
        return jsonify(startAt=0, maxResults=50, total=len(issues), issues=issues[:50])

    @bp.get("/project")
    def projects() -> Any:
        return jsonify(PROJECTS)

    return bp
