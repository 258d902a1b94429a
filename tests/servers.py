"""Real servers for the tests that need several processes: gunicorn running the example app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


class Gunicorn:
    """``gunicorn -w N 'example_app:create_app()'`` as a subprocess, with its logs in files.

    :param max_requests: replace each worker after this many requests (so that a run is served by several processes
        whichever worker the kernel hands each connection to); ``None`` keeps the workers.
    """

    def __init__(
        self, folder: Path, environment: dict[str, str], *, workers: int = 3, max_requests: int | None = None
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.error_log = folder / "gunicorn-error.log"
        self.access_log = folder / "gunicorn-access.log"
        command = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(workers),
            "--bind", f"127.0.0.1:{self.port}",
            "--graceful-timeout", "5",
            *(["--max-requests", str(max_requests)] if max_requests else []),
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
            if self.logs().count("Booting worker") >= self.workers:
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
