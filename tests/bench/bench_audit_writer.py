"""What the audit log costs per request, part by part, against a bare Flask request measured in the same run.

The end-to-end figure is bench_gate.py's column "audit on (sqlite)"; this one splits it, for whoever works on it:

- **capture**: the request thread's share, the gate's app with the audit log on against the same app with it off
  (the writer's queue is emptied and not written, so only the capture is in it);
- **rows**: the writer turning a batch of 500 records into rows (:func:`flask_jwtgate.audit.model.to_rows`, request
  ids and the store's time form included);
- **insert (sqlite)** / **insert (postgresql)**: one transaction of those 500 rows through the gate's store, on a
  SQLite file and, when one answers at ``JWTGATE_BENCH_POSTGRES_URL`` (default
  ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), on PostgreSQL in a schema of its own, dropped afterwards.

Every part is measured on the same app, token and records, in interleaved rounds; the report gives the median µs per
request (or per row) and that as a fraction of the median bare Flask request of the same run.

Run: ``python tests/bench/bench_audit_writer.py [--rounds 21]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from bench_gate import WSGIApp, bare_app, call, environ_for, postgres_app  # noqa: E402

from example_app import create_app  # noqa: E402
from example_app.idp import mint_token  # noqa: E402
from flask_jwtgate.audit.model import Pending, to_rows  # noqa: E402
from flask_jwtgate.audit.writer import request_ids  # noqa: E402

BATCH = 500
PATH = "/rest/api/2/myself"


def per_request(app: WSGIApp, environ: dict[str, Any], count: int = BATCH) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call(app, environ)
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as instance:
        off = create_app({"JWTGATE_AUDIT_ENABLED": False}, instance_path=instance)
        on = create_app({"JWTGATE_AUDIT_ENABLED": True}, instance_path=instance)
        token = mint_token(on, "bob", expires_in=3600)
        bare, environ, bare_environ = bare_app(), environ_for(PATH, token), environ_for(PATH)
        audit = on.extensions["jwtgate"].audit
        captured: list[Pending] = []
        audit.writer.submit = captured.append  # type: ignore[method-assign]  # the capture alone: nothing written
        stores = {"sqlite": audit.store}
        postgres = postgres_app(instance)
        if postgres is not None:
            stores["postgresql"] = postgres[0].extensions["jwtgate"].audit.store
        samples: dict[str, list[float]] = {
            "bare flask request": [], "capture": [], "rows": [], **{f"insert ({name})": [] for name in stores}
        }
        for _ in range(3):  # warm up: caches, imports, prepared statements
            per_request(bare.wsgi_app, bare_environ), per_request(off.wsgi_app, environ)
            per_request(on.wsgi_app, environ)
        for _ in range(args.rounds):
            samples["bare flask request"].append(per_request(bare.wsgi_app, bare_environ))
            gate = per_request(off.wsgi_app, environ)
            captured.clear()
            samples["capture"].append(per_request(on.wsgi_app, environ) - gate)
            batch = list(captured)
            for name, store in stores.items():
                start = time.perf_counter()
                rows = to_rows(batch, request_ids.take(len(batch)), store.times)
                made = time.perf_counter()
                store.insert(rows)
                samples[f"insert ({name})"].append((time.perf_counter() - made) / len(batch) * 1e6)
                if name == "sqlite":
                    samples["rows"].append((made - start) / len(batch) * 1e6)
        if postgres is not None:
            postgres[1]()

    bare_median = statistics.median(samples["bare flask request"])
    print(f"\naudit log cost per request, {args.rounds} rounds of {BATCH}")
    print(f"  {'part':<24}{'median µs':>12}{'× bare':>9}")
    for part, values in samples.items():
        median = statistics.median(values)
        print(f"  {part:<24}{median:>12.2f}{median / bare_median:>9.3f}")
    total = sum(statistics.median(samples[part]) for part in ("capture", "rows", "insert (sqlite)"))
    print(f"\ncapture + rows + insert (sqlite) = {total:.2f} µs = {total / bare_median:.3f} × a bare Flask request")


if __name__ == "__main__":
    main()
