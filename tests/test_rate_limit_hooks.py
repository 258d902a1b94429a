"""Hook order and Flask-Limiter: the limiter runs inside the gate's own hook, after the decision.

Flask-Limiter's ``init_app`` registers a ``before_request``, an ``after_request`` and a ``teardown_request``. The gate
takes those three back (its limiter is called from the gate's hook, so it sees the verified identity), while a
Flask-Limiter the host registers for its own limits keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask_limiter import Limiter

from flask_jwtgate import current_identity
from flask_jwtgate.testing import KeyPair, make_app

TokenFactory = Callable[..., str]


def hook_owners(functions: list[Any]) -> list[str]:
    return [getattr(getattr(f, "func", f), "__qualname__", repr(f)) for f in functions]


def bound_to(function: Any, owner: object) -> bool:
    return getattr(function, "__self__", None) is owner or owner in getattr(function, "args", ())


def test_the_gate_runs_first_and_flask_limiters_own_hooks_are_gone(jwtgate_keys: dict[str, KeyPair]) -> None:
    app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT="5/minute")

    (limiter,) = app.extensions["limiter"]
    hooks = [
        *app.before_request_funcs.get(None, []),
        *app.after_request_funcs.get(None, []),
        *app.teardown_request_funcs.get(None, []),
    ]

    assert isinstance(limiter, Limiter)
    assert hook_owners(app.before_request_funcs[None])[0] == "JWTGate.init_app.<locals>.gate_request"
    # One after_request function of the gate's: the RateLimit-* headers, then the audit capture.
    assert hook_owners(app.after_request_funcs[None]) == ["JWTGate.init_app.<locals>.after_request"]
    assert not [hook for hook in hooks if bound_to(hook, limiter)]


def test_the_limiter_sees_the_identity_and_stops_the_request_before_the_hosts_hooks(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory
) -> None:
    app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT="1/minute")
    seen: list[str | None] = []

    @app.before_request
    def host_hook() -> None:
        seen.append(current_identity.username)

    client = app.test_client()
    auth = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}

    first = client.get("/api/items", headers=auth)
    second = client.get("/api/items", headers=auth)

    assert (first.status_code, second.status_code) == (200, 429)
    assert seen == ["alice"]


def test_a_hosts_own_flask_limiter_keeps_its_hooks_and_limits(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory
) -> None:
    app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT="100/minute")
    host_limiter = Limiter(
        lambda: current_identity.username or "anonymous",
        app=app,
        default_limits=["2/minute"],
        storage_uri="memory://",
    )
    client = app.test_client()
    auth = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}

    codes = [client.get("/api/items", headers=auth).status_code for _ in range(3)]

    assert codes == [200, 200, 429]
    assert host_limiter._check_request_limit in app.before_request_funcs[None]
    assert hook_owners(app.before_request_funcs[None])[0] == "JWTGate.init_app.<locals>.gate_request"


def test_flask_limiters_own_switch_turns_the_gates_limits_off_with_a_warning(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_jwtgate"):
        app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT="1/minute", RATELIMIT_ENABLED=False)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}

    codes = [client.get("/api/items", headers=auth).status_code for _ in range(3)]

    assert codes == [200, 200, 200]
    assert "RATELIMIT_ENABLED is false" in caplog.text


def test_memory_storage_under_several_processes_logs_a_warning_once(
    jwtgate_keys: dict[str, KeyPair], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT="100/minute")
    client = app.test_client()
    server = {"wsgi.multiprocess": True, "SERVER_SOFTWARE": "gunicorn/23.0.0"}

    with caplog.at_level(logging.WARNING, logger="flask_jwtgate"):
        for _ in range(3):
            client.get("/api/status", environ_overrides=server)

    warnings = [r.getMessage() for r in caplog.records if "counted in memory" in r.getMessage()]
    assert len(warnings) == 1
    assert "gunicorn/23.0.0" in warnings[0]
    assert "redis://" in warnings[0]


def test_memory_storage_in_one_process_logs_nothing(
    jwtgate_keys: dict[str, KeyPair], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT="100/minute")

    with caplog.at_level(logging.WARNING, logger="flask_jwtgate"):
        response = app.test_client().get("/api/status")

    assert response.status_code == 200
    assert "counted in memory" not in caplog.text


def test_a_counted_request_carries_the_headers_whatever_the_view_answers(
    jwtgate_keys: dict[str, KeyPair], jwtgate_token_factory: TokenFactory
) -> None:
    app, _ = make_app(jwtgate_keys, JWTGATE_RATE_LIMIT="5/minute")

    @app.get("/api/missing")
    def missing() -> Any:
        return {"error": "not here"}, 404

    response = app.test_client().get(
        "/api/missing", headers={"Authorization": f"Bearer {jwtgate_token_factory('alice')}"}
    )

    assert response.status_code == 404
    assert response.headers["RateLimit-Remaining"] == "4"
