"""Path rules through a Flask app: every spelling trick that could make a bypass or public rule apply to a path it was
not written for, or slip a path out of a protected or restricted-public rule, is refused.

Requests are sent with a raw ``PATH_INFO`` (what a WSGI server hands the app after decoding the URL once), so that
the test client does not tidy up ``//`` or dot segments before the gate sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, jsonify
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_jwtgate import JWTGate, current_identity

ANY_METHODS = ["GET", "POST", "PUT", "DELETE"]


class Harness:
    """An app from the plugin's factory with extra routes that record when their view runs."""

    def __init__(self, factory: Callable[..., tuple[Flask, JWTGate]], token: str, **config: Any) -> None:
        self.app, self.gate = factory(**config)
        self.calls: list[str] = []
        self.token = token
        app, gate, calls = self.app, self.gate, self.calls

        def record(name: str) -> Any:
            calls.append(name)
            return jsonify(view=name, user=current_identity.username)

        @app.route("/health", methods=ANY_METHODS)
        def health() -> Any:
            return record("health")

        @app.route("/admin", methods=ANY_METHODS)
        def admin() -> Any:
            return record("admin")

        @app.route("/dir/")
        def directory() -> Any:
            return record("dir")

        @app.route("/pdir/")
        @gate.public
        def public_directory() -> Any:
            return record("pdir")

        @app.route("/public/<path:rest>", methods=ANY_METHODS)
        def public(rest: str) -> Any:
            return record("public:" + rest)

        @app.route("/open/<path:rest>", methods=ANY_METHODS)
        @gate.public
        def open_view(rest: str) -> Any:
            return record("open:" + rest)

        @app.route("/assets/<path:rest>")
        def asset_files(rest: str) -> Any:
            return record("assets:" + rest)

        @app.route("/apiary")
        def apiary() -> Any:
            return record("apiary")

        @app.route("/api/things", methods=ANY_METHODS)
        def things() -> Any:
            return record("things")

        self.client: FlaskClient = app.test_client()

    def send(
        self,
        path: str,
        method: str = "GET",
        *,
        auth: bool = False,
        headers: dict[str, str] | None = None,
        query: str = "",
    ) -> TestResponse:
        """Send ``path`` as the raw ``PATH_INFO``."""
        all_headers = dict(headers or {})
        if auth:
            all_headers["Authorization"] = f"Bearer {self.token}"
        return self.client.open(
            "/", method=method, headers=all_headers, query_string=query, environ_overrides={"PATH_INFO": path}
        )


@pytest.fixture
def harness(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_token_factory: Callable[..., str]
) -> Callable[..., Harness]:
    token = jwtgate_token_factory("alice", groups=["staff"])
    return lambda **config: Harness(jwtgate_app_factory, token, **config)


def assert_refused(h: Harness, response: TestResponse, reason: str = "missing_credentials", status: int = 401) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    if response.request.method != "HEAD":  # a HEAD response carries no body
        body = response.get_json()
        assert body["reason"] == reason
        assert body["status"] == status
    assert h.calls == []


def assert_anonymous_ok(h: Harness, response: TestResponse, view: str) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["user"] is None
    assert h.calls == [view]


# -- bypass ------------------------------------------------------------------------------------------------------------


def test_bypass_path_skips_the_gate(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_BYPASS_PATHS=["/health"])
    assert_anonymous_ok(h, h.send("/health"), "health")


def test_bypass_path_ignores_even_a_bad_token(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_BYPASS_PATHS=["/health"])
    response = h.send("/health", headers={"Authorization": "Bearer not-a-token"})
    assert_anonymous_ok(h, response, "health")


@pytest.mark.parametrize(
    "path",
    [
        "//health",
        "///health",
        "/./health",
        "/x/../health",
        "/health/.",
        "/health/",
        "/HEALTH",
        "/Health",
        "\\health",
        "/health%2F",
        "/%68ealth",
        "/health\x00",
        "/health ",
    ],
    ids=repr,
)
def test_bypass_is_not_fooled_by_spelling(harness: Callable[..., Harness], path: str) -> None:
    h = harness(JWTGATE_BYPASS_PATHS=["/health"])
    assert_refused(h, h.send(path))


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../api/things",
        "/assets/x/../../api/things",
        "/assets/..%2Fapi%2Fthings",  # a %252F on the wire
        "/assets/%2e%2e/api/things",
        "/assets\\..\\api\\things",
        "/assets//../api/things",
    ],
    ids=repr,
)
def test_bypass_glob_does_not_reach_outside(harness: Callable[..., Harness], path: str) -> None:
    h = harness(JWTGATE_BYPASS_PATHS=["/assets/**"])
    assert_refused(h, h.send(path))
    assert_anonymous_ok(h, h.send("/assets/app.css"), "assets:app.css")


@pytest.mark.parametrize(
    ("method", "bypassed"),
    [("GET", True), ("HEAD", True), ("POST", False), ("PUT", False), ("DELETE", False)],
)
def test_method_prefixed_bypass(harness: Callable[..., Harness], method: str, bypassed: bool) -> None:
    h = harness(JWTGATE_BYPASS_PATHS=["GET /health"])
    response = h.send("/health", method)
    if bypassed:
        assert response.status_code == 200
        assert h.calls == ["health"]
    else:
        assert_refused(h, response)


def test_head_pattern_does_not_bypass_get(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_BYPASS_PATHS=["HEAD /health"])
    assert_refused(h, h.send("/health", "GET"))
    assert h.send("/health", "HEAD").status_code == 200


def test_bypass_of_a_slash_route_gates_the_router_redirect(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_BYPASS_PATHS=["/dir/"])
    assert_anonymous_ok(h, h.send("/dir/"), "dir")
    h.calls.clear()
    assert_refused(h, h.send("/dir"))


# -- public ------------------------------------------------------------------------------------------------------------


def test_public_glob_opens_its_paths(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["/public/**"])
    assert_anonymous_ok(h, h.send("/public/docs/index"), "public:docs/index")


@pytest.mark.parametrize(
    "path",
    [
        "/public/../admin",
        "/public/x/../../admin",
        "/public/..%2Fadmin",  # a %252F on the wire
        "/public/a%2Fb",
        "/public/%2e%2e/admin",
        "/public\\..\\admin",
        "/public/..\\admin",
        "//public/a",
        "/public//a",
        "/PUBLIC/a",
        "/Public/a",
        "/./public/a",
    ],
    ids=repr,
)
def test_public_glob_is_not_fooled_by_spelling(harness: Callable[..., Harness], path: str) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["/public/**"])
    assert_refused(h, h.send(path))


def test_public_path_does_not_make_the_admin_route_public(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["/public/**"])
    assert_refused(h, h.send("/admin"))
    response = h.send("/admin", auth=True)
    assert response.status_code == 200
    assert response.get_json()["user"] == "alice"


@pytest.mark.parametrize(
    ("method", "public"),
    [("GET", True), ("HEAD", True), ("POST", False), ("PUT", False), ("DELETE", False)],
)
def test_method_prefixed_public(harness: Callable[..., Harness], method: str, public: bool) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["GET /public/**"])
    response = h.send("/public/x", method)
    if public:
        assert response.status_code == 200
        assert h.calls == ["public:x"]
    else:
        assert_refused(h, response)


def test_public_path_with_bad_token_is_refused(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["/public/**"])
    response = h.send("/public/x", headers={"Authorization": "Bearer a.b.c"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert h.calls == []


def test_public_slash_route_gates_the_router_redirect(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["/dir/"])
    assert_anonymous_ok(h, h.send("/dir/"), "dir")
    h.calls.clear()
    assert_refused(h, h.send("/dir"))
    redirect = h.send("/dir", auth=True)
    assert redirect.status_code in (301, 308)
    assert redirect.headers["Location"].endswith("/dir/")
    assert h.calls == []


def test_public_view_slash_route_gates_the_router_redirect(harness: Callable[..., Harness]) -> None:
    h = harness()
    assert_anonymous_ok(h, h.send("/pdir/"), "pdir")
    h.calls.clear()
    assert_refused(h, h.send("/pdir"))


def test_merge_slashes_redirect_is_gated(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["/public/**"])
    response = h.send("/public//x")
    assert_refused(h, response)
    assert "Location" not in response.headers


# -- @gate.public views ------------------------------------------------------------------------------------------------


def test_public_view(harness: Callable[..., Harness]) -> None:
    h = harness()
    response = h.send("/api/status")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "user": None}
    assert h.send("/api/status", "HEAD").status_code == 200


def test_public_view_does_not_open_other_methods_of_its_path(harness: Callable[..., Harness]) -> None:
    # /api/status is a GET view; a POST there is not routed to it and so is not public.
    h = harness()
    response = h.send("/api/status", "POST")
    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"


@pytest.mark.parametrize("path", ["/API/status", "/api/Status", "/api/status/", "/api/status%2F"], ids=repr)
def test_public_view_other_spellings_are_not_public(harness: Callable[..., Harness], path: str) -> None:
    h = harness()
    response = h.send(path)
    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"


def test_public_view_with_bad_token_is_refused(harness: Callable[..., Harness]) -> None:
    h = harness()
    response = h.send("/api/status", headers={"Authorization": "Bearer a.b.c"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


def test_public_view_with_good_token_sees_the_user(harness: Callable[..., Harness]) -> None:
    h = harness()
    response = h.send("/api/status", auth=True)
    assert response.status_code == 200
    assert response.get_json()["user"] == "alice"


# -- protected paths ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/things",
        "/api",
        "/API/things",
        "/Api/Things",
        "/api/things/",
        "//api/things",
        "/api//things",
        "/./api/things",
        "/x/../api/things",
        "/api/x/../things",
        "/api%2Fthings",  # a %252F on the wire
        "/x/..%2Fapi/things",
        "/%61pi/things",
        "/api\\things",
        "\\api\\things",
        "/x\\..\\api/things",
        "/api/things/.",
    ],
    ids=repr,
)
def test_protected_path_covers_every_spelling(harness: Callable[..., Harness], path: str) -> None:
    h = harness(JWTGATE_PROTECTED_PATHS=["/api/**"])
    assert_refused(h, h.send(path))


@pytest.mark.parametrize("path", ["/health", "/apiary", "/public/api/things"], ids=repr)
def test_unprotected_paths_are_untouched(harness: Callable[..., Harness], path: str) -> None:
    h = harness(JWTGATE_PROTECTED_PATHS=["/api/**"])
    response = h.send(path, headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 200
    assert response.get_json()["user"] is None
    assert len(h.calls) == 1


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_get_protected_pattern_covers_head(harness: Callable[..., Harness], method: str) -> None:
    h = harness(JWTGATE_PROTECTED_PATHS=["GET /api/**"])
    assert_refused(h, h.send("/api/things", method))


def test_method_prefixed_protected_leaves_other_methods_alone(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_PROTECTED_PATHS=["DELETE /api/**"])
    assert_refused(h, h.send("/API/things", "DELETE"))
    response = h.send("/api/things", "POST")
    assert response.status_code == 200
    assert h.calls == ["things"]


def test_protected_exact_path_covers_case_and_trailing_slash(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_PROTECTED_PATHS=["/admin"])
    for path in ("/admin", "/ADMIN", "/admin/", "//admin", "/health/../admin"):
        assert_refused(h, h.send(path))
    assert h.send("/health").status_code == 200


# -- restricted public paths -------------------------------------------------------------------------------------------


def test_restricted_public_view_needs_a_token(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_RESTRICTED_PUBLIC_PATHS=["/api/status"])
    response = h.send("/api/status")
    assert_refused(h, response, "public_restricted")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    ok = h.send("/api/status", auth=True)
    assert ok.status_code == 200
    assert ok.get_json()["user"] == "alice"


@pytest.mark.parametrize("restricted", ["**", "/**"], ids=repr)
def test_restrict_everything(harness: Callable[..., Harness], restricted: str) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["/public/**"], JWTGATE_RESTRICTED_PUBLIC_PATHS=[restricted])
    for path in ("/api/status", "/public/x", "/open/x", "/pdir/"):
        assert_refused(h, h.send(path), "public_restricted")
    response = h.send("/public/x", auth=True)
    assert response.status_code == 200
    assert h.calls == ["public:x"]


@pytest.mark.parametrize(
    "path",
    [
        "/open/secret",
        "/open/SECRET",
        "/OPEN/secret",  # not routed to the public view, so simply not public
        "/open/secret/",
        "/open/x/../secret",
        "/open/%2e%2e/open/secret",
        "/open/s%65cret",  # a %2565 on the wire
        "/open/secret%2F",
        "/open/secret\\",
        "/open/x\\..\\secret",
        "/open/secret/.",
        "//open/secret",
    ],
    ids=repr,
)
def test_restricted_public_view_covers_every_spelling(harness: Callable[..., Harness], path: str) -> None:
    h = harness(JWTGATE_RESTRICTED_PUBLIC_PATHS=["/open/secret"])
    response = h.send(path)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["reason"] in ("public_restricted", "missing_credentials")
    assert h.calls == []


def test_restricted_public_leaves_the_rest_public(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_RESTRICTED_PUBLIC_PATHS=["/open/secret"])
    assert_anonymous_ok(h, h.send("/open/other"), "open:other")
    h.calls.clear()
    assert_anonymous_ok(h, h.send("/open/secretary"), "open:secretary")


@pytest.mark.parametrize(
    "path",
    ["/public/secret", "/public/secret/", "/public/secret/deeper"],
    ids=repr,
)
def test_restricted_public_path_glob(harness: Callable[..., Harness], path: str) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["/public/**"], JWTGATE_RESTRICTED_PUBLIC_PATHS=["/PUBLIC/Secret/**"])
    assert_refused(h, h.send(path), "public_restricted")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_get_restricted_pattern_covers_head(harness: Callable[..., Harness], method: str) -> None:
    h = harness(JWTGATE_RESTRICTED_PUBLIC_PATHS=["GET /api/status"])
    response = h.send("/api/status", method)
    assert response.status_code == 401
    if method == "GET":
        assert response.get_json()["reason"] == "public_restricted"


def test_method_prefixed_restricted_leaves_other_methods_public(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_PUBLIC_PATHS=["/public/**"], JWTGATE_RESTRICTED_PUBLIC_PATHS=["POST,DELETE /public/**"])
    assert_refused(h, h.send("/public/x", "POST"), "public_restricted")
    assert_refused(h, h.send("/public/x", "DELETE"), "public_restricted")
    assert_anonymous_ok(h, h.send("/public/x", "GET"), "public:x")


def test_restricted_does_not_protect_an_unprotected_path(harness: Callable[..., Harness]) -> None:
    # Restricted-public forces authentication on public paths of the API; it does not widen what the API is.
    h = harness(JWTGATE_PROTECTED_PATHS=["/api/**"], JWTGATE_RESTRICTED_PUBLIC_PATHS=["**"])
    response = h.send("/health")
    assert response.status_code == 200
    assert h.calls == ["health"]


def test_restricted_public_query_string_does_not_matter(harness: Callable[..., Harness]) -> None:
    h = harness(JWTGATE_RESTRICTED_PUBLIC_PATHS=["/api/status"])
    assert_refused(h, h.send("/api/status", query="x=/other"), "public_restricted")


def test_public_view_reached_by_spelling_opens_only_that_view(harness: Callable[..., Harness]) -> None:
    # Werkzeug routes '//open/x' and '/open/../api/things' to the public view itself; that is the view the host made
    # public, so it may run, but the protected view behind the dot segments never does.
    h = harness()
    for path, view in (("//open/x", "open:x"), ("/open/../api/things", "open:../api/things")):
        h.calls.clear()
        response = h.send(path)
        assert response.status_code == 200
        assert h.calls == [view]
    h.calls.clear()
    assert_refused(h, h.send("//api/things"))
    assert_refused(h, h.send("/api/status/../things"))
