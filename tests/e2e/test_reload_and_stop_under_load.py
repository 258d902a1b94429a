"""gunicorn reloaded (SIGHUP: new workers, the old ones stopped gracefully) and then stopped (SIGTERM) while clients
keep calling through nginx: every answer the app gave has its audit record in PostgreSQL, once, with its status.

This test stops gunicorn, so it runs a deployment of its own rather than the package's.
"""

from __future__ import annotations

import itertools
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_helpers import wait_for

from .stack import API, WORKERS, Reply, Stack, agent_name, stack_fixture


@pytest.fixture(params=["sync", "gthread"])
def own_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A deployment of the test's own, under each of gunicorn's worker classes that docs/deployment.md recommends."""
    yield from stack_fixture(tmp_path, worker_class=request.param)


class Load:
    """Clients calling through nginx in threads of their own until stopped: allowed reads, 401s and 403s."""

    def __init__(self, stack: Stack, agent: str, clients: int = 4) -> None:
        self.stack = stack
        self.agent = agent
        bob, carol = stack.idp.mint_jwt("bob", expires_in=600), stack.idp.mint_jwt("carol", expires_in=600)
        self.calls = itertools.cycle(
            [
                ("GET", f"{API}/myself", bob, None),
                ("GET", f"{API}/myself", None, None),
                ("POST", f"{API}/issue", carol, {"fields": {"summary": "e2e"}}),
                ("GET", f"{API}/search", bob, None),
            ]
        )
        self.lock = threading.Lock()
        self.replies: list[Reply] = []
        self.phase = "before"
        self.phases: list[str] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            with self.lock:
                method, path, token, body = next(self.calls)
            reply = self.stack.call(method, path, token=token, body=body, agent=self.agent)
            with self.lock:
                self.replies.append(reply)
                self.phases.append(self.phase)
            if self.phase == "term" and not reply.from_app:
                return  # gunicorn has stopped listening: this client is done

    def answered(self) -> int:
        with self.lock:
            return len(self.replies)

    def stop(self) -> list[Reply]:
        self.done.set()
        for thread in self.threads:
            thread.join(30)
        return self.replies


def test_every_answer_has_its_audit_record_after_sighup_and_sigterm_under_load(own_stack: Stack) -> None:
    stack = own_stack
    agent = agent_name("reload")
    first = stack.app.workers_now()
    load = Load(stack, agent)
    try:
        wait_for(lambda: load.answered() >= 100, 60, "100 answers before the reload")
        load.phase = "hup"
        stack.app.send_signal(signal.SIGHUP)
        # New workers boot while the old ones finish their requests and leave.
        wait_for(
            lambda: len(stack.app.workers_now()) == WORKERS and not stack.app.workers_now() & first, 60,
            "the old workers to be replaced",
        )
        load.phase = "after"
        reloaded = load.answered()
        wait_for(lambda: load.answered() >= reloaded + 100, 60, "100 answers after the reload")
        load.phase = "term"
        stack.app.send_signal(signal.SIGTERM)
        status = stack.app.process.wait(60)
    finally:
        replies = load.stop()

    assert status == 0, stack.logs()
    answers = [reply for reply in replies if reply.from_app]
    assert answers and len(answers) < len(replies), "the load did not run until gunicorn was gone"
    assert {reply.status for reply in replies if not reply.from_app} == {502}  # nginx: nothing upstream
    assert {reply.status for reply in answers} == {200, 401, 403}
    rows = stack.audit_rows(agent)  # gunicorn has exited: everything is written, no waiting
    assert len(rows) == len(answers), (len(rows), len(answers), stack.logs())
    assert Counter(row["status"] for row in rows) == Counter(reply.status for reply in answers)
    assert len({row["request_id"] for row in rows}) == len(rows)
    # Each process writes its records under a request-id prefix of its own: as many as served requests, the old
    # workers (before the reload) and the new ones among them.
    served = {int(pid.strip("<>")) for pid in stack.app.worker_pids()}
    assert served & first and served - first, (served, first)
    assert len({row["request_id"].split("-")[0] for row in rows}) == len(served)
    answered_in = {phase for phase, reply in zip(load.phases, replies, strict=True) if reply.from_app}
    assert answered_in >= {"before", "hup", "after"}
