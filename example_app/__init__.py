"""A mock Jira REST service protected by flask-jwtgate, with a demo identity provider.

``python -m example_app`` serves it on embedded defaults (on ``HOST``:``PORT``, 127.0.0.1:5000 unless set) and prints
ready-to-paste tokens; ``flask --app example_app run`` works too. Every ``FLASK_JWTGATE_*`` environment variable
configures the gate, e.g. ``FLASK_JWTGATE_READ_ONLY_GROUPS='["viewers","jira-developers"]'``.

Its tests (``example_app/tests``) show how a host app tests itself with the plugin's public fixtures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from flask_jwtgate import JWTGate

from . import directory, idp, jira


def create_app(
    config: dict[str, Any] | None = None,
    *,
    instance_path: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """Build the example app; ``config`` overrides the defaults and the environment.

    :param instance_path: where the demo IdP keeps its keys and the gate its database; else
        ``JWTGATE_EXAMPLE_INSTANCE_PATH`` (so that ``gunicorn 'example_app:create_app()'`` can be pointed at a folder),
        else Flask's default (``instance/`` in the repository).
    :param clock: the gate's clock; tests pass the plugin's ``jwtgate_clock`` to move time.

    ::

        app = create_app({"TESTING": True, **jwtgate_provider.config()}, clock=jwtgate_clock)
    """
    app = Flask(__name__, instance_path=instance_path or os.environ.get("JWTGATE_EXAMPLE_INSTANCE_PATH") or None)
    app.config.update(
        JWTGATE_READ_ONLY_GROUPS=["viewers"],
        # The demo IdP stands for another service that happens to share this process: the gate leaves it alone. Its
        # introspection endpoint authenticates its own clients, with Basic credentials the gate would refuse.
        JWTGATE_BYPASS_PATHS=["/idp/**"],
    )
    app.config.from_prefixed_env()
    app.config.update(config or {})
    shorthand = ("JWTGATE_PUBLIC_KEY", "JWTGATE_PUBLIC_KEY_FILE", "JWTGATE_JWKS_URL", "JWTGATE_INTROSPECTION_URL")
    if not app.config.get("JWTGATE_PROVIDERS") or any(app.config.get(source) for source in shorthand):
        # The single provider is the demo IdP, unless the environment names another: its key, issuer and audience.
        if not any(app.config.get(source) for source in shorthand):
            app.config["JWTGATE_PUBLIC_KEY_FILE"] = idp.ensure_keys(app.instance_path)
        app.config.setdefault("JWTGATE_ISSUER", idp.ISSUER)
        app.config.setdefault("JWTGATE_AUDIENCE", idp.AUDIENCE)
        app.config.setdefault("JWTGATE_PROVIDER_NAME", "demo-idp")
    if app.config.get("JWTGATE_INTROSPECTION_URL") and not app.config.get("JWTGATE_INTROSPECTION_CLIENT_ID"):
        # FLASK_JWTGATE_INTROSPECTION_URL=http://127.0.0.1:5000/idp/introspect is all the demo needs.
        client_id, client_secret = idp.client_credentials(app)
        app.config.update(JWTGATE_INTROSPECTION_CLIENT_ID=client_id, JWTGATE_INTROSPECTION_CLIENT_SECRET=client_secret)

    gate = JWTGate(app, clock=clock)
    gate.groups_loader(directory.groups_of)
    # The demo directory's own credentials, so that the demo shows every kind the gate takes (directory.py).
    gate.pat_validator(directory.pat_owner)
    gate.basic_auth_validator(directory.check_password)
    app.register_blueprint(jira.create_blueprint(gate))
    app.register_blueprint(idp.create_blueprint(gate))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(errorMessages=[exc.description], status=exc.code), exc.code or 500

    return app
