"""The gate's own HTTP endpoints, mounted at ``JWTGATE_URL_PREFIX`` (default ``/jwtgate``).

The admin endpoints pass through the gate like any other API path, and then require the caller to be in one of
``JWTGATE_ADMIN_GROUPS``. They fail closed: if the gate did not authenticate the request (the prefix is outside
``JWTGATE_PROTECTED_PATHS``, on a bypass or public path, or the gate is switched off), the endpoint applies the IP
allowlist and authenticates the ``Authorization`` header itself, so an admin endpoint is never open to an anonymous
caller whatever the path settings. Refusals use the contract's JSON errors and are audited like the gate's own.

Nothing a caller sends here causes a 500: bad parameters are a 400 naming the parameter, an unreachable database a
503 ``temporarily_unavailable``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, g, jsonify, request

from .audit import AuditLog
from .audit.query import (
    FORMATS,
    PAGING,
    AuditFilter,
    export,
    iterate,
    page,
    parse_cursor,
    parse_limit,
    single_values,
    to_json,
)
from .database import DatabaseNotReady
from .errors import AccessDenied, Conflict, GateDenied, InvalidParameter, MissingCredentials, TemporarilyUnavailable
from .identity import Identity
from .policy import Decision, require_allowed
from .state import GateState, error_response

logger = logging.getLogger("flask_jwtgate")

BLUEPRINT_NAME = "jwtgate"


def require_caller(state: GateState) -> Identity:
    """The authenticated caller; raise :class:`GateDenied` otherwise (and record why, for the audit log)."""
    values = g._get_current_object().__dict__
    decision: Decision | None = values.get("_jwtgate_decision")
    identity = decision.identity if decision is not None else None
    client = decision.client if decision is not None else None
    try:
        if identity is None or not identity.is_authenticated:
            keeper = state.keeper
            environ = request.environ
            client = keeper.client_of(environ)
            require_allowed(client)
            authorization = environ.get("HTTP_AUTHORIZATION")
            if not authorization:
                raise MissingCredentials("the gate's own endpoints require authentication")
            identity = keeper.authenticate(authorization)
            # Authenticated here rather than by the gate: record it as the gate's decision, so it is audited.
            values["_jwtgate_decision"] = Decision(identity, client, decision.route if decision else None)
            values["_jwtgate_identity"] = identity
    except GateDenied as exc:
        _record_denial(values, exc, client, identity)
        raise
    return identity


def require_admin(state: GateState) -> Identity:
    """The caller's identity if it may use the admin API; raise :class:`GateDenied` otherwise (and record why)."""
    identity = require_caller(state)
    if not identity.groups & state.settings.admin_groups:
        exc = AccessDenied(f"user {identity.username!r} is not in an admin group of the gate", reason="not_admin")
        values = g._get_current_object().__dict__
        decision: Decision | None = values.get("_jwtgate_decision")
        _record_denial(values, exc, decision.client if decision else None, identity)
        raise exc
    return identity


def _record_denial(values: dict[str, Any], exc: GateDenied, client: Any, identity: Identity | None) -> None:
    if exc.client is None:
        exc.client = client
    if exc.identity is None:
        exc.identity = identity
    values["_jwtgate_denied"] = exc


def _audit(state: GateState) -> AuditLog:
    if state.audit is None:  # pragma: no cover - init_app always installs it
        raise TemporarilyUnavailable("the audit log is not set up", reason="audit_unavailable")
    return state.audit


def _database_unavailable(exc: Exception) -> TemporarilyUnavailable:
    logger.warning("jwtgate: the gate's database cannot be read (%s)", type(exc).__name__)
    return TemporarilyUnavailable(
        "the audit database cannot be reached; try again later", reason="database_unavailable"
    )


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _streamed(chunks: Iterator[str], mimetype: str, filename: str) -> Response:
    """Stream ``chunks``; the first one is produced here, so a database that is down is a 503, not a broken 200."""
    try:
        first = next(chunks, "")
    except sa.exc.SQLAlchemyError as exc:
        raise _database_unavailable(exc) from exc

    def body() -> Iterator[str]:
        yield first
        try:
            yield from chunks
        except sa.exc.SQLAlchemyError as exc:  # mid-stream: the status is sent; end the body, say why in the log
            logger.warning("jwtgate: audit export cut short: the database failed (%s)", type(exc).__name__)

    response = Response(body(), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return _no_store(response)


def _admin_view(state: GateState, view: Callable[[], Response]) -> Callable[[], Response]:
    def wrapped() -> Response:
        try:
            require_admin(state)
            try:
                return view()
            except (sa.exc.SQLAlchemyError, DatabaseNotReady) as exc:
                raise _database_unavailable(exc) from exc
        except GateDenied as exc:
            return error_response(exc)

    wrapped.__name__ = view.__name__
    return wrapped


def install(app: Flask, state: GateState) -> Blueprint:
    """Register the gate's blueprint on ``app`` at the configured URL prefix."""
    bp = Blueprint(BLUEPRINT_NAME, __name__, url_prefix=state.settings.url_prefix)

    def audit_list() -> Response:
        audit = _audit(state)
        # Every name checked, each given once: a misspelt or repeated filter is a 400, never a wider export.
        args = single_values(request.args.items(multi=True))
        where = AuditFilter.from_args(args, other=PAGING)
        fmt = args.get("format") or "json"
        if fmt not in FORMATS:
            raise InvalidParameter("format", f"format must be one of {', '.join(FORMATS)}")
        engine = audit.database.engine
        if fmt == "csv":
            return _streamed(export(iterate(engine, where), "csv"), "text/csv", "jwtgate-audit.csv")
        if fmt == "ndjson":
            return _streamed(export(iterate(engine, where), "ndjson"), "application/x-ndjson", "jwtgate-audit.ndjson")
        limit = parse_limit(args.get("limit"))
        cursor = parse_cursor(args.get("cursor"))
        rows, next_cursor = page(engine, where, limit=limit, cursor=cursor)
        return _no_store(jsonify(entries=[to_json(row) for row in rows], next_cursor=next_cursor, limit=limit))

    def audit_status() -> Response:
        audit = _audit(state)
        status: dict[str, Any] = {"process": audit.status(), "database": None, "records": None}
        try:
            status["database"] = audit.database.dialect
            status["records"] = audit.store.count()
        except (sa.exc.SQLAlchemyError, DatabaseNotReady):
            pass  # the counters above are what matters while the database is away
        s = state.settings
        status["retention"] = {
            "retention_days": s.audit_retention_days,
            "max_entries": s.audit_max_entries,
            "prune_interval": s.audit_prune_interval,
        }
        return _no_store(jsonify(status))

    def audit_prune() -> Response:
        result = _audit(state).prune()
        if result is None:
            raise Conflict("another process is pruning the audit log now; try again later", reason="prune_in_progress")
        return _no_store(
            jsonify(deleted=result.deleted, deleted_by_age=result.by_age, deleted_by_count=result.by_count)
        )

    bp.add_url_rule("/admin/audit", view_func=_admin_view(state, audit_list), methods=["GET"])
    bp.add_url_rule("/admin/audit/status", view_func=_admin_view(state, audit_status), methods=["GET"])
    bp.add_url_rule("/admin/audit/prune", view_func=_admin_view(state, audit_prune), methods=["POST"])
    from .token_views import install as install_token_views

    install_token_views(bp, state)
    app.register_blueprint(bp)
    return bp
