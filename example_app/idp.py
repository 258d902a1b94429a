"""A demo identity provider: an RSA key pair kept in the instance folder, its JWKS, and a token minter.

The key pair is made on first start. Several processes (gunicorn workers) may start at once, so creation takes an
exclusive file lock and writes each file atomically; whoever comes second reads what the first wrote.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from typing import Any

import click
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Blueprint, Flask, current_app, jsonify

from flask_jwtgate import JWTGate

ISSUER = "https://idp.example-jira.test"
AUDIENCE = "example-jira"
KEY_ID = "demo-1"


def key_paths(instance_path: str) -> tuple[str, str]:
    folder = os.path.join(instance_path, "demo-idp")
    return os.path.join(folder, "private.pem"), os.path.join(folder, "public.pem")


def ensure_keys(instance_path: str) -> str:
    """Make the key pair if it does not exist yet; return the public key's path."""
    private_path, public_path = key_paths(instance_path)
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
    return public_path


def _write_atomically(path: str, data: bytes, mode: int) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _private_key(instance_path: str) -> Any:
    with open(key_paths(instance_path)[0], "rb") as handle:
        return serialization.load_pem_private_key(handle.read(), password=None)


def mint_token(
    app: Flask,
    username: str,
    *,
    groups: list[str] | None = None,
    expires_in: int = 3600,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """Sign a demo access token for ``username`` as the demo identity provider."""
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
    return jwt.encode(claims, _private_key(app.instance_path), algorithm="RS256", headers={"kid": KEY_ID})


def create_blueprint(gate: JWTGate) -> Blueprint:
    bp = Blueprint("idp", __name__, url_prefix="/idp")

    @bp.get("/.well-known/jwks.json")
    @gate.public
    def jwks() -> Any:
        public = _private_key(current_app.instance_path).public_key()
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        jwk.update(kid=KEY_ID, alg="RS256", use="sig")
        return jsonify(keys=[jwk])

    @bp.cli.command("mint")
    @click.argument("username")
    @click.option("--group", "groups", multiple=True, help="A group to put in the token's 'groups' claim.")
    @click.option("--expires-in", default=3600, show_default=True, help="Seconds until the token expires.")
    def mint(username: str, groups: tuple[str, ...], expires_in: int) -> None:
        """Mint a demo JWT for USERNAME, signed by the demo identity provider."""
        click.echo(mint_token(current_app, username, groups=list(groups), expires_in=expires_in))

    return bp
