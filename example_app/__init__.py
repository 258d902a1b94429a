"""A mock Jira REST service protected by flask-jwtgate, with a demo identity provider.

``python -m example_app`` serves it on embedded defaults and prints ready-to-paste tokens; ``flask --app example_app
run`` works too. Every ``FLASK_JWTGATE_*`` environment variable configures the gate, e.g.
``FLASK_JWTGATE_READ_ONLY_GROUPS='["viewers","jira-developers"]'``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from flask_jwtgate import JWTGate

from . import directory, idp, jira


def create_app(config: dict[str, Any] | None = None, *, instance_path: str | None = None) -> Flask:
    """Build the example app; ``config`` overrides the defaults and the environment."""
    app = Flask(__name__, instance_path=instance_path)
    app.config.update(
        JWTGATE_ISSUER=idp.ISSUER,
        JWTGATE_AUDIENCE=idp.AUDIENCE,
        JWTGATE_PROVIDER_NAME="demo-idp",
        JWTGATE_READ_ONLY_GROUPS=["viewers"],
    )
    app.config.from_prefixed_env()
    app.config.update(config or {})
    if not app.config.get("JWTGATE_PROVIDERS") and not app.config.get("JWTGATE_PUBLIC_KEY"):
        app.config.setdefault("JWTGATE_PUBLIC_KEY_FILE", idp.ensure_keys(app.instance_path))
    else:
        idp.ensure_keys(app.instance_path)

    gate = JWTGate(app)
    gate.groups_loader(directory.groups_of)
    app.register_blueprint(jira.create_blueprint(gate))
    app.register_blueprint(idp.create_blueprint(gate))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(errorMessages=[exc.description], status=exc.code), exc.code or 500

    return app
