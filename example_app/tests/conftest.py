"""How a host app's test suite uses the gate's pytest plugin: these fixtures are all it needs.

The plugin (installed with flask-jwtgate) provides ``jwtgate_provider`` (an identity provider for tests, whose
``config()`` the app trusts and whose ``mint()``/``bearer()`` make its tokens) and ``jwtgate_clock`` (time that
moves only when a test moves it). The app is built by its own factory, in testing mode: the gate then keeps its
tables in memory and writes nothing into the instance folder.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from flask_jwtgate.testing import Clock, TestProvider


@pytest.fixture
def app(jwtgate_provider: TestProvider, jwtgate_clock: Clock) -> Flask:
    return create_app({"TESTING": True, **jwtgate_provider.config()}, clock=jwtgate_clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
