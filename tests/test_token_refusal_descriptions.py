"""What a caller is told about a refused JWT (``flask_jwtgate.verification``): the reason and the exact
``error_description`` of each check, as the body and the RFC 6750 challenge carry them; and the claim it names."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

import jwt
import pytest

from flask_jwtgate.errors import InvalidClaim, InvalidToken
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing import KeyPair
from flask_jwtgate.verification import JWTVerifier, canonical_token, check_claims

NOW = 1_800_000_000
ISSUER = "https://idp.example"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(value if isinstance(value, bytes) else json.dumps(value).encode())


def verifier(keys: dict[str, KeyPair], **provider: Any) -> JWTVerifier:
    entries = [{"name": "test", "public_key": keys["rsa"].public_pem, **provider}]
    if provider.pop("second", False):
        entries.append({"name": "other", "public_key": keys["ec256"].public_pem, "issuer": "https://other.example"})
    for entry in entries:
        entry.pop("second", None)
        if len(entries) > 1:
            entry["directory_users"] = True
    settings = Settings.from_mapping({"JWTGATE_PROVIDERS": entries, "JWTGATE_DATABASE_URI": "sqlite://"})
    return JWTVerifier(settings.providers, clock=lambda: NOW)


def signed(keys: dict[str, KeyPair], claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    payload = {"sub": "alice", "exp": NOW + 300, **claims}
    return jwt.encode(payload, keys["rsa"].private_key, algorithm="RS256", headers=headers)


def refusal(keys: dict[str, KeyPair], token: str, **provider: Any) -> tuple[str, str, str | None]:
    with pytest.raises(InvalidToken) as raised:
        verifier(keys, **provider).verify(token)
    return raised.value.reason, raised.value.description, getattr(raised.value, "claim", None)


HEADER = segment({"alg": "RS256", "typ": "JWT"})
PAYLOAD = segment({"sub": "alice", "exp": NOW + 300})


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("a" * 16385, ("malformed_token", "the token is longer than 16384 characters", None)),
        ("a" * 16384, ("malformed_token", "the token is not a JWT (header.payload.signature)", None)),  # not too long
        ("a.b.c.d.e", ("unsupported_token", "encrypted tokens (JWE) are not accepted", None)),
        ("a.b", ("malformed_token", "the token is not a JWT (header.payload.signature)", None)),
        ("a..c", ("malformed_token", "the token is not a JWT (header.payload.signature)", None)),
        ("e" * 2049 + ".b.c", ("malformed_token", "the token's header is too large", None)),
        ("a*b.b.c", ("malformed_token", "the token's header is not base64url", None)),
        ("abcde.b.c", ("malformed_token", "the token's header is not base64url", None)),  # 5 = 1 mod 4
        ("YR.b.c", ("malformed_token", "the token's header is not canonical base64url", None)),
        (f"{HEADER}.YR.c", ("malformed_token", "the token's payload is not canonical base64url", None)),
        (f"{HEADER}.{PAYLOAD}.YR", ("malformed_token", "the token's signature is not canonical base64url", None)),
        (f"{segment([1])}.b.c", ("malformed_token", "the token's header is not a JSON object", None)),
        (f"{segment(b'NaN')}.b.c", ("malformed_token", "the token's header is not a JSON object", None)),
        (f"{segment(b'{')}.b.c", ("malformed_token", "the token's header is not a JSON object", None)),
        (f"{HEADER}.{segment('x')}.c", ("malformed_token", "the token's payload is not a JSON object", None)),
        (f"{segment({'alg': 'none'})}.{PAYLOAD}.cQ", ("alg_none", "unsigned tokens (alg 'none') are refused", None)),
        (f"{segment({'alg': 5})}.{PAYLOAD}.cQ", ("alg_none", "unsigned tokens (alg 'none') are refused", None)),
        (f"{segment({'alg': 'HS256'})}.{PAYLOAD}.cQ",
         ("alg_not_allowed", "the algorithm 'HS256' is not allowed for provider 'test'", None)),
        (f"{segment({'alg': 'RS256', 'crit': ['x']})}.{PAYLOAD}.cQ",
         ("unsupported_header", "critical header extensions are not supported", None)),
        (f"{segment({'alg': 'RS256', 'b64': False})}.{PAYLOAD}.cQ",
         ("unsupported_header", "critical header extensions are not supported", None)),
        (f"{segment({'alg': 'RS256', 'typ': 'foo'})}.{PAYLOAD}.cQ",
         ("unsupported_token", "the token's 'typ' header is not JWT", None)),
        (f"{segment({'alg': 'RS256', 'kid': 5})}.{PAYLOAD}.cQ",
         ("malformed_token", "the token's 'kid' header is not a string", None)),
        (f"{segment({'alg': 'RS256', 'typ': 5})}.{PAYLOAD}.cQ",
         ("unsupported_token", "the token's 'typ' header is not JWT", None)),
        (f"{segment({'alg': 'RS256', 'cty': 'JWT'})}.{PAYLOAD}.cQ",
         ("unsupported_token", "nested tokens ('cty' header) are not accepted", None)),
        (f"{HEADER}.{PAYLOAD}.{b64(b'x' * 256)}",
         ("bad_signature", "the signature does not verify with provider 'test''s key", None)),
    ],
)  # fmt: skip
def test_a_malformed_or_forged_token_is_refused_saying_why(
    jwtgate_keys: dict[str, KeyPair], token: str, expected: tuple[str, str, str | None]
) -> None:
    assert refusal(jwtgate_keys, token) == expected


@pytest.mark.parametrize(
    ("claims", "provider", "expected"),
    [
        ({"exp": None}, {}, ("invalid_claim", "the token has no 'exp' claim; tokens without an expiry are refused",
                             "exp")),
        ({"exp": "9999999999"}, {}, ("invalid_claim",
                                     "the 'exp' claim must be a JSON number (seconds since the epoch)", "exp")),
        ({"exp": True}, {}, ("invalid_claim", "the 'exp' claim must be a JSON number (seconds since the epoch)",
                             "exp")),
        ({"exp": 10**400}, {}, ("invalid_claim", "the 'exp' claim must be a JSON number (seconds since the epoch)",
                                "exp")),
        ({"exp": NOW - 100}, {}, ("expired", "the token expired 100 seconds ago (leeway 60 s)", None)),
        ({"exp": NOW - 60}, {}, ("expired", "the token expired 60 seconds ago (leeway 60 s)", None)),
        ({"nbf": NOW + 1000}, {}, ("not_yet_valid", "the token is not valid for another 1000 seconds", "nbf")),
        ({"iat": NOW + 1000}, {}, ("issued_in_future", "the token was issued in the future", "iat")),
        ({"iss": "https://evil.example"}, {"issuer": ISSUER},
         ("wrong_issuer", "the token's issuer is not 'https://idp.example'", "iss")),
        ({}, {"issuer": ISSUER}, ("wrong_issuer", "the token has no 'iss' claim", "iss")),
        ({"aud": 5}, {"audience": "api"}, ("wrong_audience", "the 'aud' claim must be a string or list", "aud")),
        ({"aud": ["api", 5]}, {"audience": "api"},
         ("wrong_audience", "the 'aud' claim must be a string or list", "aud")),
        ({}, {"audience": "api"}, ("wrong_audience", "the token has no valid 'aud' claim", "aud")),
        ({"aud": "api"}, {}, ("wrong_audience",
                              "the token names an audience but provider 'test' has none configured; set its 'audience'",
                              "aud")),
        ({"aud": ["web", "apis"]}, {"audience": "api"},
         ("wrong_audience", "the token is not meant for this audience", "aud")),
        ({"typ": "ID"}, {}, ("not_access_token", "the token is not an access token: its 'typ' claim says 'ID'", "typ")),
        ({"token_use": "id"}, {}, ("not_access_token",
                                   "the token is not an access token: its 'token_use' claim says 'id', not 'access'",
                                   "token_use")),
        ({"token_use": "x" * 60}, {}, ("not_access_token",
                                       "the token is not an access token: its 'token_use' claim says "
                                       f"'{'x' * 36}..., not 'access'", "token_use")),
        # Shown whole up to 40 characters of its repr (38 x and two quotes), cut to 37 and '...' beyond.
        ({"token_use": "x" * 38}, {}, ("not_access_token",
                                       "the token is not an access token: its 'token_use' claim says "
                                       f"'{'x' * 38}', not 'access'", "token_use")),
        ({"token_use": "x" * 39}, {}, ("not_access_token",
                                       "the token is not an access token: its 'token_use' claim says "
                                       f"'{'x' * 36}..., not 'access'", "token_use")),
        ({"sub": 5}, {}, ("no_username", "the token's 'sub' claim (the provider's username_claim) is not a username",
                          "sub")),
        ({"sub": " "}, {}, ("no_username", "the token's 'sub' claim (the provider's username_claim) is not a username",
                            "sub")),
    ],
)  # fmt: skip
def test_a_claim_check_that_fails_says_which_and_why(
    jwtgate_keys: dict[str, KeyPair], claims: dict[str, Any], provider: dict[str, Any], expected: tuple[str, ...]
) -> None:
    payload = {key: value for key, value in claims.items() if value is not None}
    token = signed(jwtgate_keys, payload)
    if claims.get("exp", 0) is None:
        token = jwt.encode({"sub": "alice"}, jwtgate_keys["rsa"].private_key, algorithm="RS256")
    assert refusal(jwtgate_keys, token, **provider) == expected


def test_no_provider_and_an_unknown_issuer(jwtgate_keys: dict[str, KeyPair]) -> None:
    settings = Settings.from_mapping({"JWTGATE_DATABASE_URI": "sqlite://"})
    with pytest.raises(InvalidToken) as raised:
        JWTVerifier(settings.providers, clock=lambda: NOW).verify(signed(jwtgate_keys, {}))
    assert (raised.value.reason, raised.value.description) == ("no_provider", "no JWT provider is configured")
    with pytest.raises(InvalidClaim) as unknown:
        verifier(jwtgate_keys, issuer=ISSUER, second=True).verify(signed(jwtgate_keys, {"iss": "https://x.example"}))
    assert (unknown.value.reason, unknown.value.description, unknown.value.claim) == (
        "unknown_issuer", "the token's issuer is not a configured provider", "iss",
    )  # fmt: skip


@pytest.mark.parametrize("token", ["a.b.c===", "a.b.cc=="[:-1] + "==", "a.b.c="])
def test_impossible_padding_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken) as raised:
        canonical_token(token)
    assert (raised.value.reason, raised.value.description) == (
        "malformed_token", "the token's signature has invalid base64 padding",
    )  # fmt: skip


@pytest.mark.parametrize(("token", "canonical"), [("a.b.cc==", "a.b.cc"), ("a.b.ccc=", "a.b.ccc"), ("a.b.c", "a.b.c")])
def test_padding_that_pyjwt_accepts_is_the_same_token(token: str, canonical: str) -> None:
    assert canonical_token(token) == canonical


def test_what_a_verified_token_says_cannot_be_changed_by_its_readers(jwtgate_keys: dict[str, KeyPair]) -> None:
    # A verified token is cached and shared by every request that presents it: no reader may change its claims.
    verified = verifier(jwtgate_keys).verify(signed(jwtgate_keys, {"realm_access": {"roles": ["a"]}}))
    with pytest.raises(TypeError):
        verified.claims["sub"] = "mallory"  # type: ignore[index]
    with pytest.raises(TypeError):
        verified.claims["realm_access"]["roles"] = ["admins"]
    assert verified.identity.claims["sub"] == "alice"


def test_a_provider_without_a_groups_claim_reads_no_groups_and_suspects_none(jwtgate_keys: dict[str, KeyPair]) -> None:
    # Nothing to read, so nothing malformed: the policy must not take such callers for read-only.
    verified = verifier(jwtgate_keys, groups_claim=None).verify(signed(jwtgate_keys, {"groups": "viewers"}))
    assert (verified.groups, verified.identity.groups_complete) == (frozenset(), True)


def test_a_dotted_claim_name_reads_nested_claims_unless_a_claim_has_that_very_name(
    jwtgate_keys: dict[str, KeyPair],
) -> None:
    keycloak = verifier(jwtgate_keys, groups_claim="realm_access.roles")
    nested = keycloak.verify(signed(jwtgate_keys, {"realm_access": {"roles": ["admins"]}}))
    literal = keycloak.verify(signed(jwtgate_keys, {"realm_access.roles": ["ops"], "realm_access": {"roles": ["x"]}}))
    not_nested = keycloak.verify(signed(jwtgate_keys, {"realm_access": ["admins"]}))
    assert [nested.groups, literal.groups, not_nested.groups] == [{"admins"}, {"ops"}, frozenset()]


def test_an_expiry_is_required_of_tokens_and_optional_in_introspection_answers(
    jwtgate_keys: dict[str, KeyPair],
) -> None:
    provider = verifier(jwtgate_keys).providers[0]
    # An introspection answer may omit exp (RFC 7662 section 2.2); a token may not.
    assert check_claims({"sub": "alice", "active": True}, provider, NOW, require_exp=False) == math.inf
    with pytest.raises(InvalidClaim) as refused:
        check_claims({"sub": "alice"}, provider, NOW)
    assert (refused.value.claim, refused.value.description) == (
        "exp", "the token has no 'exp' claim; tokens without an expiry are refused"
    )



def test_a_key_pyjwt_cannot_use_refuses_the_token_never_errors(
    jwtgate_keys: dict[str, KeyPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    # PyJWT's InvalidKeyError is no InvalidTokenError: caught at PyJWTError, the token is refused with a 401, not a 500.
    checker = verifier(jwtgate_keys)

    def unusable(key: object) -> object:
        raise jwt.exceptions.InvalidKeyError("not a key for this algorithm")

    monkeypatch.setattr(checker._algorithms["RS256"], "prepare_key", unusable)
    with pytest.raises(InvalidToken) as refused:
        checker.verify(signed(jwtgate_keys, {}))
    assert (refused.value.reason, refused.value.description) == ("malformed_token", "the token could not be verified")


@pytest.mark.parametrize(
    ("jti", "by_jti"),
    [("a", True), ("j" * 128, True), ("", False), ("j" * 129, False), (7, False), (None, False)],
    ids=["one-character", "longest", "empty", "too-long", "number", "absent"],
)
def test_a_token_is_known_by_its_jti_or_else_by_its_hash(
    jwtgate_keys: dict[str, KeyPair], jti: object, by_jti: bool
) -> None:
    # The token id keys the rate-limit bucket and the audit record: a usable jti, else the canonical token's hash.
    token = signed(jwtgate_keys, {"jti": jti} if jti is not None else {})
    expected = f"jti:{jti}" if by_jti else "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    assert verifier(jwtgate_keys).verify(token).token_id == expected



def test_a_canonical_segment_is_accepted_whatever_its_last_character(jwtgate_keys: dict[str, KeyPair]) -> None:
    # An ES384 signature (96 bytes) may end in any base64url character; ECDSA signs afresh each time.
    ec384 = jwtgate_keys["ec384"]
    settings = Settings.from_mapping({"JWTGATE_PROVIDERS": [{"name": "ec", "public_key": ec384.public_pem}]})
    payload = {"sub": "alice", "exp": NOW + 300}
    token = next(
        t for _ in range(5000) if (t := jwt.encode(payload, ec384.private_key, algorithm="ES384")).endswith("X")
    )
    assert JWTVerifier(settings.providers, clock=lambda: NOW).verify(token).username == "alice"


def test_the_payload_is_read_as_json_loads_reads_bytes(jwtgate_keys: dict[str, KeyPair]) -> None:
    # UTF-8 with an encoded surrogate in a string, as json.loads (and so PyJWT) reads it: a string, not a refusal.
    payload = b'{"sub": "a\xed\xa0\x80", "exp": ' + str(NOW + 300).encode() + b"}"
    token = jwt.api_jws.encode(payload, jwtgate_keys["rsa"].private_key, algorithm="RS256")
    assert json.loads(payload)["sub"] == "a\ud800"
    assert verifier(jwtgate_keys).verify(token).username == "a\ud800"
