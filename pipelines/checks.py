"""Asset checks: Dagster glue over the counting queries in ``warehouse.quality``.

Only sid uniqueness and not-null keys are blocking (ERROR): a table with broken keys must not
feed anything downstream. Everything else warns, so dirty upstream data never stops a sync.

Scope: inside ``taskrouter_sync`` the checks look only at the rows that run changed
(``last_changed_at`` at or after the run's start, cheap); in a backfill of summary partitions
the summary check compares the days of its range; in any other run (the daily
``taskrouter_daily_checks`` job, or "Execute check" in the UI) they scan the whole table.
"""

# no ``from __future__ import annotations``: Dagster inspects the ``context`` annotation of
# check functions at definition time and rejects it as a string.
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from pipelines.resources import WarehouseResource
from pipelines.settings import Settings
from warehouse import quality
from warehouse.lifecycle import KNOWN_STATUSES
from warehouse.schema import reservations as reservations_table
from warehouse.schema import workers as workers_table

SYNC_JOB = "taskrouter_sync"  # the job whose checks only look at what it changed
RESERVATIONS = dg.AssetKey("reservations")
WORKERS = dg.AssetKey("workers")
SUMMARY = dg.AssetKey("reservation_daily_status_counts")
FRESHNESS_CHECK = dg.AssetCheckKey(RESERVATIONS, "last_sync_is_recent")
MAX_LISTED = 50  # mismatching days / unknown statuses listed in metadata
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
PARTITION = "dagster/partition"


def check_scope(context: dg.AssetCheckExecutionContext) -> datetime | None:
    """The sync run's start (check only rows changed since), or None (check everything)."""
    if context.run.job_name != SYNC_JOB:
        return None
    record = context.instance.get_run_record_by_id(context.run.run_id)
    started = record.start_time if record is not None else None
    return datetime.fromtimestamp(started, UTC) if started else None


def partition_days(context: dg.AssetCheckExecutionContext) -> list[date] | None:
    """The days a partitioned run targets (a backfill's range, or one partition), from the
    tags Dagster puts on such runs; None when the run is not partitioned."""
    tags = context.run.tags
    if RANGE_START in tags and RANGE_END in tags:
        first, last = date.fromisoformat(tags[RANGE_START]), date.fromisoformat(tags[RANGE_END])
    elif PARTITION in tags:
        first = last = date.fromisoformat(tags[PARTITION])
    else:
        return None
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def scope_metadata(since: datetime | None) -> dict[str, Any]:
    if since is None:
        return {"scope": "whole table"}
    return {"scope": "rows changed by this sync", "changed_since": since.isoformat()}


def _key_checks(asset: dg.AssetKey, table: sa.Table) -> list[dg.AssetChecksDefinition]:
    required = quality.REQUIRED_COLUMNS[table.name]

    @dg.asset_check(
        asset=asset,
        name="sids_unique",
        blocking=True,
        description=f"No two rows of `{table.name}` share a sid (the primary key). Blocking.",
    )
    def sids_unique(context: dg.AssetCheckExecutionContext,
                    warehouse: WarehouseResource) -> dg.AssetCheckResult:
        since = check_scope(context)
        with warehouse.engine() as engine, engine.connect() as conn:
            duplicated = quality.duplicate_sids(conn, table, since)
            examined = quality.rows_examined(conn, table, since)
        return dg.AssetCheckResult(
            passed=duplicated == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if duplicated == 0 else f"{duplicated} sid(s) appear more than once",
            metadata={"duplicated_sids": duplicated, "rows_examined": examined,
                      **scope_metadata(since)},
        )

    @dg.asset_check(
        asset=asset,
        name="required_columns_not_null",
        blocking=True,
        description=f"No NULL in `{table.name}`'s required columns ({', '.join(required)}). Blocking.",
    )
    def required_not_null(context: dg.AssetCheckExecutionContext,
                          warehouse: WarehouseResource) -> dg.AssetCheckResult:
        since = check_scope(context)
        with warehouse.engine() as engine, engine.connect() as conn:
            nulls = quality.null_counts(conn, table, required, since)
            examined = quality.rows_examined(conn, table, since)
        bad = {column: n for column, n in nulls.items() if n}
        return dg.AssetCheckResult(
            passed=not bad,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if not bad else "NULLs in " + ", ".join(f"{c} ({n})" for c, n in bad.items()),
            metadata={"null_rows": sum(bad.values()), "rows_examined": examined,
                      "nulls_by_column": dg.MetadataValue.json(nulls), **scope_metadata(since)},
        )

    return [sids_unique, required_not_null]


def build_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    """Every asset check; ``settings`` supplies the freshness age and the reporting zone."""

    @dg.asset_check(
        asset=RESERVATIONS,
        name="date_updated_not_before_created",
        description="date_updated >= date_created on every reservation (warns).",
    )
    def dates_ordered(context: dg.AssetCheckExecutionContext,
                      warehouse: WarehouseResource) -> dg.AssetCheckResult:
        since = check_scope(context)
        with warehouse.engine() as engine, engine.connect() as conn:
            bad = quality.dates_out_of_order(conn, since)
            examined = quality.rows_examined(conn, reservations_table, since)
        return dg.AssetCheckResult(
            passed=bad == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if bad == 0 else f"{bad} reservation(s) updated before created",
            metadata={"rows_out_of_order": bad, "rows_examined": examined, **scope_metadata(since)},
        )

    @dg.asset_check(
        asset=RESERVATIONS,
        name="statuses_known",
        description=(
            "reservation_status is one of the eight known values (" + ", ".join(KNOWN_STATUSES)
            + "). Warns with the unknown values and their counts: TaskRouter may add statuses, "
            "and they are loaded, never rejected."
        ),
    )
    def statuses_known(context: dg.AssetCheckExecutionContext,
                       warehouse: WarehouseResource) -> dg.AssetCheckResult:
        since = check_scope(context)
        with warehouse.engine() as engine, engine.connect() as conn:
            unknown = quality.unknown_statuses(conn, since)
            examined = quality.rows_examined(conn, reservations_table, since)
        shown = dict(sorted(unknown.items(), key=lambda kv: -kv[1])[:MAX_LISTED])
        return dg.AssetCheckResult(
            passed=not unknown,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if not unknown else "unknown statuses: " + ", ".join(
                f"{s} ({n})" for s, n in shown.items()),
            metadata={"unknown_status_rows": sum(unknown.values()),
                      "unknown_status_values": len(unknown),
                      "unknown_statuses": dg.MetadataValue.json(shown),
                      "rows_examined": examined, **scope_metadata(since)},
        )

    @dg.asset_check(
        asset=SUMMARY,
        name="day_totals_match_reservations",
        additional_deps=[RESERVATIONS],  # in the sync, run after reservations refreshed the days
        description=(
            "Each summary day's total equals the reservations created that day in "
            "REPORTING_TIMEZONE (warns). The sync compares the days it touched, a backfill the "
            "days of its range, the daily job every day."
        ),
    )
    def day_totals_match(context: dg.AssetCheckExecutionContext,
                         warehouse: WarehouseResource) -> dg.AssetCheckResult:
        since = check_scope(context)
        days = partition_days(context)
        with warehouse.engine() as engine, engine.connect() as conn:
            compared, mismatches = quality.summary_mismatches(
                conn, warehouse.reporting_timezone, since, days
            )
        scope = scope_metadata(since)
        if days is not None:
            scope = {"scope": "days of this run's partitions",
                     "first_day": str(days[0]), "last_day": str(days[-1])}
        listed = [
            {"day": m.day.isoformat(), "summary_total": m.summary_total,
             "reservations_created": m.reservations_created}
            for m in mismatches[:MAX_LISTED]
        ]
        return dg.AssetCheckResult(
            passed=not mismatches,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if not mismatches else (
                f"{len(mismatches)} day(s) disagree; backfill those partitions to repair them"),
            metadata={"days_compared": compared, "days_mismatched": len(mismatches),
                      "mismatched_days": dg.MetadataValue.json(listed),
                      "reporting_timezone": warehouse.reporting_timezone, **scope},
        )

    max_age = float(settings.freshness_minutes)

    @dg.asset_check(
        asset=RESERVATIONS,
        name=FRESHNESS_CHECK.name,
        description=(
            f"The last successful sync (materialization of `reservations`) is at most "
            f"{max_age:g} minutes old (FRESHNESS_MAX_AGE_MINUTES; warns)."
        ),
    )
    def last_sync_is_recent(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        event = context.instance.get_latest_materialization_event(RESERVATIONS)
        meta: dict[str, Any] = {"max_age_minutes": max_age}
        if event is None:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN,
                description="reservations has never been synced on this instance", metadata=meta,
            )
        age = (datetime.now(UTC).timestamp() - event.timestamp) / 60.0
        meta.update({"age_minutes": round(age, 2),
                     "last_sync_at": dg.MetadataValue.timestamp(event.timestamp),
                     "last_sync_run_id": event.run_id or ""})
        return dg.AssetCheckResult(
            passed=age <= max_age,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if age <= max_age else (
                f"last successful sync was {age:.1f} minutes ago (limit {max_age:g})"),
            metadata=meta,
        )

    return [
        *_key_checks(WORKERS, workers_table),
        *_key_checks(RESERVATIONS, reservations_table),
        dates_ordered,
        statuses_known,
        day_totals_match,
        last_sync_is_recent,
    ]
