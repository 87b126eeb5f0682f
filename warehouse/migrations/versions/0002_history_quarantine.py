"""Status history, upstream deletions, quarantine, analyst indexes and the reservation_times view.

Adds ``reservation_status_history`` (seeded with every reservation's current status, so history
starts complete), ``reservations.deleted_upstream_at``, ``rejected_records``, indexes for the
common analyst queries (by ``date_updated``; summary counts by workspace/worker and day; 0001
already indexes reservations by workspace/worker and ``date_created``), an index that finds a
worker's rows still live upstream without scanning its history, and the
``reservation_times`` view, whose dialect-specific expressions let analysts write the same SQL on
SQLite, PostgreSQL and MySQL/MariaDB.

Downgrade: ``python -m warehouse.migrate downgrade 0001_baseline`` drops all of the above
(history and quarantine rows are lost; reservations, workers and summaries are kept).

Revision ID: 0002_history_quarantine
Revises: 0001_baseline
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from warehouse.migrations.types import UTCDateTime

revision = "0002_history_quarantine"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

# Per dialect: (seconds from date_created to date_updated, hour of day of date_created in UTC).
# PostgreSQL converts explicitly (timestamptz renders in the session zone); MySQL/MariaDB store
# naive UTC, so HOUR() and TIMESTAMPDIFF never consult the session zone; SQLite stores UTC text.
_EXPRESSIONS = {
    "sqlite": (
        "CAST(ROUND((julianday(date_updated) - julianday(date_created)) * 86400) AS INTEGER)",
        "CAST(strftime('%H', date_created) AS INTEGER)",
    ),
    "postgresql": (
        "CAST(ROUND(EXTRACT(EPOCH FROM (date_updated - date_created))) AS BIGINT)",
        "CAST(EXTRACT(HOUR FROM (date_created AT TIME ZONE 'UTC')) AS INTEGER)",
    ),
    "mysql": (
        "TIMESTAMPDIFF(SECOND, date_created, date_updated)",
        "HOUR(date_created)",
    ),
}


def _expressions() -> tuple[str, str]:
    name = op.get_bind().dialect.name
    return _EXPRESSIONS["mysql" if name in ("mysql", "mariadb") else name]


def upgrade() -> None:
    seconds, hour = _expressions()

    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("deleted_upstream_at", UTCDateTime, nullable=True))
        batch.create_index("ix_reservations_date_updated", ["date_updated"])
        batch.create_index("ix_reservations_worker_sid_deleted_upstream_at",
                           ["worker_sid", "deleted_upstream_at"])

    op.create_index("ix_reservation_daily_status_counts_workspace_sid_day",
                    "reservation_daily_status_counts", ["workspace_sid", "day"])
    op.create_index("ix_reservation_daily_status_counts_worker_sid_day",
                    "reservation_daily_status_counts", ["worker_sid", "day"])

    op.create_table(
        "reservation_status_history",
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("reservation_status", sa.String(32), nullable=False),
        sa.Column("date_updated", UTCDateTime, nullable=False),
        sa.Column("previous_status", sa.String(32)),
        sa.Column("seconds_since_created", sa.BigInteger),
        sa.Column("observed_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("sid", "reservation_status", "date_updated",
                                name="pk_reservation_status_history"),
        **MYSQL,
    )
    op.create_index("ix_reservation_status_history_reservation_status_date_updated",
                    "reservation_status_history", ["reservation_status", "date_updated"])
    # History starts with what the warehouse already knows: each reservation's current status,
    # observed when the warehouse last changed the row.
    op.execute(
        "INSERT INTO reservation_status_history (sid, reservation_status, date_updated, "
        "previous_status, seconds_since_created, observed_at) "
        f"SELECT sid, reservation_status, date_updated, NULL, {seconds}, last_changed_at "
        "FROM reservations"
    )

    op.create_table(
        "rejected_records",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("sid", sa.String(64)),
        sa.Column("workspace_sid", sa.String(64)),
        sa.Column("worker_sid", sa.String(64)),
        sa.Column("raw", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"),
                  nullable=False),
        sa.Column("first_rejected_at", UTCDateTime, nullable=False),
        sa.Column("last_rejected_at", UTCDateTime, nullable=False),
        sa.Column("times_rejected", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_records"),
        sa.UniqueConstraint("fingerprint", name="uq_rejected_records_fingerprint"),
        **MYSQL,
    )
    op.create_index("ix_rejected_records_first_rejected_at", "rejected_records",
                    ["first_rejected_at"])

    # MySQL/MariaDB views run with their creator's rights unless told otherwise: use the reader's.
    mysql_family = op.get_bind().dialect.name in ("mysql", "mariadb")
    create = "CREATE SQL SECURITY INVOKER VIEW" if mysql_family else "CREATE VIEW"
    op.execute(
        f"{create} reservation_times AS SELECT sid, workspace_sid, worker_sid, "
        f"reservation_status, {hour} AS created_hour_utc, "
        f"{seconds} AS seconds_created_to_updated, "
        "CASE WHEN deleted_upstream_at IS NULL THEN 0 ELSE 1 END AS deleted_upstream "
        "FROM reservations"
    )


def downgrade() -> None:
    op.execute("DROP VIEW reservation_times")
    op.drop_index("ix_rejected_records_first_rejected_at", table_name="rejected_records")
    op.drop_table("rejected_records")
    op.drop_index("ix_reservation_status_history_reservation_status_date_updated",
                  table_name="reservation_status_history")
    op.drop_table("reservation_status_history")
    op.drop_index("ix_reservation_daily_status_counts_worker_sid_day",
                  table_name="reservation_daily_status_counts")
    op.drop_index("ix_reservation_daily_status_counts_workspace_sid_day",
                  table_name="reservation_daily_status_counts")
    with op.batch_alter_table("reservations") as batch:
        batch.drop_index("ix_reservations_worker_sid_deleted_upstream_at")
        batch.drop_index("ix_reservations_date_updated")
        batch.drop_column("deleted_upstream_at")
