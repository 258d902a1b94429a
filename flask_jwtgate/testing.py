"""Test support for apps protected by the gate, installed as a pytest plugin (``pytest11`` entry point ``jwtgate``).

Fixtures, all prefixed ``jwtgate_`` so they never clash with a host's own:

- ``jwtgate_keys``: session-wide key pairs, ``{"rsa", "ec256", "ec384", "ed25519"}`` → :class:`KeyPair`.
- ``jwtgate_token_factory``: ``make(username="alice", *, groups=None, key="rsa", expires_in=300, issuer=None,
  audience=None, claims=None, headers=None, algorithm=None) -> str``.
- ``jwtgate_app_factory``: ``make(*, clock=None, **config) -> (app, gate)``: a Flask app with the gate on, trusting
  the ``rsa`` key as provider ``"test"``, with routes ``GET/POST/PUT/DELETE /api/items`` and a public
  ``GET /api/status``.
- ``jwtgate_mock_idp``: a :class:`~flask_jwtgate.testing_idp.MockIdentityProvider`, a real HTTP identity provider on
  127.0.0.1 serving a JWKS and an introspection endpoint (switchable to down, slow, 500, HTML, inactive; counting hits).
- ``jwtgate_mock_idp_factory``: ``make(**options) -> MockIdentityProvider``, for several providers or an injected clock.

::

    def test_read_only(jwtgate_app_factory, jwtgate_token_factory):
        app, gate = jwtgate_app_factory(JWTGATE_READ_ONLY_GROUPS=["viewers"])
        token = jwtgate_token_factory("carol", groups=["viewers"])
        response = app.test_client().post("/api/items", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask import Flask, jsonify

from . import JWTGate, current_identity
from .testing_idp import MockIdentityProvider


@dataclass(frozen=True)
class KeyPair:
    """A private key for signing test tokens and its public PEM for the gate's configuration."""

    private_key: Any
    algorithm: str

    @property
    def public_key(self) -> Any:
        return self.private_key.public_key()

    @property
    def public_pem(self) -> str:
        pem: bytes = self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode()

    @property
    def private_pem(self) -> str:
        pem: bytes = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pem.decode()


def generate_keys() -> dict[str, KeyPair]:
    """One key pair of each supported type."""
    return {
        "rsa": KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        "ec256": KeyPair(ec.generate_private_key(ec.SECP256R1()), "ES256"),
        "ec384": KeyPair(ec.generate_private_key(ec.SECP384R1()), "ES384"),
        "ed25519": KeyPair(ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    }


def make_token(
    keys: dict[str, KeyPair],
    username: str = "alice",
    *,
    groups: list[str] | None = None,
    key: str = "rsa",
    expires_in: float = 300,
    issuer: str | None = None,
    audience: str | list[str] | None = None,
    claims: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    algorithm: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a token with one of ``keys``; ``claims`` are merged last, so they can override or break anything."""
    issued = int(now if now is not None else time.time())
    payload: dict[str, Any] = {"sub": username, "iat": issued, "exp": issued + int(expires_in), "jti": uuid.uuid4().hex}
    if groups is not None:
        payload["groups"] = groups
    if issuer is not None:
        payload["iss"] = issuer
    if audience is not None:
        payload["aud"] = audience
    payload.update(claims or {})
    pair = keys[key]
    return jwt.encode(payload, pair.private_key, algorithm=algorithm or pair.algorithm, headers=headers)


def make_app(
    keys: dict[str, KeyPair], *, clock: Callable[[], float] | None = None, **config: Any
) -> tuple[Flask, JWTGate]:
    """A small API protected by the gate; ``config`` keys are ``JWTGATE_*`` settings; ``clock`` is the gate's clock."""
    app = Flask("jwtgate_test_app")
    app.config.update(TESTING=True, JWTGATE_PROVIDERS=[{"name": "test", "public_key": keys["rsa"].public_pem}])
    # Each test app gets a private in-memory database, never a file shared by every test in the working directory.
    app.config["JWTGATE_DATABASE_URI"] = "sqlite://"
    app.config.update(config)
    gate = JWTGate(app) if clock is None else JWTGate(app, clock=clock)

    @app.route("/api/items", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def items() -> Any:
        return jsonify(user=current_identity.username, groups=sorted(current_identity.groups))

    @app.get("/api/status")
    @gate.public
    def status() -> Any:
        return jsonify(ok=True, user=current_identity.username)

    return app, gate


@pytest.fixture(scope="session")
def jwtgate_keys() -> dict[str, KeyPair]:
    """Key pairs of each type, made once per test session."""
    return generate_keys()


@pytest.fixture
def jwtgate_token_factory(jwtgate_keys: dict[str, KeyPair]) -> Callable[..., str]:
    """``make(username="alice", **options) -> token`` signed with the ``jwtgate_keys``."""

    def make(username: str = "alice", **options: Any) -> str:
        return make_token(jwtgate_keys, username, **options)

    return make


@pytest.fixture
def jwtgate_app_factory(jwtgate_keys: dict[str, KeyPair]) -> Iterator[Callable[..., tuple[Flask, JWTGate]]]:
    """``make(**config) -> (app, gate)``: an app with the gate on and provider ``"test"`` on the ``rsa`` key."""

    def make(*, clock: Callable[[], float] | None = None, **config: Any) -> tuple[Flask, JWTGate]:
        return make_app(jwtgate_keys, clock=clock, **config)

    yield make


@pytest.fixture
def jwtgate_mock_idp_factory() -> Iterator[Callable[..., MockIdentityProvider]]:
    """``make(**options) -> MockIdentityProvider`` (options: ``issuer``, ``audience``, ``client_id``,
    ``client_secret``, ``client_auth``, ``clock``); every provider made is stopped after the test."""
    made: list[MockIdentityProvider] = []

    def make(**options: Any) -> MockIdentityProvider:
        idp = MockIdentityProvider(**options)
        made.append(idp)
        return idp

    yield make
    for idp in made:
        idp.close()


@pytest.fixture
def jwtgate_mock_idp(jwtgate_mock_idp_factory: Callable[..., MockIdentityProvider]) -> MockIdentityProvider:
    """A mock identity provider on 127.0.0.1 (real time; use the factory to share an injected clock)."""
    return jwtgate_mock_idp_factory()
