"""What the gate costs per request, against bare Flask and Flask-JWT-Extended, in one run.

Each column calls an app's WSGI callable directly with a prebuilt environ (no test client, no sockets), in interleaved
rounds so that machine noise hits every column alike. It prints the median microseconds per request of each column
and the ratios against bare Flask, for:

- a repeated valid token (the gate's verified-token cache at work), policy on: groups loader, read-only groups;
- a fresh token on every request (every request pays for an RS256 signature check);
- in the repeated scenario, also a repeated *opaque* token answered by an introspection provider (a real HTTP mock
  identity provider on 127.0.0.1; only the first request reaches it): column "jwtgate introspected";
- in the repeated scenario, the gate with a per-token rate limit on (issue 4: within 1.3x of bare Flask with memory
  storage): columns "rate limit on (memory)" and "rate limit on (redis)", the latter when a Redis answers at
  ``JWTGATE_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``; its keys get a prefix of their own and are
  deleted afterwards). The limit is set high enough that every request passes.
- in the repeated scenario, the gate with the audit log on (issue 5: within 1.3x of bare Flask with SQLite): column
  "audit on (sqlite)". The writer thread's work is charged to that column: what it has not written by the end of a
  round is written before the round's clock stops (``SETTLE``), so none of it runs during another column; and the
  same on PostgreSQL when one answers at ``JWTGATE_BENCH_POSTGRES_URL``: column "audit on (postgresql)" (issue 12:
  within 1.4x). The columns below excepted, every other column runs with ``JWTGATE_AUDIT_ENABLED = False``, so they
  measure the gate as before the audit log existed;
- in the repeated scenario, every feature on (:func:`all_features`: groups, read-only groups, an IP allowlist with
  ``X-Forwarded-For`` from a trusted proxy, a rate limit, the audit log in SQLite), with memory or Redis limits:
  columns "all features (memory)" (issue 12: within 1.3x) and "all features (redis)".

Flask-JWT-Extended does only RS256 verification (plus its own claim checks) on the same route: the "plain library".

Run: ``python tests/bench/bench_gate.py [--rounds 31] [--requests 500]``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_jwt_extended import JWTManager, verify_jwt_in_request

from example_app import create_app, jira
from example_app.idp import AUDIENCE, ISSUER, key_paths, mint_token
from flask_jwtgate import JWTGate
from flask_jwtgate.testing_idp import MockIdentityProvider

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


#: The client the all-features columns name in ``X-Forwarded-For``, from the trusted proxy 127.0.0.1.
CLIENT = "192.0.2.7"


def all_features(storage_uri: str, key_prefix: str = "") -> dict[str, Any]:
    """Issue 12's "all features": groups, read-only groups, an IP allowlist with ``X-Forwarded-For`` believed from a
    trusted proxy, a per-token rate limit every request passes (in ``storage_uri``), and the audit log (SQLite in the
    instance folder). ``bench_gunicorn.py`` serves the same settings."""
    return {
        "JWTGATE_ALLOWED_GROUPS": ["jira-developers", "jira-administrators", "viewers"],
        "JWTGATE_READ_ONLY_GROUPS": ["viewers"],
        "JWTGATE_IP_ALLOWLIST": ["192.0.2.0/24"],
        "JWTGATE_PROXY_HEADER": "X-Forwarded-For",
        "JWTGATE_TRUSTED_PROXIES": ["127.0.0.1/32"],
        "JWTGATE_RATE_LIMIT": "1000000000/minute",
        "JWTGATE_RATE_LIMIT_STORAGE_URI": storage_uri,
        "JWTGATE_RATE_LIMIT_STORAGE_OPTIONS": {"key_prefix": key_prefix} if storage_uri != "memory://" else {},
        "JWTGATE_AUDIT_ENABLED": True,
    }


def environ_for(path: str, token: str | None = None) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:5000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "HTTP_X_FORWARDED_FOR": CLIENT,  # read only by the all-features columns, which trust 127.0.0.1
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return environ


def call(app: WSGIApp, environ: dict[str, Any]) -> str:
    status: list[str] = []

    def start_response(s: str, headers: Any, exc_info: Any = None) -> None:
        status.append(s)

    body = app(dict(environ), start_response)
    for _ in body:
        pass
    if hasattr(body, "close"):
        body.close()
    return status[0]


def bare_app() -> Flask:
    """The example app's own routes and error handler, without the gate: what the gate's cost is measured against."""
    app = Flask("bare")
    app.register_blueprint(jira.create_blueprint(JWTGate()))  # a gate never installed: @gate.public only marks views
    return app


def jwt_extended_app(public_pem: str) -> Flask:
    """The same routes protected by Flask-JWT-Extended, verifying the same RS256 token on every request."""
    app = Flask("flask_jwt_extended")
    app.config.update(
        JWT_ALGORITHM="RS256",
        JWT_PUBLIC_KEY=public_pem,
        JWT_DECODE_AUDIENCE=AUDIENCE,
        JWT_DECODE_ISSUER=ISSUER,
        JWT_IDENTITY_CLAIM="sub",
    )
    JWTManager(app)
    app.before_request(verify_jwt_in_request)
    app.register_blueprint(jira.create_blueprint(JWTGate()))
    return app


Columns = dict[str, tuple[WSGIApp, Callable[[], Iterator[dict[str, Any]]]]]


def redis_url_answering() -> str | None:
    """``JWTGATE_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) if a Redis answers there, else ``None``."""
    url = os.environ.get("JWTGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:  # no Redis: its columns are left out, and said so
        print(f"(no Redis columns: {url} did not answer: {exc})")
        return None
    return url


def rate_limited_columns(instance: str, path: str, token: str) -> tuple[Columns, Callable[[], None]]:
    """The example app with ``JWTGATE_RATE_LIMIT`` on, per storage, and with every feature on (:func:`all_features`),
    per storage; and a function that deletes the Redis keys. The all-features apps write the audit log, so their
    writer's work is charged to them (``SETTLE``)."""
    config = {"JWTGATE_RATE_LIMIT": "1000000000/minute", **AUDIT_OFF}
    prefix = f"jwtgate-bench-{uuid.uuid4().hex}"
    redis_url = redis_url_answering()
    apps = {
        "rate limit on (memory)": create_app(config, instance_path=instance),
        "all features (memory)": create_app(all_features("memory://"), instance_path=instance),
    }
    if redis_url is not None:
        redis_options = {"JWTGATE_RATE_LIMIT_STORAGE_URI": redis_url,
                         "JWTGATE_RATE_LIMIT_STORAGE_OPTIONS": {"key_prefix": prefix}}
        apps["rate limit on (redis)"] = create_app({**config, **redis_options}, instance_path=instance)
        apps["all features (redis)"] = create_app(all_features(redis_url, prefix),
                                                  instance_path=instance)
    for app in apps.values():
        if app.extensions["jwtgate"].audit is not None:
            SETTLE[app.wsgi_app] = app.extensions["jwtgate"].audit.flush

    def cleanup() -> None:
        if redis_url is None:
            return
        import redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)

    columns: Columns = {name: (app.wsgi_app, lambda: repeat(environ_for(path, token))) for name, app in apps.items()}
    return columns, cleanup


AUDIT_OFF = {"JWTGATE_AUDIT_ENABLED": False}


#: Work a column leaves running in the background (the audit writer), finished inside that column's timed loop.
SETTLE: dict[WSGIApp, Callable[[], object]] = {}


def postgres_app(instance: str) -> tuple[Any, Callable[[], None]] | None:
    """The example app with the audit log on a fresh PostgreSQL schema (``JWTGATE_BENCH_POSTGRES_URL``, default
    ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), and a function that drops it; ``None`` without PostgreSQL.
    """
    url = os.environ.get("JWTGATE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = f"jwtgate_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = sa.create_engine(url, connect_args={"connect_timeout": 2})
        with admin.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except Exception as exc:  # no PostgreSQL: the column is left out, and said so
        print(f"(no PostgreSQL column: {url} did not answer: {type(exc).__name__})")
        return None
    separator = "&" if "?" in url else "?"
    app = create_app(
        {
            "JWTGATE_AUDIT_ENABLED": True,
            "JWTGATE_DATABASE_URI": f"{url}{separator}options=-csearch_path%3D{schema}",
        },
        instance_path=instance,
    )

    def drop() -> None:
        app.extensions["jwtgate"].audit.database.engine.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()

    return app, drop


def audited_columns(instance: str, path: str, token: str) -> tuple[Columns, Callable[[int], str], Callable[[], None]]:
    """The example app with the audit log on, default settings (SQLite in the instance folder, batches of 500, the
    background writer), and the same on PostgreSQL when one answers; a report of what each wrote; and a function that
    drops the PostgreSQL schema. Whatever the writer has not written when a round's requests are done is written
    (``flush``) before that round's clock stops, so all of its work is charged to its column.
    """
    apps = {"audit on (sqlite)": create_app({"JWTGATE_AUDIT_ENABLED": True}, instance_path=instance)}
    postgres = postgres_app(instance)
    if postgres is not None:
        apps["audit on (postgresql)"] = postgres[0]
    for app in apps.values():
        SETTLE[app.wsgi_app] = app.extensions["jwtgate"].audit.flush

    def report(requests: int) -> str:
        lines = []
        for name, app in apps.items():
            audit = app.extensions["jwtgate"].audit
            audit.flush()
            status = audit.status()
            lines.append(f"{name}: {status['written']} of {requests} requests recorded ({status['spooled']} spooled, "
                         f"{status['dropped']} dropped)")
        return "; ".join(lines)

    columns: Columns = {name: (app.wsgi_app, lambda: repeat(environ_for(path, token))) for name, app in apps.items()}
    return columns, report, postgres[1] if postgres is not None else lambda: None


def measure(app: WSGIApp, environs: Iterator[dict[str, Any]], count: int) -> float:
    """Microseconds per request over ``count`` requests."""
    batch = [next(environs) for _ in range(count)]
    start = time.perf_counter()
    for environ in batch:
        if call(app, environ)[:3] != "200":
            raise SystemExit(f"benchmark request failed: {call(app, environ)}")
    settle = SETTLE.get(app)
    if settle is not None:
        settle()
    return (time.perf_counter() - start) / count * 1e6


def repeat(environ: dict[str, Any]) -> Iterator[dict[str, Any]]:
    while True:
        yield environ


def run_scenario(
    name: str,
    columns: Columns,
    rounds: int,
    requests: int,
) -> dict[str, float]:
    """Interleaved rounds; returns each column's median ratio to bare Flask over the rounds.

    The ratio is taken per round (columns measured back to back) and then the median over rounds, so that a burst of
    load on the machine during one round moves every column of that round alike.
    """
    samples: dict[str, list[float]] = {column: [] for column in columns}
    for app, make in columns.values():  # warm up: caches, imports, first-request work
        measure(app, make(), min(200, requests))
    for _ in range(rounds):
        for column, (app, make) in columns.items():
            samples[column].append(measure(app, make(), requests))
    bare = samples["bare flask"]
    ratios = {
        column: statistics.median(v / b for v, b in zip(values, bare, strict=True))
        for column, values in samples.items()
    }
    print(f"\n{name}")
    print(f"  {'column':<30}{'median µs/req':>15}{'× bare':>9}")
    for column, values in samples.items():
        print(f"  {column:<30}{statistics.median(values):>15.1f}{ratios[column]:>9.2f}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as instance:
        gate_app = create_app(AUDIT_OFF, instance_path=instance)
        with open(key_paths(instance)[1]) as handle:
            public_pem = handle.read()
        bare, fje = bare_app(), jwt_extended_app(public_pem)
        path = "/rest/api/2/myself"
        token = mint_token(gate_app, "bob", expires_in=3600)
        idp = MockIdentityProvider(issuer=ISSUER, audience=AUDIENCE)
        introspected_app = create_app(
            {"JWTGATE_PROVIDERS": [idp.introspection_provider("demo-introspection")], **AUDIT_OFF},
            instance_path=instance + "/introspection",
        )
        opaque = idp.mint_opaque("bob", expires_in=3600)
        # A gate-issued API token on the same app: looked up by hash once, then answered from the token cache.
        api_token_store = gate_app.extensions["jwtgate"].api_tokens
        _api_token, api_secret = api_token_store.create("bob", name="bench", expires_in_days=1)
        limited, delete_limit_keys = rate_limited_columns(instance, path, token)
        audited, audit_report, drop_postgres = audited_columns(instance, path, token)

        repeated = run_scenario(
            "repeated valid token (policy on: groups loader, read-only groups)",
            {
                "bare flask": (bare.wsgi_app, lambda: repeat(environ_for(path))),
                "jwtgate": (gate_app.wsgi_app, lambda: repeat(environ_for(path, token))),
                "flask-jwt-extended": (fje.wsgi_app, lambda: repeat(environ_for(path, token))),
                "jwtgate introspected": (introspected_app.wsgi_app, lambda: repeat(environ_for(path, opaque))),
                "jwtgate api token": (gate_app.wsgi_app, lambda: repeat(environ_for(path, api_secret))),
                **limited,
                **audited,
            },
            args.rounds,
            args.requests,
        )
        introspection_calls = idp.hits["introspect"]
        audit_line = audit_report(min(200, args.requests) + args.rounds * args.requests)
        delete_limit_keys()
        drop_postgres()
        idp.close()
        fresh_count = max(100, args.requests // 5)
        tokens = [mint_token(gate_app, "bob", expires_in=3600) for _ in range(fresh_count * (args.rounds + 2) * 2)]
        supply = iter(tokens)

        def fresh() -> Iterator[dict[str, Any]]:
            while True:
                yield environ_for(path, next(supply))

        fresh_ratios = run_scenario(
            "fresh token on every request (RS256 verification each time)",
            {
                "bare flask": (bare.wsgi_app, lambda: repeat(environ_for(path))),
                "jwtgate": (gate_app.wsgi_app, fresh),
                "flask-jwt-extended": (fje.wsgi_app, fresh),
            },
            args.rounds,
            fresh_count,
        )
        report(repeated, fresh_ratios["jwtgate"], introspection_calls, audit_line)


def report(repeated: dict[str, float], fresh_ratio: float, introspection_calls: int, audit_line: str) -> None:
    """Each target, with this run's figure."""
    ratio = repeated["jwtgate"]
    print(f"\nrepeated token: gate/bare = {ratio:.2f} (target <= 1.20); flask-jwt-extended/gate = "
          f"{repeated['flask-jwt-extended'] / ratio:.2f} (target >= 1.50)")
    print(f"repeated introspected token / repeated local JWT = {repeated['jwtgate introspected'] / ratio:.2f} "
          f"(target <= 1.00, within noise); introspection calls made: {introspection_calls}")
    print(f"repeated API token / repeated local JWT = {repeated['jwtgate api token'] / ratio:.2f} (target <= 1.30)")
    limit_line = f"repeated token, rate limit on: memory/bare = {repeated['rate limit on (memory)']:.2f}"
    limit_line += " (target <= 1.30)"
    if "rate limit on (redis)" in repeated:
        limit_line += f"; redis/bare = {repeated['rate limit on (redis)']:.2f}"
    print(limit_line)
    audit = f"repeated token, audit on: sqlite/bare = {repeated['audit on (sqlite)']:.2f} (target <= 1.30)"
    if "audit on (postgresql)" in repeated:
        audit += f"; postgresql/bare = {repeated['audit on (postgresql)']:.2f} (target <= 1.40)"
    print(f"{audit}; {audit_line}")
    everything = repeated["all features (memory)"]
    line = f"all features, memory limits, sqlite audit: {everything:.2f} × bare (target <= 1.30)"
    if "all features (redis)" in repeated:
        line += f"; with redis limits: {repeated['all features (redis)']:.2f} × bare"
    print(line)
    print(f"flask-jwt-extended's cost / all features' (memory) = {repeated['flask-jwt-extended'] / everything:.2f}: "
          "the gate's throughput with every feature on over Flask-JWT-Extended's (target >= 2.00)")
    print(f"fresh token on every request: gate/bare = {fresh_ratio:.2f} (target <= 2.30)")

if __name__ == "__main__":
    main()
