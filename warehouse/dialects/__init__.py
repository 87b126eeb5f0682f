"""One module per database: what differs between SQLite, PostgreSQL and MySQL/MariaDB.

Shared warehouse code asks ``for_connection(conn)`` (or ``for_dialect``) for a
``WarehouseDialect`` and calls its hooks: the writer ``lock``, ``conditional_upsert`` and
``insert_if_absent`` statements, time binding (``bind_times``), ``in_list_sql``, the bulk
``write_rows`` path, and the ``defers_indexes`` / ``single_writer`` answers. This package is
the only code (with ``warehouse.migrations``) that looks at the database's name; MariaDB
runs as MySQL. The contract of each hook: ``base.WarehouseDialect``, tested on all three
databases by ``tests/warehouse/test_dialect_contract.py``.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.engine import Connection, Dialect

from warehouse.dialects.base import BulkWrite, WarehouseDialect
from warehouse.dialects.mysql import MySQLDialect
from warehouse.dialects.postgresql import PostgreSQLDialect
from warehouse.dialects.sqlite import SQLiteDialect

__all__ = ["BulkWrite", "WarehouseDialect", "for_backend", "for_connection", "for_dialect"]

_BY_NAME: dict[str, type[WarehouseDialect]] = {
    "sqlite": SQLiteDialect,
    "postgresql": PostgreSQLDialect,
    "mysql": MySQLDialect,
    "mariadb": MySQLDialect,
}


def for_backend(name: str) -> type[WarehouseDialect] | None:
    """The class for a URL's backend name (``sqlite``, ``postgresql``, ``mysql``, ``mariadb``),
    None when the warehouse does not support that database."""
    return _BY_NAME.get(name)


@lru_cache(maxsize=64)
def for_dialect(dialect: Dialect) -> WarehouseDialect:
    """The warehouse dialect of a SQLAlchemy dialect (one instance per engine's dialect)."""
    cls = _BY_NAME.get(dialect.name)
    if cls is None:
        raise NotImplementedError(f"the warehouse does not support the {dialect.name} dialect")
    return cls(dialect)


def for_connection(conn: Connection) -> WarehouseDialect:
    """The warehouse dialect of ``conn``."""
    return for_dialect(conn.dialect)
