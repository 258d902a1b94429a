"""How the writer turns a batch of records into rows: cleaned column by column, times in the store's own form,
request ids that sort in the order they were drawn. Pure functions, no app."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa

from flask_jwtgate.audit.model import Pending, row_from_json, row_time, row_to_json, to_rows
from flask_jwtgate.audit.store import SqliteTimes, _bind_none_quickly, _sqlite_text
from flask_jwtgate.audit.writer import RequestIds

UTC = dt.timezone.utc


def _pending(when: float = 1_800_000_000.5, **values: Any) -> Pending:
    fields: dict[str, Any] = {
        "username": "bob", "auth_method": "jwt", "token_id": "jti:1", "provider": "test", "client_address": "10.0.0.1",
        "peer_address": "10.0.0.1", "forwarded_for": None, "method": "GET", "path": "/api/items", "endpoint": "items",
        "status": 200, "decision": "allow", "reason": "authenticated", "detail": None, "latency_ms": 0.25,
        "user_agent": "curl/8.5",
    }
    fields.update(values)
    return (when, *fields.values())


def test_a_dirty_value_is_cleaned_and_its_clean_neighbours_are_kept_as_they_are() -> None:
    batch = [
        _pending(path="/api/items"),
        _pending(path="/api/" + "x" * 3000, user_agent="nul\x00byte", username="\ud800bob"),
        _pending(path="/api/items?q=ü", username=None),
    ]

    first, second, third = to_rows(batch, ["r1", "r2", "r3"])

    assert (first.path, first.user_agent, first.username) == ("/api/items", "curl/8.5", "bob")
    assert (second.path, second.user_agent, second.username) == (("/api/" + "x" * 3000)[:2048], "nul\ufffdbyte", "?bob")
    assert (third.path, third.username) == ("/api/items?q=ü", None)
    assert [row.request_id for row in (first, second, third)] == ["r1", "r2", "r3"]
    assert (first.status, first.latency_ms, first.forwarded_for) == (200, 0.25, None)


def test_a_value_that_is_not_text_is_stored_as_its_text() -> None:
    [row] = to_rows([_pending(username=12345)], ["r1"])

    assert row.username == "12345"


def test_rows_hold_aware_utc_datetimes_unless_the_store_takes_sqlites_text() -> None:
    [plain] = to_rows([_pending(1_800_000_000.25)], ["r1"])
    [for_sqlite] = to_rows([_pending(1_800_000_000.25)], ["r2"], SqliteTimes())

    assert plain.time == dt.datetime(2027, 1, 15, 8, 0, 0, 250000, tzinfo=UTC)
    assert for_sqlite.time == "2027-01-15 08:00:00.250000"
    assert row_time(for_sqlite) == plain.time


@pytest.mark.parametrize("when", [1_800_000_000.0, 1_800_000_000.000001, 1_800_000_059.999999, 1_800_003_599.5])
def test_sqlite_times_are_the_text_sqlalchemy_stores_for_the_same_time(when: float) -> None:
    engine = sa.create_engine("sqlite://")
    table = sa.Table("t", sa.MetaData(), sa.Column("at", sa.DateTime))
    table.create(engine)
    moment = dt.datetime.fromtimestamp(when, UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        connection.execute(table.insert(), {"at": moment})
        stored = connection.exec_driver_sql("SELECT at FROM t").scalar_one()

    [text] = SqliteTimes()([when])

    # Both keep microseconds: the float's last digit may round either way, the form must be the same.
    assert text[:23] == stored[:23] and len(text) == len(stored) == 26
    assert _sqlite_text(dt.datetime.fromtimestamp(when, UTC)) == stored


def test_a_row_with_sqlites_text_time_survives_the_spool() -> None:
    [row] = to_rows([_pending(1_800_000_000.25)], ["r1"], SqliteTimes())

    again = row_from_json(row_to_json(row))

    assert again.time == dt.datetime(2027, 1, 15, 8, 0, 0, 250000, tzinfo=UTC)
    assert again._replace(time=row.time) == row


def test_request_ids_sort_in_the_order_they_were_drawn() -> None:
    ids = RequestIds()

    drawn = [ids.next() for _ in range(20)] + ids.take(300)

    assert sorted(drawn) == drawn
    assert len(set(drawn)) == len(drawn)
    assert len({value.split("-")[0] for value in drawn}) == 1


def test_the_none_adapter_binds_null_and_leaves_a_hosts_own_adapter_alone() -> None:
    key: tuple[type[Any], type[Any]] = (type(None), sqlite3.PrepareProtocol)
    registry = sqlite3.adapters  # the module's own, process-wide dict: what this test changes, it puts back
    before = registry.get(key)
    try:
        registry.pop(key, None)
        _bind_none_quickly()
        assert key in registry
        assert sqlite3.connect(":memory:").execute("SELECT ? IS NULL", (None,)).fetchone() == (1,)

        def hosts_own(value: None) -> str:
            return "host"

        registry[key] = hosts_own
        _bind_none_quickly()
        assert registry[key] is hosts_own
    finally:
        registry.pop(key, None)
        if before is not None:
            registry[key] = before
