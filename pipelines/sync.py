"""One reservations sync as plain functions: the list sweeps due, then the events since.

The Dagster graph (``pipelines.sharding``) runs the same steps as separate ops; this module
serves the benchmarks, the tests and anything else that wants a sync without Dagster.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from pipelines.event_feed import FeedOptions, FeedResult, follow_events, plan_sweeps, record_sweeps
from pipelines.figures import SyncFigures, merge_figures
from pipelines.loading import DEFAULT_BATCH_ROWS, load_reservations
from pipelines.taskrouter import TaskRouterClient


def completed_sweeps(swept: list[str], listing: dict[str, list[str]],
                     figures: SyncFigures) -> list[str]:
    """The swept workspaces in which every worker was read."""
    failed = set(figures.workers_failed)
    return [ws for ws in swept if not failed.intersection(listing.get(ws, []))]


def sync_reservations(client: TaskRouterClient, engine: Engine, listing: dict[str, list[str]],
                      options: FeedOptions | None = None, *, batch_rows: int = DEFAULT_BATCH_ROWS,
                      progress: Callable[[str], None] | None = None
                      ) -> tuple[SyncFigures, FeedResult]:
    """The list sweeps due, then each workspace's events since its cursor (``listing``: every
    worker per workspace, as ``load_workers`` found them). Returns the merged figures."""
    options = options or FeedOptions()
    workspaces = list(listing)
    plan = plan_sweeps(client, engine, workspaces, options)
    wanted = {ws: listing[ws] for ws in workspaces if ws in plan.whole}
    lists = load_reservations(client, engine, wanted, batch_rows=batch_rows, progress=progress)
    feed = follow_events(client, engine, workspaces, options, progress, batch_rows,
                         failed_workers=set(lists.workers_failed))
    swept = completed_sweeps(list(plan.whole), listing, lists)
    swept += completed_sweeps(feed.swept, listing, feed.figures)
    record_sweeps(engine, swept, plan.started_at)
    figures = merge_figures([lists, feed.figures])
    figures.workspaces = len(workspaces)
    feed.notices[:0] = plan.notices
    return figures, feed
