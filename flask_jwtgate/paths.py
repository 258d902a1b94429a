"""Path patterns, and how a request path is matched against them without being fooled.

Threat model. The path the rules see is the one Flask routes on (``PATH_INFO``, which the WSGI server has already
percent-decoded once, as :func:`flask_jwtgate.state.request_path` gives it), and the caller chooses every character
of it. Flask's router matches it literally: ``..`` or ``..\\..\\x`` is an ordinary value of a ``<key>`` converter.
But another layer (a proxy, the view, a file server behind it) may read the same string differently: decode it
again, take ``\\`` for ``/``, strip ``;params``, merge ``//``, resolve dot segments. So a rule that *loosens* the gate
(bypass, public) matches only a canonical spelling, exactly as Flask routes it, and a rule that *tightens* it
(protected, restricted public, and any deny rule to come) applies as soon as *one* reading falls under it:

* Tightening rules (:func:`match_tightening`, given the raw path) apply when the pattern matches any *reading* of
  the path, case-insensitively. The readings (:func:`readings`) are the raw path and every string made from it by
  these steps, in any order, any number of times: percent-decoding once more (so repeatedly), ``\\`` as ``/``,
  ``;params`` stripped from each segment, repeated slashes merged, dot segments resolved, trailing slashes dropped.
  Guarantee: the raw path is a reading, so when Flask routes a request to a view whose URL rule, with the request's
  values in it, matches a tightening pattern, the rule applies: ``/rest/api/2/issue/..\\..\\x`` is under ``/rest/**``
  (the view Flask runs is ``/rest/api/2/issue/<key>``), and also under a rule for ``/rest/api/x``, where another
  layer may take it. A path with more than :data:`MAX_READINGS` readings (deep encodings, many tricks mixed) is too
  ambiguous to tell: every tightening rule whose method matches applies to it (it fails closed).
* Loosening rules (:func:`match_loosening`) match only a *canonical* path (no ``//``, no ``.`` or ``..`` segment, no
  ``%``, ``\\`` or control characters), exactly and case-sensitively, as Flask's router compares it. Anything else is
  not loosened: a ``//health`` or ``/public/../admin`` stays protected, and a router redirect to the canonical URL is
  itself gated.

Not covered: decodings other than percent-decoding as UTF-8 (IIS's ``%u002f``, overlong UTF-8, Unicode compatibility
forms such as a fullwidth ``／``); a layer that reads paths in those ways needs a rule of its own. Case-insensitive
means as Python's ``re.IGNORECASE`` compares an ASCII pattern: ASCII letters, and the dotted and dotless i, the long s
and the Kelvin sign that it equates with them.

Patterns: ``*`` matches within one segment, ``**`` any number of segments (``/api/**`` matches ``/api`` too), and a
pattern may start with a method or a comma-separated list of methods: ``"GET /rest/api/2/serverInfo"``. A ``GET``
pattern also matches ``HEAD``, which Flask routes to the same view.

Cost. The caller chooses the path, and a path that misses the route memo is classified afresh, so nothing here may
cost more than a few passes over it: matching never backtracks (the greedy wildcard algorithm, ``**`` over segments,
``*`` within one by substring search), so a pattern costs at most O(len(path) x len(pattern)) whatever it is, e.g.
``/**/a/**/a/**/b``; and the readings are at most :data:`MAX_READINGS`, each made by one pass per step.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import unquote

from .errors import ConfigurationError

_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*\Z")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._~!$&'()+,;=:@*-]*\Z")
# Regular expressions that start with a literal or are one character class scan fast; alternations do not (about
# 30 ns a character), and the caller chooses the path's length.
_NOT_CANONICAL_CHARS = re.compile(r"[%\\\x00-\x20\x7f]")
_DOT_SEGMENT = re.compile(r"/\.\.?(?:/|\Z)")
_PARAMS = re.compile(r";[^/]*")
_SLASHES = re.compile(r"//+")

#: More readings than this and a path is too ambiguous to tell: every tightening rule applies to it. Ordinary paths
#: have one; the attacks of the hardening issue a handful; each reading costs a pass over the path per rule.
MAX_READINGS = 64

#: A pattern's segment: a literal, the literal pieces around its ``*`` (``"a*b*"`` is ``("a", "b", "")``), or
#: ``None`` for ``**``.
Element: TypeAlias = "str | tuple[str, ...] | None"

# Non-ASCII characters that Python's case-insensitive regular expressions (and upper-casing layers) equate with an
# ASCII letter, and that str.lower() alone does not turn into it. Patterns are ASCII, so these are the only ones that
# matter; 'K' (KELVIN SIGN) lowers to 'k' by itself.
_FOLD_EXTRA = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})


def _fold(text: str) -> str:
    """``text`` case-folded for comparison with an ASCII pattern."""
    return text.lower() if text.isascii() else text.translate(_FOLD_EXTRA).lower()


# -- the matcher -------------------------------------------------------------------------------------------------------


def _segment_matches(element: Element, segment: str) -> bool:
    """Whether one path segment matches one pattern segment (a literal, its pieces around ``*``, or ``**``)."""
    if type(element) is str:
        return element == segment
    if element is None:
        return True
    # Between the anchored first and last pieces, each middle piece is taken at its leftmost place: leaving more room
    # for the pieces after it can only help, so no other placement is ever tried (no backtracking).
    first, last = element[0], element[-1]
    end = len(segment) - len(last)
    if end < len(first) or not segment.startswith(first) or not segment.endswith(last):
        return False
    position = len(first)
    for piece in element[1:-1]:
        found = segment.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def _segments_match(elements: tuple[Element, ...], segments: list[str]) -> bool:
    """Whether the path's segments match the pattern's: the greedy wildcard algorithm with ``**`` as the star.

    Only the last ``**`` seen is ever moved, one segment at a time: a later ``**`` can absorb anything an earlier one
    could, so the earlier one's other choices need never be tried. Each (segment, element) pair is compared at most
    once, so a match makes at most len(segments) x len(elements) comparisons.
    """
    # The elements after the last '**' take the path's last segments, one each: checked first, as most paths that do
    # not match fail there at once.
    total = len(elements)
    while total and elements[total - 1] is not None:
        total -= 1
    fixed = len(elements) - total
    count = len(segments) - fixed
    if count < 0 or (total == 0 and count != 0):
        return False
    for k in range(1, fixed + 1):
        if not _segment_matches(elements[-k], segments[-k]):
            return False
    if total == 0:
        return True  # no '**' at all: every segment was compared
    # What is left ends with a '**', which takes whatever the elements before it leave over.
    i = j = 0
    star = -1  # the element index of the last '**' seen
    star_at = 0  # the segment index from which it absorbs
    while i < count:
        element = elements[j]
        if element is None:
            if j + 1 == total:
                return True
            star, star_at = j, i
            j += 1
            continue
        if _segment_matches(element, segments[i]):
            i += 1
            j += 1
            continue
        if star < 0:
            return False
        star_at += 1
        i, j = star_at, star + 1
    return all(elements[k] is None for k in range(j, total))


@dataclass(frozen=True)
class Glob:
    """A compiled path pattern (without its methods), matched segment by segment.

    :param elements: the pattern's segments (see :data:`Element`).
    :param folded: compare case-insensitively (the elements are lower case).

    ::

        glob = Glob.of(["api", "**"])
        glob.match("/api/items/7")   # True
    """

    elements: tuple[Element, ...]
    folded: bool = False
    #: The path a pattern without wildcards matches, or None.
    literal: str | None = None
    #: For a pattern that is literal segments and a final '**': the path those segments make ('' for '/**').
    prefix: str | None = None

    @classmethod
    def of(cls, segments: list[str], folded: bool = False) -> Glob:
        """The glob of a pattern's segments (the parts between its slashes)."""
        if folded:
            segments = [s.lower() for s in segments]
        elements = tuple(_element(s) for s in segments)
        literal = prefix = None
        # The commonest patterns ('/health', '/rest/**') are one string comparison, without splitting the path.
        if not any("*" in s for s in segments):
            literal = "/" + "/".join(segments)
        elif segments[-1] == "**" and not any("*" in s for s in segments[:-1]):
            prefix = "/" + "/".join(segments[:-1]) if len(segments) > 1 else ""
        return cls(elements, folded, literal, prefix)

    def match(self, path: str) -> bool:
        """Whether the whole of ``path`` (which starts with ``/``) matches."""
        return self.matches(_fold(path) if self.folded else path)

    def matches(self, path: str) -> bool:
        """:meth:`match` for a path already folded when this glob is."""
        if self.literal is not None:
            return path == self.literal
        if self.prefix is not None:
            size = len(self.prefix)
            return path.startswith(self.prefix) and (len(path) == size or path[size] == "/")
        return path.startswith("/") and _segments_match(self.elements, path[1:].split("/"))


# -- patterns ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathPattern:
    """One compiled path rule.

    :param text: the pattern as configured, e.g. ``"GET /rest/api/2/serverInfo"``.
    """

    text: str
    methods: frozenset[str] | None
    #: Loosening rules: exact and case-sensitive.
    exact: Glob
    #: Tightening rules: case-insensitive, a trailing slash optional.
    folded: Glob

    def matches_method(self, method: str) -> bool:
        return self.methods is None or method in self.methods or (method == "HEAD" and "GET" in self.methods)


def _element(segment: str) -> Element:
    if segment == "**":
        return None
    return tuple(segment.split("*")) if "*" in segment else segment


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
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (".", "..") or (segment == "" and not last) or not _SEGMENT_CHARS.match(segment):
            raise ConfigurationError(
                key, f"{text!r}: segments may not be empty, '.' or '..', nor contain '%', '\\' or spaces"
            )
        if "**" in segment and segment != "**":
            raise ConfigurationError(key, f"{text!r}: '**' must be a whole segment, as in '/api/**'")
    # Tightening compares readings with and without their trailing slash, so its form of '/x/' is '/x': both match.
    folded_segments = segments[:-1] if len(segments) > 1 and segments[-1] == "" else segments
    return PathPattern(
        text=text,
        methods=methods,
        exact=Glob.of(segments),
        folded=Glob.of(folded_segments, folded=True),
    )


def compile_patterns(values: object, key: str) -> tuple[PathPattern, ...]:
    if not isinstance(values, (list, tuple)):
        raise ConfigurationError(key, f"must be a list of path patterns such as ['/rest/**'], not {values!r}")
    return tuple(compile_pattern(value, key) for value in values)


# -- readings ----------------------------------------------------------------------------------------------------------


def is_canonical(path: str) -> bool:
    """Whether ``path`` is in the one spelling that loosening rules may match."""
    return (
        path.startswith("/")
        and "//" not in path
        and _DOT_SEGMENT.search(path) is None
        and _NOT_CANONICAL_CHARS.search(path) is None
    )


def _unambiguous(path: str) -> bool:
    """Whether no reading step changes ``path``, so that it is its own only reading (the common case, kept cheap)."""
    return not (
        "%" in path
        or "\\" in path
        or ";" in path
        or "//" in path
        or (path.endswith("/") and path != "/")
        or ("/." in path and _DOT_SEGMENT.search(path) is not None)
    )


def _backslashes(path: str) -> str:
    return path.replace("\\", "/")


def _strip_params(path: str) -> str:
    # ';params' end at the segment's end (RFC 3986 §3.3, as Tomcat and Spring read them): '/a;x/..;/b' is '/a/../b'.
    return _PARAMS.sub("", path) if ";" in path else path


def _merge_slashes(path: str) -> str:
    return _SLASHES.sub("/", path) if "//" in path else path


def _resolve_dots(path: str) -> str:
    """RFC 3986 §5.2.4 on a path that starts with ``/``: empty segments are kept, ``..`` above the root stays there."""
    if _DOT_SEGMENT.search(path) is None:
        return path
    segments = path.split("/")
    resolved = [""]  # the root, never popped
    for segment in segments[1:]:
        if segment == "..":
            if len(resolved) > 1:
                resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    if segments[-1] in (".", ".."):
        resolved.append("")  # '/a/b/..' is the directory '/a/'
    return "/".join(resolved)


def _drop_trailing_slashes(path: str) -> str:
    return path.rstrip("/") or "/"


#: The steps from which the readings of a path are made; each maps a path starting with '/' to another.
_STEPS: tuple[Callable[[str], str], ...] = (
    unquote,
    _backslashes,
    _strip_params,
    _merge_slashes,
    _resolve_dots,
    _drop_trailing_slashes,
)


def readings(path: str) -> frozenset[str] | None:
    """Every spelling of ``path`` that a layer could read, for rules that tighten the gate; ``None`` when there are
    more than :data:`MAX_READINGS` (then every tightening rule applies).

    :param path: the raw request path, as Flask routes it (``flask_jwtgate.state.request_path``).

    ::

        readings("/rest/api")                    # {'/rest/api'}: a canonical path is its own only reading
        "/x" in readings("/rest/..%5C..%5Cx")    # True, and so is '/rest/..%5C..%5Cx' itself
    """
    if not path.startswith("/"):
        path = "/" + path
    if _unambiguous(path):
        return frozenset((path,))
    seen = {path}
    pending = [path]
    while pending:
        current = pending.pop()
        for step in _STEPS:
            reading = step(current)
            if reading not in seen:
                if len(seen) >= MAX_READINGS:
                    return None
                seen.add(reading)
                if not _unambiguous(reading):  # else every step leaves it as it is
                    pending.append(reading)
    return frozenset(seen)


def normalise(path: str) -> str:
    """The most resolved single reading of ``path``: decoded once more, backslashes as slashes, repeated slashes
    merged, dot segments resolved, no trailing slash. One of :func:`readings`; rules match all of them."""
    if not path.startswith("/"):
        path = "/" + path
    return _drop_trailing_slashes(_resolve_dots(_merge_slashes(_backslashes(unquote(path)))))


# -- the rules ---------------------------------------------------------------------------------------------------------


def match_loosening(patterns: tuple[PathPattern, ...], method: str, path: str) -> bool:
    """Whether a bypass or public rule applies: canonical paths only, exact and case-sensitive."""
    if not patterns or not is_canonical(path):
        return False
    return any(p.matches_method(method) and p.exact.match(path) for p in patterns)


def match_tightening(patterns: tuple[PathPattern, ...], method: str, path: str) -> bool:
    """Whether a protected, restricted-public or other tightening rule applies: to any reading of ``path``, in any
    case (see :func:`readings`).

    :param path: the raw request path (``flask_jwtgate.state.request_path``), never a normalised one: the readings
        are made here, so that no caller can forget one.
    """
    rules = [p.folded for p in patterns if p.matches_method(method)]
    if not rules:
        return False
    spellings = readings(path)
    if spellings is None:
        return True  # too ambiguous to tell which rules it falls under: all of them (fail closed)
    for spelling in spellings:
        folded = _fold(spelling)
        if any(rule.matches(folded) for rule in rules):
            return True
    return False
