"""The warehouse tables (SQLAlchemy Core). Names and listed columns are a contract (docs/data-dictionary.md).

Time is UTC everywhere. ``UTCDateTime`` stores it as ``timestamptz`` on PostgreSQL, as naive UTC
``DATETIME(6)`` on MySQL/MariaDB (never ``TIMESTAMP``, which converts with the session zone) and
as naive UTC text on SQLite (where offsets would be silently dropped), and always reads back
timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

from warehouse.dialects import for_dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)
MYSQL_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
# the same options for SQLAlchemy's "mariadb" dialect, which ignores the mysql_* ones
MYSQL_TABLE_ARGS |= {k.replace("mysql_", "mariadb_"): v for k, v in list(MYSQL_TABLE_ARGS.items())}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC in Python; the storage each dialect handles correctly (see module docstring)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        return dialect.type_descriptor(for_dialect(dialect).datetime_type())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else for_dialect(dialect).bind_time(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime | str) -> datetime:
    """A driver's timestamp (text on SQLite, naive UTC on MySQL, aware on PostgreSQL) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sid(name: str, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.String(64), **kw)


def long_text() -> sa.types.TypeEngine[str]:
    """Unbounded text: ``TEXT`` on SQLite and PostgreSQL, ``LONGTEXT`` on MySQL/MariaDB, whose
    ``TEXT`` holds at most 65,535 bytes (a longer value fails its whole batch in strict mode).
    For API-supplied text with no documented bound (0004)."""
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


reservations = sa.Table(
    "reservations",
    metadata,
    _sid("sid", primary_key=True),
    _sid("account_sid"),
    _sid("workspace_sid", nullable=False),
    _sid("worker_sid", nullable=False),
    sa.Column("worker_name", sa.String(512)),
    _sid("task_sid"),
    sa.Column("reservation_status", sa.String(32), nullable=False),
    sa.Column("status_rank", sa.SmallInteger, nullable=False),
    sa.Column("date_created", UTCDateTime, nullable=False),
    sa.Column("date_updated", UTCDateTime, nullable=False),
    sa.Column("url", long_text()),  # 0004: LONGTEXT on MySQL/MariaDB
    sa.Column("links", long_text()),
    sa.Column("first_loaded_at", UTCDateTime, nullable=False),
    sa.Column("last_changed_at", UTCDateTime, nullable=False),
    # 0002: set when a complete read of the worker no longer returns the sid (warehouse.deletions)
    sa.Column("deleted_upstream_at", UTCDateTime, nullable=True),
    # 0005: what reservation events carry and lists do not (NULL until an event brings them)
    _sid("task_queue_sid"),
    sa.Column("task_queue_name", sa.String(255)),
    sa.Column("task_channel_unique_name", sa.String(255)),
    _sid("workflow_sid"),
    # 0003: one index per query that needs it (each costs every written row its upkeep)
    sa.Index("ix_reservations_worker_versions", "worker_sid", "date_created", "sid",
             "date_updated", "reservation_status", "deleted_upstream_at"),  # warehouse.screen
    sa.Index("ix_reservations_summary", "date_created", "workspace_sid", "worker_sid",
             "reservation_status"),  # a summary day, grouped from the index alone
    sa.Index(None, "last_changed_at", "date_created"),  # the days changed since the watermark
    **MYSQL_TABLE_ARGS,
)

workers = sa.Table(
    "workers",
    metadata,
    _sid("sid", primary_key=True),
    _sid("account_sid"),
    _sid("workspace_sid", nullable=False),
    sa.Column("friendly_name", sa.String(512)),
    _sid("activity_sid"),
    sa.Column("activity_name", sa.String(255)),
    sa.Column("available", sa.Boolean),
    sa.Column("attributes", long_text()),  # 0004: LONGTEXT on MySQL/MariaDB
    sa.Column("date_created", UTCDateTime),
    sa.Column("date_updated", UTCDateTime),
    sa.Column("date_status_changed", UTCDateTime),
    sa.Column("url", long_text()),
    sa.Column("first_loaded_at", UTCDateTime, nullable=False),
    sa.Column("last_changed_at", UTCDateTime, nullable=False),
    sa.Index(None, "workspace_sid"),
    **MYSQL_TABLE_ARGS,
)

reservation_daily_status_counts = sa.Table(
    "reservation_daily_status_counts",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    _sid("workspace_sid", primary_key=True),
    _sid("worker_sid", primary_key=True),
    sa.Column("reservation_status", sa.String(32), primary_key=True),
    sa.Column("reservation_count", sa.Integer, nullable=False),
    sa.Index(None, "workspace_sid", "day"),  # 0002
    sa.Index(None, "worker_sid", "day"),  # 0002
    **MYSQL_TABLE_ARGS,
)

warehouse_state = sa.Table(
    "warehouse_state",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    **MYSQL_TABLE_ARGS,
)

# 0002: every status a sync inserted or changed a reservation to (warehouse.history)
reservation_status_history = sa.Table(
    "reservation_status_history",
    metadata,
    _sid("sid", primary_key=True),
    sa.Column("reservation_status", sa.String(32), primary_key=True),
    sa.Column("date_updated", UTCDateTime, primary_key=True),
    sa.Column("previous_status", sa.String(32)),
    sa.Column("seconds_since_created", sa.BigInteger),
    sa.Column("observed_at", UTCDateTime, nullable=False),
    sa.Index(None, "reservation_status", "date_updated"),
    **MYSQL_TABLE_ARGS,
)

# 0002: records a sync could not load, once per distinct record (warehouse.quarantine)
rejected_records = sa.Table(
    "rejected_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("entity", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(255), nullable=False),
    _sid("sid"),
    _sid("workspace_sid"),
    _sid("worker_sid"),
    sa.Column("raw", long_text(), nullable=False),
    sa.Column("first_rejected_at", UTCDateTime, nullable=False),
    sa.Column("last_rejected_at", UTCDateTime, nullable=False),
    sa.Column("times_rejected", sa.Integer, nullable=False),
    sa.UniqueConstraint("fingerprint"),
    sa.Index(None, "first_rejected_at"),
    **MYSQL_TABLE_ARGS,
)

# 0005: per workspace, how far TaskRouter's Events feed has been applied (warehouse.feed)
event_cursors = sa.Table(
    "event_cursors",
    metadata,
    _sid("workspace_sid", primary_key=True),
    # every event up to here (TaskRouter's clock) is applied, committed with what it changed
    sa.Column("events_through", UTCDateTime),
    sa.Column("coverage_start", UTCDateTime),  # where the feed began: older days are not covered
    sa.Column("last_sweep_at", UTCDateTime),  # TaskRouter's time when the last full list read began
    sa.Column("events_refused_at", UTCDateTime),  # the Events resource answered 403/404
    sa.Column("events_refused_reason", sa.String(255)),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    **MYSQL_TABLE_ARGS,
)

# 0005: stretches of TaskRouter time whose events were never read (older than the retention)
event_gaps = sa.Table(
    "event_gaps",
    metadata,
    _sid("workspace_sid", primary_key=True),
    sa.Column("gap_start", UTCDateTime, primary_key=True),
    sa.Column("gap_end", UTCDateTime, nullable=False),
    sa.Column("detected_at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.String(255), nullable=False),
    **MYSQL_TABLE_ARGS,
)

# What a reservation event carries that a list record does not, and the other way round.
EVENT_ONLY_COLUMNS = ("task_queue_sid", "task_queue_name", "task_channel_unique_name",
                      "workflow_sid")
LIST_ONLY_COLUMNS = ("url", "links")
# Columns the upsert of list records writes (deleted_upstream_at belongs to warehouse.deletions);
# leaving the event-only columns out keeps what events stored when a list version updates a row.
RESERVATION_COLUMNS = [c.name for c in reservations.columns
                       if c.name != "deleted_upstream_at" and c.name not in EVENT_ONLY_COLUMNS]
# Columns the upsert of event versions writes: everything but url and links, which only lists
# carry (an event version leaves them as a list read stored them, or NULL).
EVENT_RESERVATION_COLUMNS = [c.name for c in reservations.columns
                             if c.name != "deleted_upstream_at" and c.name not in LIST_ONLY_COLUMNS]
WORKER_COLUMNS = [c.name for c in workers.columns]

