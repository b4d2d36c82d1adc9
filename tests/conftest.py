"""Shared fixtures. Prefect runs under one test harness for the whole session,
with its home in a temporary folder; stage tests do not start it at all."""

from __future__ import annotations

import os
import tempfile

# before Prefect is imported anywhere: its settings are read at import
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="reposts-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"  # nor the client's (SDK) analytics
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "test.duckdb")


@pytest.fixture
def migrated_to(db_path):
    """`migrated_to(version)`: a connection to a database at `db_path` made by
    the migrations up to `version` only, as an older release left it, for the
    test to fill before it migrates the rest."""
    import duckdb

    from dedup.store import migrations

    def make(version: int):
        con = duckdb.connect(db_path)
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)")
        for number, name, sql in migrations():
            if number <= version:
                con.execute(sql)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [number, name])
        return con

    return make


@pytest.fixture
def httpserver(httpserver):
    """pytest-httpserver, answering 404 (not 500) for paths a test did not set up,
    so that robots.txt reads as absent instead of as a server error to retry."""
    httpserver.no_handler_status_code = 404
    return httpserver


# Modules that start processes, servers or Prefect runs: `make test-fast`
# (pytest -m "not flows") leaves them out, and any test that uses the
# Prefect harness.
_FLOW_MODULES = {"test_crash", "test_distributed", "test_faults", "test_flows", "test_local_api", "test_prefect_server", "test_real_markers"}


def pytest_configure(config):
    config.addinivalue_line("markers", "flows: runs processes, servers or Prefect flows (left out by `make test-fast`)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in _FLOW_MODULES or "prefect_harness" in item.fixturenames:
            item.add_marker(pytest.mark.flows)
