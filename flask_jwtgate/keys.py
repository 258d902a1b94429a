"""Public keys and the algorithms each may verify.

Which algorithms a provider accepts is decided here, once, from configuration and the key's own type: never from a
token. A public key is only ever used with an asymmetric algorithm of its own family, so the RS256-to-HS256 key
confusion (RFC 8725 §2.1) cannot arise: HMAC and ``none`` are refused at start-up, and PyJWT is always called with
this list and a key object rather than PEM text.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .errors import ConfigurationError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1", "ES256K": "secp256k1"}
EDDSA_ALGORITHMS = frozenset({"EdDSA", "Ed25519", "Ed448"})
SUPPORTED_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHMS) | EDDSA_ALGORITHMS
MIN_RSA_BITS = 2048


def describe_key(key: PublicKey) -> dict[str, str]:
    """A public key as an admin may see it: its type and size or curve, and the SHA-256 of its
    SubjectPublicKeyInfo (what ``openssl pkey -pubin -outform DER | sha256sum`` prints for the same key)."""
    if isinstance(key, rsa.RSAPublicKey):
        kind = f"RSA {key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        kind = f"EC {key.curve.name}"
    else:
        kind = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"type": kind, "fingerprint": "sha256:" + hashlib.sha256(der).hexdigest()}


def load_public_key(pem: object, key: str) -> PublicKey:
    """Load a PEM public key (or the key of a PEM certificate), refusing private keys and weak RSA keys."""
    if isinstance(pem, str):
        pem = pem.encode()
    if not isinstance(pem, bytes) or b"-----BEGIN" not in pem:
        raise ConfigurationError(key, "must be a PEM public key ('-----BEGIN PUBLIC KEY-----...') or certificate")
    if b"PRIVATE KEY-----" in pem:
        raise ConfigurationError(key, "is a private key; configure the provider's public key, never its private key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            public: Any = x509.load_pem_x509_certificate(pem).public_key()
        else:
            public = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(key, f"is not a readable PEM public key ({exc})") from exc
    if not isinstance(public, PublicKey):
        raise ConfigurationError(key, f"{type(public).__name__} keys are not supported; use RSA, EC or Ed25519")
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name not in EC_ALGORITHMS.values():
        raise ConfigurationError(
            key, f"the EC curve {public.curve.name} is not supported; use P-256, P-384, P-521 or secp256k1"
        )
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        raise ConfigurationError(key, f"the RSA key has {public.key_size} bits; at least {MIN_RSA_BITS} are required")
    return public


def read_public_key_file(path: object, key: str) -> PublicKey:
    if not isinstance(path, str) or not path:
        raise ConfigurationError(key, f"must be the path of a PEM file, not {path!r}")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigurationError(key, f"cannot read {path!r}: {exc.strerror}") from exc
    return load_public_key(data, key)


def default_algorithms(public: PublicKey) -> tuple[str, ...]:
    """The algorithm a key of this type is used with when none is configured."""
    if isinstance(public, rsa.RSAPublicKey):
        return ("RS256",)
    if isinstance(public, ec.EllipticCurvePublicKey):
        for name, curve in EC_ALGORITHMS.items():
            if public.curve.name == curve:
                return (name,)
        raise ConfigurationError("algorithms", f"the EC curve {public.curve.name} is not supported")
    return ("EdDSA",)


def fits(algorithm: str, public: PublicKey) -> bool:
    """Whether ``algorithm`` may verify with ``public``."""
    if algorithm in RSA_ALGORITHMS:
        return isinstance(public, rsa.RSAPublicKey)
    if algorithm in EC_ALGORITHMS:
        return isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == EC_ALGORITHMS[algorithm]
    if algorithm == "Ed25519":
        return isinstance(public, ed25519.Ed25519PublicKey)
    if algorithm == "Ed448":
        return isinstance(public, ed448.Ed448PublicKey)
    return algorithm == "EdDSA" and isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))


def check_algorithms(algorithms: object, key: str) -> tuple[str, ...]:
    """Validate a configured algorithm list (no HMAC, no ``none``)."""
    if isinstance(algorithms, str):
        algorithms = [algorithms]
    if not isinstance(algorithms, (list, tuple)) or not algorithms:
        raise ConfigurationError(key, f"must be a non-empty list such as ['RS256'], not {algorithms!r}")
    for name in algorithms:
        if name not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(
                key,
                f"{name!r} is not accepted; use asymmetric algorithms: {', '.join(sorted(SUPPORTED_ALGORITHMS))}",
            )
    return tuple(algorithms)
