"""A database that hangs does not hang requests: the revision counters are read on a thread of their own, and a request
waits for that read at most ``READ_WAIT`` seconds (and not at all while a read is under way).

The database here takes the connection and answers only when the test lets it, as a hung server or a network that
drops everything would (the end-to-end version, through nginx and gunicorn, is in tests/e2e).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from audit_helpers import wait_for
from conftest import Clock

from flask_jwtgate import revisions as revisions_module
from flask_jwtgate.database import metadata
from flask_jwtgate.revisions import DEADLINE, INTERVAL, Revisions, bump


class HangingDatabase:
    """A SQLite database whose connections wait for ``answer`` to be set, like a server that has stopped answering."""

    def __init__(self) -> None:
        self.real = sa.create_engine(
            "sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
        )
        metadata.create_all(self.real)
        self.answer = threading.Event()
        self.answer.set()
        self.connects = 0

    def create_tables(self) -> None:
        pass

    @property
    def engine(self) -> HangingDatabase:
        return self

    def connect(self) -> Any:
        self.connects += 1
        self.answer.wait()
        return self.real.connect()


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingDatabase]:
    # The bound under test, made small: this test waits it out.
    monkeypatch.setattr(revisions_module, "READ_WAIT", 0.05)
    database = HangingDatabase()
    yield database
    database.answer.set()  # let a read still under way finish
    database.real.dispose()


def test_a_check_does_not_wait_for_a_database_that_hangs_and_the_read_finishes_later(
    database: HangingDatabase, clock: Clock
) -> None:
    seen: list[int] = []
    revisions = Revisions(database, clock=clock)  # type: ignore[arg-type]
    revisions.subscribe("api_tokens", seen.append)
    revisions.check()
    assert seen == [0] and revisions.fresh()

    with database.real.begin() as connection:
        bump(connection, "api_tokens")  # a revocation elsewhere...
    database.answer.clear()  # ...and then the database stops answering
    clock.advance(INTERVAL)
    revisions.check()  # returns after READ_WAIT, its read still waiting for the database
    assert seen == [0] and database.connects == 2

    clock.advance(INTERVAL)
    revisions.check()  # a read is under way: no second one, and no waiting for the first
    assert database.connects == 2
    clock.advance(DEADLINE)
    assert not revisions.fresh()  # so API tokens are refused rather than possibly honouring a revoked one

    database.answer.set()  # the database answers again: the read under way tells the listener
    wait_for(lambda: seen == [0, 1], what="the read under way to finish")
    clock.advance(INTERVAL)
    revisions.check()
    assert revisions.fresh() and database.connects == 3


def test_a_check_waits_for_a_database_that_answers(database: HangingDatabase, clock: Clock) -> None:
    seen: list[int] = []
    revisions = Revisions(database, clock=clock)  # type: ignore[arg-type]
    revisions.subscribe("settings", seen.append)
    revisions.check()
    with database.real.begin() as connection:
        bump(connection, "settings")
    clock.advance(INTERVAL)
    revisions.check()
    assert seen == [0, 1]  # told before check() returned: the change is in force for this very request
