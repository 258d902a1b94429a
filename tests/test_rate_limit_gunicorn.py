"""The example app under a real gunicorn with three workers and Redis storage: the limit holds across processes.

Forty requests from one token over several connections, against a limit of 20 per minute: exactly twenty pass, and
their ``RateLimit-Remaining`` values are exactly 19..0 (one shared count, not one per worker). Each worker is
replaced after ``MAX_REQUESTS`` requests (gunicorn's ``--max-requests``), so the forty requests are certainly served
by several processes, whichever worker the kernel hands each connection to: counting in memory would fail here.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from example_app import create_app
from example_app.idp import mint_token

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 3
MAX_REQUESTS = 8
Reply = tuple[int, dict[str, str], Any]


class Gunicorn:
    """``gunicorn -w 3 'example_app:create_app()'`` as a subprocess, with its logs in files."""

    def __init__(self, folder: Path, environment: dict[str, str]) -> None:
        self.port = free_port()
        self.error_log = folder / "gunicorn-error.log"
        self.access_log = folder / "gunicorn-access.log"
        command = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(WORKERS),
            "--bind", f"127.0.0.1:{self.port}",
            "--graceful-timeout", "5",
            "--max-requests", str(MAX_REQUESTS),
            "--error-logfile", str(self.error_log),
            "--access-logfile", str(self.access_log),
            "--access-logformat", "%(p)s %(s)s",
            "example_app:create_app()",
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **environment}
        self.output = folder / "gunicorn-output.log"
        with self.output.open("wb") as output:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return "\n".join(path.read_text() for path in (self.error_log, self.output) if path.exists())

    def wait_until_serving(self, timeout: float = 30) -> None:
        """Until every worker has booted and the port answers (a bounded wait for the server, not a rate window)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.logs()}", pytrace=False)
            if self.logs().count("Booting worker") >= WORKERS:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        pytest.fail(f"gunicorn did not start serving within {timeout}s:\n{self.logs()}", pytrace=False)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def worker_pids(self) -> set[str]:
        return {line.split()[0] for line in self.access_log.read_text().splitlines() if line.strip()}


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
