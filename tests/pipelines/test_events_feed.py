"""The Events feed against an emulator that forgets as TaskRouter does, on all three databases.

Reservations are born and deleted between syncs, finished tasks vanish five minutes after they
end, and the emulator's clock (its Date header) is weeks away from this host's. After every
scenario, every reservation TaskRouter ever showed must be in the warehouse with its final
status and exact dates, every transition in the status history at its event's time, and the
daily summary must equal its GROUP BY.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.event_feed import FeedOptions, FeedResult
from pipelines.figures import SyncFigures
from pipelines.loading import load_workers
from pipelines.sync import sync_reservations
from pipelines.taskrouter import ClientOptions, TaskRouterClient, credentials_from_env
from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import assert_summary_consistent, small_world, warehouse_frame
from warehouse.engine import create_warehouse_engine
from warehouse.feed import read_cursor, read_gaps
from warehouse.migrate import ensure_schema
from warehouse.schema import event_cursors, reservation_status_history
from warehouse.summary import refresh_changed_days


def events_world(**overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {"workers_per_workspace": 6, "reservations_per_worker": 8,
                                 "arrivals_per_hour": 6.0}
    values.update(overrides)
    return small_world(**values)


@dataclass
class Syncer:
    """Runs the plain-function sync (workers, list sweeps due, events) like the job does."""

    emulator: Emulator
    url: str
    options: FeedOptions = FeedOptions()

    def __post_init__(self) -> None:
        self.engine = create_warehouse_engine(self.url)
        ensure_schema(self.engine)

    def __call__(self, **client_options: object) -> tuple[SyncFigures, FeedResult]:
        settings = {"max_attempts": 2, "backoff_factor": 0.0, **client_options}
        with TaskRouterClient(credentials_from_env(self.emulator.env()), self.emulator.base_url,
                              ClientOptions(**settings)) as client:  # type: ignore[arg-type]
            _, listing = load_workers(client, self.engine, list(self.emulator.world.workspaces))
            result = sync_reservations(client, self.engine, listing, self.options, batch_rows=50)
        refresh_changed_days(self.engine, "UTC")
        return result

    def cursor(self, ws: str):  # type: ignore[no-untyped-def]
        with self.engine.connect() as conn:
            return read_cursor(conn, ws)


@pytest.fixture
def feed(warehouse_url: str) -> Iterator[Syncer]:
    with Emulator(events_world(), Faults()) as emu:
        syncer = Syncer(emu, warehouse_url)
        yield syncer
        syncer.engine.dispose()


def stamp(text: str) -> pd.Timestamp:
    return pd.Timestamp(text.replace("Z", "+00:00")).tz_convert("UTC")


def assert_holds_everything_ever_shown(url: str, emulator: Emulator) -> pd.DataFrame:
    """Every reservation the emulator ever had: present, final status, exact dates; url and
    links as listed, or NULL for the ones no list read ever showed."""
    stored = warehouse_frame(url).set_index("sid")
    ever = {r["sid"]: r for r in emulator.world.ever()}
    missing = set(ever) - set(stored.index)
    assert not missing, f"{len(missing)} of {len(ever)} reservations missing, e.g. {sorted(missing)[:3]}"
    assert set(stored.index) == set(ever), "the warehouse holds reservations TaskRouter never had"
    for sid, record in ever.items():
        row = stored.loc[sid]
        assert row["reservation_status"] == record["reservation_status"], sid
        assert pd.Timestamp(row["date_updated"]) == stamp(record["date_updated"]), sid
        assert pd.Timestamp(row["date_created"]) == stamp(record["date_created"]), sid
        assert (row["worker_sid"], row["task_sid"]) == (record["worker_sid"], record["task_sid"])
        if pd.notna(row["url"]):
            assert row["url"] == record["url"]
    return stored


def assert_history_holds_every_transition(engine: Engine, emulator: Emulator,
                                          since: datetime) -> None:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(reservation_status_history.c.sid,
                                      reservation_status_history.c.reservation_status,
                                      reservation_status_history.c.date_updated)).tuples().all()
    held = {(s, st, int(pd.Timestamp(d).timestamp())) for s, st, d in rows}
    wanted = {t for t in emulator.world.transitions() if t[2] >= since.timestamp()}
    missing = wanted - held
    assert not missing, f"{len(missing)} transitions missing, e.g. {sorted(missing)[:3]}"


def test_a_30_minute_gap_loses_nothing_and_reads_no_list(feed):
    world = feed.emulator.world
    first, first_feed = feed()
    ws = next(iter(world.workspaces))
    assert first_feed.notices == []
    # the cursor follows TaskRouter's clock (its Date header), weeks away from this host's
    assert feed.cursor(ws).events_through == datetime.fromtimestamp(world.clock, UTC)
    assert abs(datetime.now(UTC) - feed.cursor(ws).events_through) > timedelta(days=7)
    live_before = {r["sid"]: r for r in world.truth()}
    world.advance(30)
    live_after = {r["sid"] for r in world.truth()}
    ever = {r["sid"]: r for r in world.ever()}
    born_and_gone = {s for s in ever if s not in live_before and s not in live_after}
    finished_and_gone = {s for s, r in live_before.items()
                         if r["reservation_status"] in ("pending", "accepted", "wrapping")
                         and s not in live_after}
    assert born_and_gone, "the emulator must create and delete reservations between syncs"

    figures, _ = feed()
    # no list sweep was due: the events alone carried the 30 minutes
    assert figures.rows_seen == 0 and figures.events_applied > 0
    assert figures.requests <= 2 * len(world.workspaces) + 2
    stored = assert_holds_everything_ever_shown(feed.url, feed.emulator)
    assert stored.loc[sorted(born_and_gone), "url"].isna().all()
    assert stored.loc[sorted(born_and_gone), "task_queue_sid"].notna().all()
    for sid in finished_and_gone:
        assert stored.loc[sid, "reservation_status"] not in ("pending", "accepted", "wrapping")
    assert_history_holds_every_transition(feed.engine, feed.emulator,
                                          feed.cursor(ws).coverage_start)
    assert_summary_consistent(feed.url)
    # the next list sweep no longer lists them: marked deleted upstream, like any other row
    world.advance(61)
    assert feed()[0].rows_seen > 0
    stored = warehouse_frame(feed.url).set_index("sid")
    assert stored.loc[sorted(born_and_gone), "deleted_upstream_at"].notna().all()
    assert_summary_consistent(feed.url)


def test_a_24_hour_outage_is_fully_recovered(feed):
    world = feed.emulator.world
    feed()
    for _ in range(24):
        world.advance(60)
    figures, result = feed()
    assert result.notices == []
    assert figures.event_windows >= 1 and figures.events_applied > 100
    assert_holds_everything_ever_shown(feed.url, feed.emulator)
    ws = next(iter(world.workspaces))
    assert_history_holds_every_transition(feed.engine, feed.emulator,
                                          feed.cursor(ws).coverage_start)
    assert_summary_consistent(feed.url)


def snapshot(engine: Engine) -> tuple[list[tuple], list[tuple]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT sid, reservation_status, date_created, date_updated, url, links, "
            "task_queue_sid, last_changed_at, deleted_upstream_at FROM reservations ORDER BY sid"
        )).tuples().all()
        history = conn.execute(sa.text(
            "SELECT sid, reservation_status, date_updated, previous_status FROM "
            "reservation_status_history ORDER BY sid, reservation_status, date_updated"
        )).tuples().all()
    return rows, history


def test_replayed_and_overlapping_windows_change_nothing(feed):
    world = feed.emulator.world
    feed()
    world.advance(45)
    feed()
    before = snapshot(feed.engine)
    # every cursor six hours back, and windows that overlap by an hour: all of it again
    with feed.engine.begin() as conn:
        conn.execute(event_cursors.update().values(
            events_through=datetime.fromtimestamp(world.clock, UTC) - timedelta(hours=6)))
    feed.options = FeedOptions(overlap=timedelta(hours=1), window_events=1000)
    figures, _ = feed()
    assert figures.events_applied > 0
    assert (figures.inserted, figures.updated, figures.history_rows) == (0, 0, 0)
    assert snapshot(feed.engine) == before


def test_a_sync_killed_mid_catch_up_replays_safely(warehouse_url, sqlite_url, tmp_path):
    config = events_world(workers_per_workspace=4)
    small = FeedOptions(window_events=1000)  # a first sync of many windows
    with Emulator(config, Faults(events_fail_after=7)) as emu:
        killed = Syncer(emu, warehouse_url, small)
        figures, _ = killed(max_attempts=1)  # the Events resource fails mid catch-up
        assert figures.events_failed == list(emu.world.workspaces)
        ws = next(iter(emu.world.workspaces))
        cursor = killed.cursor(ws)
        assert cursor.events_through is not None, "the windows before the failure committed"
        assert cursor.events_through < datetime.fromtimestamp(emu.world.clock, UTC)
        emu.server.set_faults(Faults())
        emu.world.advance(20)
        killed()
        emu.world.advance(20)
        killed()
        stored = assert_holds_everything_ever_shown(warehouse_url, emu)
        assert_history_holds_every_transition(killed.engine, emu, cursor.coverage_start)
        assert_summary_consistent(warehouse_url)
        killed.engine.dispose()
    with Emulator(config, Faults()) as emu:  # the same world, never interrupted
        clean = Syncer(emu, f"sqlite:///{tmp_path / 'clean.db'}", small)
        clean()
        emu.world.advance(20)
        clean()
        emu.world.advance(20)
        clean()
        reference = warehouse_frame(clean.url).set_index("sid")
        clean.engine.dispose()
    # (url may differ: the killed run recorded no sweep, so its next sync listed the workers again)
    columns = ["reservation_status", "date_created", "date_updated", "worker_sid",
               "task_queue_sid", "workflow_sid"]
    left = stored[columns].sort_index().astype(object).where(stored[columns].notna(), None)
    right = reference[columns].sort_index().astype(object).where(reference[columns].notna(), None)
    for column in ("date_created", "date_updated"):
        left[column] = pd.to_datetime(left[column], utc=True)
        right[column] = pd.to_datetime(right[column], utc=True)
    diff = left.compare(right)
    assert diff.empty, diff.head().to_string()


@pytest.mark.parametrize("retention", ["refuse", "truncate"])
def test_a_gap_past_the_retention_is_reported_and_swept(warehouse_url, retention):
    sqlite_url = warehouse_url
    with Emulator(events_world(), Faults(events_retention=retention)) as emu:
        feed = Syncer(emu, sqlite_url)
        feed()
        world = emu.world
        world.advance(30)
        # the warehouse's last sync was 40 days ago on TaskRouter's clock
        stale = datetime.fromtimestamp(world.clock, UTC) - timedelta(days=40)
        with feed.engine.begin() as conn:
            conn.execute(event_cursors.update().values(events_through=stale))
        figures, result = feed()
        assert figures.event_gaps == len(world.workspaces)
        assert figures.rows_seen == len(world.truth()), "a full list sweep covers the gap"
        assert any("events gap" in n and "30 days" in n for n in result.notices)
        gaps = read_gaps(feed.engine)
        assert {g.workspace_sid for g in gaps} == set(world.workspaces)
        assert all(g.gap_start == stale for g in gaps)
        oldest = datetime.fromtimestamp(world.clock, UTC) - timedelta(days=30)
        assert all(oldest < g.gap_end < oldest + timedelta(hours=2) for g in gaps)
        # reported once: the next sync finds the cursor current again
        again, result = feed()
        assert again.event_gaps == 0 and result.notices == []
        assert len(read_gaps(feed.engine)) == len(gaps)
        assert_holds_everything_ever_shown(sqlite_url, emu)
        feed.engine.dispose()


@pytest.mark.parametrize("status", [403, 404])
def test_refused_events_fall_back_to_lists_and_say_so_once(sqlite_url, status):
    with Emulator(events_world(), Faults(events_refused=status)) as emu:
        feed = Syncer(emu, sqlite_url)
        first, result = feed()
        assert len(result.notices) == len(emu.world.workspaces)
        assert all(f"HTTP {status}" in n and "TASKROUTER_EVENTS=0" in n for n in result.notices)
        asked = emu.server.stats.events_requests
        emu.world.advance(10)  # within the sweep interval: lists only because events are refused
        second, result = feed()
        assert result.notices == [], "said once"
        assert emu.server.stats.events_requests == asked, "not asked again within the hour"
        assert second.rows_seen == len(emu.world.truth())
        stored = warehouse_frame(sqlite_url).set_index("sid")
        assert {r["sid"] for r in emu.world.truth()} <= set(stored.index)
        ws = next(iter(emu.world.workspaces))
        assert feed.cursor(ws).events_refused_reason.startswith(f"HTTP {status}")
        # allowed again: after an hour the feed asks, and takes over
        emu.server.set_faults(Faults())
        emu.world.advance(61)
        third, result = feed()
        assert third.events_applied > 0 and feed.cursor(ws).events_refused_at is None
        feed.engine.dispose()


def test_switched_off_the_sync_polls_lists_and_reads_no_events(sqlite_url):
    with Emulator(events_world(), Faults()) as emu:
        feed = Syncer(emu, sqlite_url, FeedOptions(enabled=False))
        feed()
        emu.world.advance(10)
        figures, _ = feed()
        assert emu.server.stats.events_requests == 0
        assert figures.rows_seen == len(emu.world.truth()) and figures.events_applied == 0
        feed.engine.dispose()


def test_the_sweep_interval_follows_taskrouter_s_clock(sqlite_url):
    with Emulator(events_world(), Faults()) as emu:
        feed = Syncer(emu, sqlite_url, replace(FeedOptions(), sweep_interval=timedelta(minutes=30)))
        first, _ = feed()
        assert first.rows_seen > 0  # the first sync sweeps
        emu.world.advance(20)
        assert feed()[0].rows_seen == 0
        emu.world.advance(11)
        assert feed()[0].rows_seen == len(emu.world.truth())  # 31 minutes since the sweep
        assert feed()[0].rows_seen == 0
        feed.engine.dispose()


def test_the_catch_up_survives_every_fault_kind_and_a_failing_workspace_fails_alone(sqlite_url):
    with Emulator(events_world(), Faults(fault_rate=0.15, slow_seconds=1.0, seed=3)) as emu:
        feed = Syncer(emu, sqlite_url, FeedOptions(window_events=1000))
        figures, result = feed(read_timeout=0.5, max_attempts=6)
        assert sum(emu.server.stats.faults.values()) >= 5 and figures.retries > 0
        assert figures.events_failed == [] and figures.event_windows > len(emu.world.workspaces)
        emu.world.advance(30)
        feed(read_timeout=0.5, max_attempts=6)
        assert_holds_everything_ever_shown(sqlite_url, emu)
        # a workspace whose events keep failing: the others are applied, it resumes later
        emu.server.set_faults(Faults(events_fail_after=emu.server.stats.events_requests + 1))
        emu.world.advance(30)
        figures, result = feed(max_attempts=2)
        first, second = list(emu.world.workspaces)
        assert figures.events_failed == [second] and figures.events_applied > 0
        assert any(second in n and "resumes" in n for n in result.notices)
        emu.server.set_faults(Faults())
        feed()
        assert_holds_everything_ever_shown(sqlite_url, emu)
        feed.engine.dispose()
