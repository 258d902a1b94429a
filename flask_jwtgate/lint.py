"""The configuration lint: settings that are valid but probably not what the admin meant.

:func:`lint` is a pure function of the validated :class:`~flask_jwtgate.settings.Settings` and a few facts about
the app and the server that only the caller knows (the ``@gate.public`` views, whether the server runs several
processes). It never imports Flask; ``GET {prefix}/admin/lint``, the console and ``flask jwtgate check-config`` show
what it finds. A finding is advice, never a refusal: everything it flags is a legal configuration.

What it can decide about path rules, and how
--------------------------------------------
Patterns are sequences of segment globs (``flask_jwtgate.paths``). Whether every path one pattern matches is matched
by another (*containment*) and whether two patterns have a path in common (*intersection*) are decided over those
sequences, with ``**`` as "any number of segments". Each rule is decided in the direction that cannot raise a false
alarm:

- "never matches" rules (a public rule inside a bypass rule; a rule inside the gate's own prefix) need containment,
  and report only when it is proved;
- "restricts nothing" needs the *absence* of an intersection between a restricted-public rule and every public rule
  and ``@gate.public`` view. A restricted rule is a tightening rule: it applies to any *reading* of the path
  (``flask_jwtgate.paths.readings``), so a public path such as ``/api/..;x/admin`` (canonical, as loosening rules
  require) is also read as ``/admin``. Every public pattern is therefore widened to what its readings can reach
  before the test: one with a wildcard or a ``;`` may reach almost anything, and then no finding is made;
- "both bypassed and restricted" needs a path in both: a witness path is built and checked with the gate's own
  matchers (:func:`~flask_jwtgate.paths.match_loosening`, :func:`~flask_jwtgate.paths.match_tightening`), and the
  finding names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from .errors import ConfigurationError
from .paths import Element, PathPattern, _fold, _segment_matches, compile_pattern, match_loosening, match_tightening
from .settings import PREFIX, Settings

Elements = tuple[Element, ...]

#: ``Element`` for ``*``: any one segment.
_ANY_SEGMENT: Element = ("", "")


@dataclass(frozen=True)
class Finding:
    """One thing the lint flags.

    :param code: what kind of finding, e.g. ``"bypass_covers_public"`` (stable: scripts may match on it).
    :param key: the configuration key it is about, e.g. ``"JWTGATE_PUBLIC_PATHS"`` or ``"JWTGATE_PROVIDERS[0].issuer"``.
    :param message: what is wrong and what to do, for a person.
    """

    code: str
    key: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "key": self.key, "message": self.message}


def lint(
    settings: Settings,
    *,
    public_views: Iterable[str] = (),
    multiprocess: bool | None = None,
    web_concurrency: str | None = None,
) -> list[Finding]:
    """Everything in ``settings`` that is legal but probably wrong, in the order of the console's pages.

    :param public_views: the app's ``@gate.public`` views as path patterns (``"GET,HEAD /status"``; see
        :func:`rule_pattern`), the gate's own excluded: public paths too, for the restricted-public rules.
    :param multiprocess: whether the server runs the app in several processes (a request's ``wsgi.multiprocess``);
        ``None`` when unknown (the CLI).
    :param web_concurrency: the ``WEB_CONCURRENCY`` environment variable (gunicorn's default number of workers).

    ::

        for finding in lint(settings, public_views=["GET /health"], web_concurrency=os.environ.get("WEB_CONCURRENCY")):
            print(finding.key, finding.message)
    """
    views = tuple(_view_patterns(public_views))
    findings: list[Finding] = []
    for rule in (_providers, _groups, _proxies, _paths_under_bypass, _own_prefix, _restricted_public):
        findings += rule(settings, views)
    findings += _bypassed_and_restricted(settings)
    findings += _rate_limit_storage(settings, multiprocess, web_concurrency)
    findings += _audit_retention(settings)
    return findings


# -- identity providers --------------------------------------------------------------------------------------------


def _providers(settings: Settings, _views: Sequence[PathPattern]) -> list[Finding]:
    listed = settings.raw.get(PREFIX + "PROVIDERS") or []
    count = len(listed) if isinstance(listed, (list, tuple)) else 0
    findings = []
    for index, provider in enumerate(settings.providers):
        # Providers past the list come from the single-provider shorthand keys (JWTGATE_ISSUER, ...).
        shorthand = index >= count

        def key(field: str, shorthand: bool = shorthand, index: int = index) -> str:
            return PREFIX + field.upper() if shorthand else f"{PREFIX}PROVIDERS[{index}].{field}"

        local = provider.introspection_url is None
        if local and provider.issuer is None:
            findings.append(
                Finding(
                    "provider_without_issuer",
                    key("issuer"),
                    f"provider {provider.name!r} checks no issuer: any token its key signs is accepted, whoever issued "
                    "it (a provider signing for several tenants or realms with one key); set its issuer",
                )
            )
        if not provider.audience:
            findings.append(
                Finding(
                    "provider_without_audience",
                    key("audience"),
                    f"provider {provider.name!r} checks no audience: a token it issued for another application is "
                    "accepted here too; set the audience this API's tokens carry",
                )
            )
    return findings


# -- groups and addresses ------------------------------------------------------------------------------------------


def _groups(settings: Settings, _views: Sequence[PathPattern]) -> list[Finding]:
    findings = []
    both = sorted(settings.read_only_groups & settings.admin_groups)
    if both:
        findings.append(
            Finding(
                "read_only_admin_group",
                PREFIX + "ADMIN_GROUPS",
                f"{both} {'is' if len(both) == 1 else 'are'} an admin group and a read-only group: its members can "
                "open the console but not change anything (read-only callers may only GET); take it out of one list",
            )
        )
    if settings.allowed_groups and settings.allowed_groups.isdisjoint(settings.admin_groups):
        findings.append(
            Finding(
                "admins_not_allowed",
                PREFIX + "ALLOWED_GROUPS",
                "no admin group is an allowed group: the allowed groups apply to the gate's own endpoints too, so an "
                "admin who is not also in an allowed group is refused by the console and the admin API",
            )
        )
    return findings


def _proxies(settings: Settings, _views: Sequence[PathPattern]) -> list[Finding]:
    # A proxy header without trusted proxies, and trusted proxies without a header, are refused at start-up (and
    # at a run-time change) by Settings: worse than probably wrong.
    findings = []
    everyone = [str(network) for network in settings.trusted_proxies if network.prefixlen == 0]
    if everyone:
        findings.append(
            Finding(
                "trusts_every_address",
                PREFIX + "TRUSTED_PROXIES",
                f"{everyone} trusts every address as a proxy: any caller can choose its own client address with "
                f"{settings.proxy_header or 'the proxy header'}; list only the proxies' own addresses",
            )
        )
    return findings


# -- path rules ----------------------------------------------------------------------------------------------------


def _paths_under_bypass(settings: Settings, _views: Sequence[PathPattern]) -> list[Finding]:
    findings = []
    for public in settings.public_paths:
        for bypass in settings.bypass_paths:
            if _methods_within(public, bypass) and _within(public.exact.elements, bypass.exact.elements):
                findings.append(
                    Finding(
                        "bypass_covers_public",
                        PREFIX + "PUBLIC_PATHS",
                        f"{public.text!r} never applies: every path it matches is bypassed by {bypass.text!r}, and "
                        "the gate does not look at bypassed paths at all; remove one of them",
                    )
                )
                break
    return findings


def _own_prefix(settings: Settings, _views: Sequence[PathPattern]) -> list[Finding]:
    own = compile_pattern(settings.url_prefix + "/**", PREFIX + "URL_PREFIX").exact.elements
    findings = []
    # Restricted-public rules are left to _restricted_public: through the readings of a public path they can
    # restrict it even when they are written inside the prefix.
    for name, patterns in (("BYPASS_PATHS", settings.bypass_paths), ("PUBLIC_PATHS", settings.public_paths)):
        for pattern in patterns:
            if _within(pattern.exact.elements, own):
                findings.append(
                    Finding(
                        "rule_inside_gate_prefix",
                        PREFIX + name,
                        f"{pattern.text!r} is inside the gate's own prefix {settings.url_prefix!r}: path rules never "
                        "exempt or open the gate's own endpoints (the policy always decides them), so it has no "
                        "effect on them",
                    )
                )
    return findings


def _restricted_public(settings: Settings, views: Sequence[PathPattern]) -> list[Finding]:
    publics = (*settings.public_paths, *views)
    covers = [(pattern, _reading_covers(pattern)) for pattern in publics]
    findings = []
    for restricted in settings.restricted_public_paths:
        target = restricted.folded.elements
        if any(
            _methods_meet(restricted, public) and any(_may_meet(target, cover, drop) for cover, drop in reach)
            for public, reach in covers
        ):
            continue
        findings.append(
            Finding(
                "restricted_matches_nothing_public",
                PREFIX + "RESTRICTED_PUBLIC_PATHS",
                f"{restricted.text!r} restricts nothing: no public path (JWTGATE_PUBLIC_PATHS) and no @gate.public "
                "view falls under it, and a path that is not public already requires authentication",
            )
        )
    return findings


def _bypassed_and_restricted(settings: Settings) -> list[Finding]:
    findings = []
    for restricted in settings.restricted_public_paths:
        for bypass in settings.bypass_paths:
            witness = _witness(bypass, restricted)
            if witness is not None:
                method, path = witness
                findings.append(
                    Finding(
                        "bypassed_and_restricted",
                        PREFIX + "BYPASS_PATHS",
                        f"{method} {path} is both bypassed ({bypass.text!r}) and restricted ({restricted.text!r}): "
                        "bypass comes first, so the gate does not require authentication there; remove one of them",
                    )
                )
                break
    return findings


# -- servers and storage -------------------------------------------------------------------------------------------


def _rate_limit_storage(settings: Settings, multiprocess: bool | None, web_concurrency: str | None) -> list[Finding]:
    if settings.rate_limit is None or not settings.rate_limit_storage_uri.startswith("memory://"):
        return []
    workers = web_concurrency.strip() if web_concurrency else ""
    why = None
    if multiprocess:
        why = "the server runs this app in several processes (wsgi.multiprocess)"
    elif workers.isdigit() and int(workers) > 1:
        why = f"WEB_CONCURRENCY is {workers}"
    if why is None:
        return []
    return [
        Finding(
            "memory_rate_limit_several_processes",
            PREFIX + "RATE_LIMIT_STORAGE_URI",
            f"rate limits are counted in memory, but {why}: each process counts alone, so every token gets its limit "
            "once per process; use shared storage such as 'redis://redis-host:6379/0'",
        )
    ]


def _audit_retention(settings: Settings) -> list[Finding]:
    s = settings
    if not s.audit_enabled or s.audit_retention_days is not None or s.audit_max_entries is not None:
        return []
    return [
        Finding(
            "audit_retention_off",
            PREFIX + "AUDIT_RETENTION_DAYS",
            "the audit log is kept for ever: neither JWTGATE_AUDIT_RETENTION_DAYS nor JWTGATE_AUDIT_MAX_ENTRIES is "
            "set, so it grows without bound; set either",
        )
    ]


# -- the app's public views as patterns -----------------------------------------------------------------------------

_CONVERTER = re.compile(r"<(?:([a-zA-Z_][a-zA-Z0-9_]*)(?:\([^>]*\))?:)?[a-zA-Z_][a-zA-Z0-9_]*>")


def rule_pattern(rule: str, methods: Iterable[str] | None) -> str:
    """A Werkzeug URL rule as a path pattern that matches at least every path the rule does: a converter becomes
    ``*`` within its segment, a ``path`` converter (which spans segments) makes its segment ``**``.

    ::

        rule_pattern("/rest/api/2/issue/<key>", {"GET", "HEAD"})   # 'GET,HEAD /rest/api/2/issue/*'
    """
    segments = []
    for segment in rule.split("/")[1:]:
        spans = any(match.group(1) == "path" for match in _CONVERTER.finditer(segment))
        segments.append("**" if spans else _CONVERTER.sub("*", segment))
    path = "/" + "/".join(segments)
    names = sorted(m for m in (methods or ()) if m != "OPTIONS")
    return f"{','.join(names)} {path}" if names else path


def _view_patterns(texts: Iterable[str]) -> Iterable[PathPattern]:
    for text in texts:
        try:
            yield compile_pattern(text, "public view")
        except ConfigurationError:
            # A rule this notation cannot spell (a character patterns refuse): it may be public anywhere.
            yield compile_pattern("/**", "public view")


# -- deciding over patterns -----------------------------------------------------------------------------------------


def _method_set(pattern: PathPattern) -> frozenset[str] | None:
    methods = pattern.methods
    if methods is None:
        return None
    return methods | {"HEAD"} if "GET" in methods else methods


def _methods_within(inner: PathPattern, outer: PathPattern) -> bool:
    a, b = _method_set(inner), _method_set(outer)
    return b is None or (a is not None and a <= b)


def _methods_meet(one: PathPattern, other: PathPattern) -> bool:
    a, b = _method_set(one), _method_set(other)
    return a is None or b is None or bool(a & b)


def _seg_within(inner: Element, outer: Element) -> bool:
    """Whether every segment ``inner`` matches, ``outer`` matches (proved, or ``False``). Neither is ``**``."""
    assert inner is not None and outer is not None
    if type(inner) is str:
        return _segment_matches(outer, inner)
    if inner == outer or outer == _ANY_SEGMENT:
        return True
    if type(outer) is str or len(outer) != 2:
        return False
    # outer is 'first*last': every string of inner starts with inner's first piece and ends with its last.
    assert isinstance(inner, tuple)
    return inner[0].startswith(outer[0]) and inner[-1].endswith(outer[-1])


def _seg_may_meet(one: Element, other: Element) -> bool:
    """Whether some segment matches both (``False`` only when proved impossible). Neither is ``**``."""
    assert one is not None and other is not None
    if type(one) is str:
        return _segment_matches(other, one)
    if type(other) is str:
        return _segment_matches(one, other)
    assert isinstance(one, tuple) and isinstance(other, tuple)
    first, last = (one[0], other[0]), (one[-1], other[-1])
    return (first[0].startswith(first[1]) or first[1].startswith(first[0])) and (
        last[0].endswith(last[1]) or last[1].endswith(last[0])
    )


def _within(inner: Elements, outer: Elements) -> bool:
    """Whether every path ``inner`` matches, ``outer`` matches: proved, else ``False``."""

    @cache
    def go(i: int, j: int) -> bool:
        if j < len(outer) and outer[j] is None:
            # outer's '**' takes nothing more, or takes inner's next element (a segment, or all that a '**' takes).
            return go(i, j + 1) or (i < len(inner) and go(i + 1, j))
        if i == len(inner) or j == len(outer):
            return i == len(inner) and j == len(outer)
        if inner[i] is None:
            return False  # any number of segments against exactly one
        return _seg_within(inner[i], outer[j]) and go(i + 1, j + 1)

    return go(0, 0)


def _may_meet(one: Elements, other: Elements, optional: frozenset[int] = frozenset()) -> bool:
    """Whether some path matches both (``False`` only when proved impossible).

    :param optional: indexes of ``other``'s elements that a reading may drop (see :func:`_reading_covers`).
    """

    @cache
    def go(i: int, j: int) -> bool:
        if i == len(one) and j == len(other):
            return True
        if j in optional and go(i, j + 1):
            return True
        if i < len(one) and one[i] is None:
            return go(i + 1, j) or (j < len(other) and go(i, j + 1))
        if j < len(other) and other[j] is None:
            return go(i, j + 1) or (i < len(one) and go(i + 1, j))
        if i == len(one) or j == len(other):
            return False
        return _seg_may_meet(one[i], other[j]) and go(i + 1, j + 1)

    return go(0, 0)


def _fold_element(element: Element) -> Element:
    if element is None:
        return None
    if type(element) is str:
        return _fold(element)
    assert isinstance(element, tuple)
    return tuple(_fold(piece) for piece in element)


def _reading_covers(pattern: PathPattern) -> list[tuple[Elements, frozenset[int]]]:
    """What the readings of the canonical paths ``pattern`` matches (loosening: exact) can be, as elements to test
    with :func:`_may_meet`: at least all of them, folded for case.

    A canonical path has no ``%``, ``\\``, ``//`` or dot segment, so its readings come from stripping ``;params``
    (which may leave a segment empty, to be merged away, or ``..``, which removes the segment before it) and from
    dropping a trailing slash. A segment that a wildcard or ``**`` matches, or a literal with ``;``, can therefore
    become anything, nothing, or remove one segment before it. Such a pattern is widened to: its literal segments
    before the first such one, less one per such segment (``**`` counts as unbounded), then ``**``.
    """
    elements = pattern.exact.elements
    wild = [type(e) is not str or ";" in e for e in elements]
    if not any(wild):
        folded = tuple(_fold_element(e) for e in elements)
        trailing = frozenset({len(folded) - 1}) if folded and folded[-1] == "" else frozenset()
        return [(folded, trailing)]
    first = wild.index(True)
    eaten = len(elements) if any(e is None for e in elements) else sum(wild)
    kept = tuple(_fold_element(e) for e in elements[: max(0, first - eaten)])
    return [((*kept, None), frozenset())]


def _witness(bypass: PathPattern, restricted: PathPattern) -> tuple[str, str] | None:
    """A request (method, path) that ``bypass`` bypasses and ``restricted`` restricts, checked with the gate's own
    matchers; ``None`` when none is found (there may still be one)."""
    a, b = _method_set(bypass), _method_set(restricted)
    if a is None or b is None:
        methods = sorted(a or b or {"GET"})
    else:
        methods = sorted(a & b)
    if not methods:
        return None
    exact, folded = bypass.exact.elements, restricted.folded.elements

    def sample(element: Element) -> str:
        return element if type(element) is str else "x".join(element)  # type: ignore[arg-type]

    @cache
    def go(i: int, j: int) -> tuple[str, ...] | None:
        if i == len(exact) and j == len(folded):
            return ()
        if i < len(exact) and exact[i] is None:
            found = go(i + 1, j)
            if found is None and j < len(folded):
                rest = go(i, j + 1)
                found = rest if rest is None or folded[j] is None else (sample(folded[j]), *rest)
            return found
        if j < len(folded) and folded[j] is None:
            found = go(i, j + 1)
            if found is None and i < len(exact):
                rest = go(i + 1, j)
                found = None if rest is None else (sample(exact[i]), *rest)
            return found
        if i == len(exact) or j == len(folded):
            return None
        for candidate in (sample(exact[i]), sample(folded[j])):
            if _segment_matches(exact[i], candidate) and _segment_matches(folded[j], _fold(candidate)):
                rest = go(i + 1, j + 1)
                return None if rest is None else (candidate, *rest)
        return None

    segments = go(0, 0)
    if segments is None:
        return None
    path = "/" + "/".join(segments)
    method = methods[0]
    if match_loosening((bypass,), method, path) and match_tightening((restricted,), method, path):
        return method, path
    return None
