"""Start-up configuration: every bad ``JWTGATE_*`` value fails at start-up naming its key and what would be valid;
good values (single-provider shorthand, provider lists, constructor keywords, the environment) take effect."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from flask import Flask

from flask_jwtgate import ConfigurationError, JWTGate
from flask_jwtgate.settings import Settings
from flask_jwtgate.testing import KeyPair

Keys = dict[str, KeyPair]
TokenFactory = Callable[..., str]


def start(config: dict[str, Any], **options: Any) -> tuple[Flask, JWTGate]:
    """Start an app with the gate, as a host does."""
    app = Flask("settings_test")
    app.config.update(TESTING=True, **config)
    gate = JWTGate(app, **options)

    @app.route("/api/items", methods=["GET", "POST"])
    def items() -> dict[str, Any]:
        return {"ok": True}

    return app, gate


def start_fails(config: dict[str, Any], **options: Any) -> ConfigurationError:
    """Start an app that must refuse to start; return the error. Nothing is left installed on the app."""
    app = Flask("settings_test")
    app.config.update(TESTING=True, **config)
    with pytest.raises(ConfigurationError) as info:
        JWTGate(app, **options)
    assert "jwtgate" not in app.extensions
    return info.value


def provider(keys: Keys, key: str = "rsa", **fields: Any) -> dict[str, Any]:
    return {"name": "idp", "public_key": keys[key].public_pem, **fields}


def weak_rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def certificate_pem(pair: KeyPair) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pair.public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(pair.private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


# -- keys -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pem", "valid"),
    [
        ("not a pem at all", "PEM public key"),
        ("-----BEGIN PUBLIC KEY-----\nZ2FyYmFnZQ==\n-----END PUBLIC KEY-----\n", "not a readable PEM public key"),
        (b"\x00\x01binary", "PEM public key"),
    ],
    ids=["no-pem-armour", "garbage-inside-armour", "bytes-without-armour"],
)
def test_bad_pem_names_the_key(pem: str | bytes, valid: str) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [{"name": "idp", "public_key": pem}]})
    assert error.key == "JWTGATE_PROVIDERS[0].public_key"
    assert valid in error.message


@pytest.mark.parametrize("key", ["rsa", "ec256", "ed25519"], ids=["rsa", "ec", "ed25519"])
def test_private_key_given_as_public_key_is_refused(jwtgate_keys: Keys, key: str) -> None:
    error = start_fails({"JWTGATE_PUBLIC_KEY": jwtgate_keys[key].private_pem})
    assert error.key == "JWTGATE_PUBLIC_KEY"
    assert "private key" in error.message
    assert "public key" in error.message


def test_rsa_key_shorter_than_2048_bits_is_refused() -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [{"name": "idp", "public_key": weak_rsa_pem()}]})
    assert error.key == "JWTGATE_PROVIDERS[0].public_key"
    assert "1024" in error.message
    assert "2048" in error.message


@pytest.mark.parametrize("shorthand", [True, False], ids=["shorthand", "providers-list"])
def test_missing_public_key_file_is_refused(tmp_path: Path, shorthand: bool) -> None:
    missing = str(tmp_path / "nowhere" / "idp.pem")
    if shorthand:
        config: dict[str, Any] = {"JWTGATE_PUBLIC_KEY_FILE": missing}
        key = "JWTGATE_PUBLIC_KEY_FILE"
    else:
        config = {"JWTGATE_PROVIDERS": [{"name": "idp", "public_key_file": missing}]}
        key = "JWTGATE_PROVIDERS[0].public_key_file"
    error = start_fails(config)
    assert error.key == key
    assert missing in error.message
    assert "No such file" in error.message


def test_public_key_file_is_read(tmp_path: Path, jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory) -> None:
    path = tmp_path / "idp.pem"
    path.write_text(jwtgate_keys["ec256"].public_pem)
    app, gate = start({"JWTGATE_PUBLIC_KEY_FILE": str(path)})
    assert gate.settings(app).providers[0].algorithms == ("ES256",)
    token = jwtgate_token_factory("alice", key="ec256")
    assert app.test_client().get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize(
    ("key", "algorithms", "valid"),
    [
        ("rsa", ["ES256"], "RS256"),
        ("ec256", ["RS256"], "ES256"),
        ("ec256", ["ES384"], "ES256"),
        ("ec384", ["ES256"], "ES384"),
        ("ed25519", ["RS256"], "EdDSA"),
        ("rsa", ["RS256", "ES256"], "RS256"),
    ],
    ids=["ES256-on-rsa", "RS256-on-ec", "ES384-on-p256", "ES256-on-p384", "RS256-on-ed25519", "one-of-two-misfits"],
)
def test_algorithm_that_does_not_fit_the_key_is_refused(
    jwtgate_keys: Keys, key: str, algorithms: list[str], valid: str
) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [provider(jwtgate_keys, key, algorithms=algorithms)]})
    assert error.key == "JWTGATE_PROVIDERS[0].algorithms"
    assert "does not fit" in error.message
    assert valid in error.message


@pytest.mark.parametrize(
    "algorithms",
    [["HS256"], ["HS512"], ["none"], ["None"], "HS256", ["RS256", "HS256"]],
    ids=["HS256", "HS512", "none", "None", "HS256-as-string", "HS256-next-to-RS256"],
)
@pytest.mark.parametrize("key", ["rsa", "ec256", "ed25519"], ids=["rsa", "ec", "ed25519"])
def test_hmac_and_none_are_refused_for_every_key(jwtgate_keys: Keys, key: str, algorithms: Any) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [provider(jwtgate_keys, key, algorithms=algorithms)]})
    assert error.key == "JWTGATE_PROVIDERS[0].algorithms"
    assert "not accepted" in error.message
    assert "RS256" in error.message  # says what would be valid


@pytest.mark.parametrize("algorithms", [[], None, 256], ids=["empty-list", "null-in-shorthand", "number"])
def test_algorithm_list_shape_is_checked(jwtgate_keys: Keys, algorithms: Any) -> None:
    if algorithms is None:  # the shorthand's None means "default", so it is accepted
        app, gate = start({"JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem, "JWTGATE_ALGORITHMS": None})
        assert gate.settings(app).providers[0].algorithms == ("RS256",)
        return
    error = start_fails({"JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem, "JWTGATE_ALGORITHMS": algorithms})
    assert error.key == "JWTGATE_ALGORITHMS"
    assert "['RS256']" in error.message


def test_shorthand_algorithm_mismatch_names_the_shorthand_key(jwtgate_keys: Keys) -> None:
    error = start_fails({"JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem, "JWTGATE_ALGORITHMS": ["ES256"]})
    assert error.key == "JWTGATE_ALGORITHMS"
    assert "RS256" in error.message


@pytest.mark.parametrize(
    ("shorthand", "algorithms"),
    [(True, None), (False, None), (False, ["ES256"])],
    ids=["shorthand", "providers-list", "providers-list-with-algorithms"],
)
def test_unsupported_ec_curve_names_the_key(shorthand: bool, algorithms: list[str] | None) -> None:
    pem = (
        ec.generate_private_key(ec.SECP224R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    if shorthand:
        error = start_fails({"JWTGATE_PUBLIC_KEY": pem})
        assert error.key in {"JWTGATE_PUBLIC_KEY", "JWTGATE_ALGORITHMS"}
    else:
        error = start_fails({"JWTGATE_PROVIDERS": [{"name": "idp", "public_key": pem, "algorithms": algorithms}]})
        assert error.key in {"JWTGATE_PROVIDERS[0].public_key", "JWTGATE_PROVIDERS[0].algorithms"}
    assert "secp224r1" in error.message
    assert "P-256" in error.message or "secp256r1" in error.message  # says which curves would do


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [("rsa", "RS256"), ("ec256", "ES256"), ("ec384", "ES384"), ("ed25519", "EdDSA")],
    ids=["rsa", "p256", "p384", "ed25519"],
)
def test_default_algorithm_follows_the_key_type(jwtgate_keys: Keys, key: str, algorithm: str) -> None:
    settings = Settings.from_mapping({"JWTGATE_PROVIDERS": [provider(jwtgate_keys, key)]})
    assert settings.providers[0].algorithms == (algorithm,)


def test_certificate_pem_is_accepted(jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory) -> None:
    app, gate = start({"JWTGATE_PUBLIC_KEY": certificate_pem(jwtgate_keys["rsa"])})
    assert gate.settings(app).providers[0].algorithms == ("RS256",)
    token = jwtgate_token_factory("alice")
    assert app.test_client().get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code == 200


# -- providers --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [{"name": "idp"}, {"name": "idp", "public_key": ""}, {"name": "idp", "issuer": "https://idp"}],
    ids=["name-only", "empty-key", "issuer-only"],
)
def test_provider_without_key_or_endpoint_is_refused(entry: dict[str, Any]) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [entry]})
    assert error.key == "JWTGATE_PROVIDERS[0]"
    assert "exactly one of public_key, public_key_file, jwks_url or introspection_url" in error.message


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"public_key_file": "/etc/idp.pem"}, "public_key, public_key_file"),
        ({"jwks_url": "https://idp.example/jwks"}, "public_key, jwks_url"),
        ({"introspection_url": "https://idp.example/introspect"}, "public_key, introspection_url"),
    ],
    ids=["key-and-file", "key-and-jwks", "key-and-introspection"],
)
def test_provider_with_two_sources_is_refused(jwtgate_keys: Keys, extra: dict[str, Any], named: str) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [{"name": "idp", "public_key": jwtgate_keys["rsa"].public_pem, **extra}]})
    assert error.key == "JWTGATE_PROVIDERS[0]"
    assert "exactly one of" in error.message
    assert named in error.message


def test_shorthand_with_two_sources_is_refused(jwtgate_keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "idp.pem"
    path.write_text(jwtgate_keys["rsa"].public_pem)
    error = start_fails({"JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem, "JWTGATE_PUBLIC_KEY_FILE": str(path)})
    assert error.key == "JWTGATE_PUBLIC_KEY"
    assert "exactly one of" in error.message


def test_unknown_provider_field_is_refused(jwtgate_keys: Keys) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [provider(jwtgate_keys), provider(jwtgate_keys, name="b", kid="x")]})
    assert error.key == "JWTGATE_PROVIDERS[1]"
    assert "'kid'" in error.message
    assert "public_key" in error.message  # lists the valid fields
    assert "issuer" in error.message


@pytest.mark.parametrize("entry", ["idp", ["idp"], None], ids=["string", "list", "null"])
def test_provider_entry_must_be_an_object(entry: Any) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [entry]})
    assert error.key == "JWTGATE_PROVIDERS[0]"
    assert "must be an object" in error.message


def test_providers_must_be_a_list(jwtgate_keys: Keys) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": provider(jwtgate_keys)})
    assert error.key == "JWTGATE_PROVIDERS"
    assert "list of provider objects" in error.message


def test_provider_without_name_is_refused(jwtgate_keys: Keys) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [{"public_key": jwtgate_keys["rsa"].public_pem}]})
    assert error.key == "JWTGATE_PROVIDERS[0].name"
    assert "name" in error.message


def test_duplicate_provider_names_are_refused(jwtgate_keys: Keys) -> None:
    error = start_fails(
        {
            "JWTGATE_PROVIDERS": [
                provider(jwtgate_keys, "rsa", name="corp", issuer="https://a"),
                provider(jwtgate_keys, "ec256", name="corp", issuer="https://b"),
            ]
        }
    )
    assert error.key == "JWTGATE_PROVIDERS"
    assert "'corp'" in error.message
    assert "unique" in error.message


def test_shorthand_provider_name_clashing_with_list_is_refused(jwtgate_keys: Keys) -> None:
    error = start_fails(
        {
            "JWTGATE_PROVIDERS": [provider(jwtgate_keys, "ec256", name="default", issuer="https://a")],
            "JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem,
            "JWTGATE_ISSUER": "https://b",
        }
    )
    assert error.key == "JWTGATE_PROVIDERS"
    assert "'default'" in error.message


@pytest.mark.parametrize(
    "issuers",
    [(None, None), ("https://a", None), ("https://a", "https://a")],
    ids=["no-issuers", "one-issuer-missing", "same-issuer"],
)
def test_two_jwt_providers_need_distinct_issuers(jwtgate_keys: Keys, issuers: tuple[str | None, str | None]) -> None:
    entries = [
        provider(jwtgate_keys, "rsa", name="a", directory_users=True),
        provider(jwtgate_keys, "ec256", name="b", directory_users=False),
    ]
    for entry, issuer in zip(entries, issuers, strict=True):
        if issuer is not None:
            entry["issuer"] = issuer
    error = start_fails({"JWTGATE_PROVIDERS": entries})
    assert error.key == "JWTGATE_PROVIDERS"
    assert "issuer" in error.message


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("issuer", "", "issuer string"),
        ("audience", ["ok", 3], "list of strings"),
        ("username_claim", "", "'sub'"),
        ("groups_claim", 7, "claim name"),
        ("leeway", -1, "between 0 and 86400"),
        ("leeway", "60", "between 0 and 86400"),
        ("cache_ttl", 86401, "between 0 and 86400"),
    ],
    ids=[
        "empty-issuer",
        "audience-not-strings",
        "empty-username-claim",
        "groups-claim-number",
        "negative-leeway",
        "leeway-string",
        "cache-ttl-too-large",
    ],
)
def test_provider_field_values_are_checked(jwtgate_keys: Keys, field: str, value: Any, valid: str) -> None:
    error = start_fails({"JWTGATE_PROVIDERS": [provider(jwtgate_keys, **{field: value})]})
    assert error.key == f"JWTGATE_PROVIDERS[0].{field}"
    assert valid in error.message


# -- network and path settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("JWTGATE_IP_ALLOWLIST", ["10.0.0.300/8"], "CIDR range such as '10.0.0.0/8'"),
        ("JWTGATE_IP_ALLOWLIST", ["10.0.0.1/8"], "did you mean 10.0.0.0/8"),
        ("JWTGATE_IP_ALLOWLIST", ["example.com"], "CIDR range"),
        ("JWTGATE_IP_ALLOWLIST", "10.0.0.0/8", "must be a list"),
        ("JWTGATE_IP_ALLOWLIST", [10], "CIDR range"),
        ("JWTGATE_TRUSTED_PROXIES", ["2001:db8::/129"], "CIDR range"),
    ],
    ids=["octet-out-of-range", "host-bits", "hostname", "plain-string", "number", "ipv6-prefix-too-long"],
)
def test_bad_cidr_is_refused(key: str, value: Any, valid: str) -> None:
    error = start_fails({key: value})
    assert error.key == key
    assert valid in error.message


def test_good_cidrs_are_accepted() -> None:
    settings = Settings.from_mapping(
        {
            "JWTGATE_IP_ALLOWLIST": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"],
            "JWTGATE_TRUSTED_PROXIES": ["::1"],
            "JWTGATE_PROXY_HEADER": "X-Forwarded-For",
        }
    )
    assert [str(n) for n in settings.ip_allowlist] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert [str(n) for n in settings.trusted_proxies] == ["::1/128"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("JWTGATE_PUBLIC_PATHS", ["rest/**"]),
        ("JWTGATE_PUBLIC_PATHS", ["get /health"]),
        ("JWTGATE_BYPASS_PATHS", ["/a/**b"]),
        ("JWTGATE_BYPASS_PATHS", ["/a/../admin"]),
        ("JWTGATE_PROTECTED_PATHS", ["/a//b"]),
        ("JWTGATE_PROTECTED_PATHS", ["/a%2fb"]),
        ("JWTGATE_RESTRICTED_PUBLIC_PATHS", [""]),
        ("JWTGATE_RESTRICTED_PUBLIC_PATHS", "/rest/**"),
    ],
    ids=[
        "no-leading-slash",
        "lower-case-method",
        "partial-double-star",
        "dot-dot",
        "empty-segment",
        "percent",
        "empty",
        "plain-string",
    ],
)
def test_bad_path_pattern_is_refused(key: str, value: Any) -> None:
    error = start_fails({key: value})
    assert error.key == key
    assert "/" in error.message  # every message shows a valid pattern such as '/rest/**'


def test_good_path_patterns_are_accepted() -> None:
    settings = Settings.from_mapping(
        {
            "JWTGATE_PUBLIC_PATHS": ["GET /rest/api/2/serverInfo", "GET,HEAD /health", "/docs/**"],
            "JWTGATE_RESTRICTED_PUBLIC_PATHS": ["**"],
        }
    )
    assert [p.text for p in settings.public_paths] == ["GET /rest/api/2/serverInfo", "GET,HEAD /health", "/docs/**"]
    assert len(settings.restricted_public_paths) == 1


def test_proxy_header_needs_trusted_proxies() -> None:
    error = start_fails({"JWTGATE_PROXY_HEADER": "X-Forwarded-For"})
    assert error.key == "JWTGATE_PROXY_HEADER"
    assert "JWTGATE_TRUSTED_PROXIES" in error.message
    app, gate = start({"JWTGATE_PROXY_HEADER": "X-Forwarded-For", "JWTGATE_TRUSTED_PROXIES": ["10.0.0.0/8"]})
    assert gate.settings(app).proxy_header == "X-Forwarded-For"


@pytest.mark.parametrize(
    "prefix", ["/jwtgate", "/api/gate", "/_auth", "/v1.0/gate~x"], ids=["default", "two-segments", "underscore", "dots"]
)
def test_url_prefix_accepted(prefix: str) -> None:
    app, gate = start({"JWTGATE_URL_PREFIX": prefix})
    assert gate.settings(app).url_prefix == prefix


@pytest.mark.parametrize(
    "prefix",
    ["jwtgate", "/jwtgate/", "/", "//jwtgate", "/a//b", "", 5,
     # Flask would read a URL variable, a client would spell the rest in ways routing and the path rules read apart
     "/<name>", "/<path:rest>", "/a b", "/%6Awtgate", "/a/../b", "/.", "/gate?x", "/gate#x", "/gaté", "/a\\b"],
    ids=lambda p: repr(p),
)
def test_url_prefix_refused(prefix: Any) -> None:
    error = start_fails({"JWTGATE_URL_PREFIX": prefix})
    assert error.key == "JWTGATE_URL_PREFIX"
    assert "/jwtgate" in error.message or "non-empty string" in error.message


def test_rate_limit_with_bad_syntax_names_the_key() -> None:
    error = start_fails({"JWTGATE_RATE_LIMIT": "lots"})
    assert error.key == "JWTGATE_RATE_LIMIT"
    assert "100/minute" in error.message


# -- scalar types -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("yes", True),
        ("Yes", True),
        ("true", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("no", False),
        (" off ", False),
        ("0", False),
        (True, True),
        (False, False),
    ],
    ids=lambda v: repr(v),
)
def test_bools_given_as_strings_are_accepted(value: Any, expected: bool) -> None:
    app, gate = start({"JWTGATE_ENABLED": value, "JWTGATE_DISABLE_BASIC_AUTH": value})
    assert gate.settings(app).enabled is expected
    assert gate.settings(app).disable_basic_auth is expected


@pytest.mark.parametrize("value", ["maybe", "", None, "ja", 2, [True]], ids=lambda v: repr(v))
def test_bool_that_is_not_a_bool_is_refused(value: Any) -> None:
    error = start_fails({"JWTGATE_ACCEPT_JWT": value})
    assert error.key == "JWTGATE_ACCEPT_JWT"
    assert "true or false" in error.message


def test_disabled_gate_lets_everything_through() -> None:
    app, _ = start({"JWTGATE_ENABLED": "false"})
    assert app.test_client().post("/api/items").status_code == 200


@pytest.mark.parametrize(
    "key",
    ["JWTGATE_READ_ONLY_GROUPS", "JWTGATE_ALLOWED_GROUPS", "JWTGATE_ADMIN_GROUPS", "JWTGATE_TOKEN_CREATOR_GROUPS"],
)
@pytest.mark.parametrize(
    "value", ["viewers", "viewers,admins", [""], [3]], ids=["string", "comma-string", "empty-name", "number"]
)
def test_group_list_given_as_plain_string_is_refused(key: str, value: Any) -> None:
    error = start_fails({key: value})
    assert error.key == key
    assert "list of group names such as ['viewers']" in error.message


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("JWTGATE_AUDIT_RETENTION_DAYS", 0, ">= 1"),
        ("JWTGATE_AUDIT_MAX_ENTRIES", "many", ">= 1"),
        ("JWTGATE_AUDIT_PRUNE_INTERVAL", -5, ">= 0"),
        ("JWTGATE_AUDIT_PRUNE_INTERVAL", True, ">= 0"),
    ],
    ids=["retention-zero", "max-entries-word", "negative-interval", "bool-interval"],
)
def test_numbers_are_checked(key: str, value: Any, valid: str) -> None:
    error = start_fails({key: value})
    assert error.key == key
    assert valid in error.message


def test_numbers_given_as_strings_and_none_are_accepted() -> None:
    settings = Settings.from_mapping({"JWTGATE_AUDIT_RETENTION_DAYS": None, "JWTGATE_AUDIT_PRUNE_INTERVAL": "0"})
    assert settings.audit_retention_days is None
    assert settings.audit_prune_interval == 0


def test_defaults() -> None:
    settings = Settings.from_mapping({})
    assert settings.enabled is True
    assert settings.providers == ()
    assert [p.text for p in settings.protected_paths] == ["/**"]
    assert settings.admin_groups == frozenset({"jwtgate-admins"})
    assert settings.read_only_groups == frozenset()
    assert settings.url_prefix == "/jwtgate"
    assert settings.rate_limit is None
    assert settings.audit_retention_days == 90
    assert settings.allow_cors_preflight is True


# -- single-provider shorthand and provider lists --------------------------------------------------------------------


def test_shorthand_groups_claim_none_switches_the_groups_claim_off(
    jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory
) -> None:
    app, gate = start(
        {
            "JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem,
            "JWTGATE_GROUPS_CLAIM": None,
            "JWTGATE_ALLOWED_GROUPS": ["developers"],
        }
    )
    (only,) = gate.settings(app).providers
    token = jwtgate_token_factory("bob", groups=["developers"])

    response = app.test_client().get("/api/items", headers={"Authorization": f"Bearer {token}"})

    assert only.groups_claim is None
    assert (response.status_code, response.get_json()["reason"]) == (403, "group_not_allowed")  # the claim is not read


@pytest.mark.parametrize("name", ["PROVIDER_NAME", "USERNAME_CLAIM", "LEEWAY"])
def test_shorthand_fields_with_a_default_are_refused_as_none(jwtgate_keys: Keys, name: str) -> None:
    error = start_fails({"JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem, f"JWTGATE_{name}": None})
    assert error.key == f"JWTGATE_{name}"


def test_single_provider_shorthand(jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory) -> None:
    app, gate = start(
        {
            "JWTGATE_PROVIDER_NAME": "corp",
            "JWTGATE_PUBLIC_KEY": jwtgate_keys["ec384"].public_pem,
            "JWTGATE_ALGORITHMS": ["ES384"],
            "JWTGATE_ISSUER": "https://corp.example",
            "JWTGATE_AUDIENCE": "api",
            "JWTGATE_USERNAME_CLAIM": "preferred_username",
            "JWTGATE_GROUPS_CLAIM": "roles",
            "JWTGATE_LEEWAY": 5,
            "JWTGATE_READ_ONLY_GROUPS": ["viewers"],
        }
    )
    (only,) = gate.settings(app).providers
    assert only.name == "corp"
    assert only.algorithms == ("ES384",)
    assert only.issuer == "https://corp.example"
    assert only.audience == ("api",)
    assert only.username_claim == "preferred_username"
    assert only.groups_claim == "roles"
    assert only.leeway == 5

    client = app.test_client()
    claims = {"preferred_username": "dana", "roles": ["viewers"]}
    token = jwtgate_token_factory("sub-123", key="ec384", issuer="https://corp.example", audience="api", claims=claims)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/items", headers=headers).status_code == 200
    assert client.post("/api/items", headers=headers).status_code == 403  # "roles" read as the groups claim
    wrong_audience = jwtgate_token_factory("x", key="ec384", issuer="https://corp.example", audience="other")
    assert client.get("/api/items", headers={"Authorization": f"Bearer {wrong_audience}"}).status_code == 401


def test_shorthand_defaults(jwtgate_keys: Keys) -> None:
    settings = Settings.from_mapping({"JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem})
    (only,) = settings.providers
    assert only.name == "default"
    assert only.username_claim == "sub"
    assert only.groups_claim == "groups"
    assert only.leeway == 60
    assert only.issuer is None
    assert only.audience == ()


def test_provider_list_with_several_providers(jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory) -> None:
    entries = [
        provider(jwtgate_keys, "rsa", name="corp", issuer="https://corp", directory_users=True),
        provider(
            jwtgate_keys, "ec256", name="partner", issuer="https://partner", audience=["api", "other"],
            directory_users=False,
        ),
        provider(
            jwtgate_keys, "ed25519", name="robots", issuer="https://robots", username_claim="client_id",
            directory_users=False,
        ),
    ]
    app, gate = start({"JWTGATE_PROVIDERS": entries})
    assert [(p.name, p.algorithms) for p in gate.settings(app).providers] == [
        ("corp", ("RS256",)),
        ("partner", ("ES256",)),
        ("robots", ("EdDSA",)),
    ]
    client = app.test_client()
    tokens = [
        jwtgate_token_factory("a", key="rsa", issuer="https://corp"),
        jwtgate_token_factory("b", key="ec256", issuer="https://partner", audience="api"),
        jwtgate_token_factory("c", key="ed25519", issuer="https://robots", claims={"client_id": "bot-1"}),
    ]
    for token in tokens:
        assert client.get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # A provider's key never verifies a token that names another provider's issuer.
    crossed = jwtgate_token_factory("a", key="rsa", issuer="https://partner", audience="api")
    assert client.get("/api/items", headers={"Authorization": f"Bearer {crossed}"}).status_code == 401


def test_shorthand_and_provider_list_together(jwtgate_keys: Keys) -> None:
    # The shorthand provider cannot say whether its users are the directory's: with another provider beside it, that
    # is ambiguous, and the message says how to say it.
    config = {
        "JWTGATE_PROVIDERS": [
            provider(jwtgate_keys, "ec256", name="partner", issuer="https://partner", directory_users=False)
        ],
        "JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem,
        "JWTGATE_ISSUER": "https://corp",
    }
    error = start_fails(config)
    assert error.key == "JWTGATE_PROVIDERS"
    assert "['default']" in error.message and "move it into JWTGATE_PROVIDERS" in error.message
    config["JWTGATE_PROVIDERS"].append(
        {"name": "corp", "public_key": config.pop("JWTGATE_PUBLIC_KEY"), "issuer": config.pop("JWTGATE_ISSUER"),
         "directory_users": True}
    )
    assert [p.name for p in Settings.from_mapping(config).providers] == ["partner", "corp"]


# -- constructor keywords ---------------------------------------------------------------------------------------------


def test_constructor_keyword_overrides_config(jwtgate_keys: Keys, jwtgate_token_factory: TokenFactory) -> None:
    config = {"JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem, "JWTGATE_READ_ONLY_GROUPS": ["nobody"]}
    app, gate = start(config, read_only_groups=["viewers"], leeway=10)
    assert gate.settings(app).read_only_groups == frozenset({"viewers"})
    assert gate.settings(app).providers[0].leeway == 10
    token = jwtgate_token_factory("carol", groups=["viewers"])
    assert app.test_client().post("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_constructor_keyword_is_validated_under_its_key() -> None:
    error = start_fails({}, read_only_groups="viewers")
    assert error.key == "JWTGATE_READ_ONLY_GROUPS"


@pytest.mark.parametrize(
    "options",
    [{"read_only_group": ["viewers"]}, {"JWTGATE_READ_ONLY_GROUPS": ["viewers"]}, {"app_name": "x"}],
    ids=["typo", "config-name", "unrelated"],
)
def test_unknown_constructor_keyword_is_a_type_error(options: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="unknown options"):
        JWTGate(**options)


def test_app_is_the_only_positional_argument() -> None:
    with pytest.raises(TypeError):
        JWTGate(Flask("x"), None)  # type: ignore[misc]


# -- the environment --------------------------------------------------------------------------------------------------


def test_environment_configures_the_example_app(
    monkeypatch: pytest.MonkeyPatch, example_app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_READ_ONLY_GROUPS", '["viewers", "jira-developers"]')
    monkeypatch.setenv("FLASK_JWTGATE_IP_ALLOWLIST", '["127.0.0.0/8", "::1"]')
    monkeypatch.setenv("FLASK_JWTGATE_PUBLIC_PATHS", '["GET /rest/api/2/project"]')
    monkeypatch.setenv("FLASK_JWTGATE_LEEWAY", "15")
    monkeypatch.setenv("FLASK_JWTGATE_DISABLE_BASIC_AUTH", "true")
    monkeypatch.setenv("FLASK_JWTGATE_URL_PREFIX", "/auth")
    app = example_app_factory()
    settings = JWTGate.settings(app)
    assert settings.read_only_groups == frozenset({"viewers", "jira-developers"})
    assert [str(n) for n in settings.ip_allowlist] == ["127.0.0.0/8", "::1/128"]
    assert settings.providers[0].leeway == 15
    assert settings.disable_basic_auth is True
    assert settings.url_prefix == "/auth"
    assert app.test_client().get("/rest/api/2/project").status_code == 200  # made public from the environment


@pytest.mark.parametrize("value", ["false", "no", "0"], ids=["json-false", "no", "zero"])
def test_environment_switches_the_gate_off(
    monkeypatch: pytest.MonkeyPatch, example_app_factory: Callable[..., Flask], value: str
) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_ENABLED", value)
    app = example_app_factory()
    assert JWTGate.settings(app).enabled is False
    assert app.test_client().get("/rest/api/2/project").status_code == 200


def test_environment_list_that_is_not_json_is_refused(
    monkeypatch: pytest.MonkeyPatch, example_app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_READ_ONLY_GROUPS", "viewers")
    with pytest.raises(ConfigurationError) as info:
        example_app_factory()
    assert info.value.key == "JWTGATE_READ_ONLY_GROUPS"
    assert "JSON in the environment" in info.value.message


def test_environment_provider_list(
    monkeypatch: pytest.MonkeyPatch,
    example_app_factory: Callable[..., Flask],
    jwtgate_keys: Keys,
    jwtgate_token_factory: TokenFactory,
) -> None:
    entries = [{"name": "env-idp", "public_key": jwtgate_keys["ec256"].public_pem, "issuer": "https://env"}]
    monkeypatch.setenv("FLASK_JWTGATE_PROVIDERS", json.dumps(entries))
    app = example_app_factory()
    assert [p.name for p in JWTGate.settings(app).providers] == ["env-idp"]
    token = jwtgate_token_factory("bob", key="ec256", issuer="https://env")
    response = app.test_client().get("/rest/api/2/myself", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.get_json()["name"] == "bob"


# -- keys that are not settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("JWTGATE_READONLY_GROUPS", "JWTGATE_READ_ONLY_GROUPS"),
        ("JWTGATE_PROTECTED_PATH", "JWTGATE_PROTECTED_PATHS"),
        ("JWTGATE_IP_ALLOW_LIST", "JWTGATE_IP_ALLOWLIST"),
        ("JWTGATE_ADMINS", "JWTGATE_ADMIN_GROUPS"),
        ("JWTGATE_XYZZY", None),
    ],
)
def test_a_misspelt_key_stops_the_app_and_names_the_nearest_setting(
    jwtgate_keys: Keys, key: str, suggestion: str | None
) -> None:
    error = start_fails({"JWTGATE_PUBLIC_KEY": jwtgate_keys["rsa"].public_pem, key: ["viewers"]})
    assert error.key == key
    if suggestion is not None:
        assert f"did you mean {suggestion}?" in error.message
    else:
        assert "configuration table" in error.message


def test_a_misspelt_key_from_the_environment_stops_the_example_app(
    monkeypatch: pytest.MonkeyPatch, example_app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("FLASK_JWTGATE_READONLY_GROUPS", '["viewers"]')
    with pytest.raises(ConfigurationError) as info:
        example_app_factory()
    assert info.value.key == "JWTGATE_READONLY_GROUPS"
    assert "JWTGATE_READ_ONLY_GROUPS" in info.value.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("JWTGATE_ISSUER", "https://idp"),
        ("JWTGATE_AUDIENCE", "api"),
        ("JWTGATE_USERNAME_CLAIM", "email"),
        ("JWTGATE_ALGORITHMS", ["RS256"]),
        ("JWTGATE_INTROSPECTION_CLIENT_ID", "gate"),
    ],
)
def test_a_single_provider_field_without_a_key_source_stops_the_app(key: str, value: Any) -> None:
    error = start_fails({key: value})
    assert error.key == key
    assert "JWTGATE_PUBLIC_KEY_FILE" in error.message and "JWTGATE_PROVIDERS" in error.message


def test_a_single_provider_field_at_its_default_is_no_error() -> None:
    settings = Settings.from_mapping({"JWTGATE_USERNAME_CLAIM": "sub", "JWTGATE_PROVIDER_NAME": "default"})
    assert settings.providers == ()
