"""Unit tests of ``flask_jwtgate.paths``: how path patterns compile, and how a request path is matched by the rules
that loosen the gate (bypass, public: canonical paths only, exact) and those that tighten it (protected, restricted
public: normalised, case-insensitive)."""

from __future__ import annotations

from typing import Any

import pytest

from flask_jwtgate.errors import ConfigurationError
from flask_jwtgate.paths import (
    compile_pattern,
    compile_patterns,
    is_canonical,
    match_loosening,
    match_tightening,
    normalise,
)
from flask_jwtgate.settings import Settings

KEY = "JWTGATE_TEST_PATHS"


def loosening(*patterns: str) -> Any:
    return compile_patterns(list(patterns), KEY)


# -- compiling ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/health", "/health", True),
        ("/health", "/healthz", False),
        ("/health", "/health/", False),
        ("/health", "/Health", False),
        ("/health/", "/health/", True),
        ("/health/", "/health", False),
        ("/api/*", "/api/items", True),
        ("/api/*", "/api/items/1", False),
        ("/api/*/detail", "/api/7/detail", True),
        ("/api/*/detail", "/api/7/8/detail", False),
        ("/api/item-*", "/api/item-7", True),
        ("/api/item-*", "/api/other-7", False),
        ("/api/**", "/api", True),
        ("/api/**", "/api/", True),
        ("/api/**", "/api/a/b/c", True),
        ("/api/**", "/apix", False),
        ("/api/**", "/ap", False),
        ("/api/**/edit", "/api/edit", True),
        ("/api/**/edit", "/api/a/b/edit", True),
        ("/api/**/edit", "/api/a/b/view", False),
        ("/**", "/", True),
        ("/**", "/anything/at/all", True),
        ("**", "/anything/at/all", True),
        ("/", "/", True),
        ("/", "/x", False),
        ("/a.b", "/a.b", True),
        ("/a.b", "/aXb", False),  # '.' is literal, not a regex wildcard
        ("/a+b", "/a+b", True),
        ("/a+b", "/aab", False),
        ("  /health  ", "/health", True),
    ],
    ids=lambda v: repr(v),
)
def test_exact_matching(pattern: str, path: str, expected: bool) -> None:
    assert bool(compile_pattern(pattern, KEY).exact.match(path)) is expected


@pytest.mark.parametrize(
    ("pattern", "method", "expected"),
    [
        ("/x", "GET", True),
        ("/x", "DELETE", True),
        ("/x", "FOO", True),
        ("GET /x", "GET", True),
        ("GET /x", "HEAD", True),
        ("GET /x", "POST", False),
        ("GET /x", "OPTIONS", False),
        ("HEAD /x", "HEAD", True),
        ("HEAD /x", "GET", False),
        ("POST /x", "HEAD", False),
        ("GET,POST /x", "POST", True),
        ("GET,POST /x", "HEAD", True),
        ("GET,POST /x", "PUT", False),
        ("PROPFIND /x", "PROPFIND", True),
    ],
    ids=lambda v: repr(v),
)
def test_method_prefix(pattern: str, method: str, expected: bool) -> None:
    compiled = compile_pattern(pattern, KEY)
    assert compiled.matches_method(method) is expected
    assert compiled.exact.match("/x")


def test_method_prefix_is_parsed() -> None:
    assert compile_pattern("/x", KEY).methods is None
    assert compile_pattern("GET /x", KEY).methods == frozenset({"GET"})
    assert compile_pattern("GET,POST  /x", KEY).methods == frozenset({"GET", "POST"})
    assert compile_pattern("GET /rest/api/2/serverInfo", KEY).text == "GET /rest/api/2/serverInfo"


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "   ",
        None,
        5,
        b"/health",
        ["/health"],
        "health",
        "api/**",
        "get /health",
        "Get /health",
        "G@T /health",
        "GET,/health",
        "GET /health extra",
        "//health",
        "/api//items",
        "/api/./items",
        "/api/../admin",
        "/..",
        "/.",
        "/api/%2e%2e/admin",
        "/api%2Fitems",
        "/api\\items",
        "\\api",
        "/api/**x",
        "/api/x**",
        "/api/***",
        "/api/it ems",
        "/api/\x00",
        "/api/<id>",
        "/api/?x=1",
        "/api/#x",
    ],
    ids=lambda v: repr(v),
)
def test_invalid_pattern_names_the_key(pattern: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        compile_pattern(pattern, KEY)
    assert info.value.key == KEY
    assert KEY in str(info.value)


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        (None, "None is not a path pattern; use e.g. '/rest/**' or 'GET /health'"),
        ("get /health", "'get /health': the method must be upper case, e.g. 'GET /health'"),
        ("health", "'health': a path pattern starts with '/', e.g. '/rest/**'"),
        ("//health", "'//health': segments may not be empty, '.' or '..', nor contain '%', '\\' or spaces"),
        ("GET /api/it ems", "'GET /api/it ems': segments may not be empty"),  # the method ends at the first space
        ("/api/**x", "'/api/**x': '**' must be a whole segment, as in '/api/**'"),
    ],
    ids=repr,
)
def test_invalid_pattern_says_what_is_wrong(pattern: object, says: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        compile_pattern(pattern, KEY)
    assert str(info.value) == f"{KEY}: {info.value.message}"
    assert says in info.value.message


@pytest.mark.parametrize("value", ["/health", None, {"/health": True}, 7], ids=repr)
def test_pattern_list_must_be_a_list(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        compile_patterns(value, KEY)
    assert info.value.key == KEY
    assert f"must be a list of path patterns such as ['/rest/**'], not {value!r}" in str(info.value)


def test_pattern_list_accepts_list_and_tuple() -> None:
    assert compile_patterns([], KEY) == ()
    assert [p.text for p in compile_patterns(("/a", "GET /b"), KEY)] == ["/a", "GET /b"]


@pytest.mark.parametrize(
    "key",
    ["JWTGATE_BYPASS_PATHS", "JWTGATE_PUBLIC_PATHS", "JWTGATE_PROTECTED_PATHS", "JWTGATE_RESTRICTED_PUBLIC_PATHS"],
)
@pytest.mark.parametrize("value", ["/health", ["health"], ["//health"], ["/a/../b"], ["get /x"]], ids=repr)
def test_settings_reject_bad_path_config_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_mapping({key: value})
    assert info.value.key == key


def test_bad_path_config_fails_at_start_up(jwtgate_app_factory: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        jwtgate_app_factory(JWTGATE_BYPASS_PATHS=["/health/../admin"])
    assert info.value.key == "JWTGATE_BYPASS_PATHS"


# -- canonical paths ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/", "/health", "/api/items/", "/a/.../b", "/a/.b", "/a/b..", "/a;b", "/a:b@c", "/caf\u00e9", "/a-b_c~d"],
    ids=repr,
)
def test_canonical(path: str) -> None:
    assert is_canonical(path)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "health",
        "//health",
        "/api//items",
        "/api/items//",
        "/./health",
        "/api/./items",
        "/api/.",
        "/api/..",
        "/x/../health",
        "/..",
        "/health%2F",
        "/api%2Fitems",
        "/api/%2e%2e/admin",
        "/%",
        "/api\\items",
        "\\health",
        "/health\x00",
        "/health\n",
        "/health\r",
        "/health\t",
        "/health ",
        "/he alth",
        "/health\x7f",
    ],
    ids=repr,
)
def test_not_canonical(path: str) -> None:
    assert not is_canonical(path)


# -- normalising -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("", "/"),
        ("/api/items", "/api/items"),
        ("api/items", "/api/items"),
        ("/api/items/", "/api/items"),
        ("//api///items//", "/api/items"),
        ("/./api/./items/.", "/api/items"),
        ("/x/../api/items", "/api/items"),
        ("/x/y/../../api/items", "/api/items"),
        ("/../../api/items", "/api/items"),
        ("/api/items/..", "/api"),
        ("/api%2Fitems", "/api/items"),
        ("/api%2fitems", "/api/items"),
        ("/x/%2e%2e/api/items", "/api/items"),
        ("/x/..%2Fapi/items", "/api/items"),
        ("/api%252Fitems", "/api%2Fitems"),  # decoded once more than the server did, not until it stops
        ("/api\\items", "/api/items"),
        ("\\api\\items\\", "/api/items"),
        ("/api%5Citems", "/api/items"),
        ("/x\\..\\api/items", "/api/items"),
        ("/API/Items", "/API/Items"),  # case is kept; the tightening matcher folds it
        ("/a/.../b", "/a/.../b"),
    ],
    ids=repr,
)
def test_normalise(path: str, expected: str) -> None:
    assert normalise(path) == expected


@pytest.mark.parametrize("path", ["/", "//a//", "/a/../../..", "\\", "/%2F%2F", "/a/b/./c/../d/"], ids=repr)
def test_normalise_is_idempotent_on_its_output(path: str) -> None:
    once = normalise(path)
    assert normalise(once) == once
    assert once.startswith("/")
    assert once == "/" or not once.endswith("/")
    assert "//" not in once


# -- loosening rules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "method", "path", "expected"),
    [
        (("/health",), "GET", "/health", True),
        (("/health",), "POST", "/health", True),
        (("/health",), "GET", "/Health", False),
        (("/health",), "GET", "/HEALTH", False),
        (("/health",), "GET", "/health/", False),
        (("/health",), "GET", "//health", False),
        (("/health",), "GET", "/./health", False),
        (("/health",), "GET", "/x/../health", False),
        (("/health",), "GET", "/health%00", False),
        (("/health",), "GET", "\\health", False),
        (("/health",), "GET", "health", False),
        (("/public/**",), "GET", "/public/a/b", True),
        (("/public/**",), "GET", "/public/../admin", False),
        (("/public/**",), "GET", "/public/a/../../admin", False),
        (("/public/**",), "GET", "/public/..%2Fadmin", False),
        (("/public/**",), "GET", "/public/a%2Fb", False),
        (("/public/**",), "GET", "/public//admin", False),
        (("/public/**",), "GET", "/public\\..\\admin", False),
        (("/public/**",), "GET", "/PUBLIC/a", False),
        (("GET /health",), "GET", "/health", True),
        (("GET /health",), "HEAD", "/health", True),
        (("GET /health",), "POST", "/health", False),
        (("GET /health",), "OPTIONS", "/health", False),
        (("POST /hook", "GET /health"), "POST", "/hook", True),
        (("POST /hook", "GET /health"), "POST", "/health", False),
        ((), "GET", "/health", False),
    ],
    ids=repr,
)
def test_match_loosening(patterns: tuple[str, ...], method: str, path: str, expected: bool) -> None:
    assert match_loosening(loosening(*patterns), method, path) is expected


# -- tightening rules --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "method", "path", "expected"),
    [
        (("/admin",), "GET", "/admin", True),
        (("/admin",), "GET", "/ADMIN", True),
        (("/admin",), "GET", "/Admin/", True),
        (("/admin",), "GET", "//admin", True),
        (("/admin",), "GET", "/x/../admin", True),
        (("/admin",), "GET", "/%61dmin", True),
        (("/admin",), "GET", "/x/..%2Fadmin", True),
        (("/admin",), "GET", "\\admin\\", True),
        (("/admin",), "GET", "/administrator", False),
        (("/admin/",), "GET", "/admin", True),
        (("/admin/",), "GET", "/admin/", True),
        (("/api/**",), "GET", "/api", True),
        (("/api/**",), "GET", "/API/ITEMS/1", True),
        (("/api/**",), "GET", "//api//items", True),
        (("/api/**",), "GET", "/api%2Fitems", True),  # PATH_INFO of a %252F on the wire
        (("/api/**",), "GET", "/public/../api/items", True),
        (("/api/**",), "GET", "/apiary", False),
        (("/api/*/secret",), "GET", "/API/x/SECRET/", True),
        (("/**",), "GET", "/", True),
        (("/**",), "DELETE", "//x/..", True),
        (("/",), "GET", "//", True),
        (("GET /api/**",), "HEAD", "/api/items", True),
        (("GET /api/**",), "POST", "/api/items", False),
        (("GET,DELETE /api/**",), "DELETE", "/Api/Items", True),
        ((), "GET", "/api", False),
    ],
    ids=repr,
)
def test_match_tightening(patterns: tuple[str, ...], method: str, path: str, expected: bool) -> None:
    # The raw path: match_tightening makes its readings itself.
    assert match_tightening(loosening(*patterns), method, path) is expected


def test_a_pattern_never_loosens_a_path_it_tightens_differently() -> None:
    # The same rule, given a spelling that only normalisation reaches, tightens but never loosens.
    patterns = loosening("/public/secret")
    for spelling in ("//public/secret", "/public/./secret", "/public/x/../secret", "/PUBLIC/SECRET", "/public/secret/"):
        assert match_tightening(patterns, "GET", spelling), spelling
        assert not match_loosening(patterns, "GET", spelling), spelling
