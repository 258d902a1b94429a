"""The audit table, the leases table, and how one request becomes one row.

Every value a caller controls (path, user agent, username and other claims, the forwarding header) is stored as data in
its own column: cut to the column's length, NUL and lone surrogates replaced (PostgreSQL refuses both, and one
refused row must not hold up a batch), never formatted into a log line. The token itself is never stored: only the
identity's ``token_id`` (a JWT's ``jti`` or a hash of the token).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache
from operator import le
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..database import metadata
from ..errors import GateDenied
from ..identity import Identity

UTC = dt.timezone.utc


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A point in time, stored as UTC (``timestamptz`` on PostgreSQL), always read back timezone-aware in UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value is not None and dialect.name == "sqlite":
            # SQLite keeps text: one offset for every row, so that comparisons are comparisons of times.
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: only INTEGER PRIMARY KEY autoincrements

audit_log = sa.Table(
    "jwtgate_audit_log",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("time", UTCDateTime(), nullable=False),
    # Unique: a batch whose COMMIT reached the database but whose answer was lost is written again from the spool,
    # and the second copy is skipped (ON CONFLICT DO NOTHING), so every request has exactly one row.
    sa.Column("request_id", sa.String(40), nullable=False),
    sa.Column("username", sa.String(255)),
    sa.Column("auth_method", sa.String(32), nullable=False),
    sa.Column("token_id", sa.String(128)),
    sa.Column("provider", sa.String(255)),
    sa.Column("client_address", sa.String(64)),
    sa.Column("peer_address", sa.String(64)),
    sa.Column("forwarded_for", sa.String(1024)),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("path", sa.String(2048), nullable=False),
    sa.Column("endpoint", sa.String(255)),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("detail", sa.String(512)),
    sa.Column("latency_ms", sa.Float),
    sa.Column("user_agent", sa.String(512)),
)
# For the admin API's filters; each ends in id so that "newest first, after this cursor" is an index range.
sa.Index("ux_jwtgate_audit_request_id", audit_log.c.request_id, unique=True)
sa.Index("ix_jwtgate_audit_time", audit_log.c.time)
sa.Index("ix_jwtgate_audit_username", audit_log.c.username, audit_log.c.id)
sa.Index("ix_jwtgate_audit_status", audit_log.c.status, audit_log.c.id)
sa.Index("ix_jwtgate_audit_reason", audit_log.c.reason, audit_log.c.id)
# No index on path: a btree entry must fit a page, and a caller picks the path's length.

#: Who holds which lease until when (seconds, on the gate's clock). See :mod:`flask_jwtgate.audit.retention`.
leases = sa.Table(
    "jwtgate_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

class AuditRow(NamedTuple):
    """One row of the audit table as the writer inserts it (``id`` is the database's). A tuple, so that the driver
    takes it as it is; its field order is the table's column order."""

    time: dt.datetime
    request_id: str
    username: str | None
    auth_method: str
    token_id: str | None
    provider: str | None
    client_address: str | None
    peer_address: str | None
    forwarded_for: str | None
    method: str
    path: str
    endpoint: str | None
    status: int
    decision: str
    reason: str
    detail: str | None
    latency_ms: float | None
    user_agent: str | None


#: The columns of a row as the writer inserts it, in order (``id`` is the database's).
COLUMNS: tuple[str, ...] = AuditRow._fields
assert COLUMNS == tuple(c.name for c in audit_log.columns if c.name != "id")
_LIMITS: dict[str, int] = {
    c.name: c.type.length for c in audit_log.columns if isinstance(c.type, sa.String) and c.type.length
}


#: What the request thread hands the writer: the cheapest capture of the request (a plain tuple: building a named
#: tuple per request costs more than everything else the request thread does for the audit log), turned into a row
#: by :func:`to_row` on the writer thread. In order: time (the gate's clock), identity, client (``ClientAddress``),
#: denied (the ``GateDenied``, if any), method, path, endpoint, status, latency (seconds), user agent, and the reason
#: code of an allowed request.
Pending = tuple[
    float, Identity | None, Any, GateDenied | None, str, str, str | None, int, float | None, str | None, str | None
]


def clean(value: Any, limit: int) -> Any:
    """A caller's text made storable: valid UTF-8, no NUL, at most ``limit`` characters (``None`` stays ``None``)."""
    if value is None:
        return None
    if type(value) is not str:
        value = str(value)
    elif len(value) <= limit and value.isascii() and "\x00" not in value:
        return value  # the common case, checked in C
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value[:limit]


@lru_cache(maxsize=1024)
def _address_text(address: Any) -> str | None:
    return None if address is None else str(address)


#: The lengths of the columns that can hold a caller's text, in the order of ``texts`` in :func:`to_row` (the request
#: id and the decision are the gate's own).
_TEXT_LIMITS: tuple[int, ...] = tuple(
    _LIMITS[name]
    for name in (
        "username", "auth_method", "token_id", "provider", "client_address", "peer_address", "forwarded_for",
        "method", "path", "endpoint", "reason", "detail", "user_agent",
    )
)
#: ``AuditRow`` from a tuple without the named tuple's Python-level ``__new__`` (one is made per request).
_new_row = tuple.__new__


def to_row(pending: Pending, request_id: str) -> AuditRow:
    """The row for one request: every text cleaned and cut to its column's length. Runs on the writer thread."""
    when, identity, client, denied, method, path, endpoint, status, latency, user_agent, allowed_reason = pending
    if denied is None:
        decision = "deny" if status == 429 else "allow"
        reason = allowed_reason or ("rate_limited" if status == 429 else "authenticated")
        detail = None
    else:
        decision = "deny"
        reason = denied.reason
        detail = denied.description
        if identity is None:
            identity = denied.identity
        if denied.client is not None:
            client = denied.client
    if identity is None:
        username = token_id = provider = None
        auth_method = "anonymous"
    else:
        username, auth_method, token_id, provider = (
            identity.username, identity.auth_method or "anonymous", identity.token_id, identity.provider
        )
    if client is None:
        address = peer = forwarded = None
    else:
        address = _address_text(client.address)
        peer = client.peer
        forwarded = client.forwarded_for
    # One pass over all the text in C for the common case (ASCII, no NUL, every value within its column); only a row
    # that fails it is cleaned field by field. A value that is not text (an odd claim) fails the join.
    texts: tuple[Any, ...] = (
        username or "", auth_method, token_id or "", provider or "", address or "", peer or "", forwarded or "",
        method, path, endpoint or "", reason, detail or "", user_agent or "",
    )
    try:
        joined = "".join(texts)
        clean_already = joined.isascii() and "\x00" not in joined and all(map(le, map(len, texts), _TEXT_LIMITS))
    except TypeError:
        clean_already = False
    if not clean_already:
        username, auth_method, token_id, provider, address, peer, forwarded = (
            clean(username, 255), clean(auth_method, 32), clean(token_id, 128), clean(provider, 255),
            clean(address, 64), clean(peer, 64), clean(forwarded, 1024),
        )
        method, path, endpoint, reason, detail, user_agent = (
            clean(method, 32), clean(path, 2048), clean(endpoint, 255), clean(reason, 64), clean(detail, 512),
            clean(user_agent, 512),
        )
    return _new_row(
        AuditRow,
        (
            dt.datetime.fromtimestamp(when, UTC),
            request_id,
            username,
            auth_method,
            token_id,
            provider,
            address,
            peer,
            forwarded,
            method,
            path,
            endpoint,
            status,
            decision,
            reason,
            detail,
            None if latency is None else round(latency * 1000.0, 3),
            user_agent,
        ),
    )


def row_to_json(row: AuditRow) -> dict[str, Any]:
    """A row as JSON-ready data (a spool line)."""
    out = row._asdict()
    out["time"] = row.time.astimezone(UTC).isoformat()
    return out


def row_from_json(data: dict[str, Any]) -> AuditRow:
    """The inverse of :func:`row_to_json`, re-checked: a spool line is a file someone could have edited."""
    values: dict[str, Any] = {name: data.get(name) for name in COLUMNS}
    time = values["time"]
    if not isinstance(time, str):
        raise ValueError("a spooled audit record has no time")
    parsed = dt.datetime.fromisoformat(time)
    values["time"] = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    if not isinstance(values["request_id"], str) or type(values["status"]) is not int:
        raise ValueError("a spooled audit record has no request id or status")
    latency = values["latency_ms"]
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))):
        raise ValueError("a spooled audit record has a latency that is not a number")
    for name, limit in _LIMITS.items():
        values[name] = clean(values[name], limit)
    for name in ("auth_method", "method", "path", "decision", "reason"):
        if values[name] is None:
            raise ValueError(f"a spooled audit record has no {name}")
    return AuditRow(**values)


def public_columns() -> Sequence[str]:
    """The columns the admin API and the exports show, in order."""
    return ("id", *COLUMNS)
