"""The gate's self-service endpoints: ``/whoami``, ``/tokens`` and the admin "Test Token" tool.

Who may create an API token (the seed's toggles): an admin always, for anyone; otherwise the caller for themselves:
when ``JWTGATE_TOKEN_CREATOR_GROUPS`` is set, its members (and only they); when it is not, anyone while
``JWTGATE_ALLOW_USER_TOKEN_CREATION`` is on. A caller authenticated *by* an API token cannot create another one: a
leaked token must not be able to mint longer-lived ones. Everyone lists and revokes their own tokens; admins anyone's.
A token someone may not see is answered 404, so ids of other users' tokens cannot be probed.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, jsonify, request

from . import signals
from .api_tokens import MAX_EXPIRY_DAYS, ApiTokenStore
from .errors import AccessDenied, GateDenied, InvalidParameter, TemporarilyUnavailable
from .explain import explain
from .identity import Identity
from .state import GateState, error_response
from .verification import MAX_TOKEN_LENGTH
from .views import _no_store, require_admin, require_caller

DEFAULT_EXPIRY_DAYS = 90
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}\Z")


def may_create_tokens(identity: Identity, state: GateState) -> bool:
    """Admins always; with token-creator groups, their members; otherwise anyone while user creation is on."""
    s = state.settings
    if identity.groups & s.admin_groups:
        return True
    if s.token_creator_groups:
        return bool(identity.groups & s.token_creator_groups)
    return s.allow_user_token_creation


def _store(state: GateState) -> ApiTokenStore:
    if state.api_tokens is None:  # pragma: no cover - init_app always installs it
        raise TemporarilyUnavailable("API tokens are not set up", reason="token_store_unavailable")
    return state.api_tokens


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidParameter("body", "the body must be a JSON object")
    return body


def _string(
    body: dict[str, Any], name: str, *, limit: int, required: bool = True, control: bool = False
) -> str | None:
    """A string field; control characters are refused unless ``control`` (a token to explain may hold anything)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, str) and value.strip() and len(value) <= limit and (control or not _CONTROL.search(value)):
        return value.strip()
    raise InvalidParameter(
        name, f"{name} must be a non-empty string of at most {limit} characters, without control characters"
    )


def _guarded(view: Any) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            try:
                response: Response = view(*args, **kwargs)
                return response
            except sa.exc.SQLAlchemyError as exc:
                raise TemporarilyUnavailable(
                    "the gate's database cannot be reached; try again later", reason="database_unavailable"
                ) from exc
        except GateDenied as exc:
            return error_response(exc)

    wrapped.__name__ = view.__name__
    return wrapped


def install(bp: Blueprint, state: GateState) -> None:
    """Add the self-service endpoints to the gate's blueprint."""

    @_guarded
    def whoami() -> Response:
        identity = require_caller(state)
        return _no_store(jsonify(identity.to_dict()))

    @_guarded
    def create_token() -> Response:
        caller = require_caller(state)
        if caller.auth_method == "api_token":
            raise AccessDenied("an API token cannot create API tokens; authenticate otherwise", reason="token_chaining")
        if not may_create_tokens(caller, state):
            raise AccessDenied(f"user {caller.username!r} may not create API tokens", reason="token_creation_denied")
        body = _json_body()
        name = _string(body, "name", limit=200)
        days = body.get("expires_in_days", DEFAULT_EXPIRY_DAYS)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
            raise InvalidParameter(
                "expires_in_days", f"expires_in_days must be a whole number from 1 to {MAX_EXPIRY_DAYS}"
            )
        username = _string(body, "username", limit=255, required=False) or caller.username
        assert username is not None and name is not None
        if username != caller.username and not caller.groups & state.settings.admin_groups:
            raise AccessDenied("only admins may create tokens for other users", reason="not_admin")
        token, secret = _store(state).create(username, name=name, expires_in_days=days, created_by=caller.username)
        signals.token_created.send(current_app._get_current_object(), token_id=token.id, username=username)  # type: ignore[attr-defined]
        response = jsonify({**token.to_dict(), "token": secret})
        response.status_code = 201
        return _no_store(response)

    @_guarded
    def list_tokens() -> Response:
        caller = require_caller(state)
        is_admin = bool(caller.groups & state.settings.admin_groups)
        wanted = request.args.get("username")
        if not is_admin:
            if wanted not in (None, caller.username):
                raise AccessDenied("only admins may list other users' tokens", reason="not_admin")
            wanted = caller.username
        # No token can belong to a name with control characters (creation refuses them): don't ask the database.
        tokens = [] if wanted is not None and _CONTROL.search(wanted) else _store(state).list(wanted)
        return _no_store(jsonify(tokens=[token.to_dict() for token in tokens]))

    @_guarded
    def revoke_token(token_id: str) -> Response:
        caller = require_caller(state)
        store = _store(state)
        token = store.get(token_id) if _TOKEN_ID.match(token_id) else None
        visible = token is not None and (
            token.username == caller.username or bool(caller.groups & state.settings.admin_groups)
        )
        if token is None or not visible:
            return _no_store(error_response(_NotFound("no such token")))
        store.revoke(token.id)
        signals.token_revoked.send(current_app._get_current_object(), token_id=token.id)  # type: ignore[attr-defined]
        return _no_store(Response(status=204))

    @_guarded
    def test_token() -> Response:
        require_admin(state)
        body = _json_body()
        token = _string(body, "token", limit=MAX_TOKEN_LENGTH * 2, control=True)
        method = _string(body, "method", limit=32, required=False) or "GET"
        path = _string(body, "path", limit=2048, required=False) or "/"
        ip = _string(body, "ip", limit=64, required=False)
        assert token is not None
        if not path.startswith("/"):
            raise InvalidParameter("path", "path must start with '/'")
        report = explain(
            state.keeper,
            token,
            method=method,
            path=path,
            ip=ip,
            view_is_public=view_is_public(state, method, path),
            limiter=state.limiter,
        )
        return _no_store(jsonify(report.to_dict()))

    bp.add_url_rule("/whoami", view_func=whoami, methods=["GET"])
    bp.add_url_rule("/tokens", view_func=create_token, methods=["POST"])
    bp.add_url_rule("/tokens", view_func=list_tokens, methods=["GET"])
    bp.add_url_rule("/tokens/<token_id>", view_func=revoke_token, methods=["DELETE"])
    bp.add_url_rule("/admin/test-token", view_func=test_token, methods=["POST"])


class _NotFound(GateDenied):
    """No such token, or not one the caller may see (404)."""

    status_code = 404
    error = "not_found"
    reason = "not_found"


def view_is_public(state: GateState, method: str, path: str) -> bool:
    """Whether ``method path`` routes to a view marked ``@gate.public`` in the current app."""
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    adapter = current_app.url_map.bind("localhost")
    try:
        endpoint, _ = adapter.match(path, method=method.upper())
    except (HTTPException, RequestRedirect):
        return False
    view = current_app.view_functions.get(endpoint)
    return bool(getattr(view, "_jwtgate_public", False))
