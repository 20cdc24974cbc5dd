"""Shared pytest fixtures. Plain helper functions live in tests/helpers.py.

Tests that run a whole Beam pipeline (curate, extract, example, demo) or a whole training job carry the ``e2e``
marker (registered in pyproject.toml): ``make test-fast`` (``pytest -m "not e2e"``) leaves them out. Test modules
mark their own; a test that uses a shared fixture which runs a pipeline (``PIPELINE_FIXTURES``) is marked here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from httpserver import LocalServer

PIPELINE_FIXTURES = {"example_output"}  # shared fixtures below that run a whole pipeline


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ())):  # directly or through another fixture
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def http_server() -> Iterator[LocalServer]:
    """One local HTTP server (tests/httpserver.py) for the whole session; use unique paths per test."""
    with LocalServer() as server:
        yield server


@pytest.fixture
def other_loopback_server() -> Iterator[LocalServer]:
    """A server on 127.0.0.2: a guard can trust it while 127.0.0.1 (``http_server``) stays blocked."""
    try:
        server = LocalServer(host="127.0.0.2").start()
    except OSError:
        pytest.skip("this system cannot bind 127.0.0.2")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def example_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real curate output made by ``aligndata example --quiet`` (3 shards, 18 samples), shared read-only by
    every test that needs one: copy it before changing anything in it. Tests using it are e2e."""
    from aligndata.cli import main

    out = tmp_path_factory.mktemp("example") / "example"
    assert main(["example", "--output", str(out), "--quiet"]) == 0
    return out
