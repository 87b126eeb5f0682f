"""The Events feed: the four columns reservation events carry, the per-workspace cursor, the gaps.

``reservations`` gains ``task_queue_sid``, ``task_queue_name``, ``task_channel_unique_name`` and
``workflow_sid`` (nullable: lists do not carry them, and rows loaded before this revision have
none). ``event_cursors`` keeps, per workspace, how far TaskRouter's Events have been applied
(``events_through``, committed with the rows it produced), where the feed began
(``coverage_start``), when the last full list sweep began (``last_sweep_at``) and whether the
Events resource was refused. ``event_gaps`` records the stretches whose events expired (older
than TaskRouter's 30-day retention) before a sync read them.

The column types are written out here, not imported from ``warehouse.schema``: this revision
creates what it creates whatever later code says.

Downgrade drops all of the above (the event-only facts in those columns are lost).

Revision ID: 0005_events_feed
Revises: 0004_long_text
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005_events_feed"
down_revision = "0004_long_text"
branch_labels = None
depends_on = None

MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
MYSQL |= {k.replace("mysql_", "mariadb_"): v for k, v in list(MYSQL.items())}
# UTC instants: timestamptz on PostgreSQL, DATETIME(6) (never TIMESTAMP) on MySQL/MariaDB,
# naive UTC text on SQLite (what warehouse.schema.UTCDateTime binds, as of this revision)
UTC_TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
NEW_COLUMNS = [
    ("task_queue_sid", sa.String(64)),
    ("task_queue_name", sa.String(255)),
    ("task_channel_unique_name", sa.String(255)),
    ("workflow_sid", sa.String(64)),
]


def upgrade() -> None:
    for name, type_ in NEW_COLUMNS:  # nullable: an instant ADD COLUMN on every database
        op.add_column("reservations", sa.Column(name, type_, nullable=True))
    op.create_table(
        "event_cursors",
        sa.Column("workspace_sid", sa.String(64)),
        sa.Column("events_through", UTC_TIME),
        sa.Column("coverage_start", UTC_TIME),
        sa.Column("last_sweep_at", UTC_TIME),
        sa.Column("events_refused_at", UTC_TIME),
        sa.Column("events_refused_reason", sa.String(255)),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("workspace_sid", name="pk_event_cursors"),
        **MYSQL,
    )
    op.create_table(
        "event_gaps",
        sa.Column("workspace_sid", sa.String(64)),
        sa.Column("gap_start", UTC_TIME),
        sa.Column("gap_end", UTC_TIME, nullable=False),
        sa.Column("detected_at", UTC_TIME, nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("workspace_sid", "gap_start", name="pk_event_gaps"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("event_gaps")
    op.drop_table("event_cursors")
    # A plain DROP COLUMN everywhere (SQLite has it since 3.35): a batch table copy on SQLite
    # would break the reservation_times view of 0002, which names the table.
    for name, _ in reversed(NEW_COLUMNS):
        op.drop_column("reservations", name)
