"""The migrations build the schema from an empty database, and can be undone and redone."""

from __future__ import annotations

import os

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect

from tests.conftest import fresh_database
from webapp import create_app

TABLES = {"users", "api_tokens", "lane_requests", "ledger_accounts", "ledger_entries", "export_files",
          "user_sessions", "system_events", "lane_owners", "request_log_lines"}


@pytest.fixture
def empty_database(tmp_path):
    with fresh_database(tmp_path) as url:
        yield url


def tables_in(url: str) -> set[str]:
    from webapp.config import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_run_from_an_empty_database(settings, empty_database):
    assert tables_in(empty_database) == set()
    app = create_app({**settings, "SQLALCHEMY_DATABASE_URI": empty_database})
    with app.app_context():
        upgrade()
        assert tables_in(empty_database) == TABLES
        downgrade(revision="base")
        assert tables_in(empty_database) == set()
        upgrade()
    assert tables_in(empty_database) == TABLES
    if os.environ.get("TEST_DATABASE_URL"):
        assert empty_database.startswith("postgresql")
