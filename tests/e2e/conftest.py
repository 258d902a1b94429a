"""The deployment the end-to-end tests share (tests/e2e/stack.py): started once for the package, as it takes seconds.

Tests that stop a dependency restore it before they end; the one that stops gunicorn starts a deployment of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .stack import Stack, stack_fixture


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_fixture(tmp_path_factory.mktemp("e2e"))
