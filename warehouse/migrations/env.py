"""Alembic environment: runs on the connection handed over by ``warehouse.migrate``."""

from __future__ import annotations

from alembic import context

from warehouse.schema import metadata

VERSION_TABLE = "warehouse_alembic_version"

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through warehouse.migrate (python -m warehouse.migrate)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
