"""No spelling of a path lets a request out of a tightening rule, through a real Flask app: a view that Flask routes
under a protected rule never runs anonymously, and a ``@gate.public`` view under a restricted-public rule never runs
anonymously, whatever dot segments, escapes, backslashes or ``;params`` the URL holds.

Requests are sent as a WSGI server hands them to the app: the URL on the wire is percent-decoded exactly once into
``PATH_INFO`` (PEP 3333), and nothing tidies up ``//`` or dot segments before Flask routes it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from audit_helpers import audit_rows
from flask import Flask, jsonify, request
from hypothesis import given, settings
from hypothesis import strategies as st
from path_reference import tight_match

from flask_jwtgate.paths import compile_patterns
from flask_jwtgate.testing import KeyPair, make_app

# -- the app -----------------------------------------------------------------------------------------------------------

#: Its views: URL rule -> whether the view is @gate.public. Plain rules, '<id>' and '<path:...>' converters, nested
#: ones, a trailing-slash rule, and a catch-all.
RULES = {
    "/a": False,
    "/a/<id>": False,
    "/a/b/<path:rest>": False,
    "/b/<id>/c": False,
    "/c/": False,
    "/p/<id>": True,
    "/p/<id>/d": True,
    "/q/<path:rest>": True,
    "/x": True,
    "/<path:anything>": False,
}
#: A view's rule "instantiated with plain values": each converter value becomes 'vv' segments (as many as the value
#: had), which only a bare '*' or '**' can match, since no pattern below contains a 'v'.
PLAIN = "vv"
CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


class EscapeApp:
    """The gate in front of views that record when they run; rules are swapped in per example."""

    def __init__(self, keys: dict[str, KeyPair]) -> None:
        self.app, self.gate = make_app(keys, JWTGATE_AUDIT_ENABLED=False)
        self.ran: list[tuple[str, dict[str, Any]]] = []
        self.base = self.app.extensions["jwtgate"].settings
        for index, (rule, public) in enumerate(RULES.items()):
            self.app.add_url_rule(rule, f"view{index}", self._view(public), methods=["GET", "POST"])
        self.client = self.app.test_client()

    def _view(self, public: bool) -> Any:
        def view(**values: Any) -> Any:
            assert request.url_rule is not None
            self.ran.append((request.url_rule.rule, values))
            return jsonify(ok=True)

        return self.gate.public(view) if public else view

    def use(self, protected: list[str], restricted: list[str]) -> None:
        """Apply these rules, as a runtime settings change does."""
        settings = dataclasses.replace(
            self.base,
            protected_paths=compile_patterns(protected, "JWTGATE_PROTECTED_PATHS"),
            restricted_public_paths=compile_patterns(restricted, "JWTGATE_RESTRICTED_PUBLIC_PATHS"),
        )
        self.app.extensions["jwtgate"].apply(settings)

    def send(self, method: str, wire_path: str) -> int:
        """Send ``wire_path`` (the URL's path as the client wrote it) without credentials; the status."""
        path_info = unquote_to_bytes(wire_path).decode("latin-1")  # what a WSGI server puts in PATH_INFO
        response = self.client.open("/", method=method, environ_overrides={"PATH_INFO": path_info})
        return response.status_code


def instantiate(rule: str, values: dict[str, Any]) -> str:
    def plain(match: re.Match[str]) -> str:
        return "/".join([PLAIN] * (str(values[match.group(1)]).count("/") + 1))

    return CONVERTER.sub(plain, rule)


@pytest.fixture(scope="module")
def escape_app(jwtgate_keys: dict[str, KeyPair]) -> Iterator[EscapeApp]:
    yield EscapeApp(jwtgate_keys)


# -- generated rules and requests --------------------------------------------------------------------------------------

TOKENS = ["a", "b", "c", "d", "p", "q", "x", "A", "B", "P", "2f", "2F", "2e", "5c", ".", "..", "%2e", "%2E",
          "%2f", "%2F", "%5c", "%5C", "%25", "\\", ";", ";x", ""]
segments = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map("".join)
wire_paths = st.builds(
    lambda parts, trailing: "/" + "/".join(parts) + ("/" if trailing else ""),
    st.lists(segments, min_size=1, max_size=7),
    st.booleans(),
)
PATTERN_SEGMENTS = ["a", "b", "c", "d", "p", "q", "x", "A", "P", "*", "**", "a*", "*b", "p*"]
patterns = st.builds(
    lambda method, parts, slash: (method + " " if method else "") + "/" + "/".join(parts) + ("/" if slash else ""),
    st.sampled_from(["", "", "GET", "POST", "GET,POST", "DELETE"]),
    st.lists(st.sampled_from(PATTERN_SEGMENTS), min_size=1, max_size=4),
    st.booleans(),
)
requests = st.lists(st.tuples(st.sampled_from(["GET", "HEAD", "POST"]), wire_paths), min_size=1, max_size=6)


def check_never_anonymous(
    h: EscapeApp, protected: list[str], restricted: list[str], sent: list[tuple[str, str]]
) -> None:
    h.use(protected, restricted)
    for method, wire_path in sent:
        h.ran.clear()
        status = h.send(method, wire_path)
        for rule, values in h.ran:
            under = instantiate(rule, values)
            is_protected = any(tight_match(p, method, under) for p in protected)
            is_restricted = any(tight_match(p, method, under) for p in restricted)
            public = RULES[rule]
            assert not (is_protected and (not public or is_restricted)), (
                f"{method} {wire_path!r} ran the view {rule!r} anonymously ({status}), under {under!r}"
            )


@settings(max_examples=400, deadline=None)
@given(
    protected=st.lists(patterns, min_size=1, max_size=3),
    restricted=st.lists(patterns, max_size=2),
    sent=requests,
)
def test_no_spelling_runs_a_guarded_view_anonymously(
    escape_app: EscapeApp, protected: list[str], restricted: list[str], sent: list[tuple[str, str]]
) -> None:
    check_never_anonymous(escape_app, protected, restricted, sent)


@pytest.mark.parametrize(
    ("protected", "restricted", "method", "wire_path"),
    [
        (["/a/**"], [], "GET", "/a/..%5C..%5Cx"),
        (["/a/*"], [], "GET", "/a/x%252f..%252f..%252f.."),
        (["/b/*/c"], [], "POST", "/b/..%5c..%5cx/c"),
        (["/a/b/**"], [], "GET", "/a/b/x/../../../../y"),
        (["/**"], ["/p/*"], "GET", "/p/..%5C..%5Cx"),
        (["/**"], ["/q/**"], "GET", "/q/x%252f..%252f..%252f..%252f.."),
        (["/**"], ["GET /q/*/*"], "HEAD", "/q/a/.."),
        (["/c/"], [], "GET", "/c/"),
    ],
    ids=repr,
)
def test_escapes_found_before(
    escape_app: EscapeApp, protected: list[str], restricted: list[str], method: str, wire_path: str
) -> None:
    escape_app.ran.clear()
    check_never_anonymous(escape_app, protected, restricted, [(method, wire_path)])
    assert escape_app.send(method, wire_path) == 401


# -- the hardening issue's examples, on the example app ----------------------------------------------------------------


@pytest.mark.parametrize(
    "wire_path",
    [
        "/rest/api/2/issue/..%5C..%5C..%5C..%5Cx",
        "/rest/api/2/issue/x%252f..%252f..%252f..%252f..",
        "/rest/api/2/issue/x%252f..%252f..%252f..%252f..%252f..",
        "/rest/api/2/issue/x%252f..%252f..%252f..%252f..%252f..%252f..",
    ],
    ids=repr,
)
def test_the_jira_issue_view_is_not_reached_anonymously(example_app_factory: Any, wire_path: str) -> None:
    app: Flask = example_app_factory(JWTGATE_PROTECTED_PATHS=["/rest/**"])
    path_info = unquote_to_bytes(wire_path).decode("latin-1")
    response = app.test_client().get("/", environ_overrides={"PATH_INFO": path_info})
    # The gate's refusal, not the issue view's own 404.
    assert response.status_code == 401
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert body["reason"] == "missing_credentials"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    [row] = audit_rows(app)
    assert (row["path"], row["status"], row["decision"], row["reason"]) == (
        path_info, 401, "deny", "missing_credentials"
    )
