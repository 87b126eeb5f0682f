"""The data dictionary: what each warehouse table and column means, in one place.

The Dagster catalog (column descriptions of each asset's ``dagster/column_schema``) and the docs'
data dictionary both read it, so they cannot drift apart. A column added to ``warehouse.schema``
needs its line here: ``tests/pipelines/test_catalog_metadata.py`` fails naming any column without one.
"""

from __future__ import annotations

import sqlalchemy as sa

TABLES: dict[str, str] = {
    "reservations": "One row per reservation ever seen (primary key sid); nothing is ever deleted.",
    "workers": "One row per worker of the configured workspaces (primary key sid).",
    "reservation_daily_status_counts": (
        "Reservations per day of date_created in REPORTING_TIMEZONE, workspace, worker and current "
        "status: exactly GROUP BY day, workspace_sid, worker_sid, reservation_status over "
        "reservations (rows deleted upstream included, no zero counts)."),
    "reservation_status_history": "Every status a sync saw a reservation in.",
    "rejected_records": "Records a sync could not load, once per distinct record (the quarantine).",
    "warehouse_state": "Bookkeeping facts the syncs keep between runs (watermarks, locks).",
    "event_cursors": ("Per workspace, how far TaskRouter's Events are applied and when its worker "
                      "lists were last read whole (TaskRouter's clock)."),
    "event_gaps": "Stretches of TaskRouter time whose events expired before a sync read them.",
}

_SYNC_STAMPS = {
    "first_loaded_at": "When a sync inserted the row (UTC).",
    "last_changed_at": "When a sync last changed the row's data (UTC); drives summary refreshes.",
}

COLUMNS: dict[str, dict[str, str]] = {
    "reservations": {
        "sid": "Reservation SID (WR...), the primary key.",
        "account_sid": "Owning account SID (AC...).",
        "workspace_sid": "Owning workspace SID (WS...).",
        "worker_sid": "Worker SID (WK...) the reservation offered the task to.",
        "worker_name": "The worker's friendly name as TaskRouter reported it on this reservation.",
        "task_sid": "The task SID (WT...).",
        "reservation_status": (
            "Latest status the warehouse saw: pending, accepted, wrapping, completed, rejected, "
            "timeout, canceled, rescinded, or a value TaskRouter adds later (loaded as is)."),
        "status_rank": ("Lifecycle rank that breaks date_updated ties: 0 pending, 1 accepted, "
                        "2 wrapping, 3 any terminal or unknown status."),
        "date_created": "TaskRouter's creation time (UTC); its day in REPORTING_TIMEZONE is the summary day.",
        "date_updated": "TaskRouter's last-update time (UTC); upserts keep the newest version.",
        "url": ("TaskRouter's resource URL; NULL while no list read has shown the reservation "
                "(known only from events: created and deleted between two list sweeps)."),
        "links": "TaskRouter's links object as compact JSON with sorted keys; NULL like url.",
        **_SYNC_STAMPS,
        "deleted_upstream_at": ("When a sync first found the reservation gone from TaskRouter (UTC); "
                                "NULL while TaskRouter still returns it."),
        "task_queue_sid": "The task's queue SID (WQ...), from the reservation's events.",
        "task_queue_name": "The task's queue name, from the reservation's events.",
        "task_channel_unique_name": "The task's channel (voice, chat, sms, ...), from its events.",
        "workflow_sid": "The workflow (WW...) that routed the task, from its events.",
    },
    "workers": {
        "sid": "Worker SID (WK...), the primary key.",
        "account_sid": "Account SID (AC...).",
        "workspace_sid": "Workspace SID (WS...).",
        "friendly_name": "The worker's name.",
        "activity_sid": "Current activity SID (WA...).",
        "activity_name": "Current activity, e.g. Available or Offline.",
        "available": "Whether the current activity takes work.",
        "attributes": "The worker's attributes, verbatim JSON text.",
        "date_created": "TaskRouter's creation time (UTC).",
        "date_updated": "TaskRouter's last-update time (UTC).",
        "date_status_changed": "When the worker's activity last changed (UTC).",
        "url": "TaskRouter's resource URL.",
        **_SYNC_STAMPS,
    },
    "reservation_daily_status_counts": {
        "day": "Calendar day of date_created in REPORTING_TIMEZONE.",
        "workspace_sid": "Workspace SID (WS...).",
        "worker_sid": "Worker SID (WK...).",
        "reservation_status": "Current status of the reservations counted.",
        "reservation_count": "Reservations created that day with that current status (never 0).",
    },
    "reservation_status_history": {
        "sid": "The reservation (joins reservations.sid).",
        "reservation_status": "The status it had.",
        "date_updated": ("When it entered this status (UTC): the event's date, or the date_updated "
                         "of the list version that showed it."),
        "previous_status": ("The status before (the previous event's, or the one the warehouse "
                            "held); NULL for the first observation."),
        "seconds_since_created": "date_updated - date_created, in seconds.",
        "observed_at": "When the sync wrote the row (UTC).",
    },
    "rejected_records": {
        "id": "Surrogate key.",
        "fingerprint": "SHA-256 of the entity and the canonical JSON: one row per distinct bad record.",
        "entity": "reservation, worker or event.",
        "reason": "Why it could not be loaded, e.g. missing sid.",
        "sid": "The record's sid, when it is a usable string.",
        "workspace_sid": "The record's workspace_sid, when it is a usable string.",
        "worker_sid": "The record's worker_sid, when it is a usable string.",
        "raw": "The record as TaskRouter sent it, as JSON with sorted keys.",
        "first_rejected_at": "The first sync that received it (UTC).",
        "last_rejected_at": "The latest sync that received it (UTC).",
        "times_rejected": "How many syncs received it.",
    },
    "warehouse_state": {
        "key": "The fact's name, e.g. summary_refreshed_through.",
        "value": "Its value (text).",
        "updated_at": "When it was last written (UTC).",
    },
    "event_cursors": {
        "workspace_sid": "The workspace (WS...), the primary key.",
        "events_through": ("Every event up to here is applied (TaskRouter's clock); moves in the "
                           "transaction that applied them."),
        "coverage_start": "Where the events feed began; earlier days are not reconciled.",
        "last_sweep_at": "When the last complete read of every worker's list began.",
        "events_refused_at": "When TaskRouter last refused the Events resource (403/404); NULL while it answers.",
        "events_refused_reason": "That refusal, e.g. HTTP 403.",
        "updated_at": "When a sync last wrote the row (UTC).",
    },
    "event_gaps": {
        "workspace_sid": "The workspace (WS...).",
        "gap_start": "Start of the stretch whose events were never read (UTC).",
        "gap_end": "Its end: where the events TaskRouter still kept began (UTC).",
        "detected_at": "When a sync found it (UTC).",
        "reason": "Why, in a sentence.",
    },
}


def describe(table: str, column: str) -> str:
    """The column's description, or "" when the dictionary has none."""
    return COLUMNS.get(table, {}).get(column, "")


def undescribed(table: sa.Table) -> list[str]:
    """Columns of ``table`` the dictionary does not describe (should be none)."""
    return [c.name for c in table.columns if not describe(table.name, c.name)]


def markdown(table: sa.Table, dialect: sa.Dialect | None = None) -> str:
    """The table's columns as a markdown table (name, type, nullable, meaning), for the docs."""
    compile_for = dialect or sa.dialects.sqlite.dialect()
    lines = ["| column | type | nullable | meaning |", "|---|---|---|---|"]
    for column in table.columns:
        kind = str(column.type.compile(dialect=compile_for)).lower()
        lines.append(f"| `{column.name}` | {kind} | {'yes' if column.nullable else 'no'} | "
                     f"{describe(table.name, column.name)} |")
    return "\n".join(lines)
