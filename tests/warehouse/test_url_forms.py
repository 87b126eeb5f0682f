"""Every ``WAREHOUSE_URL`` form of docs/configuration.md, against the real servers: it connects, migrates,
round-trips a hostile 4-byte string, and never shows the password."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from warehouse.engine import (
    PROJECT_ROOT,
    WarehouseUrlError,
    create_warehouse_engine,
    mask_url,
    normalize_url,
)
from warehouse.migrate import ensure_schema
from warehouse.normalize import normalize_reservations
from warehouse.schema import reservations
from warehouse.upsert import upsert_reservations

TEXT = "Robert'); DROP TABLE reservations;-- \"q\" \\b\t 🎧📞 Zoë 李"


def round_trip(url: str | sa.URL) -> sa.Engine:
    """Migrate, upsert one hostile row, read it back byte for byte; returns the (open) engine."""
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    record = {"sid": "WR1", "account_sid": "AC1", "workspace_sid": "WS1", "worker_sid": "WK1",
              "worker_name": TEXT, "task_sid": "WT1", "reservation_status": "pending",
              "date_created": "2026-11-01T05:59:59Z", "date_updated": "2026-11-01T06:00:00+00:00",
              "url": "https://x", "links": {"worker": TEXT}}
    with engine.begin() as conn:
        counts = upsert_reservations(conn, normalize_reservations([record]).rows, datetime.now(UTC))
    assert counts.inserted == 1
    with engine.connect() as conn:
        name, updated = conn.execute(
            sa.select(reservations.c.worker_name, reservations.c.date_updated)).one()
    assert name == TEXT and name.encode() == TEXT.encode()
    assert updated == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
    return engine


# -- SQLite -------------------------------------------------------------------------------------
def test_relative_sqlite_path_resolves_against_the_root(tmp_path: Path):
    url = normalize_url("sqlite:///nested/dir/relative.db", root=tmp_path)
    assert url.drivername == "sqlite"
    assert Path(url.database) == tmp_path / "nested" / "dir" / "relative.db"
    assert (tmp_path / "nested" / "dir").is_dir()  # parent created
    round_trip(url).dispose()
    assert (tmp_path / "nested" / "dir" / "relative.db").is_file()


def test_default_url_is_data_warehouse_db_under_the_root(tmp_path: Path):
    for raw in (None, "", "   "):
        url = normalize_url(raw, root=tmp_path)
        assert Path(url.database) == tmp_path / "data" / "warehouse.db"
    assert Path(normalize_url("sqlite:///data/warehouse.db").database) == (
        PROJECT_ROOT / "data" / "warehouse.db")


def test_absolute_sqlite_path_is_kept(tmp_path: Path):
    target = tmp_path / "abs" / "warehouse.db"
    url = normalize_url(f"sqlite:///{target}", root=Path("/nonexistent-root"))
    assert str(url).startswith("sqlite:////")
    assert Path(url.database) == target
    round_trip(f"sqlite:///{target}").dispose()
    assert target.is_file()


# -- PostgreSQL -----------------------------------------------------------------------------------
@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg", "postgres"])
def test_postgres_url_forms(postgres_url: str, driver: str):
    raw = sa.make_url(postgres_url).set(drivername=driver).render_as_string(hide_password=False)
    url = normalize_url(raw)
    assert url.drivername == "postgresql+psycopg"
    engine = round_trip(raw)
    assert engine.dialect.driver == "psycopg"
    with engine.connect() as conn:
        kind = conn.exec_driver_sql(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'reservations' AND column_name = 'date_updated'").scalar_one()
    assert kind == "timestamp with time zone"
    engine.dispose()


# -- MySQL / MariaDB ------------------------------------------------------------------------------
@pytest.mark.parametrize("driver", ["mysql", "mysql+pymysql", "mariadb+pymysql", "mariadb"])
def test_mysql_url_forms_and_utf8mb4(mariadb_url: str, driver: str):
    base = sa.make_url(mariadb_url)
    # a server/database default that cannot hold emoji: the tables must still be utf8mb4
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f"ALTER DATABASE `{base.database}` CHARACTER SET latin1 COLLATE latin1_swedish_ci")
    admin.dispose()
    raw = base.set(drivername=driver).render_as_string(hide_password=False)
    url = normalize_url(raw)
    assert url.drivername == "mysql+pymysql"  # see warehouse.engine._DRIVERS for mariadb
    assert url.query["charset"] == "utf8mb4"
    engine = round_trip(raw)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT @@character_set_connection").scalar_one() == "utf8mb4"
        tables = dict(conn.exec_driver_sql(
            "SELECT table_name, table_collation FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' "
            "AND table_name <> 'warehouse_alembic_version'").all())
        columns = conn.exec_driver_sql(
            "SELECT table_name, column_name, character_set_name FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND character_set_name IS NOT NULL "
            "AND table_name <> 'warehouse_alembic_version'").all()
        kind = conn.exec_driver_sql(
            "SELECT column_type FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND table_name = 'reservations' AND column_name = 'date_updated'").scalar_one()
    engine.dispose()
    assert {"reservations", "workers", "reservation_daily_status_counts", "warehouse_state"} <= set(tables)
    assert all(collation.startswith("utf8mb4") for collation in tables.values()), tables
    assert columns and all(charset == "utf8mb4" for _t, _c, charset in columns), columns
    assert kind == "datetime(6)"  # never TIMESTAMP


def test_mysql_three_byte_utf8_charset_is_upgraded():
    url = normalize_url("mysql://u:p@db.example/w?charset=utf8")
    assert url.query["charset"] == "utf8mb4"
    assert normalize_url("mysql://u@h/w?charset=utf8mb4").query["charset"] == "utf8mb4"


# -- errors and secrets ---------------------------------------------------------------------------
def test_password_is_never_shown():
    url = normalize_url("postgresql://analyst:s3cr3t-pw@db.example:5432/wh")
    assert "s3cr3t-pw" not in mask_url(url) and "***" in mask_url(url)
    with pytest.raises(WarehouseUrlError) as caught:
        normalize_url("oracle://analyst:s3cr3t-pw@db.example/wh")
    assert "s3cr3t-pw" not in str(caught.value) and "oracle" in str(caught.value)
    with pytest.raises(WarehouseUrlError) as caught:
        normalize_url("not a url with s3cr3t-pw")
    assert "s3cr3t-pw" not in str(caught.value)
