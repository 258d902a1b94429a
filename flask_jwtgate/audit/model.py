"""The audit table, the leases table, and how one request becomes one row.

Every value a caller controls (path, user agent, username and other claims, the forwarding header) is stored as data in
its own column: cut to the column's length, NUL and lone surrogates replaced (PostgreSQL refuses both, and one
refused row must not hold up a batch), never formatted into a log line. The token itself is never stored: only the
identity's ``token_id`` (a JWT's ``jti`` or a hash of the token).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, repeat
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..database import metadata

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
#: The reasons an allowed request is recorded with (every other reason is a denial's, or the writer's own).
ALLOWED_REASONS = ("authenticated", "public", "cors_preflight")
#: The conditions of the partial indexes below. A query that wants one of them repeats its condition word for word
#: (:meth:`.query.AuditFilter.conditions`): that is how SQLite's planner knows the index holds every row it needs.
ERROR_STATUS = audit_log.c.status >= 400
NOT_ALLOWED = audit_log.c.decision != "allow"

# For the admin API's filters; each ends in id so that "newest first, after this cursor" is an index range.
sa.Index("ux_jwtgate_audit_request_id", audit_log.c.request_id, unique=True)
sa.Index("ix_jwtgate_audit_time", audit_log.c.time)
sa.Index("ix_jwtgate_audit_username", audit_log.c.username, audit_log.c.id)
# Status and reason are indexed only where auditors need an index: errors and denials, the few among many. A filter
# on a common value (200, "authenticated") finds its rows at once by walking the newest rows, and the allowed
# requests, most of the rows, skip two index inserts each. Partial indexes on SQLite and PostgreSQL; whole elsewhere.
sa.Index(
    "ix_jwtgate_audit_error_status", audit_log.c.status, audit_log.c.id,
    sqlite_where=ERROR_STATUS, postgresql_where=ERROR_STATUS,
)
sa.Index(
    "ix_jwtgate_audit_denied_reason", audit_log.c.reason, audit_log.c.id,
    sqlite_where=NOT_ALLOWED, postgresql_where=NOT_ALLOWED,
)
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
    takes it as it is; its field order is the table's column order. ``time`` is an aware datetime, or, in a row
    bound for SQLite, the text SQLite keeps for it (:meth:`.store.RowStore.times`); :func:`row_time` reads either."""

    time: dt.datetime | str
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


#: What the request thread hands the writer: the request's row as plain values, in the table's column order without
#: the request id: time (seconds, the gate's clock), username, auth method, token id, provider, client address, peer
#: address, forwarding chain, method, path, endpoint, status, decision, reason, detail, latency (milliseconds) and user
#: agent. Only strings, numbers and ``None``: the identity, the client and the exception a denial raised die with the
#: request, and the garbage collector stops tracking the tuple at its first look (a queue of tuples that hold
#: containers is walked by every collection until the writer has taken it). :func:`to_rows` makes the rows.
Pending = tuple[
    float, str | None, str, str | None, str | None, str | None, str | None, str | None, str, str, str | None, int, str,
    str, str | None, float | None, str | None,
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


#: The positions in :data:`Pending` of the columns that hold text, with each column's length.
_TEXT_COLUMNS: tuple[tuple[int, int], ...] = tuple(
    (position, _LIMITS[name]) for position, name in enumerate((COLUMNS[0], *COLUMNS[2:])) if name in _LIMITS
)
_TEXT_POSITIONS = tuple(position for position, _ in _TEXT_COLUMNS)
#: ``AuditRow`` from a tuple without the named tuple's Python-level ``__new__`` (one is made per request).
_new_row = tuple.__new__


def _clean_text(values: Iterable[Any]) -> bool:
    """Whether every value is ``None`` or ASCII text without NUL, in one pass in C. A value that is not text fails the
    join, an odd claim for one; an empty one (``0``, ``[]``) would pass, and the record's values never are."""
    try:
        text = "".join(filter(None, values))
    except TypeError:
        return False
    return text.isascii() and "\x00" not in text


def utc_datetimes(seconds: Iterable[float]) -> list[dt.datetime]:
    """The records' times as aware datetimes in UTC: what a row holds unless its store wants another form."""
    return list(map(dt.datetime.fromtimestamp, seconds, repeat(UTC)))


def to_rows(
    batch: Sequence[Pending],
    request_ids: Sequence[str],
    times: Callable[[Sequence[float]], Iterable[Any]] = utc_datetimes,
) -> list[AuditRow]:
    """The rows for a batch of records: every text cleaned and cut to its column's length. Runs on the writer thread.

    Column by column rather than row by row, so that the common case (ASCII text, no NUL, every value within its
    column) is a few passes in C over the batch: only a column that fails them is cleaned value by value. A value that
    is not text (an odd claim) fails the join. ``times`` turns the records' seconds into what the store takes
    (:meth:`.store.RowStore.times`).
    """
    if not batch:
        return []
    columns: list[Sequence[Any]] = list(zip(*batch, strict=True))
    all_clean = _clean_text(chain.from_iterable([columns[position] for position in _TEXT_POSITIONS]))
    for position, limit in _TEXT_COLUMNS:
        column = columns[position]
        if (all_clean or _clean_text(column)) and max(map(len, filter(None, column)), default=0) <= limit:
            continue
        columns[position] = [clean(value, limit) for value in column]
    return list(map(_new_row, repeat(AuditRow), zip(times(columns[0]), request_ids, *columns[1:], strict=True)))


def to_row(pending: Pending, request_id: str) -> AuditRow:
    """The row for one record (see :func:`to_rows`)."""
    return to_rows([pending], [request_id])[0]


def row_time(row: AuditRow) -> dt.datetime:
    """A row's time as an aware datetime in UTC, whichever form the row holds it in."""
    time = row.time
    if isinstance(time, str):  # SQLite's text, in UTC
        return dt.datetime.fromisoformat(time).replace(tzinfo=UTC)
    return time.astimezone(UTC)


def row_to_json(row: AuditRow) -> dict[str, Any]:
    """A row as JSON-ready data (a spool line)."""
    out = row._asdict()
    out["time"] = row_time(row).isoformat()
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
