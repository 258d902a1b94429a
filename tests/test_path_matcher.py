"""The path-pattern matcher: it agrees with the regular-expression translation it replaced, and its cost is at most
proportional to len(path) x len(pattern) whatever the pattern (several ``**``, several ``*`` in one segment), where
the regular expression backtracked for seconds on a 1.6 KB path. Costs are counted, never timed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from path_reference import pattern_regex

from flask_jwtgate import paths
from flask_jwtgate.paths import compile_pattern

KEY = "JWTGATE_TEST_PATHS"

PATTERN_SEGMENTS = ["a", "b", "ab", "A", "i", "s", "k", "*", "**", "a*", "*a", "a*b", "*a*", "**", "*a*a*b", "a.b"]
PATH_SEGMENTS = ["a", "b", "ab", "ba", "aab", "abab", "", "A", "aB", "a.b", "aXb", "I", "\u0131", "\u0130", "\u017f",
                 "\u212a", "\u00df", "ss"]


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(PATTERN_SEGMENTS), max_size=5))
    trailing = draw(st.booleans())  # only the last segment may be empty: '/a/' is valid, '/a//b' is not
    return "/" + "/".join(segments) + ("/" if trailing and segments else "")


path_strategy = st.lists(st.sampled_from(PATH_SEGMENTS), min_size=1, max_size=7).map(lambda s: "/" + "/".join(s))


@settings(max_examples=600, deadline=None)
@given(pattern=patterns(), path=path_strategy)
def test_exact_matching_agrees_with_the_regular_expression(pattern: str, path: str) -> None:
    expected = re.fullmatch(pattern_regex(pattern), path) is not None
    assert compile_pattern(pattern, KEY).exact.match(path) is expected


@settings(max_examples=600, deadline=None)
@given(pattern=patterns(), path=path_strategy)
def test_folded_matching_agrees_with_the_case_insensitive_regular_expression(pattern: str, path: str) -> None:
    # The folded form of '/x/' is '/x' (tightening takes a trailing slash as optional); case as re.IGNORECASE has it,
    # including the four non-ASCII letters it equates with ASCII ones (dotless i, dotted I, long s, Kelvin sign).
    bare = pattern[:-1] if len(pattern) > 1 and pattern.endswith("/") else pattern
    expected = re.fullmatch(pattern_regex(bare), path, re.IGNORECASE) is not None
    assert compile_pattern(pattern, KEY).folded.match(path) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/**/a/**/a/**/b", "/a/a/b", True),
        ("/**/a/**/a/**/b", "/x/a/y/z/a/b", True),
        ("/**/a/**/a/**/b", "/a/b", False),
        ("/**/a/**/a/**/b", "/a/a/b/c", False),
        ("/**/a/**/a/**/b", "/b/a/a", False),
        ("/api/*/detail", "/api//detail", True),  # '*' may be empty, as '[^/]*' was
        ("/x/*a*a*b", "/x/aab", True),
        ("/x/*a*a*b", "/x/abab", True),
        ("/x/*a*a*b", "/x/ab", False),
        ("/x/a*a", "/x/a", False),  # the two pieces may not overlap
        ("/x/a*a", "/x/aa", True),
        ("/exports/*.*.csv", "/exports/users.csv", False),  # a middle piece may not overlap the last one either
        ("/exports/*.*.csv", "/exports/users.2026.csv", True),
        ("/api/*/items/**", "/api/v2/items/7", True),  # a literal after a '*' segment, then '**'
        ("/api/*/items/**", "/api/v2/users/7", False),
        ("/**", "/", True),
        ("/", "/", True),
        ("/", "//", False),
    ],
    ids=repr,
)
def test_several_wildcards(pattern: str, path: str, expected: bool) -> None:
    assert compile_pattern(pattern, KEY).exact.match(path) is expected


# -- cost --------------------------------------------------------------------------------------------------------------


class Counter:
    """Wraps ``paths._segment_matches``: how many segment comparisons a match makes, and their size."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.work = 0
        real = paths._segment_matches

        def counting(element: Any, segment: str) -> bool:
            self.calls += 1
            pieces = 1 if element is None else len(element) if isinstance(element, str) else sum(map(len, element))
            self.work += (len(segment) + 1) * (pieces + 1)
            return real(element, segment)

        monkeypatch.setattr(paths, "_segment_matches", counting)


PATHOLOGICAL = [
    "/**/a/**/a/**/b",  # the hardening issue's: 7 s of CPU on a 1.6 KB path with the regular expression
    "/**/a/**/a/**/a/**/a/**/a/**/b",
    "/**/*a*/**/*a*/**/*a*/**/c",
    "/**/a/b/a/b/a/c/**/d",
    "/**/*a*a*a*a*b",
]


@pytest.mark.parametrize("pattern", PATHOLOGICAL)
@pytest.mark.parametrize("shape", ["a", "a/b", "ab", "aab/a"])
def test_match_makes_at_most_len_path_times_len_pattern_comparisons(
    monkeypatch: pytest.MonkeyPatch, pattern: str, shape: str
) -> None:
    compiled = compile_pattern(pattern, KEY)
    counter = Counter(monkeypatch)
    calls = []
    for repeats in (100, 1000, 10000):
        path = "/" + "/".join([shape] * repeats) + "/x"
        counter.calls = counter.work = 0
        assert compiled.exact.match(path) is False
        assert compiled.folded.match(path) is False
        segments, elements = path.count("/"), len(compiled.exact.elements)
        assert counter.calls <= 2 * segments * elements  # two matches: exact and folded
        assert counter.work <= 2 * 4 * len(path) * len(pattern)
        calls.append(counter.calls)
    # Linear in the path for a given pattern: ten times the path, at most ten times the comparisons (and not zero:
    # the counter sees the matcher's work).
    assert 0 < calls[0]
    assert calls[1] <= 10 * calls[0] + 10
    assert calls[2] <= 10 * calls[1] + 10


def test_a_match_that_succeeds_late_is_linear_too(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_pattern("/**/a/**/a/**/b", KEY)
    counter = Counter(monkeypatch)
    path = "/" + "/".join(["x"] * 5000 + ["a", "a", "b"])
    assert compiled.exact.match(path)
    assert counter.calls <= 5003 * len(compiled.exact.elements)


class CountingStr(str):
    """A segment that records the windows ``find`` searches (what several ``*`` in one segment cost)."""

    searched: list[tuple[int, int]]

    def find(self, sub: str, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        found = str.find(self, sub, start, end)
        self.searched.append((start, found + len(sub) if found >= 0 else end))
        return found


@pytest.mark.parametrize(
    ("element", "segment", "expected"),
    [
        (("", "a", "a", "a", "b"), "a" * 20000, False),  # '*a*a*a*b': a regular expression backtracks cubically
        (("", "a", "a", "a", "b"), "a" * 20000 + "b", True),
        (("x", "ab", "ab", "ab", ""), "x" + "ab" * 10000, True),
        (("", "aab", "aab", "c"), "aa" * 10000 + "c", False),
        (("", "aab", "aab", "c"), "ab" * 10000 + "aabaabc", True),
        (("", "a", "a", "b", ""), "a" * 300, False),  # '*a*a*b*': nothing anchors the end
        (("", "a", "a", "b", ""), "a" * 300 + "b" + "a" * 300, True),
    ],
    ids=[
        "no match", "match at the end", "match at the start", "partial pieces", "pieces at the end",
        "unanchored, no match", "unanchored match",
    ],
)
def test_several_stars_in_one_segment_scan_it_once(element: tuple[str, ...], segment: str, expected: bool) -> None:
    counted = CountingStr(segment)
    counted.searched = []
    assert paths._segment_matches(element, counted) is expected
    # One search per middle piece at most, each starting where the previous one ended: every character of the
    # segment is passed over once.
    assert len(counted.searched) <= len(element) - 2
    ends = [len(element[0])] + [end for _, end in counted.searched]
    assert all(start >= ends[index] for index, (start, _) in enumerate(counted.searched))


def test_case_folding_matches_the_regular_expressions() -> None:
    # Exactly the characters that re.IGNORECASE equates with an ASCII letter fold to it (patterns are ASCII, so no
    # other character matters): A-Z, and the dotted I, dotless i, long s and Kelvin sign.
    letter = re.compile("[a-z]", re.IGNORECASE)
    equated = [chr(code) for code in range(0x80, 0x110000) if letter.fullmatch(chr(code))]
    assert sorted(equated) == sorted("\u0130\u0131\u017f\u212a")
    folded_to_ascii = [chr(code) for code in range(0x80, 0x110000) if letter.fullmatch(paths._fold(chr(code)))]
    assert folded_to_ascii == equated
    for char in equated + list("AZaz"):
        [ascii_letter] = [c for c in "abcdefghijklmnopqrstuvwxyz" if re.fullmatch(c, char, re.IGNORECASE)]
        assert paths._fold(char) == ascii_letter
    assert paths._fold("\u00df") == "\u00df"  # no multi-letter folding ('ss'), as in the regular expressions
