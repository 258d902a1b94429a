"""The configuration lint (``flask_jwtgate.lint``): each rule fires on the setting it is about and stays quiet on its
near miss; the path rules' claims hold for every request the gate's own matchers would see."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_jwtgate.errors import ConfigurationError
from flask_jwtgate.lint import Finding, lint, rule_pattern
from flask_jwtgate.paths import match_loosening, match_tightening, readings
from flask_jwtgate.settings import Settings


def config(**values: Any) -> Settings:
    return Settings.from_mapping({f"JWTGATE_{key}": value for key, value in values.items()})


def codes(settings: Settings, **options: Any) -> list[str]:
    return [finding.code for finding in lint(settings, **options)]


def only(settings: Settings, code: str, **options: Any) -> Finding:
    found = [finding for finding in lint(settings, **options) if finding.code == code]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def pem(jwtgate_keys: Any) -> str:
    public: str = jwtgate_keys["rsa"].public_pem
    return public


def test_the_defaults_are_clean() -> None:
    assert lint(config()) == []


# -- providers -----------------------------------------------------------------------------------------------------


def test_a_jwt_provider_without_issuer_or_audience_is_flagged_with_its_key(pem: str) -> None:
    listed = config(PROVIDERS=[{"name": "corp", "public_key": pem}])
    assert only(listed, "provider_without_issuer").key == "JWTGATE_PROVIDERS[0].issuer"
    assert only(listed, "provider_without_audience").key == "JWTGATE_PROVIDERS[0].audience"
    shorthand = config(PUBLIC_KEY=pem)
    assert only(shorthand, "provider_without_issuer").key == "JWTGATE_ISSUER"
    assert only(shorthand, "provider_without_audience").key == "JWTGATE_AUDIENCE"


def test_a_provider_with_issuer_and_audience_is_clean(pem: str) -> None:
    provider = {"name": "corp", "public_key": pem, "issuer": "https://i", "audience": "api"}
    assert codes(config(PROVIDERS=[provider])) == []
    assert codes(config(PUBLIC_KEY=pem, ISSUER="https://i", AUDIENCE="api")) == []


def test_an_introspection_provider_needs_an_audience_but_not_an_issuer() -> None:
    provider = {"name": "idp", "introspection_url": "https://idp/introspect", "client_id": "c", "client_secret": "s"}
    assert codes(config(PROVIDERS=[provider])) == ["provider_without_audience"]
    assert codes(config(PROVIDERS=[{**provider, "audience": "api"}])) == []


# -- groups and proxies ----------------------------------------------------------------------------------------------


def test_a_read_only_admin_group_is_flagged() -> None:
    finding = only(config(READ_ONLY_GROUPS=["ops", "viewers"], ADMIN_GROUPS=["ops"]), "read_only_admin_group")
    assert finding.key == "JWTGATE_ADMIN_GROUPS" and "['ops']" in finding.message
    assert codes(config(READ_ONLY_GROUPS=["viewers"], ADMIN_GROUPS=["ops"])) == []


def test_allowed_groups_without_an_admin_group_are_flagged() -> None:
    assert only(config(ALLOWED_GROUPS=["staff"]), "admins_not_allowed").key == "JWTGATE_ALLOWED_GROUPS"
    assert codes(config(ALLOWED_GROUPS=["staff", "jwtgate-admins"])) == []


@pytest.mark.parametrize(
    "config_keys",
    [{"PROXY_HEADER": "X-Forwarded-For"}, {"TRUSTED_PROXIES": ["10.0.0.0/8"]}],
    ids=["header-alone", "proxies-alone"],
)
def test_a_proxy_header_and_trusted_proxies_without_each_other_are_refused_not_linted(
    config_keys: dict[str, Any],
) -> None:
    with pytest.raises(ConfigurationError):
        config(**config_keys)


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0"])
def test_trusting_every_address_is_flagged(everyone: str) -> None:
    finding = only(config(PROXY_HEADER="X-Forwarded-For", TRUSTED_PROXIES=[everyone]), "trusts_every_address")
    assert everyone in finding.message
    assert codes(config(PROXY_HEADER="X-Forwarded-For", TRUSTED_PROXIES=["10.0.0.0/8", "::1/128"])) == []


# -- path rules ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public", "bypass", "flagged"),
    [
        (["/health"], ["/**"], True),
        (["GET /api/v1/*"], ["/api/**"], True),
        (["/api/v1/*.json"], ["/api/*/*"], True),
        (["/api/**"], ["/api/**"], True),
        (["/api/**"], ["GET /api/**"], False),  # a POST to /api is public, not bypassed
        (["/api/**"], ["/api/v1/**"], False),
        (["/Health"], ["/health"], False),  # loosening rules are case-sensitive
        (["/api/*"], ["/api/x*"], False),
    ],
)
def test_a_public_path_that_a_bypass_path_covers_is_flagged(
    public: list[str], bypass: list[str], flagged: bool
) -> None:
    assert ("bypass_covers_public" in codes(config(PUBLIC_PATHS=public, BYPASS_PATHS=bypass))) is flagged


def test_a_rule_inside_the_gates_prefix_is_flagged() -> None:
    assert only(config(BYPASS_PATHS=["/jwtgate/**"]), "rule_inside_gate_prefix").key == "JWTGATE_BYPASS_PATHS"
    assert only(config(PUBLIC_PATHS=["/console/x"], URL_PREFIX="/console"), "rule_inside_gate_prefix").key == (
        "JWTGATE_PUBLIC_PATHS"
    )
    assert codes(config(BYPASS_PATHS=["/jwtgate-docs/**", "/**/jwtgate"])) == []


@pytest.mark.parametrize(
    ("restricted", "public", "views", "flagged"),
    [
        (["**"], [], [], True),
        (["/admin/**"], ["/health"], [], True),
        (["POST /health"], ["GET /health"], [], True),
        (["**"], ["/health"], [], False),
        (["**"], [], ["GET,HEAD /rest/api/2/serverInfo"], False),
        (["/HEALTH"], ["/health/"], [], False),  # case-insensitive, and '/health/' is read as '/health' too
        (["/admin/**"], ["/api/**"], [], False),  # '/api/..;x/admin/y' is public and read as '/admin/y'
        (["/admin/**"], ["/api/*;x"], [], False),
        (["/"], ["/a/*"], [], False),  # '/a/..;x' is read as '/'
        (["/b"], ["/a/*/*"], [], False),  # '/a/..;x/b' is read as '/b'
    ],
)
def test_a_restricted_public_path_that_no_public_path_or_view_covers_is_flagged(
    restricted: list[str], public: list[str], views: list[str], flagged: bool
) -> None:
    found = codes(config(RESTRICTED_PUBLIC_PATHS=restricted, PUBLIC_PATHS=public), public_views=views)
    assert ("restricted_matches_nothing_public" in found) is flagged


def test_a_path_both_bypassed_and_restricted_is_flagged_with_a_witness() -> None:
    finding = only(
        config(BYPASS_PATHS=["/idp/**"], RESTRICTED_PUBLIC_PATHS=["/IDP/jwks"], PUBLIC_PATHS=["/idp/jwks"]),
        "bypassed_and_restricted",
    )
    assert finding.key == "JWTGATE_BYPASS_PATHS"
    assert finding.message.startswith("GET /idp/jwks is both bypassed")
    quiet = config(BYPASS_PATHS=["GET /idp/**"], RESTRICTED_PUBLIC_PATHS=["POST /idp/**"], PUBLIC_PATHS=["/idp/**"])
    assert "bypassed_and_restricted" not in codes(quiet)
    assert "bypassed_and_restricted" not in codes(config(BYPASS_PATHS=["/idp/**"], RESTRICTED_PUBLIC_PATHS=["/api/**"]))


# -- storage and retention -------------------------------------------------------------------------------------------


def test_memory_rate_limits_under_several_processes_are_flagged() -> None:
    limited = config(RATE_LIMIT="100/minute")
    assert only(limited, "memory_rate_limit_several_processes", multiprocess=True).key == (
        "JWTGATE_RATE_LIMIT_STORAGE_URI"
    )
    assert "WEB_CONCURRENCY is 4" in only(limited, "memory_rate_limit_several_processes", web_concurrency="4").message
    assert codes(limited, multiprocess=False, web_concurrency="1") == []
    assert codes(limited, web_concurrency="lots") == []
    assert codes(config(), multiprocess=True) == []  # no limit, nothing counted
    shared = config(RATE_LIMIT="100/minute", RATE_LIMIT_STORAGE_URI="redis://127.0.0.1:6379/0")
    assert codes(shared, multiprocess=True) == []


def test_audit_retention_off_is_flagged() -> None:
    off = config(AUDIT_RETENTION_DAYS=None, AUDIT_MAX_ENTRIES=None)
    assert only(off, "audit_retention_off").key == "JWTGATE_AUDIT_RETENTION_DAYS"
    assert codes(config(AUDIT_RETENTION_DAYS=None)) == []
    assert codes(config(AUDIT_MAX_ENTRIES=None)) == []
    assert codes(config(AUDIT_RETENTION_DAYS=None, AUDIT_MAX_ENTRIES=None, AUDIT_ENABLED=False)) == []


# -- URL rules as patterns -----------------------------------------------------------------------------------------


def test_url_rules_become_patterns_that_cover_them() -> None:
    assert rule_pattern("/rest/api/2/issue/<key>", {"GET", "HEAD", "OPTIONS"}) == "GET,HEAD /rest/api/2/issue/*"
    assert rule_pattern("/files/<path:name>/raw", None) == "/files/**/raw"
    assert rule_pattern("/a/x-<int(min=1):n>.json", {"POST"}) == "POST /a/x-*.json"


# -- the path rules' claims, against the gate's own matchers -------------------------------------------------------

SEGMENTS = ["a", "A", "b", "x", "", "..;x", "a;p", "jwtgate"]
PATTERN_SEGMENTS = ["a", "A", "b", "*", "**", "a*", "x", "jwtgate"]
METHODS = ["GET", "POST"]

patterns = st.builds(
    lambda method, parts, slash: (f"{method} " if method else "") + "/" + "/".join(parts) + ("/" if slash else ""),
    st.sampled_from([None, "GET", "POST"]),
    st.lists(st.sampled_from(PATTERN_SEGMENTS), max_size=3),
    st.booleans(),
)
paths = st.builds(lambda parts: "/" + "/".join(parts), st.lists(st.sampled_from(SEGMENTS), max_size=4))


def _valid(text: str) -> bool:
    try:
        config(PUBLIC_PATHS=[text])
    except ValueError:
        return False
    return True


def instances(data: st.DataObject, text: str) -> list[tuple[str, str]]:
    """Requests that ``text`` (a loosening pattern) may match: its wildcards filled with tricky segments."""
    method, _, path = text.rpartition(" ")
    methods = method.split(",") if method else METHODS
    made = []
    for _ in range(3):
        parts: list[str] = []
        for segment in path.split("/")[1:]:
            if segment == "**":
                parts += data.draw(st.lists(st.sampled_from(SEGMENTS), max_size=3))
            else:
                parts.append(segment.replace("*", data.draw(st.sampled_from(["", "x", "..;x", ";p", "b"]))))
        made.append((data.draw(st.sampled_from(methods)), "/" + "/".join(parts)))
    return made


@settings(max_examples=300, deadline=None)
@given(
    public=st.lists(patterns.filter(_valid), max_size=2),
    restricted=st.lists(patterns.filter(_valid), min_size=1, max_size=2),
    bypass=st.lists(patterns.filter(_valid), max_size=2),
    requests=st.lists(st.tuples(st.sampled_from(METHODS), paths), max_size=20),
    data=st.data(),
)
def test_every_path_claim_holds_for_the_requests_the_gate_sees(
    public: list[str],
    restricted: list[str],
    bypass: list[str],
    requests: list[tuple[str, str]],
    data: st.DataObject,
) -> None:
    s = config(PUBLIC_PATHS=public, RESTRICTED_PUBLIC_PATHS=restricted, BYPASS_PATHS=bypass)
    for text in public:
        requests += instances(data, text)
    findings = lint(s)
    for finding in findings:
        if finding.code == "bypass_covers_public":
            text = finding.message.split("'")[1]
            pattern = next(p for p in s.public_paths if p.text == text)
            for method, path in requests:
                if match_loosening((pattern,), method, path):
                    assert match_loosening(s.bypass_paths, method, path), (method, path)
        if finding.code == "restricted_matches_nothing_public":
            text = finding.message.split("'")[1]
            pattern = next(p for p in s.restricted_public_paths if p.text == text)
            for method, path in requests:
                if match_loosening(s.public_paths, method, path):
                    assert not match_tightening((pattern,), method, path), (method, path, readings(path))
        if finding.code == "bypassed_and_restricted":
            method, path = finding.message.split(" is both")[0].split(" ", 1)
            assert match_loosening(s.bypass_paths, method, path)
            assert match_tightening(s.restricted_public_paths, method, path)
