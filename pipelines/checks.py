"""Asset checks: Dagster glue over the counting queries in ``warehouse.quality``.

Only sid uniqueness and not-null keys are blocking (ERROR): a table with broken keys must not
feed anything downstream. Everything else warns, so dirty upstream data never stops a sync.

Every check exists twice, under two names, so that neither result can mask the other:
- ``<name>`` looks at the whole table. The daily ``taskrouter_daily_checks`` job runs these (and
  a backfill runs the summary's); a sync never does, so a failure found there stays the latest
  result until a whole-table run finds the defect gone.
- ``<name>_this_run`` looks at what a run wrote: inside ``taskrouter_sync``, the rows changed
  since the run started (and the summary days they fall on); in a backfill, the days of its
  range; run on its own (e.g. "Execute" in the UI), the rows changed since the latest sync
  started. The sync runs only these: they are cheap, and fail the sync's own run.

The jobs pick checks by that suffix (``run_scoped`` / ``whole_table``), so a check added to
``build_checks``' list joins the sync when its name ends in ``_this_run``, the daily job if not.
"""

# no ``from __future__ import annotations``: Dagster inspects the ``context`` annotation of
# check functions at definition time and rejects it as a string.
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

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
THIS_RUN = "_this_run"  # suffix of the run-scoped twin of each check
MAX_LISTED = 50  # mismatching rows / unknown statuses listed in metadata
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
PARTITION = "dagster/partition"


@dataclass(frozen=True)
class Scope:
    """What a check examines: rows changed ``since`` an instant, the summary ``days`` of a
    partitioned run, or (neither) everything."""

    since: datetime | None = None
    days: list[date] | None = None
    label: str = "whole table"

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"scope": self.label}
        if self.since is not None:
            meta["changed_since"] = self.since.isoformat()
        if self.days:
            meta.update({"first_day": str(self.days[0]), "last_day": str(self.days[-1])})
        return meta


WHOLE_TABLE = Scope()


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


def _started(record: dg.RunRecord | None) -> datetime | None:
    started = record.start_time if record is not None else None
    return datetime.fromtimestamp(started, UTC) if started else None


def run_scope(context: dg.AssetCheckExecutionContext) -> Scope:
    """What this run wrote (see the module docstring)."""
    days = partition_days(context)
    if days is not None:
        return Scope(days=days, label="days of this run's partitions")
    instance = context.instance
    if context.run.job_name == SYNC_JOB:
        since = _started(instance.get_run_record_by_id(context.run.run_id))
        if since is not None:
            return Scope(since=since, label="rows changed by this sync")
    latest = instance.get_run_records(dg.RunsFilter(job_name=SYNC_JOB), limit=1)
    since = _started(latest[0]) if latest else None
    if since is not None:
        return Scope(since=since, label="rows changed since the latest sync started")
    return WHOLE_TABLE


@dataclass
class Outcome:
    passed: bool
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


Evaluate = Callable[[Connection, Scope, WarehouseResource], Outcome]


@dataclass(frozen=True)
class CheckSpec:
    """One check, built twice (whole table and this run) by ``_build``."""

    asset: dg.AssetKey
    name: str
    description: str
    evaluate: Evaluate
    blocking: bool = False
    additional_deps: tuple[dg.AssetKey, ...] = ()


def _build(asset: dg.AssetKey, specs: list[CheckSpec], run_scoped: bool) -> dg.AssetChecksDefinition:
    """One step for all of an asset's checks (whole-table or run-scoped): each step of a run
    costs its own events and bookkeeping in Dagster, a few tenths of a second, which a sync of
    five minutes' changes would mostly spend on checks. Any subset can run (the UI's "Execute")."""
    suffix = THIS_RUN if run_scoped else ""
    where = ("what this run wrote (the sync: rows it changed; a backfill: its days)"
             if run_scoped else "the whole table (the daily checks job)")
    by_name = {spec.name + suffix: spec for spec in specs}

    @dg.multi_asset_check(
        name=f"{asset.path[-1]}_checks{suffix}",
        specs=[
            dg.AssetCheckSpec(
                name, asset=asset, blocking=spec.blocking,
                additional_deps=list(spec.additional_deps) or None,
                description=f"{spec.description} Examines {where}."
                            + (" Blocking." if spec.blocking else ""),
            )
            for name, spec in by_name.items()
        ],
        can_subset=True,
    )
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):  # type: ignore[no-untyped-def]
        scope = run_scope(context) if run_scoped else WHOLE_TABLE
        wanted = {key.name for key in context.selected_asset_check_keys}
        with warehouse.engine(migrate=False) as engine, engine.connect() as conn:
            for name, spec in by_name.items():
                if name not in wanted:
                    continue
                outcome = spec.evaluate(conn, scope, warehouse)
                yield dg.AssetCheckResult(
                    asset_key=asset, check_name=name, passed=outcome.passed,
                    severity=dg.AssetCheckSeverity.ERROR if spec.blocking
                    else dg.AssetCheckSeverity.WARN,
                    description=None if outcome.passed else outcome.description,
                    metadata={**outcome.metadata, **scope.metadata()},
                )

    return _checks


# -- what each check computes (plain queries from warehouse.quality) --------------------------
def _sids_unique(table: sa.Table) -> Evaluate:
    def evaluate(conn: Connection, scope: Scope, _w: WarehouseResource) -> Outcome:
        duplicated = quality.duplicate_sids(conn, table, scope.since)
        return Outcome(duplicated == 0, f"{duplicated} sid(s) appear more than once",
                       {"duplicated_sids": duplicated,
                        "rows_examined": quality.rows_examined(conn, table, scope.since)})
    return evaluate


def _required_not_null(table: sa.Table) -> Evaluate:
    required = quality.REQUIRED_COLUMNS[table.name]

    def evaluate(conn: Connection, scope: Scope, _w: WarehouseResource) -> Outcome:
        nulls = quality.null_counts(conn, table, required, scope.since)
        bad = {column: n for column, n in nulls.items() if n}
        return Outcome(not bad, "NULLs in " + ", ".join(f"{c} ({n})" for c, n in bad.items()),
                       {"null_rows": sum(bad.values()),
                        "rows_examined": quality.rows_examined(conn, table, scope.since),
                        "nulls_by_column": dg.MetadataValue.json(nulls)})
    return evaluate


def _dates_ordered(conn: Connection, scope: Scope, _w: WarehouseResource) -> Outcome:
    bad = quality.dates_out_of_order(conn, scope.since)
    return Outcome(bad == 0, f"{bad} reservation(s) updated before created",
                   {"rows_out_of_order": bad,
                    "rows_examined": quality.rows_examined(conn, reservations_table, scope.since)})


def _statuses_known(conn: Connection, scope: Scope, _w: WarehouseResource) -> Outcome:
    unknown = quality.unknown_statuses(conn, scope.since)
    shown = dict(sorted(unknown.items(), key=lambda kv: -kv[1])[:MAX_LISTED])
    return Outcome(
        not unknown, "unknown statuses: " + ", ".join(f"{s} ({n})" for s, n in shown.items()),
        {"unknown_status_rows": sum(unknown.values()), "unknown_status_values": len(unknown),
         "unknown_statuses": dg.MetadataValue.json(shown),
         "rows_examined": quality.rows_examined(conn, reservations_table, scope.since)})


def repair_advice(days: list[date], partitions_start: date, zone: str) -> str:
    """How to rewrite these summary days: a backfill of their partitions, and for days before
    ``SUMMARY_START_DATE`` (no partition to backfill) the repair command, with its arguments."""
    early = [d for d in days if d < partitions_start]
    late = [d for d in days if d >= partitions_start]
    advice = []
    if late:
        advice.append(f"backfill partitions {late[0]}..{late[-1]} of "
                      "reservation_daily_status_counts")
    if early:
        advice.append(f"for the days before SUMMARY_START_DATE ({partitions_start}), which have "
                      f"no partition, run `REPORTING_TIMEZONE={zone} .venv/bin/python -m "
                      f"warehouse.repair {early[0]} {early[-1]}`")
    return " and ".join(advice)


def _summary_matches(partitions_start: date) -> Evaluate:
    def evaluate(conn: Connection, scope: Scope, warehouse: WarehouseResource) -> Outcome:
        zone = warehouse.reporting_timezone
        if scope.days is not None:
            days = scope.days
        elif scope.since is not None:
            days = quality.days_changed_since(conn, scope.since, zone)
        else:
            days = quality.summary_days(conn, zone)
        found = quality.compare_summary(conn, days, zone, limit=MAX_LISTED)
        listed = [{"day": m.day.isoformat(), "workspace_sid": m.workspace_sid,
                   "worker_sid": m.worker_sid, "reservation_status": m.reservation_status,
                   "summary_count": m.summary_count,
                   "reservations_counted": m.reservations_counted} for m in found.listed]
        mismatched = sorted(found.days_mismatched)
        return Outcome(
            found.rows_mismatched == 0,
            f"{found.rows_mismatched} summary row(s) on {len(mismatched)} day(s) differ from "
            "GROUP BY day, workspace_sid, worker_sid, reservation_status over reservations; to "
            f"repair them, {repair_advice(mismatched, partitions_start, zone)}",
            {"days_compared": found.days_compared, "days_mismatched": len(mismatched),
             "rows_mismatched": found.rows_mismatched,
             "mismatched_days": dg.MetadataValue.json(
                 [d.isoformat() for d in mismatched[:MAX_LISTED]]),
             "mismatched_rows": dg.MetadataValue.json(listed), "reporting_timezone": zone})
    return evaluate


def check_specs(partitions_start: date = date(2025, 1, 1)) -> list[CheckSpec]:
    """Every check but freshness, each to be built whole-table and run-scoped;
    ``partitions_start`` (SUMMARY_START_DATE) only shapes the summary check's repair advice."""
    specs = []
    for asset, table in ((WORKERS, workers_table), (RESERVATIONS, reservations_table)):
        required = ", ".join(quality.REQUIRED_COLUMNS[table.name])
        specs += [
            CheckSpec(asset, "sids_unique", f"No two rows of `{table.name}` share a sid (the "
                      "primary key).", _sids_unique(table), blocking=True),
            CheckSpec(asset, "required_columns_not_null", f"No NULL in `{table.name}`'s "
                      f"required columns ({required}).", _required_not_null(table), blocking=True),
        ]
    specs += [
        CheckSpec(RESERVATIONS, "date_updated_not_before_created",
                  "date_updated >= date_created on every reservation (warns).", _dates_ordered),
        CheckSpec(RESERVATIONS, "statuses_known",
                  "reservation_status is one of the eight known values (" + ", ".join(KNOWN_STATUSES)
                  + "). Warns with the unknown values and their counts: TaskRouter may add "
                  "statuses, and they are loaded, never rejected.", _statuses_known),
        CheckSpec(SUMMARY, "summary_matches_reservations",
                  "Every (day, workspace, worker, status) row of the summary equals GROUP BY "
                  "day, workspace_sid, worker_sid, reservation_status over reservations, in "
                  "REPORTING_TIMEZONE: no row missing, extra or counted differently (warns).",
                  _summary_matches(partitions_start),
                  # in the sync, run after reservations refreshed the days
                  additional_deps=(RESERVATIONS,)),
    ]
    return specs


def build_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    """Every asset check; ``settings`` supplies the freshness age."""
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

    specs = check_specs(date.fromisoformat(settings.summary_start_date))
    assets = list(dict.fromkeys(spec.asset for spec in specs))
    return [
        *[_build(asset, [s for s in specs if s.asset == asset], run_scoped=False)
          for asset in assets],
        *[_build(asset, [s for s in specs if s.asset == asset], run_scoped=True)
          for asset in assets],
        last_sync_is_recent,
    ]


def run_scoped(checks: list[dg.AssetChecksDefinition]) -> list[dg.AssetCheckKey]:
    """The check keys the sync runs: every ``*_this_run`` check (new ones included)."""
    return [key for c in checks for key in c.check_keys if key.name.endswith(THIS_RUN)]


def whole_table(checks: list[dg.AssetChecksDefinition]) -> list[dg.AssetCheckKey]:
    """The check keys the daily job runs: every other check (freshness included)."""
    return [key for c in checks for key in c.check_keys if not key.name.endswith(THIS_RUN)]
