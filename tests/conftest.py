"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httpserver import LocalServer


@pytest.fixture(scope="session")
def http_server() -> Iterator[LocalServer]:
    """One local HTTP server (tests/httpserver.py) for the whole session; use unique paths per test."""
    with LocalServer() as server:
        yield server
