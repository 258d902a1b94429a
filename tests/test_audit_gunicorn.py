"""The audit log's promises end to end: the example app under a real ``gunicorn -w 2`` on the real PostgreSQL.

- 1,000 mixed requests (allowed, 401, 403, 429) from concurrent clients, then SIGTERM: exactly 1,000 records, one per
  response with its status, written by both workers, and no token anywhere in them (or in the server's logs).
- The database goes away mid-run and comes back (a TCP proxy between the app and PostgreSQL is cut and restored; the
  shared server itself is never stopped): every record is found afterwards, once. This one runs with ``--preload``,
  so the app and its engine are made before the workers fork.
"""

from __future__ import annotations

import http.client
import random
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from audit_helpers import wait_for
from flask import Flask
from servers import Gunicorn, Proxy

from example_app.idp import ensure_keys, mint_token
from flask_jwtgate.audit.model import audit_log


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    token: str | None


def start_gunicorn(tmp_path: Path, database_url: str, *, preload: bool = False, **settings: str) -> Gunicorn:
    """``gunicorn -w 2`` serving the example app on ``database_url``, once a worker answers."""
    server = Gunicorn(
        tmp_path,
        {
            "JWTGATE_EXAMPLE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FLASK_JWTGATE_DATABASE_URI": database_url,
            "FLASK_JWTGATE_AUDIT_FLUSH_INTERVAL": "0.2",
            **{f"FLASK_JWTGATE_{key}": value for key, value in settings.items()},
        },
        workers=2,
        preload=preload,
        graceful_timeout=30,
    )
    server.wait_until_serving(timeout=60)
    return server


def get_status(server: Gunicorn, method: str, path: str, token: str | None = None) -> int | None:
    if server.process.poll() is not None:
        raise AssertionError(f"gunicorn exited: {server.logs()[-3000:]}")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = b'{"fields": {"summary": "audit test"}}' if method == "POST" else None
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def send(server: Gunicorn, calls: list[Call]) -> Counter[int]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda call: get_status(server, call.method, call.path, call.token), calls))
    assert None not in statuses
    return Counter(status for status in statuses if status is not None)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    servers: list[Gunicorn] = []

    def start(database_url: str, *, preload: bool = False, **settings: str) -> Gunicorn:
        server = start_gunicorn(tmp_path, database_url, preload=preload, **settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


class Tokens:
    """Demo-IdP tokens, minted with the keys the example app's workers will load from the instance folder."""

    def __init__(self, instance: Path) -> None:
        ensure_keys(str(instance))
        self.app = Flask("mint", instance_path=str(instance))
        self.minted: list[str] = []

    def __call__(self, username: str, expires_in: int = 3600) -> str:
        token: str = mint_token(self.app, username, expires_in=expires_in)
        self.minted.append(token)
        return token


def mixed_calls(tokens: Tokens, total: int = 1000) -> list[Call]:
    """Allowed reads, 401s (none, garbage, expired), 403 read-only writes, and one token hammered into 429s."""
    calls: list[Call] = []
    for n in range(30):  # 10 uses per token: under the limit in any worker
        calls += [Call("GET", "/rest/api/2/myself", tokens("bob" if n % 2 else "alice"))] * 10
    calls += [Call("GET", "/rest/api/2/myself", None)] * 150
    calls += [Call("GET", "/rest/api/2/search", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl")] * 100
    calls += [Call("GET", "/rest/api/2/myself", tokens("bob", expires_in=-3600))] * 50
    for _ in range(15):
        calls += [Call("POST", "/rest/api/2/issue", tokens("carol"))] * 10
    calls += [Call("GET", "/rest/api/2/project", tokens("dave"))] * (total - len(calls))
    random.Random(5).shuffle(calls)
    return calls


def stored(url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.select(audit_log).order_by(audit_log.c.id))]
    finally:
        engine.dispose()


def count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())
    except sa.exc.ProgrammingError:  # the workers have not created the table yet
        return 0
    finally:
        engine.dispose()


def test_a_thousand_mixed_requests_under_two_gunicorn_workers_give_a_thousand_records(
    gunicorn: Callable[..., Gunicorn], postgres_schema_url: str, tmp_path: Path
) -> None:
    # dave's token hammers into 429s; the failed-authentication limit is set out of the way of the 401s.
    limits = {"RATE_LIMIT": "25/hour", "AUTH_FAILURE_LIMIT": "1000000/minute"}
    tokens = Tokens(tmp_path / "instance")
    calls = mixed_calls(tokens)
    server = gunicorn(postgres_schema_url, **limits)

    responses = send(server, calls)
    assert server.stop(timeout=60) == 0

    rows = stored(postgres_schema_url)
    assert len(rows) == 1000
    assert Counter(row["status"] for row in rows) == responses
    assert set(responses) == {200, 401, 403, 429}
    assert {row["reason"] for row in rows if row["status"] == 403} == {"read_only"}
    assert len({row["request_id"] for row in rows}) == 1000
    assert len({row["request_id"].split("-")[0] for row in rows}) == 2  # both workers wrote
    everything = "\n".join(str(value) for row in rows for value in row.values()) + server.logs()
    for token in tokens.minted:
        assert token.rsplit(".", 1)[1] not in everything  # not the token, not even its signature


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    proxy = Proxy()
    yield proxy
    proxy.close()


def test_the_database_going_away_mid_run_loses_no_record(
    gunicorn: Callable[..., Gunicorn], postgres_schema_url: str, proxy: Proxy, tmp_path: Path
) -> None:
    via_proxy = sa.engine.make_url(postgres_schema_url).set(port=proxy.port).update_query_dict({"connect_timeout": "2"})
    tokens = Tokens(tmp_path / "instance")
    reads = [Call("GET", "/rest/api/2/myself", tokens("bob"))] * 50 + [Call("GET", "/rest/api/2/myself", None)] * 50
    # --preload: the app (and its engine) is made in the master and forked, so this also covers fork safety.
    server = gunicorn(via_proxy.render_as_string(hide_password=False), preload=True)
    spool = tmp_path / "instance" / "jwtgate-audit-spool"  # a folder per database within it

    def spooled() -> list[Path]:
        return [path for path in spool.rglob("*") if path.is_file()]

    before = send(server, reads)
    wait_for(lambda: count(postgres_schema_url) == 100, what="the first 100 records")

    proxy.cut()
    during = send(server, reads)
    wait_for(spooled, what="records to be spooled")
    assert count(postgres_schema_url) == 100
    proxy.restore()
    after = send(server, reads)

    wait_for(lambda: count(postgres_schema_url) == 300, timeout=60, what="the spool to be replayed")
    assert server.stop(timeout=60) == 0
    rows = stored(postgres_schema_url)
    assert len(rows) == 300 and len({row["request_id"] for row in rows}) == 300
    assert Counter(row["status"] for row in rows) == before + during + after == Counter({200: 150, 401: 150})
    assert spooled() == []
    assert "the audit database is unavailable" in server.logs()
