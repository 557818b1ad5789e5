"""Fixtures every test folder may use: real databases of both kinds."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

# `./dev test` starts PostgreSQL and exports this; the suite fails (never skips) without it.
PG_URL = os.environ.get("PG_TEST_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One PostgreSQL database for the session (creating one takes about 0.6 s), dropped
    at its end; each test gets a schema of its own in it (postgres_url)."""
    name = f"pointsync_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, the only one on its connections' search
    path (tables, the migrations' version and advisory locks as in a database of its own),
    dropped afterwards."""
    base = PG_URL.rsplit("/", 1)[0]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{base}/{postgres_database}", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        url = f"{base}/{postgres_database}?options=-csearch_path%3D{schema}"
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)
        # Whatever the test left connected is cut off first, as DROP DATABASE (FORCE) did.
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", (postgres_database,))
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pointsync.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on a SQLite file and on a real PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
