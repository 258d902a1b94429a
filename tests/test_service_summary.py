"""The suite says what it did not run: a run without PostgreSQL or Redis ends by counting the tests that a missing
service kept from running, by service (``pytest_terminal_summary`` in tests/conftest.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import conftest
import pytest


def skipped(name: str, why: str) -> SimpleNamespace:
    """A skip report as pytest makes it for a test whose fixture called ``service_missing``."""
    with pytest.raises(pytest.skip.Exception) as raised:
        conftest.service_missing(name, why)
    return SimpleNamespace(longrepr=("tests/test_x.py", 1, f"Skipped: {raised.value.msg}"))


class Terminal:
    def __init__(self, stats: dict[str, list[Any]]) -> None:
        self.stats = stats
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str, **markup: bool) -> None:
        self.lines.append(f"== {title} ==")

    def write_line(self, line: str, **markup: bool) -> None:
        self.lines.append(line)


def test_a_run_without_services_ends_by_naming_them_and_counting_what_did_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JWTGATE_REQUIRE_SERVICES", raising=False)
    other = SimpleNamespace(longrepr=("tests/test_x.py", 1, "Skipped: not on this platform"))
    terminal = Terminal(
        {
            "skipped": [
                *(skipped("PostgreSQL", "nothing listens on 127.0.0.1:5432") for _ in range(3)),
                skipped("Redis", "redis://127.0.0.1:6379/0: connection refused"),
                skipped("redis-server", "the redis-server binary is not on PATH"),
                other,
            ]
        }
    )

    conftest.pytest_terminal_summary(terminal, 0, None)  # the hook does not read the config

    assert terminal.lines[0] == "== services missing =="
    assert terminal.lines[1].startswith(
        "5 tests did not run because a service is missing: PostgreSQL (3), Redis (1), redis-server (1). "
    )


def test_a_run_with_every_service_says_nothing_more() -> None:
    terminal = Terminal({"passed": [SimpleNamespace()]})

    conftest.pytest_terminal_summary(terminal, 0, None)  # the hook does not read the config

    assert terminal.lines == []
