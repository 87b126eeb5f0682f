"""What a sync did (``SyncFigures``), how figures add up across shards and the events half,
and the error that names the workers a sync could not read. Plain data: the loading functions
fill it, the Dagster steps and the commands report it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from warehouse.upsert import UpsertCounts


@dataclass
class SyncFigures:
    """What one sync did; every field ends up in the materialization metadata."""

    workspaces: int = 0
    workers: int = 0
    workers_read: int = 0
    workers_skipped: list[str] = field(default_factory=list)  # 404: deleted upstream (what was
    # read before the 404 is loaded, and every reservation of the worker marked deleted upstream)
    workers_failed: list[str] = field(default_factory=list)  # could not be read (see below)
    # worker sid -> how its read ended ("HTTP 500 after 6 attempts") and its attempts
    worker_failures: dict[str, tuple[str, int]] = field(default_factory=dict)
    rows_seen: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    quarantined: int = 0  # rejects never seen before, now in rejected_records
    history_rows: int = 0  # rows added to reservation_status_history
    deleted_upstream: int = 0  # reservations newly marked deleted_upstream_at
    returned_upstream: int = 0  # marked reservations TaskRouter returned again (mark cleared)
    filled: int = 0  # rows one feed completed with the fields only the other carries: a list
    # record's url and links on a row only events had shown, or an event's queue and workflow
    events_read: int = 0  # Events of every type read (pipelines.event_feed)
    events_applied: int = 0  # distinct reservation events applied
    event_reservations: int = 0  # reservations those events concern
    event_windows: int = 0  # windows read and committed, each with its cursor
    events_estimated: int = 0  # new reservations dated by their first event (no .created read)
    event_gaps: int = 0  # stretches of events lost to TaskRouter's 30-day retention
    events_failed: list[str] = field(default_factory=list)  # workspaces whose events failed
    batches: int = 0
    prepare_seconds: float = 0.0  # screening and normalizing, on the sync's own thread
    write_seconds: float = 0.0  # write transactions, on the writer thread
    index_build_seconds: float = 0.0  # a first load's deferred indexes (warehouse.initial_load)
    pages: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_seen / self.seconds if self.seconds else 0.0

    def add_counts(self, counts: UpsertCounts) -> None:
        self.inserted += counts.inserted
        self.updated += counts.updated
        self.unchanged += counts.unchanged
        self.filled += counts.filled

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows_per_second"] = round(self.rows_per_second, 1)
        for name in ("seconds", "prepare_seconds", "write_seconds", "index_build_seconds"):
            data[name] = round(data[name], 3)
        return data

    def describe(self) -> str:
        """One sentence for a log line (the full figures are the run's metadata)."""
        failed = len(set(self.workers_failed))
        parts = [f"{self.workers_read:,} of {self.workers:,} worker(s) read"
                 + (f", {failed:,} failed" if failed else ""),
                 f"{self.rows_seen:,} row(s): {self.inserted:,} inserted, {self.updated:,} updated, "
                 f"{self.unchanged:,} unchanged, {self.rejected:,} rejected"]
        if self.event_windows or self.events_failed:
            parts.append(f"{self.events_applied:,} event(s) applied in {self.event_windows:,} window(s)"
                         + (f", failed in {len(self.events_failed)} workspace(s)"
                            if self.events_failed else ""))
        parts.append(f"{self.requests:,} request(s), {self.retries:,} retries, {self.seconds:.1f} s")
        return "; ".join(parts)



class WorkersFailed(RuntimeError):
    """Some workers (or workspaces' events) could not be read; everything else was loaded.

    Each worker is named with how its read ended ("HTTP 500 after 6 attempts", "HTTP 400, not
    retried"); "after retries" is said only when every one of them was retried.
    """

    def __init__(self, figures: SyncFigures) -> None:
        self.figures = figures
        parts = []
        if figures.workers_failed:
            failed = list(dict.fromkeys(figures.workers_failed))  # one worker may fail twice
            ends = figures.worker_failures
            shown = ", ".join(f"{sid}: {ends[sid][0]}" if sid in ends else sid
                              for sid in failed[:10])
            more = len(failed) - 10
            retried = all(sid in ends and ends[sid][1] > 1 for sid in failed)
            parts.append(f"{len(failed)} worker(s) could not be read"
                         f"{' after retries' if retried else ''} "
                         f"({shown}{f' and {more} more' if more > 0 else ''})")
        if figures.events_failed:
            parts.append(f"the events of {len(figures.events_failed)} workspace(s) could not "
                         f"be read after retries ({', '.join(figures.events_failed[:10])})")
        super().__init__("; ".join(parts) + "; everything else was loaded, and the next sync "
                         "reads these again")


def merge_figures(parts: Iterable[SyncFigures]) -> SyncFigures:
    """Add up figures (shards, the events half): counters sum, lists concatenate, mappings
    merge (every field, new ones too)."""
    total = SyncFigures()
    for figures in parts:
        for f in fields(SyncFigures):
            mine, theirs = getattr(total, f.name), getattr(figures, f.name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, dict):
                mine.update(theirs)
            elif isinstance(mine, int | float) and not isinstance(mine, bool):
                setattr(total, f.name, mine + theirs)
    return total
