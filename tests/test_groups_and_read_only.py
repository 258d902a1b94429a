"""Who may call the API (allowed groups), who may only read (read-only groups), and the order in which the policy's
rules apply: bypass, protected paths, the client address, CORS preflight, credentials, public paths, groups."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from flask import Flask, jsonify, request
from werkzeug.test import TestResponse

from flask_jwtgate import JWTGate, current_identity

WRITE_METHODS = ["POST", "PUT", "PATCH", "DELETE", "PROPFIND", "TRACE", "FOO", "MKCOL", "CONNECT"]
READ_METHODS = ["GET", "HEAD", "OPTIONS"]
ALL_METHODS = ["GET", "HEAD", "OPTIONS", *WRITE_METHODS]
OVERRIDE_HEADERS = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]


class Api:
    """An app from the plugin's factory with routes that record every run of their view."""

    def __init__(
        self, factory: Callable[..., tuple[Flask, JWTGate]], tokens: Callable[..., str], **config: Any
    ) -> None:
        self.app, self.gate = factory(**config)
        self.tokens = tokens
        self.calls: list[tuple[str, str | None]] = []
        calls = self.calls

        def record() -> Any:
            calls.append((request.method, current_identity.username))
            return jsonify(user=current_identity.username, groups=sorted(current_identity.groups))

        @self.app.route("/api/things", methods=ALL_METHODS)
        def things() -> Any:
            return record()

        @self.app.route("/pub/things", methods=ALL_METHODS)
        def pub_things() -> Any:
            return record()

        @self.app.route("/api/open", methods=["GET", "POST", "DELETE"])
        @self.gate.public
        def open_things() -> Any:
            return record()

        @self.app.route("/health")
        def health() -> Any:
            return record()

        self.client = self.app.test_client()

    def send(
        self,
        method: str = "GET",
        path: str = "/api/things",
        *,
        user: str | None = "alice",
        groups: list[str] | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        peer: str = "127.0.0.1",
        query: str = "",
    ) -> TestResponse:
        all_headers = dict(headers or {})
        if token is None and user is not None:
            token = self.tokens(user, groups=groups)
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return self.client.open(
            path, method=method, headers=all_headers, query_string=query, environ_overrides={"REMOTE_ADDR": peer}
        )


@pytest.fixture
def api(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_token_factory: Callable[..., str]
) -> Callable[..., Api]:
    return lambda **config: Api(jwtgate_app_factory, jwtgate_token_factory, **config)


def assert_denied(a: Api, response: TestResponse, status: int, error: str, reason: str | None) -> None:
    """``reason=None``: any reason (e.g. the several ways a token can be invalid)."""
    assert response.status_code == status, response.get_data(as_text=True)
    if response.request.method != "HEAD":  # a HEAD response carries no body
        body = response.get_json()
        assert body["error"] == error
        if reason is not None:
            assert body["reason"] == reason
        assert body["status"] == status
    assert a.calls == []


def assert_read_only_refused(a: Api, response: TestResponse) -> None:
    assert_denied(a, response, 403, "insufficient_scope", "read_only")


def assert_ran(a: Api, response: TestResponse, method: str, user: str | None = "alice") -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert a.calls == [(method, user)]


# -- allowed groups ----------------------------------------------------------------------------------------------------


def test_member_of_allowed_group(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users", "admins"])
    response = a.send(groups=["staff", "api-users"])
    assert_ran(a, response, "GET")
    assert response.get_json()["groups"] == ["api-users", "staff"]


@pytest.mark.parametrize("groups", [None, [], ["staff"], ["API-USERS"], ["api-users "], ["api"]], ids=lambda g: repr(g))
def test_non_member_is_refused(api: Callable[..., Api], groups: list[str] | None) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])
    assert_denied(a, a.send(groups=groups), 403, "access_denied", "group_not_allowed")


@pytest.mark.parametrize("method", ["POST", "DELETE", "HEAD"])
def test_non_member_is_refused_for_every_method(api: Callable[..., Api], method: str) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])
    assert_denied(a, a.send(method, groups=["staff"]), 403, "access_denied", "group_not_allowed")


def test_groups_merged_from_claim_and_loader(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])
    asked: list[str] = []

    @a.gate.groups_loader
    def load(username: str) -> list[str]:
        asked.append(username)
        return ["api-users"]

    response = a.send(groups=["from-token"])
    assert_ran(a, response, "GET")
    assert response.get_json()["groups"] == ["api-users", "from-token"]
    assert asked == ["alice"]


def test_a_change_in_the_loaders_answer_applies_to_the_next_request_with_the_same_token(
    api: Callable[..., Api],
) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])
    directory = {"alice": ["api-users"]}
    a.gate.groups_loader(lambda username: directory[username])
    token = a.tokens("alice", groups=["from-token"])

    first = a.send(token=token)
    again = a.send(token=token)
    directory["alice"] = ["api-users", "ops"]
    joined = a.send(token=token)
    directory["alice"] = []
    left = a.send(token=token)

    assert [r.get_json()["groups"] for r in (first, again)] == [["api-users", "from-token"]] * 2
    assert joined.get_json()["groups"] == ["api-users", "from-token", "ops"]
    assert left.status_code == 403 and left.get_json()["reason"] == "group_not_allowed"


def test_group_from_token_claim_alone_is_enough(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])
    a.gate.groups_loader(lambda username: [])
    assert_ran(a, a.send(groups=["api-users"]), "GET")


@pytest.mark.parametrize(
    "loaded",
    [None, (), frozenset(), iter(["staff"]), {"staff": True}],
    ids=["None", "empty-tuple", "empty-frozenset", "iterator", "dict"],
)
def test_loader_results_without_the_group_are_refused(api: Callable[..., Api], loaded: Any) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])
    a.gate.groups_loader(lambda username: loaded)
    assert_denied(a, a.send(groups=["staff"]), 403, "access_denied", "group_not_allowed")


def test_loader_generator_is_read(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])

    @a.gate.groups_loader
    def load(username: str) -> Iterator[str]:
        yield "api-users"

    assert_ran(a, a.send(), "GET")


@pytest.mark.parametrize(
    "error", [RuntimeError("directory down"), KeyError("alice"), TimeoutError(), ValueError("bad")], ids=repr
)
def test_loader_failure_is_503_not_500(api: Callable[..., Api], error: Exception) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])

    @a.gate.groups_loader
    def load(username: str) -> Iterable[str]:
        raise error

    response = a.send(groups=["api-users"])
    assert_denied(a, response, 503, "temporarily_unavailable", "groups_unavailable")


@pytest.mark.parametrize("loaded", [42, object()], ids=["int", "object"])
def test_loader_returning_nonsense_is_503_not_500(api: Callable[..., Api], loaded: object) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])
    a.gate.groups_loader(lambda username: loaded)
    assert_denied(a, a.send(groups=["api-users"]), 503, "temporarily_unavailable", "groups_unavailable")


def test_loader_failure_without_group_rules_still_fails_closed(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])

    @a.gate.groups_loader
    def load(username: str) -> Iterable[str]:
        raise RuntimeError("directory down")

    assert_denied(a, a.send("DELETE"), 503, "temporarily_unavailable", "groups_unavailable")


def test_loader_registered_after_init_and_after_first_request_is_used(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_token_factory: Callable[..., str]
) -> None:
    app = Flask("late_loader")
    app.config.update(
        TESTING=True,
        JWTGATE_PROVIDERS=jwtgate_app_factory()[0].config["JWTGATE_PROVIDERS"],
        JWTGATE_ALLOWED_GROUPS=["api-users"],
    )
    gate = JWTGate()
    gate.init_app(app)

    @app.get("/api/items")
    def items() -> Any:
        return jsonify(groups=sorted(current_identity.groups))

    client = app.test_client()
    headers = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}
    assert client.get("/api/items", headers=headers).status_code == 403

    @gate.groups_loader
    def load(username: str) -> list[str]:
        return ["api-users"]

    response = client.get("/api/items", headers=headers)
    assert response.status_code == 200
    assert response.get_json() == {"groups": ["api-users"]}


def test_loader_registered_after_jwtgate_app(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])  # JWTGate(app) has already run inside the factory
    a.gate.groups_loader(lambda username: ["viewers"])
    assert_read_only_refused(a, a.send("POST"))


# -- read-only groups --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", READ_METHODS)
def test_read_only_may_read(api: Callable[..., Api], method: str) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    response = a.send(method, groups=["viewers"])
    assert_ran(a, response, method)


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_read_only_may_not_write(api: Callable[..., Api], method: str) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    assert_read_only_refused(a, a.send(method, groups=["viewers"]))


@pytest.mark.parametrize("method", ["post", "Delete", "propfind"])
def test_read_only_lower_case_write_methods(api: Callable[..., Api], method: str) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    assert_read_only_refused(a, a.send(method, groups=["viewers"]))


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_others_may_write(api: Callable[..., Api], method: str) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    assert_ran(a, a.send(method, groups=["editors"]), method)


@pytest.mark.parametrize("groups", [["viewers", "editors"], ["editors", "viewers", "admins"]], ids=repr)
def test_read_only_wins_over_other_groups(api: Callable[..., Api], groups: list[str]) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"], JWTGATE_ALLOWED_GROUPS=["editors"])
    assert_read_only_refused(a, a.send("PUT", groups=groups))


def test_read_only_group_from_loader(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    a.gate.groups_loader(lambda username: ["viewers"] if username == "carol" else [])
    assert_read_only_refused(a, a.send("DELETE", user="carol", groups=["editors"]))
    assert_ran(a, a.send("DELETE", user="alice", groups=["editors"]), "DELETE")


@pytest.mark.parametrize("header", OVERRIDE_HEADERS)
@pytest.mark.parametrize("value", ["GET", "get", "HEAD", "OPTIONS"])
def test_override_header_never_turns_a_write_into_a_read(api: Callable[..., Api], header: str, value: str) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    assert_read_only_refused(a, a.send("POST", groups=["viewers"], headers={header: value}))


@pytest.mark.parametrize("query", ["_method=GET", "_method=get", "x=1&_method=HEAD", "_method=GET&_method=GET"])
def test_method_parameter_never_turns_a_write_into_a_read(api: Callable[..., Api], query: str) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    assert_read_only_refused(a, a.send("POST", groups=["viewers"], query=query))


@pytest.mark.parametrize("header", OVERRIDE_HEADERS)
@pytest.mark.parametrize("value", ["DELETE", "delete", " PUT ", "PATCH", "PROPFIND", "FOO", "GET, DELETE", ""])
def test_override_header_naming_a_write_on_a_read_is_refused(api: Callable[..., Api], header: str, value: str) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    response = a.send("GET", groups=["viewers"], headers={header: value})
    if value == "":
        # An empty header names no method: nothing to refuse.
        assert_ran(a, response, "GET")
    else:
        assert_read_only_refused(a, response)


@pytest.mark.parametrize(
    "query",
    [
        "_method=DELETE",
        "_method=delete",
        "a=1&_method=PUT",
        "_method=GET&_method=DELETE",
        "_method=%44ELETE",
        "%5Fmethod=DELETE",
        "%5fmethod=DELETE",
        "_%6Dethod=DELETE",
    ],
    ids=repr,
)
def test_method_parameter_naming_a_write_on_a_read_is_refused(api: Callable[..., Api], query: str) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    assert_read_only_refused(a, a.send("GET", groups=["viewers"], query=query))


@pytest.mark.parametrize(
    ("headers", "query"),
    [({"X-HTTP-Method-Override": "GET"}, ""), ({"X-Method-Override": "head"}, ""), ({}, "_method=GET"), ({}, "a=b")],
    ids=repr,
)
def test_override_naming_a_read_on_a_read_is_fine(api: Callable[..., Api], headers: dict[str, str], query: str) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    assert_ran(a, a.send("GET", groups=["viewers"], headers=headers, query=query), "GET")


def test_override_is_irrelevant_for_writers(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    response = a.send("GET", groups=["editors"], headers={"X-HTTP-Method-Override": "DELETE"}, query="_method=PUT")
    assert_ran(a, response, "GET")


def test_read_only_string_groups_claim_never_grants_writes(api: Callable[..., Api], jwtgate_token_factory: Any) -> None:
    # Some providers send a lone group as a string. Read-only narrows access, so a claim the gate cannot read must
    # not silently drop it: the caller counts as read-only (it may read, never write).
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    token = jwtgate_token_factory("carol", claims={"groups": "viewers"})
    assert_ran(a, a.send("GET", token=token), "GET", user="carol")
    a.calls.clear()
    assert_read_only_refused(a, a.send("DELETE", token=token))


def test_read_only_groups_claim_with_a_stray_member_never_grants_writes(
    api: Callable[..., Api], jwtgate_token_factory: Any
) -> None:
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    token = jwtgate_token_factory("carol", claims={"groups": ["viewers", 7]})
    assert_ran(a, a.send("GET", token=token), "GET", user="carol")
    a.calls.clear()
    assert_read_only_refused(a, a.send("DELETE", token=token))


def test_loader_returning_a_bare_string_never_grants_writes(api: Callable[..., Api]) -> None:
    # A loader that returns "viewers" instead of ["viewers"] must not turn into the groups {"v", "i", "e", ...}:
    # it is the one group "viewers".
    a = api(JWTGATE_READ_ONLY_GROUPS=["viewers"])
    a.gate.groups_loader(lambda username: "viewers")
    response = a.send("GET", user="carol")
    assert_ran(a, response, "GET", user="carol")
    assert response.get_json()["groups"] == ["viewers"]
    a.calls.clear()
    assert_read_only_refused(a, a.send("DELETE", user="carol"))


# -- public paths and groups -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_group_rules_do_not_apply_on_public_view(api: Callable[..., Api], method: str) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"], JWTGATE_READ_ONLY_GROUPS=["viewers"])
    assert_ran(a, a.send(method, "/api/open", groups=["viewers"]), method)
    a.calls.clear()
    assert_ran(a, a.send(method, "/api/open", user=None), method, user=None)


@pytest.mark.parametrize("method", ["GET", "PUT", "PROPFIND"])
def test_group_rules_do_not_apply_on_public_path(api: Callable[..., Api], method: str) -> None:
    a = api(
        JWTGATE_PUBLIC_PATHS=["/pub/**"], JWTGATE_ALLOWED_GROUPS=["api-users"], JWTGATE_READ_ONLY_GROUPS=["viewers"]
    )
    assert_ran(a, a.send(method, "/pub/things", groups=["viewers"]), method)
    a.calls.clear()
    assert_ran(a, a.send(method, "/pub/things", groups=["strangers"]), method)


def test_group_rules_apply_on_restricted_public(api: Callable[..., Api]) -> None:
    a = api(
        JWTGATE_ALLOWED_GROUPS=["api-users"],
        JWTGATE_READ_ONLY_GROUPS=["viewers"],
        JWTGATE_RESTRICTED_PUBLIC_PATHS=["**"],
    )
    assert_denied(a, a.send("GET", "/api/open", groups=["strangers"]), 403, "access_denied", "group_not_allowed")
    assert_read_only_refused(a, a.send("POST", "/api/open", groups=["api-users", "viewers"]))
    assert_denied(a, a.send("GET", "/api/open", user=None), 401, "invalid_request", "public_restricted")
    assert_ran(a, a.send("GET", "/api/open", groups=["api-users"]), "GET")


def test_bad_token_on_public_path_is_refused(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_PUBLIC_PATHS=["/pub/**"])
    assert_denied(a, a.send("GET", "/pub/things", token="a.b.c"), 401, "invalid_token", None)


# -- policy order ------------------------------------------------------------------------------------------------------


def test_disabled_gate_does_nothing(api: Callable[..., Api]) -> None:
    a = api(
        JWTGATE_ENABLED=False,
        JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"],
        JWTGATE_ALLOWED_GROUPS=["api-users"],
        JWTGATE_READ_ONLY_GROUPS=["viewers"],
        JWTGATE_RESTRICTED_PUBLIC_PATHS=["**"],
    )
    assert_ran(a, a.send("DELETE", user=None, peer="192.0.2.1"), "DELETE", user=None)
    a.calls.clear()
    assert_ran(a, a.send("DELETE", token="not-a-token", peer="192.0.2.1"), "DELETE", user=None)
    a.calls.clear()
    assert_ran(a, a.send("POST", groups=["viewers"]), "POST", user=None)


@pytest.mark.parametrize("value", [False, "false", "0", "off"], ids=repr)
def test_disabled_gate_from_string_config(api: Callable[..., Api], value: object) -> None:
    a = api(JWTGATE_ENABLED=value)
    assert_ran(a, a.send(user=None), "GET", user=None)


def test_bypass_beats_everything(api: Callable[..., Api]) -> None:
    a = api(
        JWTGATE_BYPASS_PATHS=["/health"],
        JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"],
        JWTGATE_ALLOWED_GROUPS=["api-users"],
        JWTGATE_RESTRICTED_PUBLIC_PATHS=["**"],
    )
    assert_ran(a, a.send("GET", "/health", user=None, peer="192.0.2.1"), "GET", user=None)
    a.calls.clear()
    assert_ran(a, a.send("GET", "/health", token="not-a-token", peer="192.0.2.1"), "GET", user=None)
    a.calls.clear()
    # ...and only on its own path.
    assert_denied(a, a.send("GET", "/api/things", peer="192.0.2.1"), 403, "access_denied", "ip_not_allowed")


def test_unprotected_paths_are_untouched(api: Callable[..., Api]) -> None:
    a = api(
        JWTGATE_PROTECTED_PATHS=["/api/**"],
        JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"],
        JWTGATE_ALLOWED_GROUPS=["api-users"],
    )
    assert_ran(a, a.send("GET", "/health", token="not-a-token", peer="192.0.2.1"), "GET", user=None)


@pytest.mark.parametrize(
    "token",
    [None, "not-a-token", "a.b.c", "valid"],
    ids=["no-token", "garbage", "bad-jwt", "valid-token"],
)
def test_ip_check_comes_before_credentials(
    api: Callable[..., Api], jwtgate_token_factory: Any, token: str | None
) -> None:
    a = api(JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"])
    if token == "valid":
        token = jwtgate_token_factory("alice", groups=["api-users"])
    response = a.send(token=token, user=None, peer="192.0.2.1")
    assert_denied(a, response, 403, "access_denied", "ip_not_allowed")
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize("path", ["/api/open", "/api/status"])
def test_ip_check_applies_to_public_views(api: Callable[..., Api], path: str) -> None:
    a = api(JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"])
    assert_denied(a, a.send("GET", path, user=None, peer="192.0.2.1"), 403, "access_denied", "ip_not_allowed")
    assert a.send("GET", path, user=None, peer="10.1.2.3").status_code == 200


PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"}


def test_cors_preflight_passes_without_credentials_where_flask_answers_it(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"], JWTGATE_READ_ONLY_GROUPS=["viewers"])
    # The factory's /api/items relies on Flask's automatic OPTIONS: no view of the host's runs.
    response = a.client.options("/api/items", headers=PREFLIGHT)
    assert response.status_code == 200
    assert "GET" in response.headers["Allow"]


def test_a_preflight_to_a_view_that_handles_options_itself_needs_credentials(api: Callable[..., Api]) -> None:
    # /api/things lists OPTIONS among its methods: the view itself runs for it, so a request that merely looks like
    # a preflight is a request like any other.
    a = api()
    response = a.send("OPTIONS", user=None, headers=PREFLIGHT)
    assert_denied(a, response, 401, "invalid_request", "missing_credentials")
    assert_ran(a, a.send("OPTIONS", headers=PREFLIGHT), "OPTIONS")


@pytest.mark.parametrize("value", [False, "false"], ids=repr)
def test_cors_preflight_needs_auth_when_switched_off(api: Callable[..., Api], value: object) -> None:
    a = api(JWTGATE_ALLOW_CORS_PREFLIGHT=value)
    response = a.client.options("/api/items", headers=PREFLIGHT)
    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "https://app.example"}, {"Access-Control-Request-Method": "DELETE"}],
    ids=["neither", "origin-only", "acrm-only"],
)
def test_plain_options_is_not_a_preflight(api: Callable[..., Api], headers: dict[str, str]) -> None:
    a = api()
    assert_denied(a, a.send("OPTIONS", user=None, headers=headers), 401, "invalid_request", "missing_credentials")
    response = a.client.options("/api/items", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["reason"] == "missing_credentials"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_preflight_headers_on_other_methods_do_not_pass(api: Callable[..., Api], method: str) -> None:
    a = api()
    assert_denied(a, a.send(method, user=None, headers=PREFLIGHT), 401, "invalid_request", "missing_credentials")


def test_preflight_with_bad_credentials_is_refused(api: Callable[..., Api]) -> None:
    a = api()
    response = a.send("OPTIONS", token="a.b.c", headers=PREFLIGHT)
    assert_denied(a, response, 401, "invalid_token", None)


def test_preflight_from_disallowed_address_is_refused(api: Callable[..., Api]) -> None:
    a = api(JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"])
    response = a.send("OPTIONS", user=None, headers=PREFLIGHT, peer="192.0.2.1")
    assert_denied(a, response, 403, "access_denied", "ip_not_allowed")


def test_group_denial_comes_after_authentication(api: Callable[..., Api]) -> None:
    # A bad token is a 401 even where the group rule would refuse anyway: the caller learns to fix the token first.
    a = api(JWTGATE_ALLOWED_GROUPS=["api-users"])
    assert_denied(a, a.send(token="a.b.c"), 401, "invalid_token", None)
    assert_denied(a, a.send(user=None), 401, "invalid_request", "missing_credentials")
