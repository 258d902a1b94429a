"""Retention: records older than JWTGATE_AUDIT_RETENTION_DAYS and beyond JWTGATE_AUDIT_MAX_ENTRIES are deleted, in
chunks, on the schedule, by one process at a time; with a controlled clock. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from audit_helpers import ADMIN_GROUP, audit_of, audit_rows, bearer, wait_for
from flask import Flask

from flask_jwtgate import JWTGate

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]
DAY = 86400.0
MANUAL = {"JWTGATE_AUDIT_PRUNE_INTERVAL": 0}  # no scheduled prunes unless a test asks for them


def make_requests(app: Flask, count: int, path: str = "/api/items") -> None:
    client = app.test_client()
    for _ in range(count):
        assert client.get(path).status_code == 401


def test_records_older_than_the_retention_period_are_deleted(audit_app_factory: AppFactory, clock: Any) -> None:
    app, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=90, JWTGATE_AUDIT_MAX_ENTRIES=None, **MANUAL)
    make_requests(app, 3, "/api/old")
    clock.advance(60 * DAY)
    make_requests(app, 2, "/api/recent")
    clock.advance(30 * DAY + 1)  # the first three are now 90 days and a second old

    result = audit_of(app).prune()

    assert result is not None and (result.by_age, result.by_count) == (3, 0)
    assert [row["path"] for row in audit_rows(app)] == ["/api/recent"] * 2


def test_records_beyond_the_maximum_count_are_deleted_oldest_first(audit_app_factory: AppFactory, clock: Any) -> None:
    app, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=None, JWTGATE_AUDIT_MAX_ENTRIES=5, **MANUAL)
    make_requests(app, 12)
    newest = [row["id"] for row in audit_rows(app)][-5:]

    result = audit_of(app).prune()

    assert result is not None and (result.by_age, result.by_count) == (0, 7)
    assert [row["id"] for row in audit_rows(app)] == newest
    assert audit_of(app).prune() == type(result)(0, 0)  # nothing more to do


def test_deletion_goes_in_chunks(audit_app_factory: AppFactory, clock: Any) -> None:
    app, _ = audit_app_factory(
        clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, JWTGATE_AUDIT_PRUNE_CHUNK_SIZE=3, **MANUAL
    )
    make_requests(app, 10)
    clock.advance(2 * DAY)
    deletes: list[str] = []

    def count_deletes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)

    engine = audit_of(app).database.engine
    sa.event.listen(engine, "before_cursor_execute", count_deletes)
    try:
        result = audit_of(app).prune()
    finally:
        sa.event.remove(engine, "before_cursor_execute", count_deletes)

    assert result is not None and result.by_age == 10
    assert len(deletes) == 4  # 3 + 3 + 3 + 1, each its own short transaction
    assert audit_rows(app) == []


def test_the_scheduler_prunes_once_per_interval(audit_app_factory: AppFactory, clock: Any) -> None:
    app, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, JWTGATE_AUDIT_PRUNE_INTERVAL=3600)
    make_requests(app, 3, "/api/day-one")  # test mode: the first scheduler check is a minute away
    clock.advance(1 * DAY + 60)

    make_requests(app, 1, "/api/day-two")  # this write finds a prune due: day one is gone

    assert [row["path"] for row in audit_rows(app)] == ["/api/day-two"]
    clock.advance(1 * DAY - 600)
    make_requests(app, 1, "/api/day-three")  # day two is now over a day old, but the next prune is not due yet
    clock.advance(30)
    make_requests(app, 1, "/api/day-three")
    assert [row["path"] for row in audit_rows(app)] == ["/api/day-two"] + ["/api/day-three"] * 2
    clock.advance(3600)
    make_requests(app, 1, "/api/day-four")
    assert [row["path"] for row in audit_rows(app)] == ["/api/day-three"] * 2 + ["/api/day-four"]


def test_in_test_mode_an_apps_first_requests_do_not_prune_in_line(audit_app_factory: AppFactory, clock: Any) -> None:
    """Test mode writes each record on the request thread; the scheduler's first check waits a minute (on the gate's
    clock) rather than claiming the schedule and pruning in line on every new app's first request."""
    app, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, JWTGATE_AUDIT_PRUNE_INTERVAL=3600)
    engine = audit_of(app).database.engine
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        make_requests(app, 3)
        first = list(statements)
        clock.advance(60)
        make_requests(app, 1)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)

    assert not any("jwtgate_leases" in statement for statement in first)  # only the records' INSERTs
    assert any("jwtgate_leases" in statement for statement in statements[len(first):])  # now the schedule is asked


def test_a_scheduled_prune_runs_on_a_thread_of_its_own_and_the_writer_goes_on(
    audit_app_factory: AppFactory, clock: Any
) -> None:
    """In the background mode a prune never runs on the writer's thread: while one is deleting (held here at its
    first DELETE), new records still reach the database."""
    app, _ = audit_app_factory(
        clock=clock, TESTING=False, JWTGATE_AUDIT_RETENTION_DAYS=1, JWTGATE_AUDIT_FLUSH_INTERVAL=0.02
    )
    make_requests(app, 3, "/api/old")
    wait_for(lambda: len(audit_rows(app)) == 3, what="the writer to write the first records")
    deleting, go_on = threading.Event(), threading.Event()
    deleted_by: list[str] = []

    def hold_first_delete(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE") and not deleting.is_set():
            deleted_by.append(threading.current_thread().name)
            deleting.set()
            go_on.wait(30)

    # Listening before the clock moves: the writer's idle rounds ask the scheduler too, so the prune may start at
    # once. Left on the engine (disposed after the test): removing a listener while another thread runs the
    # listeners breaks that thread's statement.
    sa.event.listen(audit_of(app).database.engine, "before_cursor_execute", hold_first_delete)
    clock.advance(2 * DAY)  # the old records are due, and so is the next scheduled prune
    try:
        make_requests(app, 1, "/api/new")  # the writer's next round finds the prune due
        wait_for(deleting.is_set, what="the scheduled prune to start deleting")
        make_requests(app, 2, "/api/new")
        wait_for(lambda: len(audit_rows(app, path="/api/new")) == 3, 10, "the writer, while the prune is held")
    finally:
        go_on.set()

    assert deleted_by == ["jwtgate-audit-prune"]
    wait_for(lambda: [row["path"] for row in audit_rows(app)] == ["/api/new"] * 3, what="the prune to finish")


def test_the_prune_interval_0_leaves_pruning_to_the_cli(audit_app_factory: AppFactory, clock: Any) -> None:
    app, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, **MANUAL)
    make_requests(app, 2)
    clock.advance(2 * DAY)
    make_requests(app, 1)
    assert len(audit_rows(app)) == 3

    result = app.test_cli_runner().invoke(args=["jwtgate", "audit", "prune"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "deleted 2 audit records (2 by age, 0 by count)"
    assert len(audit_rows(app)) == 1


def test_two_apps_on_one_database_prune_once_per_interval(audit_app_factory: AppFactory, clock: Any) -> None:
    first, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1)
    second, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1)
    clock.advance(3 * DAY)

    results = [audit_of(first).maybe_prune(), audit_of(second).maybe_prune()]

    assert sum(result is not None for result in results) == 1


def test_one_prune_at_a_time_across_apps(
    audit_app_factory: AppFactory, clock: Any, jwtgate_token_factory: TokenFactory
) -> None:
    first, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, **MANUAL)
    second, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, **MANUAL)
    make_requests(first, 4)
    clock.advance(2 * DAY)
    lock = audit_of(first).pruner.lock
    assert lock.acquire(300)  # the first app is pruning

    assert audit_of(second).prune() is None
    admin = bearer(jwtgate_token_factory("alice", groups=[ADMIN_GROUP], now=clock()))
    response = second.test_client().post("/jwtgate/admin/audit/prune", headers=admin)
    assert response.status_code == 409
    assert response.get_json() == {
        "error": "conflict",
        "error_description": "another process is pruning the audit log now; try again later",
        "status": 409,
        "reason": "prune_in_progress",
    }
    cli = second.test_cli_runner().invoke(args=["jwtgate", "audit", "prune"])
    assert cli.exit_code == 1 and "another process is pruning" in cli.output

    lock.release()
    result = audit_of(second).prune()
    assert result is not None and result.by_age == 4


def test_a_dead_pruners_lock_expires(audit_app_factory: AppFactory, clock: Any) -> None:
    first, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, **MANUAL)
    second, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, **MANUAL)
    make_requests(first, 2)
    assert audit_of(first).pruner.lock.acquire(300)  # ... and then its process died
    clock.advance(2 * DAY)

    result = audit_of(second).prune()

    assert result is not None and result.by_age == 2


def test_concurrent_prunes_run_one_at_a_time(audit_app_factory: AppFactory, clock: Any) -> None:
    first, _ = audit_app_factory(
        clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, JWTGATE_AUDIT_PRUNE_CHUNK_SIZE=2, **MANUAL
    )
    second, _ = audit_app_factory(clock=clock, JWTGATE_AUDIT_RETENTION_DAYS=1, **MANUAL)
    make_requests(first, 5)
    clock.advance(2 * DAY)
    engine = audit_of(first).database.engine
    deleting, go_on = threading.Event(), threading.Event()

    def hold_first_delete(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE") and not deleting.is_set():
            deleting.set()
            go_on.wait(10)

    sa.event.listen(engine, "before_cursor_execute", hold_first_delete)
    results: list[Any] = []
    pruning = threading.Thread(target=lambda: results.append(audit_of(first).prune()))
    pruning.start()
    try:
        wait_for(deleting.is_set, what="the first prune to start deleting")
        assert audit_of(second).prune() is None  # while the first is mid-way
    finally:
        go_on.set()
        pruning.join(10)
        sa.event.remove(engine, "before_cursor_execute", hold_first_delete)

    assert results[0] is not None and results[0].by_age == 5
    assert audit_rows(first) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("JWTGATE_AUDIT_RETENTION_DAYS", 0),
        ("JWTGATE_AUDIT_MAX_ENTRIES", "many"),
        ("JWTGATE_AUDIT_PRUNE_INTERVAL", -1),
        ("JWTGATE_AUDIT_PRUNE_CHUNK_SIZE", 0),
    ],
)
def test_bad_retention_settings_are_refused_at_start_up(
    jwtgate_app_factory: Callable[..., Any], key: str, value: object
) -> None:
    from flask_jwtgate import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        jwtgate_app_factory(**{key: value})
    assert raised.value.key == key
