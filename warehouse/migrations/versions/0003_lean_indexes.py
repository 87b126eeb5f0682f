"""Fewer, better indexes on ``reservations``: every index is paid for on every row a sync writes.

Measured on a 100k-reservation full load into SQLite (``benchmarks/run.py``), the seven
indexes of 0002 cost more than the rows themselves. This revision keeps the ones a query uses:

- ``ix_reservations_worker_versions`` (worker_sid, date_created, sid, date_updated,
  reservation_status, deleted_upstream_at) replaces (worker_sid, date_created) and
  (worker_sid, deleted_upstream_at). Analysts' per-worker, per-day queries use its first two
  columns as before; each sync reads every batch's stored versions by worker from it alone,
  without touching the wide table rows (``warehouse.screen``), and finds deletions from the
  same read.
- ``ix_reservations_summary`` (date_created, workspace_sid, worker_sid, reservation_status)
  replaces (date_created): a summary refresh groups a day's rows from the index alone.
- (last_changed_at, date_created) replaces (last_changed_at): the days a refresh must redo come
  from the index alone.
- (workspace_sid, date_created) goes: a handful of workspaces per account, so the summary
  index's ``date_created`` narrows as well.
- (date_updated) goes: no sync query uses it; ``last_changed_at`` answers "what changed".

Downgrade restores the 0002 indexes.

Revision ID: 0003_lean_indexes
Revises: 0002_history_quarantine
Create Date: 2026-11-28
"""

from alembic import op

revision = "0003_lean_indexes"
down_revision = "0002_history_quarantine"
branch_labels = None
depends_on = None

WORKER_VERSIONS = ["worker_sid", "date_created", "sid", "date_updated", "reservation_status",
                   "deleted_upstream_at"]


SUMMARY = ["date_created", "workspace_sid", "worker_sid", "reservation_status"]


def upgrade() -> None:
    op.create_index("ix_reservations_worker_versions", "reservations", WORKER_VERSIONS)
    op.create_index("ix_reservations_summary", "reservations", SUMMARY)
    op.create_index("ix_reservations_last_changed_at_date_created", "reservations",
                    ["last_changed_at", "date_created"])
    op.drop_index("ix_reservations_date_created", table_name="reservations")
    op.drop_index("ix_reservations_last_changed_at", table_name="reservations")
    op.drop_index("ix_reservations_worker_sid_date_created", table_name="reservations")
    op.drop_index("ix_reservations_worker_sid_deleted_upstream_at", table_name="reservations")
    op.drop_index("ix_reservations_workspace_sid_date_created", table_name="reservations")
    op.drop_index("ix_reservations_date_updated", table_name="reservations")


def downgrade() -> None:
    op.create_index("ix_reservations_last_changed_at", "reservations", ["last_changed_at"])
    op.create_index("ix_reservations_date_created", "reservations", ["date_created"])
    op.create_index("ix_reservations_date_updated", "reservations", ["date_updated"])
    op.create_index("ix_reservations_workspace_sid_date_created", "reservations",
                    ["workspace_sid", "date_created"])
    op.create_index("ix_reservations_worker_sid_deleted_upstream_at", "reservations",
                    ["worker_sid", "deleted_upstream_at"])
    op.create_index("ix_reservations_worker_sid_date_created", "reservations",
                    ["worker_sid", "date_created"])
    op.drop_index("ix_reservations_worker_versions", table_name="reservations")
    op.drop_index("ix_reservations_summary", table_name="reservations")
    op.drop_index("ix_reservations_last_changed_at_date_created", table_name="reservations")
