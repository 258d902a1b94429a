"""A demo identity provider: an RSA key pair kept in the instance folder, its JWKS, an RFC 7662 introspection
endpoint, and a minter of JWTs and opaque tokens.

The key pair (and the introspection client's secret) is made in the instance folder the first time something needs
it: the app's start when the gate trusts the demo provider, or the first token minted or endpoint called. So an app
whose tests configure another provider (``jwtgate_provider.config()``) writes nothing there. Several processes
(gunicorn workers) may start at once, so creation takes an exclusive file lock and writes each file atomically;
whoever comes second reads what the first wrote.

Opaque tokens are ``ido_`` + the claims + an HMAC over them (a key derived from the private key), so that every worker
can answer for every token without shared state. The gate cannot read them: only ``POST /idp/introspect`` can.
Introspection callers authenticate as client ``jwtgate-demo`` (``DEMO_IDP_CLIENT_ID``) with the secret kept in
``instance/demo-idp/client_secret`` (or ``DEMO_IDP_CLIENT_SECRET``), by HTTP Basic or form fields.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import functools
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from typing import Any
from urllib.parse import unquote_plus

import click
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Blueprint, Flask, current_app, jsonify, request

from flask_jwtgate import JWTGate
from flask_jwtgate.cli import WholeNumber

ISSUER = "https://idp.example-jira.test"
AUDIENCE = "example-jira"
KEY_ID = "demo-1"
CLIENT_ID = "jwtgate-demo"
#: The OAuth client the demo tokens are issued to (the ``client_id`` introspection reports).
ISSUED_TO_CLIENT = "example-cli"
OPAQUE_PREFIX = "ido_"
_MAC_LENGTH = 43  # base64url of 32 bytes, unpadded


def key_paths(instance_path: str) -> tuple[str, str]:
    folder = os.path.join(instance_path, "demo-idp")
    return os.path.join(folder, "private.pem"), os.path.join(folder, "public.pem")


def ensure_keys(instance_path: str) -> str:
    """Make the key pair if it does not exist yet; return the public key's path."""
    private_path, public_path = key_paths(instance_path)
    if os.path.exists(public_path) and os.path.exists(_client_secret_path(instance_path)):
        return public_path  # made before (both files are written atomically, the secret last)
    os.makedirs(os.path.dirname(private_path), exist_ok=True)
    with open(os.path.join(os.path.dirname(private_path), ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(public_path):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            private_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            public_pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _write_atomically(private_path, private_pem, mode=0o600)
            _write_atomically(public_path, public_pem, mode=0o644)
        secret_path = _client_secret_path(instance_path)
        if not os.path.exists(secret_path):
            _write_atomically(secret_path, secrets.token_urlsafe(32).encode(), mode=0o600)
    return public_path


def _client_secret_path(instance_path: str) -> str:
    return os.path.join(instance_path, "demo-idp", "client_secret")


def client_credentials(app: Flask) -> tuple[str, str]:
    """The introspection client's id and secret (``DEMO_IDP_CLIENT_ID`` / ``DEMO_IDP_CLIENT_SECRET`` override)."""
    secret = app.config.get("DEMO_IDP_CLIENT_SECRET")
    if not secret:
        ensure_keys(app.instance_path)
        with open(_client_secret_path(app.instance_path)) as handle:
            secret = handle.read().strip()
    return app.config.get("DEMO_IDP_CLIENT_ID") or CLIENT_ID, secret


def _write_atomically(path: str, data: bytes, mode: int) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _private_key(instance_path: str) -> Any:
    ensure_keys(instance_path)
    path = key_paths(instance_path)[0]
    stat = os.stat(path)
    # Loading checks the RSA key, about 50 ms: once per key file (a key written anew has a new inode).
    return _load_private_key(path, (stat.st_ino, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=16)
def _load_private_key(path: str, version: tuple[int, int, int]) -> Any:
    with open(path, "rb") as handle:
        return serialization.load_pem_private_key(handle.read(), password=None)


def _claims(
    username: str, groups: list[str] | None, expires_in: int, extra_claims: dict[str, Any] | None
) -> dict[str, Any]:
    """The claims of a demo access token, JWT or opaque alike."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": username,
        "iat": now,
        "exp": now + expires_in,
        "jti": uuid.uuid4().hex,
    }
    if groups:
        claims["groups"] = groups
    claims.update(extra_claims or {})
    return claims


def mint_token(
    app: Flask,
    username: str,
    *,
    groups: list[str] | None = None,
    expires_in: int = 3600,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """Sign a demo access token for ``username`` as the demo identity provider."""
    claims = _claims(username, groups, expires_in, extra_claims)
    return jwt.encode(claims, _private_key(app.instance_path), algorithm="RS256", headers={"kid": KEY_ID})


def _opaque_key(instance_path: str) -> bytes:
    ensure_keys(instance_path)
    with open(key_paths(instance_path)[0], "rb") as handle:
        return hashlib.sha256(b"demo-idp opaque tokens\0" + handle.read()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_opaque_token(
    app: Flask,
    username: str,
    *,
    groups: list[str] | None = None,
    expires_in: int = 3600,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """An opaque access token for ``username``: only the introspection endpoint can say what it means."""
    claims = _claims(username, groups, expires_in, extra_claims)
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = _b64(hmac.new(_opaque_key(app.instance_path), payload.encode(), hashlib.sha256).digest())
    return OPAQUE_PREFIX + payload + mac


def _read_opaque(app: Flask, token: str) -> dict[str, Any] | None:
    body = token[len(OPAQUE_PREFIX) :]
    payload, mac = body[:-_MAC_LENGTH], body[-_MAC_LENGTH:]
    expected = _b64(hmac.new(_opaque_key(app.instance_path), payload.encode(), hashlib.sha256).digest())
    if not payload or not hmac.compare_digest(mac, expected):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def introspect(app: Flask, token: str) -> dict[str, Any]:
    """The RFC 7662 answer for ``token``: its claims with ``active: true`` if this provider issued it and it is
    unexpired, else just ``active: false`` (never why)."""
    claims: dict[str, Any] | None = None
    if token.startswith(OPAQUE_PREFIX):
        claims = _read_opaque(app, token)
        if claims is not None and not (isinstance(claims.get("exp"), int) and claims["exp"] > time.time()):
            claims = None
    elif token.count(".") == 2:
        try:
            claims = jwt.decode(
                token,
                _private_key(app.instance_path).public_key(),
                algorithms=["RS256"],
                issuer=ISSUER,
                options={"verify_aud": False, "require": ["exp"]},
            )
        except jwt.PyJWTError:
            claims = None
    if claims is None:
        return {"active": False}
    return {
        **claims,
        "active": True,
        "token_type": "Bearer",
        "client_id": ISSUED_TO_CLIENT,
        "username": claims.get("sub"),
    }


def _authenticated_client(app: Flask) -> bool:
    """RFC 6749 §2.3.1: the caller authenticates by HTTP Basic or by form fields, never both."""
    client_id, secret = client_credentials(app)
    presented: list[tuple[str, str]] = []
    authorization = request.authorization
    if authorization is not None and authorization.type == "basic":
        presented.append((unquote_plus(authorization.username or ""), unquote_plus(authorization.password or "")))
    if "client_secret" in request.form:
        presented.append((request.form.get("client_id", ""), request.form["client_secret"]))
    if len(presented) != 1:
        return False
    given_id, given_secret = presented[0]
    return hmac.compare_digest(given_id.encode(), client_id.encode()) & hmac.compare_digest(
        given_secret.encode(), secret.encode()
    )


def create_blueprint(gate: JWTGate) -> Blueprint:
    bp = Blueprint("idp", __name__, url_prefix="/idp")

    @bp.get("/.well-known/jwks.json")
    @gate.public
    def jwks() -> Any:
        public = _private_key(current_app.instance_path).public_key()
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        jwk.update(kid=KEY_ID, alg="RS256", use="sig")
        return jsonify(keys=[jwk])

    @bp.post("/introspect")
    @gate.public
    def introspection() -> Any:
        # RFC 7662 §2: only authenticated clients may ask; the answer is never cached by intermediaries.
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if not _authenticated_client(app):
            response = jsonify(error="invalid_client")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="demo-idp"'
            return response
        token = request.form.get("token")
        if not token:
            return jsonify(error="invalid_request", error_description="the 'token' parameter is missing"), 400
        response = jsonify(introspect(app, token))
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.cli.command("mint")
    @click.argument("username")
    @click.option("--group", "groups", multiple=True, help="A group to put in the token's 'groups' claim.")
    @click.option(
        "--expires-in", default=3600, show_default=True, type=WholeNumber(1, 10 * 365 * 86400),
        help="Seconds until the token expires.",
    )
    @click.option("--opaque", is_flag=True, help="Mint an opaque token (for an introspection provider) instead.")
    def mint(username: str, groups: tuple[str, ...], expires_in: int, opaque: bool) -> None:
        """Mint a demo JWT (or opaque token) for USERNAME, issued by the demo identity provider."""
        minter = mint_opaque_token if opaque else mint_token
        click.echo(minter(current_app, username, groups=list(groups), expires_in=expires_in))

    return bp
