"""A mock identity provider for tests: a real HTTP server on 127.0.0.1 serving a JWKS and an RFC 7662 introspection
endpoint, with rotating keys, switchable failures and hit counters.

It is a real server (``ThreadingHTTPServer`` in a daemon thread) rather than a patched function, so that tests go
through the gate's actual network code: timeouts, redirects, status codes, content types and client authentication.
It needs nothing but the standard library, PyJWT and cryptography, so a host app can use it outside pytest too; the
``jwtgate_mock_idp`` fixture of the ``flask_jwtgate.testing`` plugin starts one per test.

::

    def test_jwks(jwtgate_mock_idp, jwtgate_app_factory):
        idp = jwtgate_mock_idp
        app, gate = jwtgate_app_factory(JWTGATE_PROVIDERS=[idp.jwks_provider()])
        token = idp.mint_jwt("alice", groups=["devs"])
        assert app.test_client().get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert idp.hits["jwks"] == 1

        idp.jwks_mode = "down"           # or "slow", "500", "html", "redirect", "garbage", "huge", "ok"
        idp.introspection_mode = "500"   # or "down", "slow", "html", "inactive", "active_string", "redirect", "ok"

Never use it outside tests: its client secret is in memory and its private keys are made on the fly.
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .ascii_numbers import parse_whole

JWKS_PATH = "/jwks.json"
INTROSPECTION_PATH = "/introspect"
JWKS_MODES = frozenset({"ok", "down", "slow", "500", "html", "redirect", "garbage", "huge"})
INTROSPECTION_MODES = frozenset({"ok", "down", "slow", "500", "html", "inactive", "active_string", "redirect"})


@dataclass
class SigningKey:
    """One of the provider's RSA keys."""

    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    algorithm: str = "RS256"

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        data.update(kid=self.kid, alg=self.algorithm, use="sig")
        return data


class MockIdentityProvider:
    """A JWKS and introspection endpoint on ``127.0.0.1`` with controllable behaviour.

    :param issuer: the ``iss`` of its tokens (default: its own base URL).
    :param audience: the ``aud`` of its tokens (``None``: none).
    :param client_id: the client the gate must authenticate as at the introspection endpoint.
    :param client_secret: its secret (default: random).
    :param client_auth: accept only this client authentication (``"client_secret_basic"`` or
        ``"client_secret_post"``); ``None`` accepts either.
    :param clock: the current time in seconds, for ``iat``/``exp`` and for what is still active; share the gate's.

    State a test may set at any time: ``jwks_mode``, ``introspection_mode``, ``jwks_max_age`` (the Cache-Control
    max-age of the JWKS, ``None`` for no header; a string is sent as it is), ``jwks_headers`` (more headers on the
    JWKS, such as ``{"Age": "30"}``), ``jwks_document`` (a raw JWKS to serve instead of the keys), ``slow_seconds``.
    It reads ``hits`` (requests per endpoint), ``client_auth_seen``, ``introspected`` and ``hung_up`` (answers the
    client did not wait for: a gate that timed out and closed the connection).
    """

    def __init__(
        self,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        client_id: str = "jwtgate-test",
        client_secret: str | None = None,
        client_auth: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.audience = audience
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.client_auth = client_auth
        self.keys: list[SigningKey] = [self._new_key()]
        self.jwks_mode = "ok"
        self.introspection_mode = "ok"
        self.jwks_max_age: int | str | None = 300
        self.jwks_headers: dict[str, str] = {}
        self.jwks_document: Mapping[str, Any] | None = None
        self.slow_seconds = 5.0
        self.hits: Counter[str] = Counter()
        #: The client authentication method of each introspection request, in order.
        self.client_auth_seen: list[str] = []
        #: The ``token`` form field of each introspection request, in order.
        self.introspected: list[str] = []
        self.revoked: set[str] = set()
        #: Answers that could not be sent because the client had hung up (broken pipe, connection reset).
        self.hung_up = 0
        self._opaque: dict[str, dict[str, Any]] = {}
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.idp = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.issuer = issuer or self.base_url
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="jwtgate-mock-idp", daemon=True
        )
        self._thread.start()

    # -- lifecycle --------------------------------------------------------------------------------------------------

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    @property
    def introspection_url(self) -> str:
        return self.base_url + INTROSPECTION_PATH

    def release(self) -> None:
        """Let every request held by ``slow`` mode answer now (and later ones at once, until :meth:`hold`)."""
        self._release.set()

    def hold(self) -> None:
        """Make ``slow`` mode hold requests again (for ``slow_seconds``, or until :meth:`release`)."""
        self._release.clear()

    def close(self) -> None:
        """Stop the server (requests in ``slow`` mode are released first)."""
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> MockIdentityProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keys -------------------------------------------------------------------------------------------------------

    def _new_key(self) -> SigningKey:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return SigningKey("key-" + uuid.uuid4().hex[:12], private_key)

    @property
    def signing_key(self) -> SigningKey:
        """The key new tokens are signed with (the newest)."""
        return self.keys[-1]

    def rotate(self, *, retire_old: bool = False) -> str:
        """Publish a new key and sign with it from now on; return its kid. ``retire_old`` unpublishes the others."""
        key = self._new_key()
        with self._lock:
            self.keys = [key] if retire_old else [*self.keys, key]
        return key.kid

    def retire(self, kid: str) -> None:
        """Stop publishing the key ``kid``."""
        with self._lock:
            self.keys = [k for k in self.keys if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        """The JWK Set it serves."""
        if self.jwks_document is not None:
            return dict(self.jwks_document)
        return {"keys": [k.jwk() for k in self.keys]}

    # -- tokens -----------------------------------------------------------------------------------------------------

    def claims_for(
        self,
        username: str,
        *,
        groups: list[str] | None = None,
        expires_in: float = 300,
        claims: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The claims of a new token: ``iss``, ``sub``, ``iat``, ``exp``, ``jti``, ``client_id``, then ``claims``."""
        now = int(self.clock())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": username,
            "iat": now,
            "exp": now + int(expires_in),
            "jti": uuid.uuid4().hex,
            "client_id": "mock-client",
        }
        if self.audience is not None:
            payload["aud"] = self.audience
        if groups is not None:
            payload["groups"] = groups
        payload.update(claims or {})
        return payload

    def mint_jwt(
        self,
        username: str = "alice",
        *,
        groups: list[str] | None = None,
        expires_in: float = 300,
        claims: Mapping[str, Any] | None = None,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
        algorithm: str | None = None,
    ) -> str:
        """A JWT signed with the current key (or the key ``kid``), whose header names that key's kid."""
        key = self.signing_key if kid is None else next(k for k in self.keys if k.kid == kid)
        return jwt.encode(
            self.claims_for(username, groups=groups, expires_in=expires_in, claims=claims),
            key.private_key,
            algorithm=algorithm or key.algorithm,
            headers={"kid": key.kid, **(headers or {})},
        )

    def mint_opaque(
        self, username: str = "alice", *, groups: list[str] | None = None, expires_in: float = 300,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A random opaque token that only the introspection endpoint can explain."""
        token = "mock_" + secrets.token_urlsafe(32)
        with self._lock:
            self._opaque[token] = self.claims_for(username, groups=groups, expires_in=expires_in, claims=claims)
        return token

    def revoke(self, token: str) -> None:
        """From now on, introspection says ``token`` is not active."""
        self.revoked.add(token)

    def introspect(self, token: str) -> dict[str, Any]:
        """The answer the endpoint gives for ``token`` in ``ok`` mode."""
        claims = self._opaque.get(token)
        if claims is None and token.count(".") == 2:
            claims = self._verify_own_jwt(token)
        exp = claims.get("exp") if claims is not None else None
        expired = isinstance(exp, (int, float)) and exp <= self.clock()
        if claims is None or token in self.revoked or expired:
            return {"active": False}
        return {"active": True, "token_type": "Bearer", "username": claims.get("sub"), **claims}

    def _verify_own_jwt(self, token: str) -> dict[str, Any] | None:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next(k for k in self.keys if k.kid == kid)
            claims: dict[str, Any] = jwt.decode(  # times are judged by the mock's clock, in introspect()
                token,
                key.private_key.public_key(),
                algorithms=[key.algorithm],
                options={"verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False},
            )
        except (jwt.PyJWTError, StopIteration):
            return None
        return claims

    # -- provider entries for JWTGATE_PROVIDERS ---------------------------------------------------------------------

    def jwks_provider(self, name: str = "mock-jwks", **overrides: Any) -> dict[str, Any]:
        """A ``JWTGATE_PROVIDERS`` entry verifying this provider's JWTs with its JWKS."""
        entry: dict[str, Any] = {"name": name, "jwks_url": self.jwks_url, "issuer": self.issuer, "timeout": 2}
        if self.audience is not None:
            entry["audience"] = self.audience
        entry.update(overrides)
        return entry

    def introspection_provider(self, name: str = "mock-introspection", **overrides: Any) -> dict[str, Any]:
        """A ``JWTGATE_PROVIDERS`` entry asking this provider's introspection endpoint."""
        entry: dict[str, Any] = {
            "name": name,
            "introspection_url": self.introspection_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "issuer": self.issuer,
            "timeout": 2,
        }
        if self.audience is not None:
            entry["audience"] = self.audience
        entry.update(overrides)
        return entry


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer (a gate whose fetch timed out while the answer was held) is what
        # the failure modes are for, not an error: count it rather than print a traceback into the test output.
        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipeError, ConnectionResetError, ...
            idp: MockIdentityProvider = self.idp  # type: ignore[attr-defined]
            with idp._lock:
                idp.hung_up += 1
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = "MockIdP/1"

    @property
    def idp(self) -> MockIdentityProvider:
        idp: MockIdentityProvider = self.server.idp  # type: ignore[attr-defined]
        return idp

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        pass  # keep test output clean (and tokens out of it)

    def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _failure(self, mode: str) -> bool:
        """Act out a failure mode; ``True`` if the request was answered (or dropped) by it."""
        if mode == "down":
            self.close_connection = True  # drop the connection without a status line
            return True
        if mode == "slow":
            self.idp._release.wait(self.idp.slow_seconds)
            return False
        if mode == "500":
            self._json(500, {"error": "server_error"})
            return True
        if mode == "html":
            self._send(200, b"<html><body>Sign in</body></html>", "text/html; charset=utf-8")
            return True
        if mode == "redirect":
            self._send(302, b"", "text/plain", {"Location": self.idp.base_url + self.path})
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        if self.path != JWKS_PATH:
            self._json(404, {"error": "not_found"})
            return
        idp = self.idp
        with idp._lock:
            idp.hits["jwks"] += 1
        mode = idp.jwks_mode
        if self._failure(mode):
            return
        if mode == "garbage":
            self._send(200, b"{not json", "application/json")
            return
        if mode == "huge":
            self._send(200, b'{"keys": [], "pad": "' + b"x" * (1024 * 1024) + b'"}', "application/json")
            return
        headers = {"Cache-Control": f"max-age={idp.jwks_max_age}"} if idp.jwks_max_age is not None else {}
        headers.update(idp.jwks_headers)
        self._json(200, idp.jwks(), headers)

    def do_POST(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        if self.path != INTROSPECTION_PATH:
            self._json(404, {"error": "not_found"})
            return
        idp = self.idp
        length = parse_whole(self.headers.get("Content-Length") or "0")
        if length is None:
            self._json(400, {"error": "invalid_request"})
            return
        body = self.rfile.read(min(length, 65536)).decode()
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        with idp._lock:
            idp.hits["introspect"] += 1
        method = self._client_auth(form)
        with idp._lock:
            idp.client_auth_seen.append(method or "refused")
            idp.introspected.append(form.get("token", ""))
        if method is None:
            self._json(401, {"error": "invalid_client"}, {"WWW-Authenticate": 'Basic realm="mock"'})
            return
        mode = idp.introspection_mode
        if self._failure(mode):
            return
        if "token" not in form:
            self._json(400, {"error": "invalid_request"})
            return
        if mode == "inactive":
            self._json(200, {"active": False})
            return
        answer = idp.introspect(form["token"])
        if mode == "active_string" and answer["active"]:
            answer["active"] = "true"
        self._json(200, answer)

    def _client_auth(self, form: Mapping[str, str]) -> str | None:
        """Which client authentication the request used, if it is valid (RFC 6749 §2.3.1: exactly one method)."""
        idp = self.idp
        header = self.headers.get("Authorization", "")
        used: list[tuple[str, str, str]] = []
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except ValueError:
                return None
            used.append(("client_secret_basic", unquote_plus(user), unquote_plus(password)))
        if "client_secret" in form:
            used.append(("client_secret_post", form.get("client_id", ""), form["client_secret"]))
        if len(used) != 1:
            return None
        method, client_id, secret = used[0]
        if idp.client_auth is not None and method != idp.client_auth:
            return None
        if client_id != idp.client_id or not secrets.compare_digest(secret, idp.client_secret):
            return None
        return method
