"""A throw-away PostgreSQL server for the tests that need one (skipped, saying why, where none
can be started)."""

import pytest

from diagnose.tune.pg_server import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def postgres_url():
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as err:
        pytest.skip(f"no throw-away PostgreSQL server could be started: {err}")
    yield server.url
    server.stop()
