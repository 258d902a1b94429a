"""Reading the audit log: GET /admin/audit (admin only, failing closed; filters; cursor pages; streamed CSV and JSON),
GET /admin/audit/status, and `flask jwtgate audit export|status`. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from audit_helpers import ADMIN_GROUP, audit_of, audit_rows, bearer
from conftest import FIXED_START, SQLITE_ONLY, Clock
from flask import Flask
from flask.testing import FlaskClient

from flask_jwtgate import JWTGate
from flask_jwtgate.audit.model import AuditRow, public_columns
from flask_jwtgate.audit.query import AuditFilter, export, page_query
from flask_jwtgate.testing import make_app, make_token

AppFactory = Callable[..., tuple[Flask, JWTGate]]
TokenFactory = Callable[..., str]
AUDIT = "/jwtgate/admin/audit"
DAY = 86400.0


@pytest.fixture
def admin(jwtgate_token_factory: TokenFactory, clock: Any) -> dict[str, str]:
    return bearer(jwtgate_token_factory("alice", groups=[ADMIN_GROUP], now=clock()))


@dataclass(frozen=True)
class Traffic:
    """An app with a known history, shared by the tests of this module that only read it (one per database)."""

    app: Flask
    client: FlaskClient
    clock: Clock
    admin: dict[str, str]


@pytest.fixture(scope="module")
def traffic(
    module_audit_database_uri: str, jwtgate_keys: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traffic]:
    """Day 1 bob reads twice, carol is refused a write; day 2 anonymous 401s. Then recording stops, so that the
    tests' own reads of the log (and their refusals) never add to the history the next test reads."""
    clock = Clock(FIXED_START)
    app, _ = make_app(
        jwtgate_keys,
        clock=clock,
        JWTGATE_DATABASE_URI=module_audit_database_uri,
        JWTGATE_AUDIT_SPOOL_DIR=str(tmp_path_factory.mktemp("spool")),
        JWTGATE_READ_ONLY_GROUPS=["viewers"],
        JWTGATE_AUDIT_PRUNE_INTERVAL=0,
    )
    client = app.test_client()
    bob = bearer(make_token(jwtgate_keys, "bob", now=clock()))
    carol = bearer(make_token(jwtgate_keys, "carol", groups=["viewers"], now=clock()))
    assert client.get("/api/items", headers=bob).status_code == 200
    assert client.get("/api/status", headers=bob).status_code == 200
    assert client.post("/api/items", headers=carol).status_code == 403
    clock.advance(DAY)
    for _ in range(2):
        assert client.get("/api/items").status_code == 401
    state = app.extensions["jwtgate"]
    state.apply(state.settings.replace(audit_enabled=False))
    admin = bearer(make_token(jwtgate_keys, "alice", groups=[ADMIN_GROUP], now=clock()))
    yield Traffic(app, client, clock, admin)
    state.audit.close(timeout=5)
    state.database.engine.dispose()


def entries(client: FlaskClient, headers: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    response = client.get(f"{AUDIT}?{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    result: list[dict[str, Any]] = response.get_json()["entries"]
    return result


def test_an_admin_reads_the_log_newest_first(traffic: Traffic) -> None:
    rows = entries(traffic.client, traffic.admin)

    assert [(r["username"], r["path"], r["status"], r["decision"], r["reason"]) for r in rows] == [
        (None, "/api/items", 401, "deny", "missing_credentials"),
        (None, "/api/items", 401, "deny", "missing_credentials"),
        ("carol", "/api/items", 403, "deny", "read_only"),
        ("bob", "/api/status", 200, "allow", "authenticated"),
        ("bob", "/api/items", 200, "allow", "authenticated"),
    ]
    assert rows[0]["time"].endswith("Z") and rows[-1]["time"] < rows[0]["time"]


def test_the_admin_api_refuses_everyone_else_with_the_contract_errors(
    traffic: Traffic, jwtgate_token_factory: TokenFactory
) -> None:
    client, clock = traffic.client, traffic.clock

    anonymous = client.get(AUDIT)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert anonymous.get_json()["error"] == "invalid_request"
    user = client.get(AUDIT, headers=bearer(jwtgate_token_factory("bob", now=clock())))
    assert user.status_code == 403
    assert user.get_json() == {
        "error": "access_denied",
        "error_description": "user 'bob' is not in an admin group of the gate",
        "status": 403,
        "reason": "not_admin",
    }
    assert client.post("/jwtgate/admin/audit/prune", headers=bearer(jwtgate_token_factory("bob", now=clock()))
                       ).status_code == 403
    assert client.get("/jwtgate/admin/audit/status").status_code == 401


@SQLITE_ONLY  # access rules, not the database
@pytest.mark.parametrize(
    "config",
    [
        {"JWTGATE_PROTECTED_PATHS": ["/api/**"]},
        {"JWTGATE_BYPASS_PATHS": ["/jwtgate/**"]},
        {"JWTGATE_PUBLIC_PATHS": ["/jwtgate/**"]},
        {"JWTGATE_ENABLED": False},
    ],
    ids=["prefix not protected", "prefix bypassed", "prefix public", "gate off"],
)
def test_the_admin_api_fails_closed_whatever_the_path_settings(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory, config: dict[str, Any]
) -> None:
    app, _ = audit_app_factory(**config)
    client = app.test_client()

    assert client.get(AUDIT).status_code == 401
    assert client.get(AUDIT, headers={"Authorization": "Bearer not.a.token"}).status_code == 401
    assert client.get(AUDIT, headers=bearer(jwtgate_token_factory("bob"))).status_code == 403
    response = client.get(AUDIT, headers=bearer(jwtgate_token_factory("alice", groups=[ADMIN_GROUP])))
    assert response.status_code == 200
    assert [(r["username"], r["status"]) for r in response.get_json()["entries"]][:2] == [("bob", 403), (None, 401)]


@SQLITE_ONLY  # access rules, not the database
def test_the_admin_api_applies_the_ip_allowlist_even_off_the_protected_paths(
    audit_app_factory: AppFactory, jwtgate_token_factory: TokenFactory
) -> None:
    app, _ = audit_app_factory(JWTGATE_PROTECTED_PATHS=["/api/**"], JWTGATE_IP_ALLOWLIST=["10.0.0.0/8"])
    admin = bearer(jwtgate_token_factory("alice", groups=[ADMIN_GROUP]))

    response = app.test_client().get(AUDIT, headers=admin, environ_base={"REMOTE_ADDR": "192.0.2.1"})

    assert response.status_code == 403
    assert response.get_json()["reason"] == "ip_not_allowed"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("user=bob", [("bob", 200), ("bob", 200)]),
        ("status=403", [("carol", 403)]),
        ("status=4xx", [(None, 401), (None, 401), ("carol", 403)]),
        ("status=200", [("bob", 200), ("bob", 200)]),
        ("status=5xx", []),
        ("reason=authenticated", [("bob", 200), ("bob", 200)]),
        ("reason=missing_credentials", [(None, 401), (None, 401)]),
        ("decision=allow", [("bob", 200), ("bob", 200)]),
        ("reason=read_only", [("carol", 403)]),
        ("path=/api/status", [("bob", 200)]),
        ("path=/api/it*", [(None, 401), (None, 401), ("carol", 403), ("bob", 200)]),
        ("user=bob&path=/api/items", [("bob", 200)]),
        ("user=nobody", []),
    ],
)
def test_filters(traffic: Traffic, query: str, expected: list[tuple[Any, int]]) -> None:
    assert [(r["username"], r["status"]) for r in entries(traffic.client, traffic.admin, query)] == expected


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("status=403", "ix_jwtgate_audit_error_status"),
        ("reason=expired", "ix_jwtgate_audit_denied_reason"),
        ("user=bob", "ix_jwtgate_audit_username"),
    ],
)
def test_a_filter_on_denials_or_a_user_is_answered_from_an_index(
    audit_app_factory: AppFactory, query: str, index: str
) -> None:
    app, _ = audit_app_factory()
    database = audit_of(app).database
    statement = page_query(AuditFilter.from_args(dict([query.split("=")])), limit=101, cursor=None)
    sql = str(statement.compile(database.engine, compile_kwargs={"literal_binds": True}))

    with database.engine.begin() as connection:
        if database.dialect == "sqlite":
            plan = " ".join(row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        else:  # an empty table is cheapest read whole: ask the planner for its plan as if it were large
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " ".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {sql}"))

    assert index in plan, plan


def test_status_and_reason_are_indexed_for_errors_and_denials_only(audit_app_factory: AppFactory) -> None:
    app, _ = audit_app_factory()
    database = audit_of(app).database

    indexes = {index["name"]: index for index in sa.inspect(database.engine).get_indexes("jwtgate_audit_log")}

    assert indexes["ix_jwtgate_audit_error_status"]["column_names"] == ["status", "id"]
    assert indexes["ix_jwtgate_audit_denied_reason"]["column_names"] == ["reason", "id"]
    predicates = {name: str(indexes[name]["dialect_options"].get(f"{database.dialect}_where")) for name in indexes}
    assert "400" in predicates["ix_jwtgate_audit_error_status"]
    assert "allow" in predicates["ix_jwtgate_audit_denied_reason"]


def test_time_filters(traffic: Traffic) -> None:
    client, admin = traffic.client, traffic.admin
    day_two = traffic.clock() - 1  # just before the 401s; the first day's records are a day older

    since = entries(client, admin, f"since={day_two}&path=/api/*")  # not the admin's own reads of the log
    until = entries(client, admin, f"until={day_two}")
    iso = entries(
        client, admin, "path=/api/*&since=" + audit_rows(traffic.app)[3]["time"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )

    assert [r["status"] for r in since] == [401, 401]
    assert [r["status"] for r in until] == [403, 200, 200]
    assert [r["status"] for r in iso] == [401, 401]


def test_cursor_pages_cover_every_record_once(
    audit_app_factory: AppFactory, admin: dict[str, str], clock: Any
) -> None:
    app, _ = audit_app_factory(clock=clock)
    client = app.test_client()
    for _ in range(25):
        client.get("/api/items")

    seen: list[int] = []
    cursor = ""
    pages = 0
    while True:
        response = client.get(f"{AUDIT}?limit=10&status=401&cursor={cursor}", headers=admin)
        body = response.get_json()
        seen += [row["id"] for row in body["entries"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]

    assert pages == 3
    assert seen == sorted({row["id"] for row in audit_rows(app, status=401)}, reverse=True)


def test_csv_export_streams_every_record_with_formulas_defused(
    audit_app_factory: AppFactory, admin: dict[str, str], clock: Any
) -> None:
    app, _ = audit_app_factory(clock=clock)
    client = app.test_client()
    client.get("/api/items", environ_overrides={"HTTP_USER_AGENT": "=HYPERLINK(\"x\")\n0"})
    [recorded] = audit_rows(app)
    del recorded["id"]
    template = AuditRow(**recorded)
    more = [template._replace(request_id=f"bulk-{n}", user_agent=f"=HYPERLINK(\"x\")\n{n}") for n in range(1, 1500)]
    audit_of(app).store.insert(more)  # more than one chunk of the keyset reader, without 1,500 requests

    response = client.get(f"{AUDIT}?format=csv&status=401", headers=admin)

    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="jwtgate-audit.csv"'
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 1500
    assert [int(row["id"]) for row in rows] == sorted(int(row["id"]) for row in rows)  # oldest first
    assert rows[7]["user_agent"] == "'=HYPERLINK(\"x\")\n7"
    assert rows[0]["time"].endswith("Z") and rows[0]["status"] == "401" and rows[0]["username"] == ""


@pytest.mark.parametrize(
    ("cell", "exported"),
    [
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1+1", "'\t=1+1"),
        ("\tplain", "'\tplain"),  # a leading tab or CR is defused whatever follows (OWASP)
        ("\r=1+1", "'\r=1+1"),
        ("\rplain", "'\rplain"),
        # Whitespace, then a formula: a spreadsheet that trims spaces on import would run it.
        (" =1+1", "' =1+1"),
        ("   +cmd", "'   +cmd"),
        ("\n-1", "'\n-1"),
        (" \u00a0@x", "' \u00a0@x"),
        # Plain values are left alone, leading spaces included.
        (" plain", " plain"),
        ("a=b", "a=b"),
        ("curl/8.5 (+https://curl.se)", "curl/8.5 (+https://curl.se)"),
        ("", ""),
    ],
    ids=repr,
)
def test_csv_cells_a_spreadsheet_would_run_are_defused(cell: str, exported: str) -> None:
    """Every column the CSV export writes passes through the same cell rule (the endpoint and the CLI use export)."""
    row = {name: cell for name in public_columns()}

    lines = "".join(export(iter([row]), "csv"))
    header, values = list(csv.reader(io.StringIO(lines, newline="")))

    assert header == list(public_columns())
    assert values == [exported] * len(header)


def test_ndjson_export_streams_one_record_per_line(traffic: Traffic) -> None:
    response = traffic.client.get(f"{AUDIT}?format=ndjson&decision=deny", headers=traffic.admin)

    assert response.status_code == 200 and response.is_streamed
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert [(r["username"], r["reason"]) for r in lines] == [
        ("carol", "read_only"), (None, "missing_credentials"), (None, "missing_credentials")
    ]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("status=abc", "status"),
        ("status=4xxx", "status"),
        ("decision=maybe", "decision"),
        ("since=yesterday", "since"),
        ("until=2025-13-45", "until"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("cursor=-5", "cursor"),
        ("cursor=99999999999999999999999", "cursor"),
        ("format=xml", "format"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(traffic: Traffic, query: str, parameter: str) -> None:
    response = traffic.client.get(f"{AUDIT}?{query}", headers=traffic.admin)

    assert response.status_code == 400
    body = response.get_json()
    assert (body["error"], body["status"], body["reason"]) == ("invalid_request", 400, "invalid_parameter")
    assert body["error_description"].startswith(parameter)


def test_odd_parameters_never_cause_a_500(traffic: Traffic) -> None:
    client, admin = traffic.client, traffic.admin
    for query in ("user=%00", "path=%00*", "path=%25_*", "since=%00", "until=1e400", "since=99999999999999",
                  "reason=" + "x" * 5000, "user=\u2603", "status=", "cursor="):
        response = client.get(f"{AUDIT}?{query}", headers=admin)
        assert response.status_code in (200, 400), query


def test_an_unreachable_database_is_a_503(
    jwtgate_app_factory: Callable[..., tuple[Flask, JWTGate]], jwtgate_token_factory: TokenFactory, tmp_path: Path
) -> None:
    app, _ = jwtgate_app_factory(
        JWTGATE_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1",
        JWTGATE_AUDIT_SPOOL_DIR=str(tmp_path / "spool"),
        # Without run-time settings the gate does not need the database to decide (tests/test_runtime_settings.py
        # shows what it does with them: it refuses until it has read them).
        JWTGATE_RUNTIME_SETTINGS=False,
    )
    admin = bearer(jwtgate_token_factory("alice", groups=[ADMIN_GROUP]))
    client = app.test_client()

    for query in ("", "?format=csv"):
        response = client.get(AUDIT + query, headers=admin)
        assert response.status_code == 503
        assert response.get_json()["reason"] == "database_unavailable"
    assert client.post("/jwtgate/admin/audit/prune", headers=admin).status_code == 503
    status = client.get("/jwtgate/admin/audit/status", headers=admin)
    assert status.status_code == 200 and status.get_json()["records"] is None
    assert audit_of(app).status()["spooled"] == 4  # the requests themselves were all recorded, in the spool


def test_the_status_endpoint_reports_the_writer_and_the_records(traffic: Traffic) -> None:
    app = traffic.app

    body = traffic.client.get("/jwtgate/admin/audit/status", headers=traffic.admin).get_json()

    assert body["records"] == 5
    assert body["database"] == audit_of(app).database.dialect
    assert {key: body["process"][key] for key in ("mode", "dropped", "queued", "spool_bytes")} == {
        "mode": "sync", "dropped": 0, "queued": 0, "spool_bytes": 0
    }
    assert body["retention"] == {"retention_days": 90, "max_entries": 1_000_000, "prune_interval": 0}


def test_cli_export_writes_csv_and_json_with_filters(traffic: Traffic, tmp_path: Path) -> None:
    app = traffic.app
    runner = app.test_cli_runner()

    as_csv = runner.invoke(args=["jwtgate", "audit", "export", "--format", "csv", "--decision", "deny"])
    out = tmp_path / "audit.json"
    as_json = runner.invoke(args=["jwtgate", "audit", "export", "--format", "json", "--user", "bob", "-o", str(out)])
    bad = runner.invoke(args=["jwtgate", "audit", "export", "--since", "someday"])

    assert as_csv.exit_code == 0, as_csv.output
    assert [row["reason"] for row in csv.DictReader(io.StringIO(as_csv.output))] == [
        "read_only", "missing_credentials", "missing_credentials"
    ]
    assert as_json.exit_code == 0, as_json.output
    assert [(r["username"], r["path"]) for r in json.loads(out.read_text())] == [
        ("bob", "/api/items"), ("bob", "/api/status")
    ]
    assert bad.exit_code == 2 and "--since" in bad.output


def test_cli_status(traffic: Traffic) -> None:
    app = traffic.app

    result = app.test_cli_runner().invoke(args=["jwtgate", "audit", "status"])

    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["records"] == 5 and status["process"]["dropped"] == 0
