"""The gate's self-service endpoints: ``/whoami``, ``/tokens`` and the admin "Test Token" tool.

Who may create an API token (the seed's toggles): an admin always, for anyone; otherwise the caller for themselves:
when ``JWTGATE_TOKEN_CREATOR_GROUPS`` is set, its members (and only they); when it is not, anyone while
``JWTGATE_ALLOW_USER_TOKEN_CREATION`` is on. A caller authenticated *by* an API token cannot create another one: a
leaked token must not be able to mint longer-lived ones.

A token never carries more rights than the identity that made it: it keeps its maker's own groups (a JWT's groups
claim) and a read-only mark when its maker was read-only. An admin making one for another user may name its groups
(``groups``) and its owner's provider (``provider``); without groups, and without a ``groups_loader`` to say the
user's, the token is read-only wherever read-only groups are configured.

Tokens belong to (provider, username) (``flask_jwtgate.policy.Gatekeeper.owner_of``): everyone lists and revokes
their own tokens, admins anyone's. A token someone may not see is answered 404, so ids of other users' tokens cannot
be probed.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from . import signals
from .api_tokens import DEFAULT_EXPIRY_DAYS, MAX_EXPIRY_DAYS, ApiToken, ApiTokenStore
from .errors import AccessDenied, GateDenied, InvalidParameter, TemporarilyUnavailable
from .explain import explain
from .identity import Identity
from .policy import PLAIN_VIEW, View, is_read_only
from .state import GateState, error_response
from .verification import MAX_TOKEN_LENGTH
from .views import guarded, is_admin, no_store, require_admin, require_caller

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}\Z")
#: At most this many groups may be named for a token.
MAX_TOKEN_GROUPS = 100


def may_create_tokens(identity: Identity, state: GateState) -> bool:
    """Admins always; with token-creator groups, their members; otherwise anyone while user creation is on."""
    s = state.settings
    if is_admin(identity, state):
        return True
    if s.token_creator_groups:
        return not identity.groups.isdisjoint(s.token_creator_groups)
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


def _groups(body: dict[str, Any]) -> frozenset[str] | None:
    """The ``groups`` field: a list of group names, or absent."""
    value = body.get("groups")
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) <= MAX_TOKEN_GROUPS
        and all(isinstance(g, str) and g and len(g) <= 255 and not _CONTROL.search(g) for g in value)
    ):
        return frozenset(value)
    raise InvalidParameter(
        "groups", f"groups must be a list of at most {MAX_TOKEN_GROUPS} group names without control characters"
    )


def rights_for_another(
    state: GateState, provider: str | None, groups: frozenset[str] | None
) -> tuple[frozenset[str], bool]:
    """The groups and read-only mark of a token an admin makes for someone else: the groups named; without them the
    directory's (asked at each use); with neither, read-only wherever read-only groups are configured."""
    if groups is not None:
        return groups, False
    directory = state.hooks.groups_loader is not None and provider in state.keeper.directory_providers
    return frozenset(), not directory


def _owner_provider(body: dict[str, Any], state: GateState, default: str | None) -> str | None:
    """The ``provider`` field: a configured provider's name, or null for a user of the host's directory."""
    if "provider" not in body:
        return default
    value = body["provider"]
    if value is None or (isinstance(value, str) and any(p.name == value for p in state.settings.providers)):
        return value
    raise InvalidParameter("provider", "provider must be the name of a configured provider, or null for the directory")


def install(bp: Blueprint, state: GateState) -> None:
    """Add the self-service endpoints to the gate's blueprint."""

    @guarded
    def whoami() -> Response:
        identity = require_caller()
        return no_store(jsonify(identity.to_dict()))

    @guarded
    def create_token() -> Response:
        caller = require_caller()
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
        keeper = state.keeper
        own_provider, own_username = keeper.owner_of(caller)
        username = _string(body, "username", limit=255, required=False) or own_username
        provider = _owner_provider(body, state, own_provider)
        groups = _groups(body)
        assert username is not None and name is not None
        for_self = (provider, username) == (own_provider, own_username)
        if not is_admin(caller, state) and (not for_self or groups is not None):
            raise AccessDenied(
                "only admins may create tokens for other users or name a token's groups", reason="not_admin"
            )
        if for_self and groups is None:
            # The maker's own groups, never more: what its credential carries (the directory's are asked at each
            # use), and read-only if the maker is.
            groups = caller.token_groups
            read_only = is_read_only(state.settings, caller) or not caller.groups_complete
        else:
            groups, read_only = rights_for_another(state, provider, groups)
        token, secret = _store(state).create(
            username,
            name=name,
            expires_in_days=days,
            created_by=caller.username,
            provider=provider,
            groups=groups,
            read_only=read_only,
        )
        signals.token_created.send(current_app._get_current_object(), token_id=token.id, username=username)  # type: ignore[attr-defined]
        response = jsonify({**token.to_dict(), "token": secret})
        response.status_code = 201
        return no_store(response)

    def owns(caller: Identity, token: ApiToken) -> bool:
        keeper = state.keeper
        return keeper.owner(token.provider, token.username) == keeper.owner_of(caller)

    @guarded
    def list_tokens() -> Response:
        caller = require_caller()
        wanted = request.args.get("username")
        admin = is_admin(caller, state)
        if not admin and wanted not in (None, caller.username):
            raise AccessDenied("only admins may list other users' tokens", reason="not_admin")
        if not admin:
            wanted = caller.username
        # No token can belong to a name with control characters (creation refuses them): don't ask the database.
        tokens = [] if wanted is not None and _CONTROL.search(wanted) else _store(state).list(wanted)
        if not admin:
            tokens = [token for token in tokens if owns(caller, token)]
        return no_store(jsonify(tokens=[token.to_dict() for token in tokens]))

    @guarded
    def revoke_token(token_id: str) -> Response:
        caller = require_caller()
        store = _store(state)
        token = store.get(token_id) if _TOKEN_ID.match(token_id) else None
        if token is None or not (owns(caller, token) or is_admin(caller, state)):
            return no_store(error_response(_NotFound("no such token")))
        store.revoke(token.id)
        signals.token_revoked.send(current_app._get_current_object(), token_id=token.id)  # type: ignore[attr-defined]
        return no_store(Response(status=204))

    @guarded
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
            view=view_for(state, method, path),
            limiter=state.limiter,
        )
        return no_store(jsonify(report.to_dict()))

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


def view_for(state: GateState, method: str, path: str) -> View:
    """What the policy would know of the view that ``method path`` routes to in the current app."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    adapter = app.url_map.bind("localhost")
    try:
        rule, _ = adapter.match(path, method=method.upper(), return_rule=True)
    except (HTTPException, RequestRedirect):
        return PLAIN_VIEW
    view = state.views.get(rule.endpoint) or state.view_of(app, rule.endpoint)
    if method.upper() == "OPTIONS" and getattr(rule, "provide_automatic_options", False):
        view = view._replace(automatic_options=True)
    return view
