"""Helpers shared by the audit tests (plain functions; the fixtures are in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask

from flask_jwtgate.audit import AuditLog
from flask_jwtgate.audit.model import audit_log

ADMIN_GROUP = "jwtgate-admins"


def audit_of(app: Flask) -> AuditLog:
    audit = app.extensions["jwtgate"].audit
    assert audit is not None
    return audit


def audit_rows(app: Flask, **where: Any) -> list[dict[str, Any]]:
    """Every audit row of ``app``'s database (oldest first), optionally only those whose columns equal ``where``."""
    query = sa.select(audit_log).order_by(audit_log.c.id)
    for name, value in where.items():
        query = query.where(audit_log.c[name] == value)
    with audit_of(app).database.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def row_count(engine: sa.engine.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy (bounded: for threads and subprocesses only)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
