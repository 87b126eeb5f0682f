"""Baseline: reservations, workers, daily status counts and warehouse state.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from warehouse.migrations.types import UTCDateTime

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("account_sid", sa.String(64)),
        sa.Column("workspace_sid", sa.String(64), nullable=False),
        sa.Column("worker_sid", sa.String(64), nullable=False),
        sa.Column("worker_name", sa.String(512)),
        sa.Column("task_sid", sa.String(64)),
        sa.Column("reservation_status", sa.String(32), nullable=False),
        sa.Column("status_rank", sa.SmallInteger, nullable=False),
        sa.Column("date_created", UTCDateTime, nullable=False),
        sa.Column("date_updated", UTCDateTime, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("links", sa.Text),
        sa.Column("first_loaded_at", UTCDateTime, nullable=False),
        sa.Column("last_changed_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("sid", name="pk_reservations"),
        **MYSQL,
    )
    op.create_index("ix_reservations_workspace_sid_date_created", "reservations",
                    ["workspace_sid", "date_created"])
    op.create_index("ix_reservations_worker_sid_date_created", "reservations",
                    ["worker_sid", "date_created"])
    op.create_index("ix_reservations_date_created", "reservations", ["date_created"])
    op.create_index("ix_reservations_last_changed_at", "reservations", ["last_changed_at"])

    op.create_table(
        "workers",
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("account_sid", sa.String(64)),
        sa.Column("workspace_sid", sa.String(64), nullable=False),
        sa.Column("friendly_name", sa.String(512)),
        sa.Column("activity_sid", sa.String(64)),
        sa.Column("activity_name", sa.String(255)),
        sa.Column("available", sa.Boolean),
        sa.Column("attributes", sa.Text),
        sa.Column("date_created", UTCDateTime),
        sa.Column("date_updated", UTCDateTime),
        sa.Column("date_status_changed", UTCDateTime),
        sa.Column("url", sa.Text),
        sa.Column("first_loaded_at", UTCDateTime, nullable=False),
        sa.Column("last_changed_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("sid", name="pk_workers"),
        **MYSQL,
    )
    op.create_index("ix_workers_workspace_sid", "workers", ["workspace_sid"])

    op.create_table(
        "reservation_daily_status_counts",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("workspace_sid", sa.String(64), nullable=False),
        sa.Column("worker_sid", sa.String(64), nullable=False),
        sa.Column("reservation_status", sa.String(32), nullable=False),
        sa.Column("reservation_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("day", "workspace_sid", "worker_sid", "reservation_status",
                                name="pk_reservation_daily_status_counts"),
        **MYSQL,
    )

    op.create_table(
        "warehouse_state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_warehouse_state"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("warehouse_state")
    op.drop_table("reservation_daily_status_counts")
    op.drop_index("ix_workers_workspace_sid", table_name="workers")
    op.drop_table("workers")
    for name in ("last_changed_at", "date_created", "worker_sid_date_created",
                 "workspace_sid_date_created"):
        op.drop_index(f"ix_reservations_{name}", table_name="reservations")
    op.drop_table("reservations")
