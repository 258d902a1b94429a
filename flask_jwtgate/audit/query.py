"""Reading the audit log: filters, cursor pagination, and CSV / JSON exports that stream.

Exports never load the log into memory: rows are fetched by keyset (``id`` greater than the last one seen) in chunks of
:data:`CHUNK` and written out as they come, so a million-row export holds one chunk at a time, and no transaction stays
open between chunks.

CSV cells that a spreadsheet would run as a formula (a caller can choose a path or a username starting with ``=``)
are prefixed with ``'``, as OWASP recommends against CSV injection: a cell that starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return. Also one whose first character after leading whitespace is ``=``, ``+``, ``-`` or
``@`` (`` =cmd|...``): OWASP lists only the first character, but some spreadsheets strip leading spaces on import
(LibreOffice Calc's "trim spaces" option) and then evaluate what follows, and the quote costs a plain value nothing.
JSON carries every value unchanged.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..ascii_numbers import parse_decimal, parse_whole
from ..errors import InvalidParameter
from .model import ALLOWED_REASONS, ERROR_STATUS, NOT_ALLOWED, UTC, audit_log, clean, public_columns

CHUNK = 1000
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DECISIONS = ("allow", "deny", "system")
FORMATS = ("json", "csv", "ndjson")
#: The filters, by the one name each has in the admin API's query string (``?user=``) and among the CLI's options
#: (``--user``), with what it selects (the CLI's help). Both refuse any other name.
FILTERS: Mapping[str, str] = {
    "user": "Only this username.",
    "status": "Only this HTTP status (403) or class (4xx).",
    "decision": "Only allowed, denied or the gate's own records: " + ", ".join(DECISIONS) + ".",
    "reason": "Only this reason code, e.g. expired, read_only, rate_limited.",
    "path": "Only this path; a trailing * makes it a prefix.",
    "since": "Only records at or after this time (ISO 8601, e.g. 2025-01-31T00:00:00Z, or Unix seconds).",
    "until": "Only records before this time.",
}
#: The admin API's other query parameters: the CLI streams every record, in a --format of its own.
PAGING = ("format", "limit", "cursor")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def parse_time(value: str, parameter: str) -> dt.datetime:
    """An ISO 8601 date or date-time (UTC when it names no offset), or Unix seconds (ASCII digits)."""
    text = value.strip(" \t")
    try:
        seconds = parse_decimal(text)
        if seconds is not None:
            return dt.datetime.fromtimestamp(seconds, UTC)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidParameter(
            parameter, f"{parameter} must be an ISO 8601 time such as 2025-01-31T12:00:00Z, or Unix seconds"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _time_arg(args: Mapping[str, str], name: str) -> dt.datetime | None:
    value = args.get(name)
    return parse_time(value, name) if value else None


@dataclass(frozen=True)
class AuditFilter:
    """Which records: every field that is set must match.

    ``status`` is one code (``401``) or a class (``4xx``); ``path`` is exact, or a prefix when it ends in ``*``;
    ``since`` is inclusive and ``until`` exclusive.

    ::

        where = AuditFilter.from_args({"decision": "deny", "since": "2025-01-31T00:00:00Z"})
        rows, next_cursor = page(engine, where, limit=100, cursor=None)
    """

    user: str | None = None
    status: int | None = None
    status_class: int | None = None
    decision: str | None = None
    reason: str | None = None
    path: str | None = None
    path_prefix: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str], *, other: Collection[str] = ()) -> AuditFilter:
        """Parse the admin API's query parameters (or the CLI's options); raise :class:`InvalidParameter`.

        :param other: names the caller reads itself (the API's :data:`PAGING`). Any name neither a filter nor one
            of these is refused: a misspelt filter (``usr=bob``) must not silently export everything.
        """
        for name in args:
            if name not in FILTERS and name not in other:
                raise unknown_parameter(name, (*FILTERS, *other))
        status = status_class = None
        raw_status = (args.get("status") or "").lower()
        if raw_status:
            if len(raw_status) == 3 and raw_status[0] in "12345" and raw_status[1:] == "xx":
                status_class = int(raw_status[0])
            elif len(raw_status) == 3 and (code := parse_whole(raw_status)) is not None:
                status = code
            else:
                raise InvalidParameter("status", "status must be an HTTP status such as 403, or a class such as 4xx")
        decision = args.get("decision") or None
        if decision is not None and decision not in DECISIONS:
            raise InvalidParameter("decision", f"decision must be one of {', '.join(DECISIONS)}")
        path: str | None = args.get("path") or None
        path_prefix: str | None = None
        if path is not None and path.endswith("*"):
            path_prefix = path[:-1]
            path = None
        # Cleaned as stored values are (model.clean): a NUL or a lone surrogate then matches what was stored,
        # and never reaches the database as text it refuses.
        return cls(
            user=clean(args.get("user") or None, 255),
            status=status,
            status_class=status_class,
            decision=decision,
            reason=clean(args.get("reason") or None, 64),
            path=clean(path, 2048),
            path_prefix=clean(path_prefix, 2048),
            since=_time_arg(args, "since"),
            until=_time_arg(args, "until"),
        )

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        c = audit_log.c
        where: list[sa.ColumnElement[bool]] = []
        if self.user is not None:
            where.append(c.username == self.user)
        if self.status is not None:
            where.append(c.status == self.status)
        if self.status_class is not None:
            where.append(c.status.between(self.status_class * 100, self.status_class * 100 + 99))
        lowest_status = self.status if self.status is not None else (self.status_class or 0) * 100
        if lowest_status >= 400:
            where.append(ERROR_STATUS)  # always true here: it lets the planner use the index of error statuses
        if self.decision is not None:
            where.append(c.decision == self.decision)
        if self.reason is not None:
            where.append(c.reason == self.reason)
            if self.reason not in ALLOWED_REASONS:
                where.append(NOT_ALLOWED)  # always true of such a reason: the index of denials' reasons
        if self.path is not None:
            where.append(c.path == self.path)
        if self.path_prefix is not None:
            where.append(c.path.startswith(self.path_prefix, autoescape=True))
        if self.since is not None:
            where.append(c.time >= self.since)
        if self.until is not None:
            where.append(c.time < self.until)
        return where


def unknown_parameter(name: str, known: Iterable[str]) -> InvalidParameter:
    """The 400 for a parameter name that is not one of ``known``, with the nearest known name."""
    known = list(known)
    shown = name if len(name) <= 40 else name[:37] + "..."
    if not shown.isprintable() or not shown.strip():
        shown = repr(shown)
    nearest = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {nearest[0]}?)" if nearest else ""
    return InvalidParameter(name, f"{shown} is not a known parameter{hint}; known: {', '.join(known)}")


def single_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Query parameters as a dict; a name given twice is refused (400) rather than one of its values ignored."""
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            raise InvalidParameter(name, f"{name} is given more than once; give it once")
        values[name] = value
    return values


def parse_cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    cursor = parse_whole(value, max_digits=19)
    if cursor is None:
        raise InvalidParameter("cursor", "cursor must be the next_cursor value of a previous page")
    return cursor


def parse_limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    limit = parse_whole(value, max_digits=len(str(MAX_LIMIT)))
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise InvalidParameter("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def _row_dict(row: sa.Row[Any]) -> dict[str, Any]:
    return dict(row._mapping)


def page_query(where: AuditFilter, *, limit: int, cursor: int | None) -> sa.Select[Any]:
    """The query of one page: newest first, up to ``limit`` records older than ``cursor``."""
    query = sa.select(audit_log).where(*where.conditions())
    if cursor is not None:
        query = query.where(audit_log.c.id < cursor)
    return query.order_by(audit_log.c.id.desc()).limit(limit)


def page(
    engine: Engine, where: AuditFilter, *, limit: int, cursor: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first: up to ``limit`` records older than ``cursor``, and the cursor of the next page (or ``None``)."""
    with engine.connect() as connection:
        rows = [_row_dict(row) for row in connection.execute(page_query(where, limit=limit + 1, cursor=cursor))]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (str(rows[-1]["id"]) if more and rows else None)


def iterate(engine: Engine, where: AuditFilter, chunk: int = CHUNK) -> Iterator[dict[str, Any]]:
    """Oldest first, every matching record, fetched ``chunk`` rows at a time."""
    after = 0
    conditions = where.conditions()
    while True:
        query = (
            sa.select(audit_log).where(*conditions, audit_log.c.id > after).order_by(audit_log.c.id).limit(chunk)
        )
        with engine.connect() as connection:
            rows = [_row_dict(row) for row in connection.execute(query)]
        yield from rows
        if len(rows) < chunk:
            return
        after = rows[-1]["id"]


def to_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A record as the API shows it: times in ISO 8601 UTC."""
    out = dict(row)
    time = out.get("time")
    if isinstance(time, dt.datetime):
        out["time"] = time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and (value.startswith(_FORMULA_START) or value.lstrip().startswith(_FORMULA_START)):
        return "'" + value
    return value


def export(rows: Iterator[dict[str, Any]], fmt: str) -> Iterator[str]:
    """Render ``rows`` as they come: ``csv`` (header first), ``json`` (one array) or ``ndjson`` (a line each)."""
    columns = public_columns()
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(name)) for name in columns])
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
    elif fmt == "json":
        yield "["
        first = True
        for row in rows:
            yield ("" if first else ",") + "\n" + json.dumps(to_json(row), separators=(",", ":"))
            first = False
        yield "\n]\n"
    elif fmt == "ndjson":
        for row in rows:
            yield json.dumps(to_json(row), separators=(",", ":")) + "\n"
    else:
        raise InvalidParameter("format", f"format must be one of {', '.join(FORMATS)}")
