"""The audit writer: batches in the background, never blocks or fails a request, spools while the database is down
and replays afterwards, counts and reports anything it could not keep, and flushes at exit. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from audit_helpers import audit_of, audit_rows, bearer, row_count, wait_for
from flask import Flask

from flask_jwtgate import JWTGate
from flask_jwtgate.api_tokens import api_tokens
from flask_jwtgate.audit import writer as writer_module
from flask_jwtgate.audit.model import AuditRow, Pending, row_to_json, to_row
from flask_jwtgate.audit.spool import Spool
from flask_jwtgate.audit.writer import AuditWriter

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]
BACKGROUND = {"TESTING": False}  # not test mode: the writer thread, no flush on teardown


class Outage:
    """Stands between the writer and the database's INSERT: ``down`` makes it fail like an unreachable server."""

    def __init__(self, writer: AuditWriter, error: type[sa.exc.DBAPIError] = sa.exc.OperationalError) -> None:
        self.real = writer.insert
        self.down = False
        self.error = error
        self.refuse: Callable[[Sequence[AuditRow]], bool] | None = None
        writer.insert = self

    def __call__(self, rows: Sequence[AuditRow]) -> None:
        if self.down:
            raise sa.exc.OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))
        if self.refuse is not None and self.refuse(rows):
            raise self.error("INSERT", {}, ValueError("value too long"))
        self.real(rows)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*")) if directory.exists() else []


def test_records_wait_in_memory_until_a_batch_is_full(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory(**BACKGROUND, JWTGATE_AUDIT_BATCH_SIZE=10, JWTGATE_AUDIT_FLUSH_INTERVAL=3600)
    client = app.test_client()
    writer = audit_of(app).writer

    for _ in range(9):
        assert client.get("/api/items").status_code == 401
    assert writer.status()["queued"] == 9
    assert writer.status()["writer_running"] is True
    assert audit_rows(app) == []

    client.get("/api/items")  # the tenth fills the batch and wakes the writer
    wait_for(lambda: len(audit_rows(app)) == 10, what="a full batch to be written")


def test_a_partial_batch_is_written_once_it_is_old_enough(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory(**BACKGROUND, JWTGATE_AUDIT_BATCH_SIZE=1000, JWTGATE_AUDIT_FLUSH_INTERVAL=0.05)
    client = app.test_client()

    for _ in range(3):
        client.get("/api/items")

    wait_for(lambda: len(audit_rows(app)) == 3, what="the flush interval to pass")


def test_in_tests_the_app_context_teardown_flushes_the_background_writer(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory(JWTGATE_AUDIT_SYNC=False, JWTGATE_AUDIT_FLUSH_INTERVAL=3600)
    client = app.test_client()

    for expected in (1, 2, 3):
        client.get("/api/items")
        assert len(audit_rows(app)) == expected
    assert audit_of(app).status()["mode"] == "background"


def test_a_full_queue_spills_to_the_spool_and_nothing_is_lost(audit_app_factory: AppFactory, spool_dir: Path) -> None:
    app, _ = audit_app_factory(
        **BACKGROUND, JWTGATE_AUDIT_QUEUE_SIZE=2, JWTGATE_AUDIT_BATCH_SIZE=1000, JWTGATE_AUDIT_FLUSH_INTERVAL=3600
    )
    client = app.test_client()
    audit = audit_of(app)

    for _ in range(5):
        assert client.get("/api/items").status_code == 401
    status = audit.status()
    assert (status["queued"], status["spooled"], status["dropped"]) == (2, 3, 0)
    assert status["spool_bytes"] > 0

    assert audit.flush()
    rows = audit_rows(app)
    assert len(rows) == 5 and len({row["request_id"] for row in rows}) == 5
    assert spool_files(spool_dir) == []


def test_a_database_outage_never_fails_a_request_and_loses_nothing(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = audit_app_factory()
    client = app.test_client()
    audit = audit_of(app)
    outage = Outage(audit.writer)
    token = bearer(jwtgate_token_factory("bob"))

    assert client.get("/api/items", headers=token).status_code == 200
    outage.down = True
    for _ in range(3):
        assert client.get("/api/items", headers=token).status_code == 200
        assert client.get("/api/items").status_code == 401
    assert audit.status()["database_available"] is False
    assert audit.status()["spooled"] == 6
    assert len(spool_files(spool_dir)) == 1
    assert len(audit_rows(app)) == 1
    assert "audit database is unavailable (OperationalError)" in caplog.text

    outage.down = False
    wait_for(lambda: audit.flush() and len(audit_rows(app)) == 7, what="the spool to be replayed")
    rows = audit_rows(app)
    assert [row["status"] for row in rows] == [200] + [200, 401] * 3
    assert len({row["request_id"] for row in rows}) == 7
    assert audit.status()["database_available"] is True and audit.status()["replayed"] == 6
    assert spool_files(spool_dir) == []


def test_what_cannot_be_kept_is_counted_logged_and_marked_in_the_log_itself(
    audit_app_factory: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = audit_app_factory(JWTGATE_AUDIT_SPOOL_MAX_BYTES=0)  # no spool: an outage must drop
    client = app.test_client()
    audit = audit_of(app)
    outage = Outage(audit.writer)

    outage.down = True
    for _ in range(3):
        assert client.get("/api/items").status_code == 401
    assert audit.status()["dropped"] == 3
    assert "1 audit record(s) dropped: the database is unavailable and the spool could not take them" in caplog.text

    outage.down = False
    wait_for(lambda: audit.flush() and audit_rows(app, reason="audit_records_dropped"), what="the gap to be recorded")
    [gap] = audit_rows(app, reason="audit_records_dropped")
    assert gap["decision"] == "system"
    assert gap["detail"].startswith("3 audit record(s) could not be kept")


def test_while_the_database_is_down_retries_pause_longer_each_time_but_never_more_than_10_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records keep coming every quarter second of the writer's (controlled) monotonic clock; the database is only
    tried again once the pause after the last failure has passed, and that pause grows up to 10 s, never beyond."""
    now = [1000.0]
    monkeypatch.setattr(writer_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    tried: list[float] = []

    def insert(rows: Sequence[AuditRow]) -> None:
        tried.append(now[0])
        raise sa.exc.OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))

    writer = AuditWriter(insert, Spool(str(tmp_path / "spool"), 1 << 24), sync=True)
    for _ in range(4 * 120):  # two minutes of records
        writer.submit(_pending())
        now[0] += 0.25

    pauses = [later - earlier for earlier, later in itertools.pairwise(tried)]
    assert len(pauses) > 10
    assert pauses == sorted(pauses) and pauses[0] < pauses[-1]  # growing
    assert max(pauses) <= 10.0
    assert writer.status()["spooled"] == 4 * 120  # nothing lost meanwhile


def test_a_row_the_database_refuses_does_not_hold_up_its_batch(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory(**BACKGROUND, JWTGATE_AUDIT_BATCH_SIZE=3, JWTGATE_AUDIT_FLUSH_INTERVAL=3600)
    client = app.test_client()
    audit = audit_of(app)
    outage = Outage(audit.writer, error=sa.exc.DataError)
    outage.refuse = lambda rows: any(row.path == "/api/poison" for row in rows)

    for path in ("/api/items", "/api/poison", "/api/items"):
        client.get(path)

    wait_for(lambda: audit.status()["dropped"] == 1, what="the refused row to be counted")
    wait_for(lambda: audit_rows(app, reason="audit_records_dropped"), what="the gap to be recorded")
    assert [row["path"] for row in audit_rows(app)] == ["/api/items", "/api/items", "-"]
    assert audit.status()["last_error"] == "DataError"


def _pending() -> Pending:
    return (
        1_800_000_000.0, None, "anonymous", None, None, "127.0.0.1", "127.0.0.1", None, "GET", "/api/items", "items",
        401, "deny", "missing_credentials", "no credentials", 1.0, "t",
    )


def _rows(count: int) -> list[AuditRow]:
    return [to_row(_pending(), f"replay-test-{n}") for n in range(count)]


def test_replaying_a_batch_twice_stores_each_record_once(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory()
    audit = audit_of(app)
    spool = audit.writer.spool
    rows = _rows(4)

    assert spool.append(rows) and spool.append(rows[:2])  # e.g. a COMMIT whose answer was lost, spooled again
    audit.store.insert(rows[:1])  # ... and one that did reach the database
    replayed, unreadable = spool.replay(audit.store.insert, chunk=3)

    assert (replayed, unreadable) == (6, 0)
    assert sorted(row["request_id"] for row in audit_rows(app)) == [f"replay-test-{n}" for n in range(4)]


def test_a_row_postgresql_refuses_is_told_from_an_outage(jwtgate_keys: Any, postgres_schema_url: str) -> None:
    """PostgreSQL takes a batch by COPY: a value it refuses is the INSERT's error (sa.exc.DataError, a bad row, written
    one by one), never a bare driver error (which the writer would take for an outage and spool for ever)."""
    from flask_jwtgate.testing import make_app

    app, _ = make_app(jwtgate_keys, JWTGATE_DATABASE_URI=postgres_schema_url, JWTGATE_AUDIT_ENABLED=True)
    audit = audit_of(app)
    good = _rows(2)
    bad = to_row(_pending()[:11] + (2**40,) + _pending()[12:], "replay-test-out-of-range")  # status is an integer

    try:
        with pytest.raises(sa.exc.DataError):
            audit.store.insert([*good, bad])
        audit.store.insert(good)
        assert sorted(row["request_id"] for row in audit_rows(app)) == ["replay-test-0", "replay-test-1"]
    finally:
        audit.close(timeout=5)
        audit.database.engine.dispose()


def test_a_torn_spool_line_is_skipped_and_counted(audit_app_factory: AppFactory, spool_dir: Path) -> None:
    app, _ = audit_app_factory()
    audit = audit_of(app)
    spool_dir.mkdir()
    good = json.dumps(row_to_json(_rows(1)[0]))
    (spool_dir / "4242-deadbeef.jsonl").write_text(good + "\n" + good[:40] + "\n")  # a crash mid-write

    assert audit.flush()

    assert audit.status()["dropped"] == 1
    [row] = audit_rows(app, request_id="replay-test-0")
    [gap] = audit_rows(app, reason="audit_records_dropped")
    assert gap["detail"].startswith("1 audit record(s) could not be kept")
    assert spool_files(spool_dir) == []


def test_a_replay_left_unfinished_by_a_dead_process_is_taken_over(
    audit_app_factory: AppFactory, spool_dir: Path
) -> None:
    app, _ = audit_app_factory()
    audit = audit_of(app)
    spool_dir.mkdir()
    lines = "".join(json.dumps(row_to_json(row)) + "\n" for row in _rows(3))
    (spool_dir / "4242-deadbeef.jsonl.4243-cafe.replay").write_text(lines)

    assert audit.flush()

    assert len(audit_rows(app)) == 3
    assert spool_files(spool_dir) == []


def test_after_a_fork_the_child_forgets_the_parents_queue_and_draws_new_ids(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory(**BACKGROUND, JWTGATE_AUDIT_FLUSH_INTERVAL=3600)
    client = app.test_client()
    writer = audit_of(app).writer
    client.get("/api/items")
    before = writer_module.request_ids.next()

    writer_module._after_fork_in_child()  # what os.register_at_fork runs in a child

    status = writer.status()
    assert (status["queued"], status["writer_running"]) == (0, False)  # the parent writes its own records
    assert writer_module.request_ids.next().split("-")[0] != before.split("-")[0]
    client.get("/api/items")  # the child starts its own writer on its first record
    assert writer.status()["writer_running"] is True
    assert audit_of(app).flush()
    assert len(audit_rows(app)) == 1


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from flask import Flask
    from flask_jwtgate import JWTGate

    app = Flask("exit_test")
    app.config.update(
        JWTGATE_DATABASE_URI=os.environ["AUDIT_URI"], JWTGATE_AUDIT_SPOOL_DIR=os.environ["SPOOL"],
        JWTGATE_AUDIT_FLUSH_INTERVAL=3600, JWTGATE_AUDIT_BATCH_SIZE=1000,
    )
    JWTGate(app)
    app.add_url_rule("/api/items", "items", lambda: "ok")
    client = app.test_client()
    for _ in range(4):
        assert client.get("/api/items").status_code == 401
    # An API token's last use is kept in memory too (written once a minute, and at exit).
    token, secret = app.extensions["jwtgate"].api_tokens.create("hank", name="cron", expires_in_days=1)
    assert client.get("/api/items", headers={"Authorization": "Bearer " + secret}).status_code == 200
    assert app.extensions["jwtgate"].audit.status()["queued"] == 5
    print("ready", token.id, flush=True)
    if sys.argv[1] == "wait":
        signal.pause()
    """
)


@pytest.fixture
def run_child(audit_database_uri: str, spool_dir: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    children: list[subprocess.Popen[str]] = []

    def run(mode: str) -> subprocess.Popen[str]:
        env = {**os.environ, "AUDIT_URI": audit_database_uri, "SPOOL": str(spool_dir)}
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        children.append(child)
        return child

    yield run
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)  # reaps it and closes its pipes


def _count(uri: str) -> int:
    engine = sa.create_engine(uri)
    try:
        return row_count(engine)
    finally:
        engine.dispose()


def _last_used(uri: str, token_id: str) -> object:
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.select(api_tokens.c.last_used_at).where(api_tokens.c.id == token_id)
            ).scalar_one()
    finally:
        engine.dispose()


def test_the_queue_and_api_tokens_last_use_are_written_when_the_process_exits(
    run_child: Callable[[str], subprocess.Popen[str]], audit_database_uri: str
) -> None:
    child = run_child("exit")
    out, err = child.communicate(timeout=60)

    assert child.returncode == 0, err
    ready, token_id = out.split()
    assert ready == "ready"
    assert _count(audit_database_uri) == 5
    assert _last_used(audit_database_uri, token_id) is not None


def test_sigterm_writes_the_queue_where_sigterm_was_left_at_its_default(
    run_child: Callable[[str], subprocess.Popen[str]], audit_database_uri: str
) -> None:
    child = run_child("wait")
    assert child.stdout is not None
    ready, token_id = child.stdout.readline().split()
    assert ready == "ready"

    child.send_signal(signal.SIGTERM)
    child.wait(30)

    assert child.returncode == 128 + signal.SIGTERM
    assert _count(audit_database_uri) == 5
    assert _last_used(audit_database_uri, token_id) is not None


def test_the_writer_logs_no_caller_text(
    audit_app_factory: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_jwtgate")
    app, _ = audit_app_factory()
    audit = audit_of(app)
    outage = Outage(audit.writer, error=sa.exc.DataError)
    outage.refuse = lambda rows: True

    app.test_client().get("/api/secret-path-SENTINEL", environ_overrides={"HTTP_USER_AGENT": "ua-SENTINEL"})

    assert audit.status()["dropped"] == 1
    assert "SENTINEL" not in caplog.text


def test_a_database_that_hangs_never_holds_up_a_request(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory(**BACKGROUND, JWTGATE_AUDIT_BATCH_SIZE=5, JWTGATE_AUDIT_FLUSH_INTERVAL=3600)
    client = app.test_client()
    audit = audit_of(app)
    real, entered, release = audit.writer.insert, threading.Event(), threading.Event()

    def hanging(rows: Sequence[AuditRow]) -> None:
        entered.set()
        release.wait(30)
        real(rows)

    audit.writer.insert = hanging
    try:
        for _ in range(5):
            client.get("/api/items")
        wait_for(entered.is_set, what="the writer to be stuck in the database")
        for _ in range(20):  # the writer is stuck: requests go on regardless
            assert client.get("/api/items").status_code == 401
        assert audit.status()["queued"] == 20
    finally:
        release.set()
    assert audit.flush()
    assert len(audit_rows(app)) == 25


def test_cli_replay_writes_the_spool_now(audit_app_factory: AppFactory, spool_dir: Path) -> None:
    app, _ = audit_app_factory()
    spool_dir.mkdir()
    (spool_dir / "4242-deadbeef.jsonl").write_text("".join(json.dumps(row_to_json(r)) + "\n" for r in _rows(3)))

    result = app.test_cli_runner().invoke(args=["jwtgate", "audit", "replay"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "replayed 3 spooled audit records"
    assert len(audit_rows(app)) == 3 and spool_files(spool_dir) == []


def test_batches_are_stored_value_for_value_whatever_is_null_in_them(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory()
    store = audit_of(app).store

    def batch(count: int, offset: int, **values: object) -> list[AuditRow]:
        pending: Pending = (
            1_800_000_000.0, "bob", "jwt", "jti:1", "test", "10.0.0.1", "10.0.0.1", None, "GET", "/api/items",
            "items", 200, "allow", "authenticated", None, 0.5, "curl/8.5",
        )
        made = [to_row(pending, f"null-test-{offset + n}") for n in range(count)]
        return [row._replace(**values) if n % 3 == 0 else row for n, row in enumerate(made)]

    store.insert(batch(120, 0))  # forwarded_for and detail NULL in every row: written as NULL, not bound
    store.insert(batch(70, 1000, forwarded_for="203.0.113.9", detail="why", user_agent=None))  # mixed

    rows = audit_rows(app)
    assert len(rows) == 190
    first, mixed = rows[:120], rows[120:]
    assert all((r["forwarded_for"], r["detail"], r["user_agent"]) == (None, None, "curl/8.5") for r in first)
    assert [(r["forwarded_for"], r["detail"], r["user_agent"]) for r in mixed[:4]] == [
        ("203.0.113.9", "why", None), (None, None, "curl/8.5"), (None, None, "curl/8.5"), ("203.0.113.9", "why", None)
    ]
    assert all((r["username"], r["status"], r["latency_ms"]) == ("bob", 200, 0.5) for r in rows)
    assert [r["request_id"] for r in mixed] == [f"null-test-{1000 + n}" for n in range(70)]
