"""MySQL/MariaDB: ``LONGTEXT`` for the API-supplied text columns whose size TaskRouter does not bound.

``reservations.url``, ``reservations.links``, ``workers.attributes`` and ``workers.url`` were
``TEXT``, which MySQL/MariaDB cap at 65,535 bytes: one reservation with a longer ``links`` (or a
worker with longer attributes) failed its whole batch with ``Data too long`` (1406), and every
later sync failed on the same record, while SQLite and PostgreSQL stored it. They become
``LONGTEXT`` like ``rejected_records.raw``. SQLite and PostgreSQL already store unbounded
``TEXT``: there this revision does nothing.

Downgrade: back to ``TEXT``; refused with a clear error (nothing changed) while a stored value
is longer than ``TEXT`` holds, since MySQL would otherwise refuse or cut it.

Revision ID: 0004_long_text
Revises: 0003_lean_indexes
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004_long_text"
down_revision = "0003_lean_indexes"
branch_labels = None
depends_on = None

# table -> its columns that become LONGTEXT (all nullable); the charset and collation are the
# table's (utf8mb4, utf8mb4_bin), which MODIFY without a CHARACTER SET clause keeps
COLUMNS = {"reservations": ["url", "links"], "workers": ["attributes", "url"]}
TEXT_MAX_BYTES = 65_535


def _mysql_family() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def _modify(table: str, columns: list[str], type_sql: str) -> None:
    # one ALTER per table: MySQL/MariaDB copy the table once, not once per column
    clauses = ", ".join(f"MODIFY `{column}` {type_sql} NULL" for column in columns)
    op.execute(f"ALTER TABLE `{table}` {clauses}")


def upgrade() -> None:
    if not _mysql_family():
        return
    for table, columns in COLUMNS.items():
        _modify(table, columns, "LONGTEXT")


def downgrade() -> None:
    if not _mysql_family():
        return
    bind = op.get_bind()
    for table, columns in COLUMNS.items():
        too_long = " OR ".join(f"LENGTH(`{column}`) > {TEXT_MAX_BYTES}" for column in columns)
        count = bind.exec_driver_sql(f"SELECT COUNT(*) FROM `{table}` WHERE {too_long}").scalar()
        if count:
            raise RuntimeError(
                f"cannot downgrade below 0004_long_text: {count} row(s) of {table} hold a "
                f"{'/'.join(columns)} value longer than TEXT's {TEXT_MAX_BYTES} bytes on "
                "MySQL/MariaDB; delete or shorten them first"
            )
    for table, columns in COLUMNS.items():
        _modify(table, columns, "TEXT")
