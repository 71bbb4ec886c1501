"""Shared pytest fixtures."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.httpserver import FixtureServer


@pytest.fixture
def http_server() -> Iterator[FixtureServer]:
    """A threaded HTTP server on 127.0.0.1; add routes with ``http_server.route``."""
    server = FixtureServer()
    try:
        yield server
    finally:
        server.close()
