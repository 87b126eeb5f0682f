"""Shared fixtures: the emulator over loopback HTTP and real SQLite, PostgreSQL and MariaDB.

PostgreSQL and MariaDB tests get a fresh database each and skip with a reason when the server is
unreachable, unless REQUIRE_SERVICES=1 (set by .ci/run) turns the skip into a failure.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import (
    MYSQL_ADMIN_URL,
    PG_ADMIN_URL,
    SUMMARY_START,
    small_world,
    unreachable,
)

try:  # Dagster's beta/preview notices are noise in test output
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
except Exception:  # noqa: BLE001
    pass


def _scratch_database(admin_url: str, kind: str) -> Iterator[str]:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"tr_{kind}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            if kind == "pg":
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            else:
                conn.exec_driver_sql(
                    f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
    except Exception as error:  # noqa: BLE001
        admin.dispose()
        unreachable("PostgreSQL" if kind == "pg" else "MariaDB", error)
    url = sa.make_url(admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if kind == "pg":
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _scratch_database(PG_ADMIN_URL, "pg")


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    yield from _scratch_database(MYSQL_ADMIN_URL, "my")


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def warehouse_url(request: pytest.FixtureRequest) -> str:
    """The same test on all three databases."""
    name = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mariadb_url"}
    return request.getfixturevalue(name[request.param])


@pytest.fixture
def engine(warehouse_url: str) -> Iterator[sa.Engine]:
    """A warehouse on each database, migrated to the head revision (files may override it)."""
    from warehouse.engine import create_warehouse_engine
    from warehouse.migrate import ensure_schema

    eng = create_warehouse_engine(warehouse_url)
    ensure_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(small_world(), Faults()) as emu:
        yield emu


@pytest.fixture
def sync_env(monkeypatch: pytest.MonkeyPatch, emulator: Emulator, sqlite_url: str,
             tmp_path: Path) -> dict[str, str]:
    """Environment for a sync against the emulator into a fresh SQLite warehouse."""
    for name in ("TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET", "TASKROUTER_WORKSPACE_SIDS",
                 "REPORTING_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    env = {**emulator.env(), "WAREHOUSE_URL": sqlite_url, "DAGSTER_HOME": str(tmp_path / "dh"),
           "SUMMARY_START_DATE": SUMMARY_START}
    (tmp_path / "dh").mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
