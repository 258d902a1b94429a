"""The example app under a real gunicorn with three workers and Redis storage: the limit holds across processes.

Forty requests from one token over several connections, against a limit of 20 per minute: exactly twenty pass, and
their ``RateLimit-Remaining`` values are exactly 19..0 (one shared count, not one per worker). Each worker is
replaced after ``MAX_REQUESTS`` requests (gunicorn's ``--max-requests``), so the forty requests are certainly served
by several processes, whichever worker the kernel hands each connection to: counting in memory would fail here.
"""

from __future__ import annotations

import http.client
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from servers import Gunicorn

from example_app import create_app
from example_app.idp import mint_token

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 3
MAX_REQUESTS = 8
Reply = tuple[int, dict[str, str], Any]


def send(port: int, token: str, count: int) -> list[Reply]:
    """``count`` requests over one client connection (reopened whenever the server closes it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    replies: list[Reply] = []
    try:
        for _ in range(count):
            connection.request("GET", "/rest/api/2/myself", headers={"Authorization": f"Bearer {token}"})
            response = connection.getresponse()
            body = json.loads(response.read() or b"null")
            replies.append((response.status, dict(response.getheaders()), body))
    finally:
        connection.close()
    return replies


def test_a_limit_of_20_lets_exactly_20_of_40_requests_through_three_gunicorn_workers(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    instance = tmp_path / "instance"
    app = create_app(instance_path=str(instance))  # makes the demo IdP's keys before any worker starts
    token, other = mint_token(app, "bob"), mint_token(app, "alice")
    server = Gunicorn(
        tmp_path,
        {
            "JWTGATE_EXAMPLE_INSTANCE_PATH": str(instance),
            "FLASK_JWTGATE_RATE_LIMIT": "20/minute",
            "FLASK_JWTGATE_RATE_LIMIT_STORAGE_URI": redis_url,
            "FLASK_JWTGATE_RATE_LIMIT_STORAGE_OPTIONS": json.dumps({"key_prefix": key_prefix}),
            "FLASK_JWTGATE_AUDIT_ENABLED": "false",
        },
        workers=WORKERS,
        max_requests=MAX_REQUESTS,
    )
    try:
        server.wait_until_serving()
        with ThreadPoolExecutor(max_workers=4) as pool:
            batches = list(pool.map(lambda _: send(server.port, token, 10), range(4), timeout=120))
        replies = [reply for batch in batches for reply in batch]
        (unaffected,) = send(server.port, other, 1)
    finally:
        server.stop()

    statuses = Counter(status for status, _, _ in replies)
    passed = [headers for status, headers, _ in replies if status == 200]
    refused = [(headers, body) for status, headers, body in replies if status == 429]
    assert statuses == {200: 20, 429: 20}, server.logs()
    assert sorted(int(h["RateLimit-Remaining"]) for h in passed) == list(range(20))
    assert all(h["RateLimit-Limit"] == "20" for h in passed)
    assert all(1 <= int(h["Retry-After"]) <= 60 for h, _ in refused)
    assert all(body["error"] == "too_many_requests" and body["status"] == 429 for _, body in refused)
    assert unaffected[0] == 200
    assert unaffected[1]["RateLimit-Remaining"] == "19"
    assert len(server.worker_pids()) >= 41 // MAX_REQUESTS, "the requests were not served by several processes"
