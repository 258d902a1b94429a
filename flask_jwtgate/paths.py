"""Path patterns, and how a request path is matched against them without being fooled.

Threat model. A rule that *loosens* the gate (bypass, public) must never match a path that merely looks like the
pattern after some later layer rewrites it, and a rule that *tightens* it (protected, restricted public) must match
every spelling that some layer could turn into the pattern. So the two kinds match differently:

* Tightening rules match a normalised path: percent-decoded once more, backslashes as slashes, repeated slashes
  collapsed, dot segments resolved, trailing slash dropped, and compared case-insensitively.
* Loosening rules match only a *canonical* path (no ``//``, no ``.`` or ``..`` segment, no ``%``, ``\\`` or control
  characters), exactly and case-sensitively, as Flask's router compares it. Anything else is not loosened: a
  ``//health`` or ``/public/../admin`` stays protected, and a router redirect to the canonical URL is itself gated.

Patterns: ``*`` matches within one segment, ``**`` any number of segments (``/api/**`` matches ``/api`` too), and a
pattern may start with a method or a comma-separated list of methods: ``"GET /rest/api/2/serverInfo"``. A ``GET``
pattern also matches ``HEAD``, which Flask routes to the same view.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import ConfigurationError

_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*\Z")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._~!$&'()+,;=:@*-]*\Z")
_NOT_CANONICAL = re.compile(r"//|/\.\.?(?:/|\Z)|[%\\\x00-\x20\x7f]")


@dataclass(frozen=True)
class PathPattern:
    """One compiled path rule.

    :param text: the pattern as configured, e.g. ``"GET /rest/api/2/serverInfo"``.
    """

    text: str
    methods: frozenset[str] | None
    exact: re.Pattern[str]
    folded: re.Pattern[str]

    def matches_method(self, method: str) -> bool:
        return self.methods is None or method in self.methods or (method == "HEAD" and "GET" in self.methods)


def compile_pattern(text: object, key: str) -> PathPattern:
    """Compile one pattern, raising :class:`ConfigurationError` naming ``key`` if it is not valid."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(key, f"{text!r} is not a path pattern; use e.g. '/rest/**' or 'GET /health'")
    methods: frozenset[str] | None = None
    path = text.strip()
    if " " in path:
        method_part, _, path = path.partition(" ")
        path = path.strip()
        names = [m.strip() for m in method_part.split(",")]
        if not all(_METHOD.match(m) for m in names):
            raise ConfigurationError(key, f"{text!r}: the method must be upper case, e.g. 'GET /health'")
        methods = frozenset(names)
    if path == "**":
        path = "/**"
    if not path.startswith("/"):
        raise ConfigurationError(key, f"{text!r}: a path pattern starts with '/', e.g. '/rest/**'")
    segments = path.split("/")[1:]
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (".", "..") or (segment == "" and not last) or not _SEGMENT_CHARS.match(segment):
            raise ConfigurationError(
                key, f"{text!r}: segments may not be empty, '.' or '..', nor contain '%', '\\' or spaces"
            )
        if segment == "**":
            parts.append("(?:/[^/]*)*")
        elif "**" in segment:
            raise ConfigurationError(key, f"{text!r}: '**' must be a whole segment, as in '/api/**'")
        else:
            parts.append("/" + re.escape(segment).replace(r"\*", "[^/]*"))
    # Normalised paths never end in '/' (but for the root), so the folded form drops a trailing empty segment.
    folded_parts = parts[:-1] if len(parts) > 1 and parts[-1] == "/" else parts
    return PathPattern(
        text=text,
        methods=methods,
        exact=re.compile("".join(parts) + r"\Z"),
        folded=re.compile("".join(folded_parts) + r"\Z", re.IGNORECASE),
    )


def compile_patterns(values: object, key: str) -> tuple[PathPattern, ...]:
    if not isinstance(values, (list, tuple)):
        raise ConfigurationError(key, f"must be a list of path patterns such as ['/rest/**'], not {values!r}")
    return tuple(compile_pattern(value, key) for value in values)


def is_canonical(path: str) -> bool:
    """Whether ``path`` is in the one spelling that loosening rules may match."""
    return path.startswith("/") and _NOT_CANONICAL.search(path) is None


def normalise(path: str) -> str:
    """The most general reading of ``path``, for rules that tighten the gate."""
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


def match_loosening(patterns: tuple[PathPattern, ...], method: str, path: str) -> bool:
    """Whether a bypass or public rule applies: canonical paths only, exact and case-sensitive."""
    if not patterns or not is_canonical(path):
        return False
    return any(p.matches_method(method) and p.exact.match(path) for p in patterns)


def match_tightening(patterns: tuple[PathPattern, ...], method: str, normalised: str) -> bool:
    """Whether a protected or restricted rule applies to the normalised path, in any case."""
    return any(p.matches_method(method) and p.folded.match(normalised) for p in patterns)
