"""The gate's own HTTP endpoints, mounted at ``JWTGATE_URL_PREFIX`` (default ``/jwtgate``): the blueprint, the helpers
every endpoint shares, and the audit log's admin endpoints.

Every request to these endpoints is decided by the gate's policy like any API request, whatever the path rules and
the master switch say (``flask_jwtgate.policy``): the IP allowlist, the failed-authentication limit, the allowed and
read-only groups apply, and the endpoints are never public unless the gate marks them so. The endpoints then require
an authenticated caller (and the admin ones a member of ``JWTGATE_ADMIN_GROUPS``), failing closed if the decision is
somehow missing. Refusals use the contract's JSON errors and are audited like the gate's own.

Nothing a caller sends here causes a 500: bad parameters are a 400 naming the parameter, an unreachable database a
503 ``temporarily_unavailable``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Blueprint, Response, g, jsonify, request

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
from .policy import Decision
from .state import BLUEPRINT_NAME, GateState, error_response

logger = logging.getLogger("flask_jwtgate")

V = TypeVar("V", bound=Callable[..., Response])


def make_blueprint(state: GateState) -> Blueprint:
    """The gate's blueprint at the configured URL prefix; each module of endpoints adds its own to it."""
    return Blueprint(BLUEPRINT_NAME, __name__, url_prefix=state.settings.url_prefix)


def require_caller() -> Identity:
    """The authenticated caller; raise :class:`GateDenied` otherwise (and record why, for the audit log)."""
    values = g._get_current_object().__dict__
    decision: Decision | None = values.get("_jwtgate_decision")
    identity = decision.identity if decision is not None else None
    if identity is None or not identity.is_authenticated:
        # The gate decided this request and let it through without credentials: only the gate's public views get
        # here that way, and they never call this. Fail closed all the same.
        exc = MissingCredentials("the gate's own endpoints require authentication")
        _record_denial(values, exc, decision.client if decision is not None else None, None)
        raise exc
    return identity


def is_admin(identity: Identity, state: GateState) -> bool:
    return not identity.groups.isdisjoint(state.settings.admin_groups)


def require_admin(state: GateState) -> Identity:
    """The caller's identity if it may use the admin API; raise :class:`GateDenied` otherwise (and record why)."""
    identity = require_caller()
    if not is_admin(identity, state):
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


def guarded(view: V) -> V:
    """Answer the view's refusals with the contract's JSON error, and an unreachable database with a 503."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            try:
                return view(*args, **kwargs)
            except (sa.exc.SQLAlchemyError, DatabaseNotReady) as exc:
                raise database_unavailable(exc) from exc
        except GateDenied as exc:
            return error_response(exc)

    return wrapped  # type: ignore[return-value]


def database_unavailable(exc: Exception) -> TemporarilyUnavailable:
    logger.warning("jwtgate: the gate's database cannot be reached (%s)", type(exc).__name__)
    return TemporarilyUnavailable(
        "the gate's database cannot be reached; try again later", reason="database_unavailable"
    )


def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _audit(state: GateState) -> AuditLog:
    if state.audit is None:  # pragma: no cover - init_app always installs it
        raise TemporarilyUnavailable("the audit log is not set up", reason="audit_unavailable")
    return state.audit


def _streamed(chunks: Iterator[str], mimetype: str, filename: str) -> Response:
    """Stream ``chunks``; the first one is produced here, so a database that is down is a 503, not a broken 200."""
    try:
        first = next(chunks, "")
    except sa.exc.SQLAlchemyError as exc:
        raise database_unavailable(exc) from exc

    def body() -> Iterator[str]:
        yield first
        try:
            yield from chunks
        except sa.exc.SQLAlchemyError as exc:  # mid-stream: the status is sent; end the body, say why in the log
            logger.warning("jwtgate: audit export cut short: the database failed (%s)", type(exc).__name__)

    response = Response(body(), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return no_store(response)


def add_audit_views(bp: Blueprint, state: GateState) -> None:
    """The audit log's admin endpoints."""

    @guarded
    def audit_list() -> Response:
        require_admin(state)
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
        return no_store(jsonify(entries=[to_json(row) for row in rows], next_cursor=next_cursor, limit=limit))

    @guarded
    def audit_status() -> Response:
        require_admin(state)
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
        return no_store(jsonify(status))

    @guarded
    def audit_prune() -> Response:
        require_admin(state)
        result = _audit(state).prune()
        if result is None:
            raise Conflict("another process is pruning the audit log now; try again later", reason="prune_in_progress")
        return no_store(
            jsonify(deleted=result.deleted, deleted_by_age=result.by_age, deleted_by_count=result.by_count)
        )

    bp.add_url_rule("/admin/audit", view_func=audit_list, methods=["GET"])
    bp.add_url_rule("/admin/audit/status", view_func=audit_status, methods=["GET"])
    bp.add_url_rule("/admin/audit/prune", view_func=audit_prune, methods=["POST"])
