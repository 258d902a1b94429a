"""Hostile tokens: every one is refused with a 401 naming the right reason, and the protected view never runs.

A refusal is checked the way a caller and an auditor see it: the status, the JSON error and its ``reason``, the
RFC 6750 challenge, and the view itself, which counts its calls. Tokens are forged by hand where PyJWT would refuse
to produce them (``alg: none``, HMAC keyed with a PEM, broken JSON, non-canonical base64).
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import random
import socket
import string
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID
from flask import Flask, jsonify
from werkzeug.test import TestResponse

from flask_jwtgate import ConfigurationError, JWTGate, current_identity
from flask_jwtgate.testing import KeyPair, make_app

ALGORITHMS = jwt.algorithms.get_default_algorithms()
B64URL_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
ISSUER = "https://idp.example.com"
AUDIENCE = "jwtgate-api"
Factory = Callable[..., str]


# -- helpers ---------------------------------------------------------------------------------------------------------


class Api:
    """An app under test whose views count their calls, so a test can prove a refused request never reached one.

    It adds ``GET /api/whoami`` (the identity as the gate established it) before the first request.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.view_calls: list[str] = []
        app.add_url_rule("/api/whoami", "whoami", lambda: jsonify(current_identity.to_dict()))
        for endpoint, view in list(app.view_functions.items()):
            app.view_functions[endpoint] = self._counting(endpoint, view)

    def _counting(self, endpoint: str, view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.view_calls.append(endpoint)
            return view(*args, **kwargs)

        return counted

    def get(self, token: str, path: str = "/api/items") -> TestResponse:
        return self.app.test_client().get(path, headers={"Authorization": f"Bearer {token}"})


def assert_refused(api: Api, response: TestResponse, reason: str, *, error: str = "invalid_token") -> None:
    """A 401 with the contract's JSON body and challenge, and no view ran."""
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == 401
    assert body["error"] == error
    assert body["reason"] == reason, body
    assert body["error_description"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api", ')
    assert f'error="{error}"' in challenge
    assert 'error_description="' in challenge
    assert api.view_calls == []


def assert_forbidden(api: Api, response: TestResponse, reason: str) -> None:
    """A 403 (authenticated, but a rule refuses): no challenge, and no view ran."""
    assert response.status_code == 403, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["status"], body["error"], body["reason"]) == (403, "access_denied", reason)
    assert "WWW-Authenticate" not in response.headers
    assert api.view_calls == []


def assert_accepted(api: Api, response: TestResponse, user: str = "alice") -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["user"] == user
    assert len(api.view_calls) == 1


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def encode(part: dict[str, Any] | str | bytes) -> str:
    """A token segment from a dict (compact JSON), hand-written JSON text, or raw bytes."""
    if isinstance(part, dict):
        part = json.dumps(part, separators=(",", ":"))
    if isinstance(part, str):
        part = part.encode()
    return b64url(part)


def craft(
    header: dict[str, Any] | str | bytes,
    payload: dict[str, Any] | str | bytes,
    *,
    key: Any = None,
    alg: str = "RS256",
    signature: bytes | None = None,
) -> str:
    """A compact JWS signed with ``key`` under ``alg`` (whatever the header claims), or carrying ``signature``."""
    signing_input = f"{encode(header)}.{encode(payload)}"
    if signature is None:
        signature = ALGORITHMS[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64url(signature)}"


def fresh_claims(**claims: Any) -> dict[str, Any]:
    """Claims valid now (without a ``jti``, so the gate derives the token id from the token itself)."""
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 300, **claims}


def provider(pair: KeyPair, name: str = "test", **fields: Any) -> dict[str, Any]:
    return {"name": name, "public_key": pair.public_pem, **fields}


def rs256(claims: dict[str, Any] | str, key: Any, **header: Any) -> str:
    return craft({"alg": "RS256", "typ": "JWT", **header}, claims, key=key)


@pytest.fixture
def make_api(jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]]) -> Callable[..., Api]:
    """``make(**config) -> Api``: an app of the test's own, for a configuration of its own."""

    def make(**config: Any) -> Api:
        app, _ = jwtgate_app_factory(**config)
        return Api(app)

    return make


@pytest.fixture(scope="module")
def shared_apis(jwtgate_keys: dict[str, KeyPair]) -> dict[str, Api]:
    """One app per key type, made on first use and shared by the module's tests: every refused token leaves such an
    app as it was, and an accepted one is cached only under its own exact spelling (unique per test)."""
    return {}


@pytest.fixture
def key_api(shared_apis: dict[str, Api], jwtgate_keys: dict[str, KeyPair]) -> Callable[[str], Api]:
    """``key_api(key) -> Api``: the shared app whose one provider, "test", trusts ``jwtgate_keys[key]``."""

    def get(key: str) -> Api:
        api = shared_apis.get(key)
        if api is None:
            app, _ = make_app(jwtgate_keys, JWTGATE_PROVIDERS=[provider(jwtgate_keys[key])])
            api = shared_apis[key] = Api(app)
        api.view_calls.clear()
        return api

    return get


@pytest.fixture
def api(key_api: Callable[[str], Api]) -> Api:
    """The plugin's test app (provider "test" on the ``rsa`` key), shared by the module's tests."""
    return key_api("rsa")


@pytest.fixture(scope="module")
def attacker_rsa() -> rsa.RSAPrivateKey:
    """The attacker's own RSA key: well-formed, but not the provider's."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa() -> KeyPair:
    """A second identity provider's key."""
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


@pytest.fixture
def rsa_key(jwtgate_keys: dict[str, KeyPair]) -> rsa.RSAPrivateKey:
    """The provider's private key (as an IdP would sign)."""
    key: rsa.RSAPrivateKey = jwtgate_keys["rsa"].private_key
    return key


# -- 1. alg "none" -------------------------------------------------------------------------------------------------

NONE_SPELLINGS = [
    pytest.param("none", "alg_none", id="none"),
    pytest.param("None", "alg_none", id="None"),
    pytest.param("NONE", "alg_none", id="NONE"),
    pytest.param("nOnE", "alg_none", id="nOnE"),
    # JOSE algorithm names are exact: these are simply algorithms the provider does not allow.
    pytest.param("none ", "alg_not_allowed", id="trailing-space"),
    pytest.param(" none", "alg_not_allowed", id="leading-space"),
    pytest.param("none\u0000", "alg_not_allowed", id="trailing-nul"),
    pytest.param("n\u043ene", "alg_not_allowed", id="cyrillic-o"),
]


@pytest.mark.parametrize(("alg", "reason"), NONE_SPELLINGS)
@pytest.mark.parametrize(
    "signature", [b"garbage-signature", b"\x00" * 256], ids=["garbage-signature", "zero-signature"]
)
def test_alg_none_with_a_signature_is_refused(api: Api, alg: str, reason: str, signature: bytes) -> None:
    token = craft({"alg": alg, "typ": "JWT"}, fresh_claims(), signature=signature)
    assert_refused(api, api.get(token), reason)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "none "])
def test_alg_none_with_an_empty_signature_is_refused_by_its_shape(api: Api, alg: str) -> None:
    token = f"{encode({'alg': alg, 'typ': 'JWT'})}.{encode(fresh_claims())}."
    assert_refused(api, api.get(token), "malformed_token")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param({"typ": "JWT"}, "alg_none", id="missing"),
        pytest.param({"ALG": "RS256"}, "alg_none", id="upper-case-member-name"),
        pytest.param({"alg": None}, "alg_none", id="null"),
        pytest.param({"alg": 256}, "alg_none", id="number"),
        pytest.param({"alg": True}, "alg_none", id="bool"),
        pytest.param({"alg": ["RS256"]}, "alg_none", id="list"),
        pytest.param({"alg": {"name": "RS256"}}, "alg_none", id="object"),
        pytest.param({"alg": ""}, "alg_not_allowed", id="empty-string"),
    ],
)
def test_alg_that_is_not_an_algorithm_name_is_refused_even_with_a_valid_signature(
    api: Api, rsa_key: rsa.RSAPrivateKey, header: dict[str, Any], reason: str
) -> None:
    token = craft(header, fresh_claims(), key=rsa_key, alg="RS256")
    assert_refused(api, api.get(token), reason)


def test_duplicate_alg_members_resolve_to_the_last_one_consistently(api: Api, attacker_rsa: rsa.RSAPrivateKey) -> None:
    claims = fresh_claims()
    hides_none = craft('{"alg":"RS256","alg":"none"}', claims, signature=b"garbage")
    hides_rs256 = craft('{"alg":"none","alg":"RS256"}', claims, key=attacker_rsa)

    assert_refused(api, api.get(hides_none), "alg_none")
    assert_refused(api, api.get(hides_rs256), "bad_signature")


# -- 2. RS/HS key confusion ---------------------------------------------------------------------------------------

PEM, DER = serialization.Encoding.PEM, serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo

KEY_ENCODINGS: dict[str, list[str]] = {
    "rsa": ["pem", "pem-no-newline", "pem-crlf", "pem-body", "der", "openssh", "jwk", "pem-pkcs1", "der-pkcs1"],
    "ec256": ["pem", "pem-no-newline", "pem-crlf", "pem-body", "der", "openssh", "jwk", "x962", "x962-compressed"],
    "ed25519": ["pem", "pem-no-newline", "pem-crlf", "pem-body", "der", "openssh", "jwk", "raw"],
}


def public_key_as(public_key: Any, encoding: str) -> bytes:
    """The provider's public key as the bytes an attacker would try as an HMAC secret."""
    pem = public_key.public_bytes(PEM, SPKI)
    if encoding == "pem":
        return bytes(pem)
    if encoding == "pem-no-newline":
        return bytes(pem.rstrip(b"\n"))
    if encoding == "pem-crlf":
        return bytes(pem.replace(b"\n", b"\r\n"))
    if encoding == "pem-body":
        return base64.b64encode(public_key.public_bytes(DER, SPKI))
    if encoding == "der":
        return bytes(public_key.public_bytes(DER, SPKI))
    if encoding == "openssh":
        return bytes(public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    if encoding == "jwk":
        if isinstance(public_key, rsa.RSAPublicKey):
            return jwt.algorithms.RSAAlgorithm.to_jwk(public_key).encode()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            return jwt.algorithms.ECAlgorithm.to_jwk(public_key).encode()
        return jwt.algorithms.OKPAlgorithm.to_jwk(public_key).encode()
    if encoding == "pem-pkcs1":
        return bytes(public_key.public_bytes(PEM, serialization.PublicFormat.PKCS1))
    if encoding == "der-pkcs1":
        return bytes(public_key.public_bytes(DER, serialization.PublicFormat.PKCS1))
    if encoding == "x962":
        return bytes(public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
    if encoding == "x962-compressed":
        return bytes(public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint))
    if encoding == "raw":
        return bytes(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    raise AssertionError(encoding)


@pytest.mark.parametrize(
    ("key", "encoding"),
    [pytest.param(key, encoding, id=f"{key}-{encoding}") for key, names in KEY_ENCODINGS.items() for encoding in names],
)
@pytest.mark.parametrize("hs_alg", ["HS256", "HS384", "HS512"])
def test_hmac_token_keyed_with_the_providers_public_key_is_refused(
    key_api: Callable[[str], Api], jwtgate_keys: dict[str, KeyPair], key: str, encoding: str, hs_alg: str
) -> None:
    pair = jwtgate_keys[key]
    api = key_api(key)
    secret = public_key_as(pair.public_key, encoding)
    token = craft({"alg": hs_alg, "typ": "JWT"}, fresh_claims(), key=secret, alg=hs_alg)
    assert_refused(api, api.get(token), "alg_not_allowed")


@pytest.mark.parametrize("hs_alg", ["HS256", "HS384", "HS512"])
def test_hmac_token_keyed_with_the_public_key_is_refused_by_the_single_provider_shorthand(
    make_api: Callable[..., Api], jwtgate_keys: dict[str, KeyPair], hs_alg: str
) -> None:
    pem = jwtgate_keys["rsa"].public_pem
    api = make_api(JWTGATE_PROVIDERS=[], JWTGATE_PUBLIC_KEY=pem)
    token = craft({"alg": hs_alg, "typ": "JWT"}, fresh_claims(), key=pem.encode(), alg=hs_alg)
    assert_refused(api, api.get(token), "alg_not_allowed")


@pytest.mark.parametrize(
    "algorithms",
    [["HS256"], ["none"], ["RS256", "HS256"], ["RS256", "none"]],
    ids=["hs256", "none", "rs+hs", "rs+none"],
)
def test_a_provider_cannot_be_configured_with_hmac_or_none(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_keys: dict[str, KeyPair], algorithms: list[str]
) -> None:
    with pytest.raises(ConfigurationError, match="algorithms"):
        jwtgate_app_factory(JWTGATE_PROVIDERS=[provider(jwtgate_keys["rsa"], algorithms=algorithms)])


# -- 3. algorithm substitution among asymmetric algorithms ---------------------------------------------------------

SUBSTITUTIONS = [
    # (provider's key, signing key, algorithm used to sign, algorithm named in the header)
    pytest.param("rsa", "rsa", "PS256", "PS256", id="rs256-provider-PS256"),
    pytest.param("rsa", "rsa", "PS384", "PS384", id="rs256-provider-PS384"),
    pytest.param("rsa", "rsa", "PS512", "PS512", id="rs256-provider-PS512"),
    pytest.param("rsa", "rsa", "RS384", "RS384", id="rs256-provider-RS384"),
    pytest.param("rsa", "rsa", "RS512", "RS512", id="rs256-provider-RS512"),
    pytest.param("rsa", "rsa", "RS256", "rs256", id="rs256-provider-lower-case-name"),
    pytest.param("rsa", "ec256", "ES256", "ES256", id="rs256-provider-ES256"),
    pytest.param("rsa", "ed25519", "EdDSA", "EdDSA", id="rs256-provider-EdDSA"),
    pytest.param("ec256", "ec384", "ES384", "ES384", id="es256-provider-ES384"),
    pytest.param("ec256", "ec256", "ES256", "ES256K", id="es256-provider-ES256K-name"),
    pytest.param("ec256", "rsa", "RS256", "RS256", id="es256-provider-RS256"),
    pytest.param("ec256", "ed25519", "EdDSA", "EdDSA", id="es256-provider-EdDSA"),
    pytest.param("ec384", "ec256", "ES256", "ES256", id="es384-provider-ES256"),
    pytest.param("ed25519", "ed25519", "EdDSA", "Ed25519", id="eddsa-provider-Ed25519-name"),
    pytest.param("ed25519", "ec256", "ES256", "ES256", id="eddsa-provider-ES256"),
    pytest.param("ed25519", "rsa", "RS256", "RS256", id="eddsa-provider-RS256"),
]


@pytest.mark.parametrize(("provider_key", "signing_key", "sign_alg", "header_alg"), SUBSTITUTIONS)
def test_an_algorithm_the_provider_does_not_allow_is_refused(
    key_api: Callable[[str], Api],
    jwtgate_keys: dict[str, KeyPair],
    provider_key: str,
    signing_key: str,
    sign_alg: str,
    header_alg: str,
) -> None:
    api = key_api(provider_key)
    token = craft(
        {"alg": header_alg, "typ": "JWT"}, fresh_claims(), key=jwtgate_keys[signing_key].private_key, alg=sign_alg
    )
    assert_refused(api, api.get(token), "alg_not_allowed")


def test_only_the_configured_asymmetric_algorithms_are_accepted(
    make_api: Callable[..., Api], jwtgate_token_factory: Factory, jwtgate_keys: dict[str, KeyPair]
) -> None:
    api = make_api(JWTGATE_PROVIDERS=[provider(jwtgate_keys["rsa"], algorithms=["RS256", "PS256"])])

    assert_accepted(api, api.get(jwtgate_token_factory(algorithm="PS256")))
    api.view_calls.clear()
    assert_refused(api, api.get(jwtgate_token_factory(algorithm="PS512")), "alg_not_allowed")


def _der_signature(raw: bytes) -> bytes:
    half = len(raw) // 2
    return bytes(encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")))


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.mark.parametrize(
    ("key", "forge"),
    [
        pytest.param("rsa", lambda sig: b"\x00" * len(sig), id="rsa-zero"),
        pytest.param("rsa", lambda sig: b"\xff" * len(sig), id="rsa-all-ones"),
        pytest.param("rsa", lambda sig: b"\x01", id="rsa-one-byte"),
        pytest.param("ec256", lambda sig: b"\x00" * 64, id="es256-r-s-zero"),
        pytest.param("ec256", lambda sig: P256_ORDER.to_bytes(32, "big") * 2, id="es256-r-s-curve-order"),
        pytest.param("ec256", _der_signature, id="es256-der-encoded"),
        pytest.param("ec256", lambda sig: sig[:32], id="es256-r-only"),
        pytest.param("ed25519", lambda sig: b"\x00" * 64, id="eddsa-zero"),
    ],
)
def test_degenerate_signatures_are_refused(
    key_api: Callable[[str], Api],
    jwtgate_token_factory: Factory,
    key: str,
    forge: Callable[[bytes], bytes],
) -> None:
    api = key_api(key)
    signing_input, _, signature = jwtgate_token_factory(key=key).rpartition(".")
    token = f"{signing_input}.{b64url(forge(b64url_decode(signature)))}"
    assert_refused(api, api.get(token), "bad_signature")


def test_the_der_helper_really_makes_a_der_signature(jwtgate_keys: dict[str, KeyPair]) -> None:
    raw = ALGORITHMS["ES256"].sign(b"message", jwtgate_keys["ec256"].private_key)
    r, s = decode_dss_signature(_der_signature(raw))
    assert (r.to_bytes(32, "big") + s.to_bytes(32, "big")) == raw


# -- 4. tampered and truncated segments ----------------------------------------------------------------------------


def _with_claims(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims.update(changes)
    return f"{header}.{encode(claims)}.{signature}"


def _flip_payload_byte(token: str) -> str:
    header, payload, signature = token.split(".")
    return f"{header}.{encode(b64url_decode(payload).replace(b'alice', b'alicf'))}.{signature}"


def _respaced_header(token: str) -> str:
    header, payload, signature = token.split(".")
    return f"{encode(json.dumps(json.loads(b64url_decode(header)), indent=1))}.{payload}.{signature}"


def _flip_signature_char(token: str) -> str:
    signing_input, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    swapped = "B" if signature[middle] == "A" else "A"
    return f"{signing_input}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


TAMPERINGS = [
    pytest.param(lambda t: _with_claims(t, sub="admin"), "bad_signature", id="payload-sub-changed"),
    pytest.param(lambda t: _with_claims(t, groups=["jwtgate-admins"]), "bad_signature", id="payload-groups-added"),
    pytest.param(lambda t: _with_claims(t, exp=int(time.time()) + 10**6), "bad_signature", id="payload-exp-extended"),
    pytest.param(_flip_payload_byte, "bad_signature", id="payload-byte-flipped"),
    pytest.param(_respaced_header, "bad_signature", id="header-re-encoded-same-json"),
    pytest.param(_flip_signature_char, "bad_signature", id="signature-char-changed"),
    pytest.param(lambda t: t[:-2], "bad_signature", id="signature-one-byte-short"),
    pytest.param(lambda t: t[:-1], "malformed_token", id="signature-truncated-impossible-length"),
    pytest.param(lambda t: t[: t.rindex(".") + 101], "bad_signature", id="signature-truncated-to-75-bytes"),
    pytest.param(lambda t: t + "AAAA", "bad_signature", id="signature-extended"),
    pytest.param(lambda t: t[: t.rindex(".") + 1], "malformed_token", id="signature-removed"),
    pytest.param(lambda t: t[: t.rindex(".")], "unknown_token", id="signature-segment-dropped"),
    pytest.param(lambda t: t.split(".", 1)[1], "unknown_token", id="header-segment-dropped"),
    pytest.param(lambda t: t + "." + t.split(".")[2], "unknown_token", id="extra-segment"),
    pytest.param(lambda t: "..", "malformed_token", id="all-segments-empty"),
    pytest.param(lambda t: "." + t.split(".", 1)[1], "malformed_token", id="header-empty"),
    pytest.param(lambda t: t.split(".")[0] + ".." + t.split(".")[2], "malformed_token", id="payload-empty"),
    pytest.param(lambda t: t.replace(".", "..", 1), "unknown_token", id="doubled-dot"),
    pytest.param(lambda t: t + "..", "unsupported_token", id="five-segments"),
    pytest.param(lambda t: t[:-4] + "+/+/", "malformed_token", id="standard-base64-alphabet"),
    pytest.param(lambda t: t[:-1] + "~", "malformed_token", id="tilde-in-signature"),
]


@pytest.mark.parametrize(("tamper", "reason"), TAMPERINGS)
def test_tampered_token_is_refused(
    api: Api, jwtgate_token_factory: Factory, tamper: Callable[[str], str], reason: str
) -> None:
    assert_refused(api, api.get(tamper(jwtgate_token_factory())), reason)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: t.replace(".", "=.", 1), id="padding-after-header"),
        pytest.param(lambda t: t[: t.rindex(".")] + "==" + t[t.rindex(".") :], id="padding-after-payload"),
        pytest.param(lambda t: t.replace(".", " .", 1), id="space-inside"),
        pytest.param(lambda t: t[:-3] + "%2B", id="percent-encoded"),
    ],
)
def test_token_that_is_not_a_single_b64token_is_a_malformed_request(
    api: Api, jwtgate_token_factory: Factory, tamper: Callable[[str], str]
) -> None:
    response = api.get(tamper(jwtgate_token_factory()))
    assert_refused(api, response, "malformed_credentials", error="invalid_request")


def test_jwe_shaped_token_is_refused(api: Api) -> None:
    header = encode({"alg": "RSA-OAEP-256", "enc": "A256GCM", "typ": "JWT"})
    token = ".".join([header, b64url(b"k" * 256), b64url(b"iv" * 6), b64url(b"ciphertext"), b64url(b"t" * 16)])
    assert_refused(api, api.get(token), "unsupported_token")


@pytest.mark.parametrize("key", ["rsa", "ec256", "ed25519"])
@pytest.mark.parametrize("padded_first", [True, False], ids=["padded-first", "plain-first"])
def test_signature_with_base64_padding_is_the_same_token(
    make_api: Callable[..., Api], jwtgate_keys: dict[str, KeyPair], key: str, padded_first: bool
) -> None:
    pair = jwtgate_keys[key]
    api = make_api(JWTGATE_PROVIDERS=[provider(pair)])
    token = craft({"alg": pair.algorithm, "typ": "JWT"}, fresh_claims(), key=pair.private_key, alg=pair.algorithm)
    spellings = [token + "==", token] if padded_first else [token, token + "=="]

    first, second = (api.get(spelling, "/api/whoami") for spelling in spellings)

    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json()
    assert first.get_json()["username"] == "alice"
    assert first.get_json()["token_id"].startswith("sha256:")


@pytest.mark.parametrize(
    ("key", "padding"),
    [
        pytest.param("rsa", "=", id="rsa-one"),
        pytest.param("rsa", "===", id="rsa-three"),
        pytest.param("rsa", "====", id="rsa-four"),
        pytest.param("ec256", "=", id="es256-one"),
        pytest.param("ec256", "===", id="es256-three"),
        pytest.param("ed25519", "=", id="eddsa-one"),
        pytest.param("ed25519", "===", id="eddsa-three"),
        pytest.param("ec384", "==", id="es384-needs-no-padding"),
        pytest.param("ec384", "=", id="es384-one"),
    ],
)
def test_signature_with_wrong_base64_padding_is_refused(
    key_api: Callable[[str], Api], jwtgate_token_factory: Factory, key: str, padding: str
) -> None:
    api = key_api(key)
    assert_refused(api, api.get(jwtgate_token_factory(key=key) + padding), "malformed_token")


def _non_canonical(segment: str) -> str:
    """The same bytes with the unused low bits of the last character set (what a lenient decoder accepts)."""
    assert len(segment) % 4 in (2, 3), "this segment has no unused bits"
    last = B64URL_ALPHABET.index(segment[-1])
    variant = segment[:-1] + B64URL_ALPHABET[last ^ 1]
    assert b64url_decode(variant) == b64url_decode(segment)
    return variant


@pytest.mark.parametrize("key", ["rsa", "ec256", "ed25519"])
def test_signature_with_non_canonical_trailing_bits_is_refused(
    key_api: Callable[[str], Api], jwtgate_token_factory: Factory, key: str
) -> None:
    api = key_api(key)
    token = jwtgate_token_factory(key=key)
    signing_input, _, signature = token.rpartition(".")
    assert api.get(token).status_code == 200
    api.view_calls.clear()

    assert_refused(api, api.get(f"{signing_input}.{_non_canonical(signature)}"), "malformed_token")


def test_payload_with_non_canonical_trailing_bits_is_refused(api: Api, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = fresh_claims(pad="")
    while len(encode(claims)) % 4 != 2:
        claims["pad"] += "x"
    header, payload, _ = rs256(claims, rsa_key).split(".")
    variant = f"{header}.{_non_canonical(payload)}"
    token = f"{variant}.{b64url(ALGORITHMS['RS256'].sign(variant.encode(), rsa_key))}"

    assert_refused(api, api.get(token), "malformed_token")


def test_random_single_character_mutations_are_all_refused(api: Api, jwtgate_token_factory: Factory) -> None:
    token = jwtgate_token_factory()
    rng = random.Random(20240611)
    outcomes: dict[int, int] = {}
    for _ in range(300):
        position = rng.randrange(len(token))
        replacement = rng.choice([c for c in B64URL_ALPHABET + ".=" if c != token[position]])
        response = api.get(token[:position] + replacement + token[position + 1 :])
        outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
    assert outcomes == {401: 300}
    assert api.view_calls == []


# -- 5. header attacks ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and fail) any attempt to resolve or connect: a ``jku``/``x5u`` URL must never be fetched."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def _self_signed_certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
        .not_valid_after(datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def test_embedded_jwk_of_the_attackers_key_is_never_trusted(api: Api, attacker_rsa: rsa.RSAPrivateKey) -> None:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker_rsa.public_key()))
    token = rs256(fresh_claims(), attacker_rsa, jwk=jwk, kid="attacker")
    assert_refused(api, api.get(token), "bad_signature")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"jku": "https://attacker.example/jwks.json"}, id="jku"),
        pytest.param({"jku": "http://127.0.0.1:1/jwks.json", "kid": "1"}, id="jku-localhost"),
        pytest.param({"x5u": "https://attacker.example/cert.pem"}, id="x5u"),
        pytest.param({"x5c": "certificate"}, id="x5c"),
        pytest.param({"x5c": "certificate", "x5t#S256": "AAAA"}, id="x5c-with-thumbprint"),
    ],
)
def test_key_location_headers_are_never_used(
    api: Api, attacker_rsa: rsa.RSAPrivateKey, no_network: list[Any], header: dict[str, Any]
) -> None:
    header = dict(header)
    if "x5c" in header:
        header["x5c"] = [base64.b64encode(_self_signed_certificate(attacker_rsa)).decode()]
    token = rs256(fresh_claims(), attacker_rsa, **header)

    assert_refused(api, api.get(token), "bad_signature")
    assert no_network == []


KIDS = [
    pytest.param("../../../../../../dev/null", id="path-traversal"),
    pytest.param("/etc/passwd", id="absolute-path"),
    pytest.param("' OR '1'='1' --", id="sql"),
    pytest.param("key\n1", id="newline"),
    pytest.param("key\r\nX-Injected: yes", id="header-injection"),
    pytest.param("", id="empty"),
    pytest.param("\u0000", id="nul"),
    pytest.param("k" * 1000, id="long"),
]


@pytest.mark.parametrize("kid", KIDS)
def test_kid_signed_by_the_wrong_key_is_refused(api: Api, attacker_rsa: rsa.RSAPrivateKey, kid: str) -> None:
    assert_refused(api, api.get(rs256(fresh_claims(), attacker_rsa, kid=kid)), "bad_signature")


@pytest.mark.parametrize("kid", KIDS)
def test_kid_does_not_matter_with_the_right_key(api: Api, rsa_key: rsa.RSAPrivateKey, kid: str) -> None:
    assert_accepted(api, api.get(rs256(fresh_claims(), rsa_key, kid=kid)))


@pytest.mark.parametrize("kid", [42, ["a"], {"k": 1}], ids=["number", "list", "object"])
def test_kid_that_is_not_a_string_is_refused(api: Api, rsa_key: rsa.RSAPrivateKey, kid: Any) -> None:
    assert_refused(api, api.get(rs256(fresh_claims(), rsa_key, kid=kid)), "malformed_token")


def _header_of_length(length: int) -> str:
    """A valid RS256 header whose base64url segment is exactly ``length`` characters (a multiple of 4)."""
    base = '{"alg":"RS256","typ":"JWT","x":""}'
    raw_length = length // 4 * 3
    return base[:-2] + "a" * (raw_length - len(base)) + '"}'


def test_header_at_the_size_limit_is_accepted(api: Api, rsa_key: rsa.RSAPrivateKey) -> None:
    header = _header_of_length(2048)
    assert len(encode(header)) == 2048
    assert_accepted(api, api.get(craft(header, fresh_claims(), key=rsa_key)))


HOSTILE_HEADERS = [
    pytest.param(_header_of_length(2052), "malformed_token", id="over-2KiB"),
    pytest.param(json.dumps({"alg": "RS256", "x": "a" * 100_000}), "malformed_token", id="100KB"),
    pytest.param('["RS256"]', "malformed_token", id="json-array"),
    pytest.param('"RS256"', "malformed_token", id="json-string"),
    pytest.param("256", "malformed_token", id="json-number"),
    pytest.param("null", "malformed_token", id="json-null"),
    pytest.param("", "malformed_token", id="empty"),
    pytest.param('{"alg":"RS256"', "malformed_token", id="truncated-json"),
    pytest.param('{"alg":"RS256",}', "malformed_token", id="trailing-comma"),
    pytest.param('{"alg":"RS256","x":NaN}', "malformed_token", id="NaN"),
    pytest.param(b'{"alg":"RS256","x":"\xff"}', "malformed_token", id="invalid-utf8"),
    pytest.param("[" * 3000 + "]" * 3000, "malformed_token", id="arrays-3000-deep"),
    pytest.param('{"a":' * 3000 + "1" + "}" * 3000, "malformed_token", id="objects-3000-deep"),
    # Deep, but small enough to parse: it is just a header whose signature is then checked.
    pytest.param('{"alg":"RS256","x":' + "[" * 600 + "]" * 600 + "}", "bad_signature", id="arrays-600-deep"),
]


@pytest.mark.parametrize(("header", "reason"), HOSTILE_HEADERS)
def test_hostile_header_is_refused(api: Api, header: str | bytes, reason: str) -> None:
    token = craft(header, fresh_claims(), signature=b"\x00" * 256)
    assert_refused(api, api.get(token), reason)


HOSTILE_PAYLOADS = [
    pytest.param('["alice"]', id="json-array"),
    pytest.param('"alice"', id="json-string"),
    pytest.param("null", id="json-null"),
    pytest.param('{"sub":"alice"', id="truncated-json"),
    pytest.param(b'{"sub":"\xff"}', id="invalid-utf8"),
    pytest.param("[" * 3000 + "]" * 3000, id="arrays-3000-deep"),
    pytest.param('{"sub":"alice","x":' + '{"a":' * 1500 + "1" + "}" * 1500 + "}", id="objects-1500-deep"),
    pytest.param('{"sub":"alice","exp":1' + "0" * 5000 + "}", id="5000-digit-number"),
    pytest.param('{"sub":"alice","exp":NaN}', id="NaN"),
]


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS)
def test_hostile_payload_is_refused_as_malformed(api: Api, rsa_key: rsa.RSAPrivateKey, payload: str | bytes) -> None:
    assert_refused(api, api.get(rs256(payload, rsa_key)), "malformed_token")


def test_token_longer_than_16_kib_is_refused(api: Api, jwtgate_token_factory: Factory) -> None:
    token = jwtgate_token_factory(claims={"padding": "x" * 13_000})
    assert len(token) > 16 * 1024
    assert_refused(api, api.get(token), "malformed_token")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"crit": ["exp"], "exp": 1}, id="crit-exp"),
        pytest.param({"crit": ["b64"], "b64": False}, id="crit-b64-false"),
        pytest.param({"crit": []}, id="crit-empty"),
        pytest.param({"crit": "x"}, id="crit-string"),
        pytest.param({"crit": ["unknown-extension"], "unknown-extension": True}, id="crit-unknown"),
        pytest.param({"b64": False}, id="b64-false"),
        pytest.param({"b64": True}, id="b64-true"),
    ],
)
def test_critical_header_extensions_are_refused(api: Api, rsa_key: rsa.RSAPrivateKey, header: dict[str, Any]) -> None:
    assert_refused(api, api.get(rs256(fresh_claims(), rsa_key, **header)), "unsupported_header")


def test_unencoded_detached_payload_is_refused(api: Api, rsa_key: rsa.RSAPrivateKey) -> None:
    header = encode({"alg": "RS256", "b64": False, "crit": ["b64"]})
    payload = json.dumps(fresh_claims())
    signature = ALGORITHMS["RS256"].sign(f"{header}.{payload}".encode(), rsa_key)
    assert_refused(api, api.get(f"{header}..{b64url(signature)}"), "malformed_token")


@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/jwt", "json"])
def test_nested_token_content_type_is_refused(api: Api, rsa_key: rsa.RSAPrivateKey, cty: str) -> None:
    assert_refused(api, api.get(rs256(fresh_claims(), rsa_key, cty=cty)), "unsupported_token")


@pytest.mark.parametrize("typ", ["JWE", "JOSE", "JOSE+JSON", "dpop+jwt", "secevent+jwt", "", 1, ["JWT"], {"t": 1}])
def test_typ_other_than_jwt_is_refused(api: Api, rsa_key: rsa.RSAPrivateKey, typ: Any) -> None:
    token = craft({"alg": "RS256", "typ": typ}, fresh_claims(), key=rsa_key)
    assert_refused(api, api.get(token), "unsupported_token")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt", "application/at+jwt", None])
def test_typ_jwt_or_access_token_is_accepted(api: Api, rsa_key: rsa.RSAPrivateKey, typ: str | None) -> None:
    header = {"alg": "RS256"} if typ is None else {"alg": "RS256", "typ": typ}
    assert_accepted(api, api.get(craft(header, fresh_claims(), key=rsa_key)))


# -- 6. claims -------------------------------------------------------------------------------------------------------


@pytest.fixture
def clocked_api(jwtgate_keys: dict[str, KeyPair], clock: Any) -> Api:
    """The plugin's app with the gate on conftest's controllable clock (the app factory takes no clock)."""
    app = Flask("jwtgate_clocked_app")
    app.config.update(TESTING=True, JWTGATE_PROVIDERS=[provider(jwtgate_keys["rsa"])])
    JWTGate(app, clock=clock)

    @app.get("/api/items")
    def items() -> Any:
        return jsonify(user=current_identity.username, groups=sorted(current_identity.groups))

    return Api(app)


@pytest.mark.parametrize(
    ("expires_in", "accepted"),
    [
        pytest.param(300, True, id="valid"),
        pytest.param(-59, True, id="expired-59s-within-leeway"),
        pytest.param(-60, False, id="expired-60s-at-leeway"),
        pytest.param(-61, False, id="expired-61s-beyond-leeway"),
        pytest.param(-86_400, False, id="expired-a-day-ago"),
    ],
)
def test_expiry_allows_exactly_the_leeway(
    clocked_api: Api, clock: Any, jwtgate_token_factory: Factory, expires_in: int, accepted: bool
) -> None:
    response = clocked_api.get(jwtgate_token_factory(now=clock.now, expires_in=expires_in))
    if accepted:
        assert_accepted(clocked_api, response)
    else:
        assert_refused(clocked_api, response, "expired")


def test_a_cached_token_is_refused_once_it_expires(
    clocked_api: Api, clock: Any, jwtgate_token_factory: Factory
) -> None:
    token = jwtgate_token_factory(now=clock.now, expires_in=300)
    assert_accepted(clocked_api, clocked_api.get(token))
    clocked_api.view_calls.clear()

    clock.advance(361)

    assert_refused(clocked_api, clocked_api.get(token), "expired")


def test_token_without_exp_is_refused(clocked_api: Api, clock: Any, rsa_key: rsa.RSAPrivateKey) -> None:
    token = rs256({"sub": "alice", "iat": int(clock.now)}, rsa_key)
    assert_refused(clocked_api, clocked_api.get(token), "invalid_claim")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value",
    ["9999999999", True, False, [9999999999], None, {"$date": 9999999999}, ""],
    ids=["numeric-string", "true", "false", "list", "null", "object", "empty-string"],
)
def test_date_claim_that_is_not_a_number_is_refused(
    clocked_api: Api, clock: Any, jwtgate_token_factory: Factory, claim: str, value: Any
) -> None:
    token = jwtgate_token_factory(now=clock.now, claims={claim: value})
    assert_refused(clocked_api, clocked_api.get(token), "invalid_claim")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        pytest.param("NaN", "malformed_token", id="NaN"),
        pytest.param("Infinity", "malformed_token", id="Infinity"),
        pytest.param("-Infinity", "malformed_token", id="minus-Infinity"),
        pytest.param("1e999", "invalid_claim", id="1e999-overflows-to-inf"),
        pytest.param("-1e999", "invalid_claim", id="minus-1e999"),
        pytest.param("1" + "0" * 400, "invalid_claim", id="400-digit-integer"),
        pytest.param("-1" + "0" * 400, "invalid_claim", id="minus-400-digit-integer"),
    ],
)
def test_date_claim_that_is_not_a_finite_number_is_refused(
    clocked_api: Api, clock: Any, rsa_key: rsa.RSAPrivateKey, claim: str, literal: str, reason: str
) -> None:
    dates = {"iat": str(int(clock.now)), "exp": str(int(clock.now) + 300), claim: literal}
    payload = '{"sub":"alice",' + ",".join(f'"{name}":{value}' for name, value in dates.items()) + "}"
    assert_refused(clocked_api, clocked_api.get(rs256(payload, rsa_key)), reason)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"nbf": 61}, "not_yet_valid", id="nbf-61s-ahead"),
        pytest.param({"nbf": 86_400}, "not_yet_valid", id="nbf-a-day-ahead"),
        pytest.param({"iat": 61}, "issued_in_future", id="iat-61s-ahead"),
        pytest.param({"iat": 86_400}, "issued_in_future", id="iat-a-day-ahead"),
        pytest.param({"nbf": 60}, None, id="nbf-60s-ahead-within-leeway"),
        pytest.param({"iat": 60}, None, id="iat-60s-ahead-within-leeway"),
    ],
)
def test_token_from_the_future_is_refused_beyond_the_leeway(
    clocked_api: Api, clock: Any, jwtgate_token_factory: Factory, claims: dict[str, int], reason: str | None
) -> None:
    dated = {name: int(clock.now) + ahead for name, ahead in claims.items()}
    response = clocked_api.get(jwtgate_token_factory(now=clock.now, claims=dated))
    if reason is None:
        assert_accepted(clocked_api, response)
    else:
        assert_refused(clocked_api, response, reason)


@pytest.mark.parametrize(
    "sub",
    [42, 0, "", "   ", ["alice"], None, {"name": "alice"}, True],
    ids=["int", "zero", "empty", "blank", "list", "null", "object", "bool"],
)
def test_username_claim_that_is_not_a_username_is_refused(api: Api, jwtgate_token_factory: Factory, sub: Any) -> None:
    assert_refused(api, api.get(jwtgate_token_factory(claims={"sub": sub})), "no_username")


def test_token_without_a_username_claim_is_refused(api: Api, rsa_key: rsa.RSAPrivateKey) -> None:
    claims = fresh_claims()
    del claims["sub"]
    assert_refused(api, api.get(rs256(claims, rsa_key)), "no_username")


@pytest.mark.parametrize(
    "groups",
    [
        "admins",
        ["admins", 1],
        ["admins", None],
        {"admins": True},
        [["admins"]],
        "admins,users",
        ["Admins"],
        ["admins "],
    ],
    ids=["string", "list-with-int", "list-with-null", "object", "nested-list", "comma-string", "case", "space"],
)
def test_groups_claim_that_is_not_a_list_of_names_grants_no_group(
    make_api: Callable[..., Api], jwtgate_token_factory: Factory, groups: Any
) -> None:
    api = make_api(JWTGATE_ALLOWED_GROUPS=["admins"])
    assert_forbidden(api, api.get(jwtgate_token_factory(claims={"groups": groups})), "group_not_allowed")


def test_groups_claim_with_the_allowed_group_is_accepted(
    make_api: Callable[..., Api], jwtgate_token_factory: Factory
) -> None:
    api = make_api(JWTGATE_ALLOWED_GROUPS=["admins"])
    assert_accepted(api, api.get(jwtgate_token_factory(groups=["users", "admins"])))


# -- 7. issuer and audience ----------------------------------------------------------------------------------------


@pytest.fixture
def issuer_api(make_api: Callable[..., Api], jwtgate_keys: dict[str, KeyPair]) -> Api:
    return make_api(JWTGATE_PROVIDERS=[provider(jwtgate_keys["rsa"], issuer=ISSUER)])


@pytest.mark.parametrize(
    "iss",
    [
        pytest.param(None, id="missing"),
        pytest.param("https://evil.example.com", id="other"),
        pytest.param(ISSUER + ".evil", id="suffix-domain"),
        pytest.param(ISSUER + "/", id="trailing-slash"),
        pytest.param(ISSUER + "/realms/x", id="sub-path"),
        pytest.param("https://idp.example.co", id="prefix"),
        pytest.param("http://idp.example.com", id="http"),
        pytest.param(ISSUER.upper(), id="upper-case"),
        pytest.param(ISSUER + " ", id="trailing-space"),
        pytest.param("", id="empty"),
        pytest.param([ISSUER], id="list"),
        pytest.param({"iss": ISSUER}, id="object"),
    ],
)
def test_wrong_issuer_is_refused(issuer_api: Api, rsa_key: rsa.RSAPrivateKey, iss: Any) -> None:
    # Crafted rather than from the factory: PyJWT refuses to encode a non-string 'iss'.
    token = rs256(fresh_claims() if iss is None else fresh_claims(iss=iss), rsa_key)
    assert_refused(issuer_api, issuer_api.get(token), "wrong_issuer")


def test_right_issuer_is_accepted(issuer_api: Api, jwtgate_token_factory: Factory) -> None:
    assert_accepted(issuer_api, issuer_api.get(jwtgate_token_factory(issuer=ISSUER)))


@pytest.fixture
def audience_api(make_api: Callable[..., Api], jwtgate_keys: dict[str, KeyPair]) -> Api:
    return make_api(JWTGATE_PROVIDERS=[provider(jwtgate_keys["rsa"], audience=AUDIENCE)])


@pytest.mark.parametrize(
    "aud",
    [
        pytest.param(None, id="missing"),
        pytest.param("other-api", id="other"),
        pytest.param("jwtgate", id="substring"),
        pytest.param(AUDIENCE + "-v2", id="superstring"),
        pytest.param(AUDIENCE.upper(), id="upper-case"),
        pytest.param(42, id="int"),
        pytest.param(["other-api", "another-api"], id="list-without-match"),
        pytest.param([], id="empty-list"),
        pytest.param("", id="empty-string"),
        pytest.param([AUDIENCE, 1], id="list-with-a-non-string"),
        pytest.param({AUDIENCE: True}, id="object"),
    ],
)
def test_wrong_audience_is_refused(audience_api: Api, jwtgate_token_factory: Factory, aud: Any) -> None:
    token = jwtgate_token_factory(claims={} if aud is None else {"aud": aud})
    assert_refused(audience_api, audience_api.get(token), "wrong_audience")


@pytest.mark.parametrize("aud", [AUDIENCE, [AUDIENCE], ["other-api", AUDIENCE]], ids=["string", "list", "list-of-two"])
def test_right_audience_is_accepted(audience_api: Api, jwtgate_token_factory: Factory, aud: Any) -> None:
    assert_accepted(audience_api, audience_api.get(jwtgate_token_factory(audience=aud)))


@pytest.mark.parametrize("aud", [AUDIENCE, [AUDIENCE], []], ids=["string", "list", "empty-list"])
def test_token_with_an_audience_is_refused_by_a_provider_without_one(
    api: Api, jwtgate_token_factory: Factory, aud: Any
) -> None:
    assert_refused(api, api.get(jwtgate_token_factory(audience=aud)), "wrong_audience")


ISSUER_B = "https://login.other.example"


@pytest.fixture
def two_provider_api(make_api: Callable[..., Api], jwtgate_keys: dict[str, KeyPair], other_rsa: KeyPair) -> Api:
    return make_api(
        JWTGATE_PROVIDERS=[
            provider(jwtgate_keys["rsa"], "a", issuer=ISSUER, directory_users=True),
            provider(other_rsa, "b", issuer=ISSUER_B, directory_users=False),
            provider(jwtgate_keys["ec256"], "c", issuer="https://ec.example", directory_users=False),
        ]
    )


@pytest.mark.parametrize(
    ("iss", "signer", "reason"),
    [
        pytest.param(ISSUER, "b", "bad_signature", id="names-a-signed-by-b"),
        pytest.param(ISSUER_B, "a", "bad_signature", id="names-b-signed-by-a"),
        pytest.param("https://ec.example", "a", "alg_not_allowed", id="names-ec-provider-signed-with-rsa"),
        pytest.param("https://unknown.example", "a", "unknown_issuer", id="unknown-issuer"),
        pytest.param(ISSUER + "/", "a", "unknown_issuer", id="near-miss-issuer"),
        pytest.param(None, "a", "unknown_issuer", id="no-issuer"),
        pytest.param([ISSUER], "a", "unknown_issuer", id="issuer-list"),
    ],
)
def test_with_several_providers_the_issuer_chooses_the_one_key(
    two_provider_api: Api,
    jwtgate_keys: dict[str, KeyPair],
    other_rsa: KeyPair,
    iss: Any,
    signer: str,
    reason: str,
) -> None:
    key = jwtgate_keys["rsa"].private_key if signer == "a" else other_rsa.private_key
    claims = fresh_claims() if iss is None else fresh_claims(iss=iss)
    assert_refused(two_provider_api, two_provider_api.get(rs256(claims, key)), reason)


def test_with_several_providers_each_accepts_its_own_tokens(
    two_provider_api: Api, jwtgate_keys: dict[str, KeyPair], other_rsa: KeyPair
) -> None:
    for iss, pair in ((ISSUER, jwtgate_keys["rsa"]), (ISSUER_B, other_rsa)):
        response = two_provider_api.get(rs256(fresh_claims(iss=iss), pair.private_key), "/api/whoami")
        assert response.status_code == 200
    assert two_provider_api.view_calls == ["whoami", "whoami"]


# -- 9. bad tokens on a public path --------------------------------------------------------------------------------

BAD_TOKENS: list[Any] = [
    pytest.param(lambda keys, make: make(expires_in=-3600), "expired", id="expired"),
    pytest.param(lambda keys, make: _with_claims(make(), sub="admin"), "bad_signature", id="tampered"),
    pytest.param(lambda keys, make: make(key="ec256"), "alg_not_allowed", id="wrong-algorithm"),
    pytest.param(lambda keys, make: craft({"alg": "none"}, fresh_claims(), signature=b"x"), "alg_none", id="alg-none"),
    pytest.param(
        lambda keys, make: craft({"alg": "HS256"}, fresh_claims(), key=keys["rsa"].public_pem.encode(), alg="HS256"),
        "alg_not_allowed",
        id="hs256-key-confusion",
    ),
    pytest.param(lambda keys, make: make(claims={"sub": ""}), "no_username", id="no-username"),
    pytest.param(lambda keys, make: make(headers={"crit": ["exp"]}), "unsupported_header", id="crit"),
    pytest.param(lambda keys, make: make() + "=", "malformed_token", id="bad-padding"),
    pytest.param(lambda keys, make: "a.b.c.d.e", "unsupported_token", id="jwe-shaped"),
    pytest.param(lambda keys, make: "not-a-jwt", "unknown_token", id="not-a-jwt"),
    pytest.param(lambda keys, make: "jgt_" + "A" * 43, "unknown_token", id="unknown-api-token"),
]


@pytest.mark.parametrize(("build", "reason"), BAD_TOKENS)
def test_bad_token_on_a_public_path_is_refused(
    api: Api, jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: Factory, build: Any, reason: str
) -> None:
    token = build(jwtgate_keys, jwtgate_token_factory)
    assert_refused(api, api.get(token, "/api/status"), reason)


@pytest.mark.parametrize(("build", "reason"), BAD_TOKENS)
def test_bad_token_on_a_protected_path_is_refused(
    api: Api, jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: Factory, build: Any, reason: str
) -> None:
    token = build(jwtgate_keys, jwtgate_token_factory)
    assert_refused(api, api.get(token), reason)


def test_public_path_without_credentials_is_open(api: Api) -> None:
    response = api.app.test_client().get("/api/status")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "user": None}


def test_public_path_with_a_valid_token_knows_the_caller(api: Api, jwtgate_token_factory: Factory) -> None:
    response = api.get(jwtgate_token_factory("bob"), "/api/status")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "user": "bob"}
