"""The reservations sync split into shards that Dagster runs as separate steps.

``reservations`` is a graph-backed asset of four ops:

1. ``follow_events`` lists the workspaces and applies each one's TaskRouter Events since its
   cursor (``pipelines.event_feed``); it says which list reads are still due (a full sweep on
   the first sync and every ``TASKROUTER_SWEEP_INTERVAL_MINUTES``, some workers otherwise).
2. ``plan_shards`` decides, at run time, how many shards read those lists (``SYNC_SHARDS``, or
   the op's ``shards`` config; SQLite always gets one, since it takes one writer at a time). It
   fans out one ``dg.DynamicOutput`` per shard, none when no list read is due.
3. ``load_shard`` (one step per shard) lists its workspace's workers, keeps those whose sid
   hashes (crc32, stable in every process, unlike Python's salted ``hash()``) into its bucket,
   and runs ``pipelines.loading.load_reservations`` on them: the same code as an unsharded sync.
4. ``finish_sync`` runs once after every shard: adds up the figures, records the completed
   sweeps, refreshes the changed summary days from persisted state (exactly as an unsharded
   sync does), and reports.

Shards by workspace first, then by hash within a workspace: with N shards and W workspaces,
N >= W splits each workspace into about N / W hash buckets; N < W gives each shard whole
workspaces. The shards together read every worker exactly once, so together they are one sync.

The account's request budget (``TASKROUTER_REQUESTS_PER_SECOND``) is divided evenly among the
shards: each shard's client gets ``rate / N`` in its own token bucket, so the sum never exceeds
the budget on any executor (processes, pods, hosts) with no shared state. The steps also keep the
``taskrouter_api`` concurrency pool, which caps how many API-calling steps run at once on the
deployment; raise its limit to N to run N shards in parallel (see deploy/executors.md).
"""


import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from pipelines.event_feed import (
    FeedOptions,
    FeedResult,
    SweepPlan,
    follow_events,
    plan_sweeps,
    record_sweeps,
)
from pipelines.figures import SyncFigures, WorkersFailed, merge_figures
from pipelines.loading import list_workers_by_workspace, load_reservations, resolve_workspaces
from pipelines.metadata import (
    GROUP,
    RESERVATIONS_KEY,
    TASKROUTER_POOL,
    count_rows,
    days_listing,
    figures_metadata,
    record_summary_days,
    table_schema,
)
from pipelines.resources import TaskRouterResource, WarehouseResource
from pipelines.settings import MAX_SHARDS, Settings, shard_count
from warehouse.dialects import for_dialect
from warehouse.schema import reservations as reservations_table
from warehouse.summary import SummaryRefresh, refresh_changed_days

SHARDS_ENV = "SYNC_SHARDS"


def worker_bucket(worker_sid: str, buckets: int) -> int:
    """The bucket of a worker: crc32 of its sid mod ``buckets``, identical in every process."""
    return zlib.crc32(worker_sid.encode("utf-8")) % buckets


@dataclass(frozen=True)
class ShardPart:
    """The workers of one workspace whose sid falls in ``bucket`` of ``buckets``."""

    workspace_sid: str
    bucket: int = 0
    buckets: int = 1

    def keeps(self, worker_sid: str) -> bool:
        return self.buckets == 1 or worker_bucket(worker_sid, self.buckets) == self.bucket

    def describe(self) -> str:
        whole = self.buckets == 1
        return self.workspace_sid + ("" if whole else f" (bucket {self.bucket + 1}/{self.buckets})")


@dataclass(frozen=True)
class ShardSpec:
    """One shard: what it reads and its share of the request budget. Small, so cheap to pass."""

    index: int
    count: int
    parts: tuple[ShardPart, ...]
    requests_per_second: float | None = None
    planned_at: float = 0.0  # wall clock (time.time) when the run planned its shards

    @property
    def key(self) -> str:
        """Dagster mapping key (letters, digits, underscores)."""
        return f"shard_{self.index + 1}_of_{self.count}"

    def describe(self) -> str:
        return f"{self.key}: " + ", ".join(p.describe() for p in self.parts)

    def select(self, workers_by_workspace: dict[str, list[str]]) -> dict[str, list[str]]:
        """This shard's workers out of full workspace listings."""
        selected: dict[str, list[str]] = {}
        for part in self.parts:
            sids = workers_by_workspace.get(part.workspace_sid, [])
            selected[part.workspace_sid] = [s for s in sids if part.keeps(s)]
        return selected


@dataclass
class SweepOutcome:
    """What ``plan_shards`` hands to ``finish_sync``: the workspaces and the sweeps planned."""

    workspaces: list[str]
    plan: SweepPlan
    planned_at: float = 0.0  # wall clock (time.time) when the sync began
    clock_read_at: float = 0.0  # wall clock when TaskRouter's time (plan.started_at) was read

    def taskrouter_now(self) -> datetime | None:
        """TaskRouter's time now: its time at the plan plus the seconds elapsed since (only a
        difference of this host's clock is used, never its reading)."""
        if self.plan.started_at is None or not self.clock_read_at:
            return None
        elapsed = max(0.0, time.time() - self.clock_read_at)
        return (self.plan.started_at + timedelta(seconds=elapsed)).replace(microsecond=0)


@dataclass
class ShardResult:
    """What one shard step hands to ``finish_sync``."""

    spec: ShardSpec
    figures: SyncFigures
    cpu_seconds: float = 0.0  # CPU time of the shard's process (all its threads)


def plan_shards(workspace_sids: list[str], shards: int,
                requests_per_second: float | None = None,
                planned_at: float = 0.0) -> list[ShardSpec]:
    """Split the workspaces into ``shards`` shards (fewer only when there are no workspaces).

    N >= W: workspace i gets N // W buckets, the first N % W workspaces one more.
    N < W: shard j reads whole workspaces j, j + N, j + 2N, ...
    """
    shards = max(1, int(shards))
    if not workspace_sids:
        return []
    rate = requests_per_second / shards if requests_per_second else None
    groups: list[tuple[ShardPart, ...]] = []
    if shards >= len(workspace_sids):
        base, extra = divmod(shards, len(workspace_sids))
        for i, ws in enumerate(workspace_sids):
            buckets = base + (1 if i < extra else 0)
            groups += [(ShardPart(ws, b, buckets),) for b in range(buckets)]
    else:
        groups = [tuple(ShardPart(ws) for ws in workspace_sids[j::shards]) for j in range(shards)]
    return [ShardSpec(i, len(groups), parts, rate, planned_at) for i, parts in enumerate(groups)]


def requested_shards(configured: int) -> int:
    """The op's config when set (> 0), else ``SYNC_SHARDS`` as it is when the step runs
    (checked by ``pipelines.settings``: a bad value is a ``SettingsError``)."""
    if configured > 0:
        return min(configured, MAX_SHARDS)
    return shard_count()


def shard_retry_policy(retries: int) -> dg.RetryPolicy | None:
    """Dagster retries a shard whose step raised (database dropped, process died), not one that
    merely has failed workers: those were already retried request by request."""
    if retries <= 0:
        return None
    return dg.RetryPolicy(max_retries=retries, delay=5, backoff=dg.Backoff.EXPONENTIAL)


@dataclass
class ShardsSummary:
    """What a sync's shards and its events half did together (``summarize_shards``)."""

    figures: SyncFigures  # every shard's figures and the events', added up
    failing: list[str]  # keys of the shards with workers that could not be read
    swept: list[str]  # workspaces whose list sweep completed: recorded as swept
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.figures.workers_failed or self.figures.events_failed)

    def failure(self) -> str:
        where = f" (in {', '.join(self.failing)})" if self.failing else ""
        return f"{WorkersFailed(self.figures)}{where}"

    def failure_metadata(self) -> dict[str, Any]:
        return {"workers_failed": dg.MetadataValue.json(self.figures.workers_failed[:500]),
                "events_failed": dg.MetadataValue.json(self.figures.events_failed),
                "shards_failed": dg.MetadataValue.json(self.failing)}


def summarize_shards(sweeps: SweepOutcome, shards: list[ShardResult], feed: FeedResult,
                     finished_at: float) -> ShardsSummary:
    """Add up a sync: the shards' and the events' figures, the shards that failed, and the
    workspaces whose sweep completed (not one with a failed shard or, for the sweeps the
    events half ran, failed workers), with the materialization's figures."""
    figures = merge_figures([*(r.figures for r in shards), feed.figures])
    figures.workspaces = len(sweeps.workspaces)
    figures.seconds = finished_at - sweeps.planned_at  # wall: sweeps, then events
    failing = [r.spec.key for r in shards if r.figures.workers_failed]
    broken = {p.workspace_sid for r in shards if r.figures.workers_failed for p in r.spec.parts}
    swept = [ws for ws in sweeps.plan.whole if ws not in broken]
    swept += [ws for ws in feed.swept if not feed.figures.workers_failed]
    metadata: dict[str, Any] = {
        **figures_metadata(figures),
        "shards": len(shards),
        "shard_cpu_seconds": round(sum(r.cpu_seconds for r in shards), 1),
        "slowest_shard_seconds": round(max((r.figures.seconds for r in shards), default=0), 1),
        "list_sweeps": dg.MetadataValue.json(
            {**sweeps.plan.whole, **{ws: "Events refused by TaskRouter" for ws in feed.swept}}),
        "events_notices": dg.MetadataValue.json([*sweeps.plan.notices, *feed.notices]),
    }
    return ShardsSummary(figures, failing, swept, metadata)


def refresh_metadata(refresh: SummaryRefresh) -> dict[str, Any]:
    """The summary refresh's figures, for the sync's materialization."""
    return {"days_refreshed": len(refresh.days),
            "summary_days": dg.MetadataValue.json(days_listing(refresh.days)),
            "summary_rows": refresh.rows, "reporting_timezone": refresh.zone}


class ShardingConfig(dg.Config):
    """Run config of ``plan_shards``: 0 means ``SYNC_SHARDS`` (default 1)."""

    shards: int = 0


def build_reservations_asset(settings: Settings, daily: dg.DailyPartitionsDefinition,
                             workers: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The ``reservations`` asset as events -> plan -> shards (fan-out) -> finish (once)."""
    options = FeedOptions.from_settings(settings)

    @dg.op(
        name="plan_shards",
        ins={"workers": dg.In(dg.Nothing)},
        out={"sweeps": dg.Out(SweepOutcome), "shards": dg.DynamicOut(ShardSpec)},
        pool=TASKROUTER_POOL,
        description="Decides which workspaces' worker lists this sync reads (a full sweep on the "
                    "first sync and every TASKROUTER_SWEEP_INTERVAL_MINUTES; events cover the "
                    "rest) and in how many shards; none when no sweep is due.",
    )
    def plan_shards_op(context: dg.OpExecutionContext, config: ShardingConfig,
                       taskrouter: TaskRouterResource, warehouse: WarehouseResource):  # type: ignore[no-untyped-def]
        planned_at = time.time()
        wanted = requested_shards(config.shards)
        # migrate (if needed) here, once, before shards open the warehouse concurrently
        with warehouse.engine() as engine, taskrouter.client() as client:
            single_writer = for_dialect(engine.dialect).single_writer
            workspaces = resolve_workspaces(client, taskrouter.configured_workspaces())
            plan = plan_sweeps(client, engine, workspaces, options)
            clock_read_at = time.time()
        for notice in plan.notices:
            context.log.warning(notice)
        shards = wanted
        if single_writer and wanted > 1:
            shards = 1
            context.log.warning(
                f"SQLite warehouse: running 1 shard instead of {wanted} ({SHARDS_ENV}), because "
                "SQLite takes one writer at a time; use PostgreSQL or MySQL to shard the sync"
            )
        swept = [ws for ws in workspaces if ws in plan.whole]
        specs = plan_shards(swept, shards, taskrouter.requests_per_second, planned_at)
        rate = (f"; {specs[0].requests_per_second:g} requests/s each"
                if specs and specs[0].requests_per_second else "")
        reasons = "; ".join(f"{ws}: {why}" for ws, why in plan.whole.items())
        context.log.info(f"{len(workspaces)} workspace(s); list sweeps: {reasons or 'none due'}; "
                         f"{len(specs)} shard(s){rate}"
                         + (": " + "; ".join(s.describe() for s in specs) if specs else ""))
        yield dg.Output(SweepOutcome(workspaces, plan, planned_at, clock_read_at), "sweeps")
        for spec in specs:
            yield dg.DynamicOutput(spec, output_name="shards", mapping_key=spec.key)

    @dg.op(
        pool=TASKROUTER_POOL,
        retry_policy=shard_retry_policy(settings.shard_retries),
        description="Reads one shard's workers' reservations and upserts them.",
    )
    def load_shard(context: dg.OpExecutionContext, spec: ShardSpec,
                   taskrouter: TaskRouterResource, warehouse: WarehouseResource) -> ShardResult:
        context.log.info(f"loading {spec.describe()}")
        cpu = time.process_time()
        with taskrouter.client(spec.requests_per_second) as client, warehouse.engine() as engine:
            listing = list_workers_by_workspace(client, [p.workspace_sid for p in spec.parts])
            mine = spec.select(listing)
            figures = load_reservations(client, engine, mine, batch_rows=settings.batch_rows,
                                        progress=context.log.info)
        context.log.info(f"{spec.key}: {figures.describe()}")
        if figures.workers_failed:
            # not raised here: the summary refresh still runs for everything that loaded, and
            # finish_sync fails the run naming this shard
            context.log.warning(f"{spec.key}: {WorkersFailed(figures)}")
        return ShardResult(spec, figures, time.process_time() - cpu)

    @dg.op(pool=TASKROUTER_POOL,
           description="Once after every shard: applies each workspace's TaskRouter Events since "
           "its cursor, window by window, records the completed sweeps, refreshes the changed "
           "summary days, reports (and fails the run if any worker could not be read).")
    def finish_sync(context: dg.OpExecutionContext, sweeps: SweepOutcome,
                    shards: list[ShardResult], taskrouter: TaskRouterResource,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.engine() as engine:
            with taskrouter.client() as client:
                failed = {w for r in shards for w in r.figures.workers_failed}
                feed = follow_events(client, engine, sweeps.workspaces, options,
                                     progress=context.log.info, batch_rows=settings.batch_rows,
                                     now=sweeps.taskrouter_now(), failed_workers=failed)
            for notice in feed.notices:
                context.log.warning(notice)
            summary = summarize_shards(sweeps, shards, feed, time.time())
            record_sweeps(engine, summary.swept, sweeps.plan.started_at)
            refresh = refresh_changed_days(engine, warehouse.reporting_timezone)
            record_summary_days(context, refresh, daily, engine)  # type: ignore[arg-type]
            total = count_rows(engine, reservations_table)
        figures = summary.figures
        metadata: dict[str, Any] = {
            "dagster/row_count": total, **summary.metadata, **refresh_metadata(refresh),
            "dagster/column_schema": table_schema(reservations_table),
            "warehouse": warehouse.display_url(),
        }
        context.log.info(f"reservations: {figures.describe()}; summary days refreshed: "
                         f"{len(refresh.days)}")
        if figures.workers_skipped:
            context.log.warning(
                f"{len(figures.workers_skipped)} worker(s) vanished upstream and were skipped: "
                + ", ".join(figures.workers_skipped[:20])
            )
        if summary.failed:
            context.log_event(dg.AssetObservation(asset_key=RESERVATIONS_KEY, metadata=metadata))
            raise dg.Failure(description=summary.failure(),
                             metadata={**metadata, **summary.failure_metadata()})
        return dg.MaterializeResult(metadata=metadata)

    @dg.graph_asset(
        name="reservations",
        group_name=GROUP,
        kinds={"twilio", "sql"},
        ins={"workers": dg.AssetIn(key=workers.key, dagster_type=dg.Nothing)},
        description=(
            "Every reservation TaskRouter showed, upserted on date_updated (table "
            "`reservations`): each sync applies the workspaces' TaskRouter Events since the "
            "last one (so reservations that lived and died between syncs are kept), and reads "
            "the worker lists in a full sweep every TASKROUTER_SWEEP_INTERVAL_MINUTES, in "
            f"{SHARDS_ENV} shards (by workspace, then by a hash of the worker sid). Also "
            "refreshes the summary days its changes touched."
        ),
        metadata={"dagster/column_schema": table_schema(reservations_table)},
    )
    def reservations(workers):  # type: ignore[no-untyped-def]
        sweeps, shards = plan_shards_op(workers)
        return finish_sync(sweeps, shards.map(load_shard).collect())

    return reservations
