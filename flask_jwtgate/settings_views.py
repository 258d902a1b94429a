"""The run-time settings API, for admins: ``{prefix}/admin/settings`` and what goes with it.

- ``GET  /admin/settings``: every key's value in force and the ``version``, secrets masked. A body of that shape,
  with any subset of the keys, is what ``PUT`` takes.
- ``PUT  /admin/settings``: a partial object keyed by config names, with the ``version`` it was based on (a stale one
  gets 409); validated exactly as at start-up (400 naming the key, nothing changed); answers like ``GET``.
- ``GET  /admin/settings/keys``: per key, its default, where its value comes from, whether it takes a restart.
- ``GET  /admin/settings/history``, ``POST /admin/settings/revert`` ``{"version": N}``.
- ``GET  /admin/settings/status``: which version each process sharing the database runs.

Every change is recorded in the audit log (``decision = "system"``, ``reason = "settings_changed"``): who, from
where, which keys, old and new values with secrets masked.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from .ascii_numbers import parse_whole
from .errors import Conflict, GateDenied, InvalidParameter
from .identity import Identity
from .policy import Gatekeeper
from .runtime import shown
from .settings import DEFAULTS, PREFIX, RESTART_ONLY, Settings
from .state import GateState
from .views import guarded, no_store, require_admin

#: Characters of the audit record's detail (its column's size).
_DETAIL_LIMIT = 512


def describe(version: int, changes: list[dict[str, Any]], reverted_to: int | None = None) -> str:
    """The audit record's detail of a change: every key with its old and new value (already masked), shortened to
    fit, never cut in the middle of a key's name."""
    head = f"settings version {version}" + (f" (reverts to version {reverted_to})" if reverted_to is not None else "")
    if not changes:
        return head + ": no change"
    room = max(16, (_DETAIL_LIMIT - len(head) - 2) // len(changes) - 4)

    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= room // 2 else text[: max(4, room // 2 - 3)] + "..."

    parts = [f"{c['key']}: {short(c['old'])} -> {short(c['new'])}" for c in changes]
    return (head + ": " + "; ".join(parts))[:_DETAIL_LIMIT]


def add_settings_views(bp: Blueprint, state: GateState) -> None:
    """The run-time settings endpoints, on the gate's blueprint."""

    def guard(settings: Settings) -> None:
        """Refuse settings under which this very request would be refused: an admin must not lock themselves out of
        the console (a group rule, the allowlist, a credential kind, the admin groups)."""
        keeper = Gatekeeper(
            settings,
            hooks=state.hooks,
            clock=state.clock,
            clients=state.provider_clients,
            api_tokens=lambda: state.api_tokens,
        )
        values = g._get_current_object().__dict__
        _started, req, path = values["_jwtgate_request"]
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        view = state.views.get(request.endpoint) or state.view_of(app, request.endpoint)
        try:
            identity = keeper.check(req.environ, req.method, path, view).identity
        except GateDenied as exc:
            raise Conflict(
                f"this change would refuse your own requests ({exc.description}); change it from another account, or "
                "on the command line",
                reason="would_lock_out",
            ) from exc
        if identity is None or identity.groups.isdisjoint(settings.admin_groups):
            raise Conflict(
                "this change would take you out of the admin groups; change it from another account, or on the "
                "command line",
                reason="would_lock_out",
            )

    def answer() -> Response:
        runtime = state.runtime
        return no_store(jsonify({"version": runtime.version, **runtime.effective()}))

    def record(caller: Identity, version: int, reverted_to: int | None = None) -> None:
        history = state.runtime.history(limit=1)
        changes = history[0]["changes"] if history and history[0]["version"] == version else []
        decision = g._get_current_object().__dict__.get("_jwtgate_decision")
        if state.audit is not None:
            state.audit.event(
                "settings_changed",
                describe(version, changes, reverted_to),
                identity=caller,
                client=decision.client if decision is not None else None,
                method=request.method,
                path=request.path,
                status=200,
            )

    @guarded
    def get_settings() -> Response:
        require_admin(state)
        # The database's newest version, even if this process has not checked for it yet: an admin who just saved
        # through another process must read back what they saved.
        state.runtime.load()
        return answer()

    @guarded
    def put_settings() -> Response:
        caller = require_admin(state)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise InvalidParameter("body", "the body must be a JSON object keyed by configuration names")
        updates = dict(body)
        based_on = updates.pop("version", None)
        if based_on is not None and (isinstance(based_on, bool) or not isinstance(based_on, int) or based_on < 0):
            raise InvalidParameter("version", "version must be the whole number a GET of the settings showed")
        for key in updates:
            if not key.startswith(PREFIX):
                raise InvalidParameter(key, f"{key!r} is not a configuration name; they start with {PREFIX}")
        version = state.runtime.change(updates, based_on=based_on, by=caller.username, guard=guard)
        record(caller, version)
        return answer()

    @guarded
    def keys() -> Response:
        require_admin(state)
        runtime = state.runtime
        runtime.load()  # as in get_settings
        sources = runtime.sources()
        return no_store(
            jsonify(
                runtime_settings=runtime.enabled,
                # The version these sources describe: another process may answer before it has applied the newest.
                version=runtime.version,
                keys={
                    PREFIX + name: {
                        "default": shown(PREFIX + name, default),
                        "source": sources[PREFIX + name],
                        "restart_only": name in RESTART_ONLY,
                    }
                    for name, default in DEFAULTS.items()
                },
            )
        )

    @guarded
    def history() -> Response:
        require_admin(state)
        unknown = set(request.args) - {"limit"}
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidParameter(name, f"unknown parameter {name!r}; the history takes: limit")
        limit = parse_whole(request.args.get("limit") or "100")
        if limit is None or not 1 <= limit <= 1000:
            raise InvalidParameter("limit", "limit must be a whole number from 1 to 1000")
        return no_store(jsonify(versions=state.runtime.history(limit), version=state.runtime.version))

    @guarded
    def revert() -> Response:
        caller = require_admin(state)
        body = request.get_json(silent=True)
        target = body.get("version") if isinstance(body, dict) else None
        if isinstance(target, bool) or not isinstance(target, int) or target < 0:
            raise InvalidParameter("version", "version must be the whole number of a version in the history")
        version = state.runtime.revert(target, by=caller.username, guard=guard)
        record(caller, version, reverted_to=target)
        return answer()

    @guarded
    def status() -> Response:
        require_admin(state)
        runtime = state.runtime
        return no_store(
            jsonify(
                runtime_settings=runtime.enabled,
                version=runtime.version,
                process=runtime.process,
                error=runtime.error,
                processes=runtime.processes() if runtime.enabled else [],
            )
        )

    bp.add_url_rule("/admin/settings", view_func=get_settings, methods=["GET"])
    bp.add_url_rule("/admin/settings", view_func=put_settings, methods=["PUT"])
    bp.add_url_rule("/admin/settings/keys", view_func=keys, methods=["GET"])
    bp.add_url_rule("/admin/settings/history", view_func=history, methods=["GET"])
    bp.add_url_rule("/admin/settings/revert", view_func=revert, methods=["POST"])
    bp.add_url_rule("/admin/settings/status", view_func=status, methods=["GET"])
