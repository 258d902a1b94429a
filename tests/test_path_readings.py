"""The readings of a raw request path, which tightening rules (protected, restricted public) match: every spelling a
layer could make of it, so that no spelling lets a path slip out of a rule; and loosening rules, which still match
only the canonical spelling."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from path_reference import exact_match, tight_match

from flask_jwtgate import paths
from flask_jwtgate.paths import (
    compile_patterns,
    is_canonical,
    match_loosening,
    match_tightening,
    normalise,
    readings,
)

KEY = "JWTGATE_TEST_PATHS"

# What a path segment is made of: names, dot segments, escapes that a layer may decode once more, backslashes,
# ';params'. '2f', '2e', '5c' after a '%25' make a double encoding.
TOKENS = ["a", "b", "x", "A", "2f", "2e", "5c", ".", "..", "%2e", "%2f", "%5c", "%25", "%2E%2E", "\\", ";", ";v=1", ""]
segment_strategy = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map("".join)
raw_paths = st.builds(
    lambda segments, trailing: "/" + "/".join(segments) + ("/" if trailing else ""),
    st.lists(segment_strategy, min_size=1, max_size=6),
    st.booleans(),
)
PATTERN_SEGMENTS = ["a", "b", "x", "*", "**", "a*", "*b"]
pattern_strategy = st.builds(
    lambda method, segments: (method + " " if method else "") + "/" + "/".join(segments),
    st.sampled_from(["", "GET", "POST", "GET,POST"]),
    st.lists(st.sampled_from(PATTERN_SEGMENTS), min_size=1, max_size=4),
)


def old_normalise(path: str) -> str:
    """What tightening rules matched before they matched every reading (decoded once more, then resolved)."""
    path = unquote(path).replace("\\", "/")
    resolved: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if resolved:
                resolved.pop()
            continue
        resolved.append(segment)
    return "/" + "/".join(resolved)


# -- examples ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/rest/api/2/issue/DEMO-1", "/a.b/c..d/.e", "/caf\u00e9", "/x y"], ids=repr)
def test_a_path_no_step_changes_is_its_own_only_reading(path: str) -> None:
    assert readings(path) == {path}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # The hardening issue's examples, as PATH_INFO (the server has decoded the URL once).
        ("/rest/api/2/issue/..\\..\\..\\..\\x", {"/rest/api/2/issue/..\\..\\..\\..\\x", "/x"}),
        ("/rest/api/2/issue/x%2f..%2f..%2f..%2f..%2f..", {"/rest/api/2/issue/x%2f..%2f..%2f..%2f..%2f..", "/"}),
        ("/dir/", {"/dir/", "/dir"}),
        ("/LINUX/", {"/LINUX/", "/LINUX"}),  # only slashes are dropped, whatever letter comes before them
        ("/a;x/..;/b", {"/a;x/..;/b", "/a/../b", "/b"}),
        ("//a//b", {"//a//b", "/a/b"}),
        ("/a/b/..", {"/a/b/..", "/a/", "/a"}),
        ("/%252e%252e/a", {"/%252e%252e/a", "/%2e%2e/a", "/../a", "/a"}),  # decoded until it stops
        ("/a/%2e%2E/b", {"/a/%2e%2E/b", "/a/../b", "/b"}),
        ("/a%5c..%5cb", {"/a%5c..%5cb", "/a\\..\\b", "/a/../b", "/b"}),
        ("rel/x", {"/rel/x"}),
        ("", {"/"}),
    ],
    ids=repr,
)
def test_readings_include_raw_and_resolved_spellings(path: str, expected: set[str]) -> None:
    found = readings(path)
    assert found is not None
    assert expected <= found


@pytest.mark.parametrize(
    ("patterns", "method", "path"),
    [
        (("/rest/**",), "GET", "/rest/api/2/issue/..\\..\\..\\..\\x"),  # routing sees '<key>' = '..\..\..\..\x'
        (("/rest/**",), "GET", "/rest/api/2/issue/x%2f..%2f..%2f..%2f..%2f.."),
        (("/rest/api/2/issue/*",), "GET", "/rest/api/2/issue/..\\..\\x"),
        (("/rest/api/2/issue/*",), "DELETE", "/REST/api/2/Issue/..;"),
        (("/admin/**",), "GET", "/admin;x/"),  # a Tomcat-style ';params' reading
        (("/admin/**",), "GET", "/x/..;/admin"),
        (("/admin",), "GET", "/%2561dmin"),  # decoded more than once
        (("/files/*",), "GET", "/files/"),  # '*' may be empty, and the raw reading keeps the slash
        (("/linux",), "DELETE", "/LINUX/"),  # the reading without the trailing slash, in another case
        (("/a/**",), "GET", "/b/../a/x"),
    ],
    ids=repr,
)
def test_tightening_matches_any_reading(patterns: tuple[str, ...], method: str, path: str) -> None:
    assert match_tightening(compile_patterns(list(patterns), KEY), method, path)


@pytest.mark.parametrize(
    ("patterns", "method", "path"),
    [
        (("/rest/**",), "GET", "/rested/x"),
        (("/rest/**",), "GET", "/x/rest"),
        (("POST /rest/**",), "GET", "/rest/x"),
        (("/admin",), "GET", "/admin/x"),
        (("/admin",), "GET", "/adminx;/.."),  # readings: '/adminx;/..', '/adminx/..', '/', ...: none is '/admin'
    ],
    ids=repr,
)
def test_tightening_does_not_match_unrelated_readings(patterns: tuple[str, ...], method: str, path: str) -> None:
    assert not match_tightening(compile_patterns(list(patterns), KEY), method, path)


def test_too_many_readings_fail_closed() -> None:
    path = "/x/%252e%252e/%255c/..;/a//b/./c/"
    assert readings(path) is None
    # Then every tightening rule for the method applies, wherever the path may lead.
    assert match_tightening(compile_patterns(["/elsewhere/**"], KEY), "GET", path)
    assert not match_tightening(compile_patterns(["POST /elsewhere/**"], KEY), "GET", path)
    assert not match_tightening((), "GET", path)


def test_the_limit_on_readings_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    at_limit = "/;\\./\\%25;//"  # exactly MAX_READINGS readings: still told apart
    over = "/%2e/;\\/%252f/"  # one more: too ambiguous
    found = readings(at_limit)
    assert found is not None and len(found) == paths.MAX_READINGS
    assert readings(over) is None
    assert not match_tightening(compile_patterns(["/elsewhere/**"], KEY), "GET", at_limit)
    assert match_tightening(compile_patterns(["/elsewhere/**"], KEY), "GET", over)
    monkeypatch.setattr(paths, "MAX_READINGS", paths.MAX_READINGS + 1)
    assert len(readings(over) or ()) == paths.MAX_READINGS


def test_normalise_is_one_reading() -> None:
    path = "/x/..%2Fapi//items/./"
    found = readings(path)
    assert found is not None and normalise(path) in found


# -- properties --------------------------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(path=raw_paths)
def test_readings_are_closed_under_every_step(path: str) -> None:
    found = readings(path)
    if found is None:
        return
    assert path in found
    for reading in found:
        assert reading.startswith("/")
        for step in paths._STEPS:
            assert step(reading) in found, (reading, step)


@settings(max_examples=500, deadline=None)
@given(path=raw_paths)
def test_the_shortcut_is_taken_only_by_paths_no_step_changes(path: str) -> None:
    if paths._unambiguous(path):
        assert all(step(path) == path for step in paths._STEPS)


@settings(max_examples=500, deadline=None)
@given(patterns=st.lists(pattern_strategy, min_size=1, max_size=3), method=st.sampled_from(["GET", "HEAD", "POST"]),
       path=raw_paths)
def test_tightening_is_any_reading_matching_the_reference(patterns: list[str], method: str, path: str) -> None:
    compiled = compile_patterns(patterns, KEY)
    found = readings(path)
    if found is None:  # too ambiguous: every rule for the method applies
        expected = any(compiled_pattern.matches_method(method) for compiled_pattern in compiled)
    else:
        expected = any(tight_match(p, method, reading) for p in patterns for reading in found)
    assert match_tightening(compiled, method, path) is expected
    # Every spelling the gate matched before is still matched: the raw one, and the one resolved once.
    if any(tight_match(p, method, old_normalise(path)) or tight_match(p, method, path) for p in patterns):
        assert match_tightening(compiled, method, path)


@settings(max_examples=300, deadline=None)
@given(patterns=st.lists(pattern_strategy, min_size=1, max_size=3), method=st.sampled_from(["GET", "HEAD", "POST"]),
       path=raw_paths)
def test_loosening_matches_only_the_canonical_spelling_exactly(patterns: list[str], method: str, path: str) -> None:
    segments = path.split("/")[1:]
    canonical = "" not in segments[:-1] and not {".", ".."} & set(segments) and not set("%\\") & set(path)
    expected = canonical and any(exact_match(p, method, path) for p in patterns)
    assert is_canonical(path) is canonical
    assert match_loosening(compile_patterns(patterns, KEY), method, path) is expected
