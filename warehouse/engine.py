"""Turning ``WAREHOUSE_URL`` into an engine: driver choice, SQLite paths, safe display."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WAREHOUSE_URL = "sqlite:///data/warehouse.db"

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


class WarehouseUrlError(ValueError):
    """A ``WAREHOUSE_URL`` we cannot use; the message shows it with the password masked."""


def normalize_url(raw: str | URL | None, root: Path = PROJECT_ROOT) -> URL:
    """Pick the shipped driver for bare dialects and resolve relative SQLite paths against ``root``."""
    text = raw if isinstance(raw, URL) else (raw or "").strip() or DEFAULT_WAREHOUSE_URL
    try:
        url = make_url(text)
    except Exception:  # noqa: BLE001 - the raw text may hold a password: never echo it
        raise WarehouseUrlError(
            "WAREHOUSE_URL is not a SQLAlchemy URL (expected e.g. sqlite:///data/warehouse.db, "
            "postgresql://user@host/db or mysql://user@host/db)"
        ) from None
    backend = url.get_backend_name()
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    if backend == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            if not path.is_absolute():
                path = root / path
            path.parent.mkdir(parents=True, exist_ok=True)
            url = url.set(database=str(path))
    elif backend in ("mysql", "mariadb"):
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
    elif backend != "postgresql":
        raise WarehouseUrlError(
            f"Unsupported warehouse database {backend!r} in WAREHOUSE_URL "
            f"({mask_url(url)}); use SQLite, PostgreSQL or MySQL/MariaDB"
        )
    return url


def mask_url(url: str | URL) -> str:
    """The URL for logs and metadata: the password is never shown."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except Exception:  # noqa: BLE001
        return "<unparseable URL>"
    return parsed.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def create_warehouse_engine(raw: str | URL | None = None, **kwargs: object) -> Engine:
    """An engine for the warehouse; SQLite gets WAL and a generous busy timeout."""
    url = normalize_url(raw if raw is not None else os.environ.get("WAREHOUSE_URL"))
    backend = url.get_backend_name()
    options: dict[str, object] = {"pool_pre_ping": True}
    if backend == "sqlite":
        options["connect_args"] = {"timeout": 60}
    if backend in ("mysql", "mariadb"):
        options["pool_recycle"] = 3600
    options.update(kwargs)
    engine = sa.create_engine(url, **options)
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def describe(engine: Engine) -> str:
    return mask_url(engine.url)
