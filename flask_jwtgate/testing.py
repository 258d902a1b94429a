"""Test support for apps protected by the gate, installed as a pytest plugin (``pytest11`` entry point ``jwtgate``).

For testing *your* app (fixtures prefixed ``jwtgate_`` so that they never clash with a host's own):

- ``jwtgate_provider``: a :class:`TestProvider`, an identity provider for your tests: a key pair, an issuer and an
  audience. ``config()`` is the configuration that makes your app trust it (and nothing else); ``mint(username,
  groups=..., claims=..., expires_in=...)`` signs access tokens that match it; ``bearer(...)`` is the header.
- ``jwtgate_provider_factory``: ``make(name=..., issuer=..., audience=..., key="rsa"|"ec256"|"ec384"|"ed25519",
  username_claim=..., groups_claim=...) -> TestProvider``, for another shape of token, or several providers.
- ``jwtgate_clock``: a :class:`Clock` that stands still until the test moves it (``advance(seconds)``), starting at
  the real time (to the whole second). Pass it to the gate (``JWTGate(app, clock=clock)``) to expire tokens and
  caches without sleeping; the providers above mint on it.

::

    # conftest.py
    @pytest.fixture
    def app(jwtgate_provider, jwtgate_clock):
        return create_app({"TESTING": True, **jwtgate_provider.config()}, clock=jwtgate_clock)

    # test_access.py
    def test_viewers_cannot_write(app, jwtgate_provider):
        headers = jwtgate_provider.bearer("carol", groups=["viewers"])
        assert app.test_client().post("/issues", headers=headers).status_code == 403

For testing the gate's settings in isolation, and providers over HTTP:

- ``jwtgate_keys``: session-wide key pairs, ``{"rsa", "ec256", "ec384", "ed25519"}`` → :class:`KeyPair`.
- ``jwtgate_token_factory``: ``make(username="alice", *, groups=None, key="rsa", expires_in=300, issuer=None,
  audience=None, claims=None, headers=None, algorithm=None, now=None) -> str``: any token, signed with
  ``jwtgate_keys`` (no ``iss`` or ``aud`` unless given).
- ``jwtgate_app_factory``: ``make(*, clock=None, **config) -> (app, gate)``: a small app of the plugin's own (not
  yours) with the gate on, trusting the ``rsa`` key as provider ``"test"``, with routes ``GET/POST/PUT/DELETE
  /api/items`` and a public ``GET /api/status``.
- ``jwtgate_mock_idp``: a :class:`~flask_jwtgate.testing_idp.MockIdentityProvider`, a real HTTP identity provider on
  127.0.0.1 serving a JWKS and an introspection endpoint (switchable to down, slow, 500, HTML, inactive; counting hits).
- ``jwtgate_mock_idp_factory``: ``make(**options) -> MockIdentityProvider``, for several providers or an injected clock.

A testing app (``TESTING = True`` when the gate is installed) that names no database keeps the gate's tables in a
private in-memory database, and spools in a temporary folder: tests never write into the instance folder.
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
from .settings import PREFIX, SHORTHAND_KEYS
from .testing_idp import MockIdentityProvider

__all__ = [
    "Clock",
    "KeyPair",
    "TestProvider",
    "generate_keys",
    "make_app",
    "make_token",
]


class Clock:
    """A clock for tests: it stands still until the test moves it.

    :param start: the time it shows first, in seconds since the epoch; default: the real time now, to the whole
        second (tokens carry whole seconds, so a test that moves the clock by ``expires_in`` lands exactly on ``exp``).

    ::

        clock = Clock()
        gate = JWTGate(app, clock=clock)
        clock.advance(301)          # for the gate, 301 s have passed: no sleeping
    """

    def __init__(self, start: float | None = None) -> None:
        #: The time it shows; a test may also set it.
        self.now = float(int(time.time())) if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the time forward by ``seconds``."""
        self.now += seconds


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


class TestProvider:
    """An identity provider for a host app's tests: it signs access tokens locally, with one of the plugin's keys.

    :param key: the key pair it signs with.
    :param name: the provider's name (``current_identity.provider``).
    :param issuer: the ``iss`` of its tokens, which the gate checks.
    :param audience: the ``aud`` of its tokens, which the gate checks.
    :param username_claim: where its tokens carry the username (a dotted path reaches into an object).
    :param groups_claim: where its tokens carry the groups (``"realm_access.roles"`` nests them as Keycloak does).
    :param clock: the time its tokens are issued at; share the gate's clock to expire them without sleeping.

    ::

        provider = TestProvider(generate_keys()["rsa"])
        app = create_app({"TESTING": True, **provider.config()})
        response = app.test_client().get("/me", headers=provider.bearer("alice", groups=["admins"]))
    """

    __test__ = False  # a class named Test... in a test module is not a test case

    def __init__(
        self,
        key: KeyPair,
        *,
        name: str = "test",
        issuer: str = "https://idp.jwtgate.test",
        audience: str = "jwtgate-test-api",
        username_claim: str = "sub",
        groups_claim: str = "groups",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.name = name
        self.issuer = issuer
        self.audience = audience
        self.username_claim = username_claim
        self.groups_claim = groups_claim
        self.clock = clock

    def provider(self, **fields: Any) -> dict[str, Any]:
        """This provider as an entry of ``JWTGATE_PROVIDERS``; ``fields`` add to it (``directory_users=False``)."""
        return {
            "name": self.name,
            "public_key": self.key.public_pem,
            "algorithms": [self.key.algorithm],
            "issuer": self.issuer,
            "audience": self.audience,
            "username_claim": self.username_claim,
            "groups_claim": self.groups_claim,
            **fields,
        }

    def config(self, **fields: Any) -> dict[str, Any]:
        """The configuration that makes an app trust this provider and no other: ``JWTGATE_PROVIDERS`` with its one
        entry, and the single-provider keys (``JWTGATE_PUBLIC_KEY_FILE``, ``JWTGATE_ISSUER``, ...) cleared, so that
        the app's own provider, from its config or the environment, is not trusted beside it."""
        cleared: dict[str, Any] = dict.fromkeys((PREFIX + name for name in SHORTHAND_KEYS), None)
        return {**cleared, PREFIX + "PROVIDERS": [self.provider(**fields)]}

    def mint(
        self,
        username: str = "alice",
        *,
        groups: list[str] | None = None,
        claims: dict[str, Any] | None = None,
        expires_in: float = 300,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """An access token of this provider for ``username``, issued now on its clock.

        :param groups: put in the groups claim (none when ``None``); a host's ``groups_loader`` adds its own.
        :param claims: merged last: they can add, override or break anything (``{"aud": "another-api"}``).
        :param expires_in: seconds from now to ``exp`` (negative: already expired).
        """
        payload: dict[str, Any] = {}
        if self.username_claim != "sub":
            _put(payload, self.username_claim, username)
        if groups is not None:
            _put(payload, self.groups_claim, list(groups))
        payload.update(claims or {})
        return make_token(
            {"key": self.key},
            username,
            key="key",
            expires_in=expires_in,
            issuer=self.issuer,
            audience=self.audience,
            claims=payload,
            headers=headers,
            now=self.clock(),
        )

    def bearer(self, username: str = "alice", **options: Any) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for a token from :meth:`mint` (same options)."""
        return {"Authorization": f"Bearer {self.mint(username, **options)}"}


def _put(claims: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a dotted ``path``, making the objects on the way (as the gate reads ``groups_claim``)."""
    *parents, last = path.split(".")
    for part in parents:
        claims = claims.setdefault(part, {})
    claims[last] = value


def make_app(
    keys: dict[str, KeyPair], *, clock: Callable[[], float] | None = None, **config: Any
) -> tuple[Flask, JWTGate]:
    """A small API protected by the gate; ``config`` keys are ``JWTGATE_*`` settings; ``clock`` is the gate's clock."""
    app = Flask("jwtgate_test_app")
    # TESTING: each app keeps the gate's tables in a private in-memory database (flask_jwtgate.database).
    app.config.update(TESTING=True, JWTGATE_PROVIDERS=[{"name": "test", "public_key": keys["rsa"].public_pem}])
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
def jwtgate_clock() -> Clock:
    """A :class:`Clock` at the real time (whole seconds), standing still until the test calls ``advance(seconds)``."""
    return Clock()


@pytest.fixture
def jwtgate_provider_factory(jwtgate_keys: dict[str, KeyPair], jwtgate_clock: Clock) -> Callable[..., TestProvider]:
    """``make(*, key="rsa", **options) -> TestProvider`` (options: ``name``, ``issuer``, ``audience``,
    ``username_claim``, ``groups_claim``), minting on ``jwtgate_clock``."""

    def make(*, key: str = "rsa", **options: Any) -> TestProvider:
        options.setdefault("clock", jwtgate_clock)
        return TestProvider(jwtgate_keys[key], **options)

    return make


@pytest.fixture
def jwtgate_provider(jwtgate_provider_factory: Callable[..., TestProvider]) -> TestProvider:
    """The test's identity provider: ``config()`` for your app, ``mint(username, groups=...)`` for its tokens."""
    return jwtgate_provider_factory()


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
