"""A reference for path patterns, independent of ``flask_jwtgate.paths``: the translation of a pattern into a regular
expression that the gate used before its matcher was rewritten (correct, but it backtracks: keep inputs small)."""

from __future__ import annotations

import re


def split_pattern(text: str) -> tuple[frozenset[str] | None, str]:
    """``"GET,POST /x"`` → ``({"GET", "POST"}, "/x")``; ``"**"`` is ``"/**"``."""
    text = text.strip()
    methods: frozenset[str] | None = None
    if " " in text:
        method_part, _, text = text.partition(" ")
        methods = frozenset(m.strip() for m in method_part.split(","))
        text = text.strip()
    return methods, "/**" if text == "**" else text


def pattern_regex(path_pattern: str) -> str:
    """The regular expression of a pattern's path: ``*`` any characters but ``/``, ``**`` any number of segments."""
    parts = []
    for segment in path_pattern.split("/")[1:]:
        if segment == "**":
            parts.append("(?:/[^/]*)*")
        else:
            parts.append("/" + re.escape(segment).replace(r"\*", "[^/]*"))
    return "".join(parts)


def method_applies(methods: frozenset[str] | None, method: str) -> bool:
    return methods is None or method in methods or (method == "HEAD" and "GET" in methods)


def exact_match(pattern: str, method: str, path: str) -> bool:
    """A loosening pattern on one spelling: exact and case-sensitive."""
    methods, path_pattern = split_pattern(pattern)
    return method_applies(methods, method) and re.fullmatch(pattern_regex(path_pattern), path) is not None


def tight_match(pattern: str, method: str, path: str) -> bool:
    """A tightening pattern on one spelling: case-insensitive, a trailing slash optional on either side."""
    methods, path_pattern = split_pattern(pattern)
    if not method_applies(methods, method):
        return False
    bare = path_pattern[:-1] if len(path_pattern) > 1 and path_pattern.endswith("/") else path_pattern
    spellings = (path, path.rstrip("/") or "/")
    return any(
        re.fullmatch(pattern_regex(p), s, re.IGNORECASE) is not None for p in (path_pattern, bare) for s in spellings
    )
