"""What the gate costs per request, against bare Flask and Flask-JWT-Extended, in one run.

Each column calls an app's WSGI callable directly with a prebuilt environ (no test client, no sockets), in interleaved
rounds so that machine noise hits every column alike. It prints the median microseconds per request of each column
and the ratios against bare Flask, for:

- a repeated valid token (the gate's verified-token cache at work), policy on: groups loader, read-only groups;
- a fresh token on every request (every request pays for an RS256 signature check).

Flask-JWT-Extended does only RS256 verification (plus its own claim checks) on the same route: the "plain library".

Run: ``python tests/bench/bench_gate.py [--rounds 15] [--requests 2000]``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, get_jwt_identity, jwt_required

from example_app import create_app
from example_app.idp import AUDIENCE, ISSUER, key_paths, mint_token

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


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
    app = Flask("bare")

    @app.get("/rest/api/2/myself")
    def myself() -> Any:
        return jsonify(name="alice", groups=[], authMethod="none")

    return app


def jwt_extended_app(public_pem: str) -> Flask:
    app = Flask("flask_jwt_extended")
    app.config.update(
        JWT_ALGORITHM="RS256",
        JWT_PUBLIC_KEY=public_pem,
        JWT_DECODE_AUDIENCE=AUDIENCE,
        JWT_DECODE_ISSUER=ISSUER,
        JWT_IDENTITY_CLAIM="sub",
    )
    JWTManager(app)

    @app.get("/rest/api/2/myself")
    @jwt_required()
    def myself() -> Any:
        return jsonify(name=get_jwt_identity(), groups=[], authMethod="jwt")

    return app


def measure(app: WSGIApp, environs: Iterator[dict[str, Any]], count: int) -> float:
    """Microseconds per request over ``count`` requests."""
    batch = [next(environs) for _ in range(count)]
    start = time.perf_counter()
    for environ in batch:
        if call(app, environ)[:3] != "200":
            raise SystemExit(f"benchmark request failed: {call(app, environ)}")
    return (time.perf_counter() - start) / count * 1e6


def repeat(environ: dict[str, Any]) -> Iterator[dict[str, Any]]:
    while True:
        yield environ


def run_scenario(name: str, columns: dict[str, tuple[WSGIApp, Callable[[], Iterator[dict[str, Any]]]]],
                 rounds: int, requests: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {column: [] for column in columns}
    for app, make in columns.values():  # warm up: caches, imports, first-request work
        measure(app, make(), min(200, requests))
    for _ in range(rounds):
        for column, (app, make) in columns.items():
            samples[column].append(measure(app, make(), requests))
    medians = {column: statistics.median(values) for column, values in samples.items()}
    bare = medians["bare flask"]
    print(f"\n{name}")
    print(f"  {'column':<22}{'median µs/req':>15}{'× bare':>9}")
    for column, value in medians.items():
        print(f"  {column:<22}{value:>15.1f}{value / bare:>9.2f}")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as instance:
        gate_app = create_app(instance_path=instance)
        with open(key_paths(instance)[1]) as handle:
            public_pem = handle.read()
        bare, fje = bare_app(), jwt_extended_app(public_pem)
        path = "/rest/api/2/myself"
        token = mint_token(gate_app, "bob", expires_in=3600)

        repeated = run_scenario(
            "repeated valid token (policy on: groups loader, read-only groups)",
            {
                "bare flask": (bare.wsgi_app, lambda: repeat(environ_for(path))),
                "jwtgate": (gate_app.wsgi_app, lambda: repeat(environ_for(path, token))),
                "flask-jwt-extended": (fje.wsgi_app, lambda: repeat(environ_for(path, token))),
            },
            args.rounds,
            args.requests,
        )
        fresh_count = max(200, args.requests // 10)
        tokens = [mint_token(gate_app, "bob", expires_in=3600) for _ in range(fresh_count * (args.rounds + 2) * 2)]
        supply = iter(tokens)

        def fresh() -> Iterator[dict[str, Any]]:
            while True:
                yield environ_for(path, next(supply))

        run_scenario(
            "fresh token on every request (RS256 verification each time)",
            {
                "bare flask": (bare.wsgi_app, lambda: repeat(environ_for(path))),
                "jwtgate": (gate_app.wsgi_app, fresh),
                "flask-jwt-extended": (fje.wsgi_app, fresh),
            },
            args.rounds,
            fresh_count,
        )
        ratio = repeated["jwtgate"] / repeated["bare flask"]
        fje_ratio = repeated["flask-jwt-extended"] / repeated["jwtgate"]
        print(f"\nrepeated token: gate/bare = {ratio:.2f} (target <= 1.20); flask-jwt-extended/gate = {fje_ratio:.2f}"
              " (target >= 1.50)")


if __name__ == "__main__":
    main()
