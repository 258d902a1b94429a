"""Shared fixtures. The ``jwtgate_*`` fixtures (keys, token factory, app factory) come from the package's own
pytest plugin, ``flask_jwtgate.testing``, exactly as a host app's tests get them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app


class Clock:
    """A controllable clock: ``clock()`` is the time, ``clock.advance(s)`` moves it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bearer() -> Callable[[str], dict[str, str]]:
    """``bearer(token)`` → the Authorization header dict."""
    return lambda token: {"Authorization": f"Bearer {token}"}


@pytest.fixture
def example_app_factory(tmp_path: Any) -> Callable[..., Flask]:
    """``make(**config) -> app``: the example mock Jira with its demo IdP keys in a temporary instance folder."""

    def make(**config: Any) -> Flask:
        app = create_app({"TESTING": True, **config}, instance_path=str(tmp_path / "instance"))
        return app

    return make


@pytest.fixture
def example_app(example_app_factory: Callable[..., Flask]) -> Flask:
    return example_app_factory()


@pytest.fixture
def example_client(example_app: Flask) -> FlaskClient:
    return example_app.test_client()
