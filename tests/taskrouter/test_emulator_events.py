"""The emulator behaves as TaskRouter does where the Events feed depends on it: events for every
creation and transition, newest first with token paging and the documented filters, a 30-day
retention, CumulativeStatistics from the same log, a Date header with its own clock, and tasks
deleted five minutes after they end (so reservations are born and gone between two reads)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest
import requests

from pipelines.taskrouter.emulator import Emulator, Faults
from pipelines.taskrouter.emulator_world import World
from tests.helpers import ANCHOR, small_world


@pytest.fixture
def emu():  # type: ignore[no-untyped-def]
    with Emulator(small_world(workers_per_workspace=5, reservations_per_worker=10,
                              arrivals_per_hour=6.0), Faults()) as emulator:
        yield emulator


def get(emu: Emulator, path: str, **params: object) -> requests.Response:
    env = emu.env()
    return requests.get(f"{emu.base_url}{path}", params=params, timeout=10,
                        auth=(env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"]))


def all_events(emu: Emulator, ws: str, **params: object) -> list[dict]:
    body = get(emu, f"/v1/Workspaces/{ws}/Events", PageSize=40, **params).json()
    events = list(body["events"])
    while body["meta"]["next_page_url"]:
        assert "PageToken=" in body["meta"]["next_page_url"]
        body = requests.get(body["meta"]["next_page_url"], timeout=10, auth=(
            emu.world.account_sid, emu.world.auth_token)).json()
        events.extend(body["events"])
    return events


def test_every_change_is_an_event_newest_first_and_paged(emu):
    ws = next(iter(emu.world.workspaces))
    emu.world.advance(90)
    events = all_events(emu, ws, StartDate="2026-11-03T11:00:00Z")
    stamps = [e["event_date_ms"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    assert len({e["sid"] for e in events}) == len(events)
    kinds = Counter(e["event_type"] for e in events)
    assert kinds["reservation.created"] and kinds["reservation.completed"]
    assert kinds["task.created"] and kinds["task.deleted"], "non-reservation events are there too"
    created = next(e for e in events if e["event_type"] == "reservation.created")
    data = created["event_data"]
    assert data["reservation_status"] == "pending" and data["reservation_sid"].startswith("WR")
    assert isinstance(data["task_age"], str), "TaskRouter sends some numbers as strings"
    assert {"task_queue_sid", "task_queue_name", "task_channel_unique_name", "workflow_sid",
            "worker_sid", "worker_name", "task_sid"} <= set(data)
    # each list record's version is its last event
    latest: dict[str, dict] = {}
    for e in reversed(events):
        if e["event_type"].startswith("reservation."):
            latest[e["event_data"]["reservation_sid"]] = e
    for record in emu.world.truth():
        if record["sid"] in latest:
            assert latest[record["sid"]]["event_date"] == record["date_updated"]
            assert latest[record["sid"]]["event_data"]["reservation_status"] == record[
                "reservation_status"]


def test_filters_and_the_retention(emu):
    ws = next(iter(emu.world.workspaces))
    emu.world.advance(60)
    every = all_events(emu, ws, Minutes=120)
    one = next(e for e in every if e["event_type"] == "reservation.accepted")
    reservation = one["event_data"]["reservation_sid"]
    by_type = all_events(emu, ws, Minutes=120, EventType="reservation.accepted")
    assert by_type and {e["event_type"] for e in by_type} == {"reservation.accepted"}
    mine = all_events(emu, ws, Minutes=120, ReservationSid=reservation)
    assert {e["event_data"]["reservation_sid"] for e in mine} == {reservation}
    assert [e["sid"] for e in all_events(emu, ws, Minutes=120, Sid=one["sid"])] == [one["sid"]]
    worker = one["event_data"]["worker_sid"]
    assert all(e["event_data"].get("worker_sid") == worker
               for e in all_events(emu, ws, Minutes=120, WorkerSid=worker))
    task = one["event_data"]["task_sid"]
    assert all(e["event_data"]["task_sid"] == task for e in all_events(emu, ws, Minutes=120, TaskSid=task))
    # inclusive EndDate, whole seconds
    at = one["event_date"]
    assert one["sid"] in {e["sid"] for e in all_events(emu, ws, StartDate=at, EndDate=at)}
    old = get(emu, f"/v1/Workspaces/{ws}/Events", StartDate="2026-09-01T00:00:00Z")
    assert old.status_code == 400 and old.json()["code"] == 20001
    emu.server.set_faults(Faults(events_retention="truncate"))
    assert get(emu, f"/v1/Workspaces/{ws}/Events", StartDate="2026-09-01T00:00:00Z").ok
    emu.server.set_faults(Faults(events_refused=403))
    assert get(emu, f"/v1/Workspaces/{ws}/Events").status_code == 403


def test_statistics_count_the_log_and_the_date_header_is_the_world_clock(emu):
    ws = next(iter(emu.world.workspaces))
    emu.world.advance(45)
    answer = get(emu, f"/v1/Workspaces/{ws}/CumulativeStatistics", Minutes=60)
    assert parsedate_to_datetime(answer.headers["Date"]) == datetime.fromtimestamp(
        emu.world.clock, UTC)
    stats = answer.json()
    events = all_events(emu, ws, Minutes=60)
    kinds = Counter(e["event_type"] for e in events)
    assert stats["reservations_created"] == kinds["reservation.created"] > 0
    assert stats["reservations_accepted"] == kinds["reservation.accepted"]
    assert stats["reservations_timed_out"] == kinds["reservation.timeout"]
    too_old = get(emu, f"/v1/Workspaces/{ws}/CumulativeStatistics",
                  StartDate="2026-09-01T00:00:00Z")
    assert too_old.status_code == 400


def test_finished_tasks_vanish_five_minutes_after_they_end():
    world = World(small_world(workers_per_workspace=4, reservations_per_worker=5,
                              arrivals_per_hour=12.0))
    world.advance(120)
    ended: dict[str, int] = {}
    for sid, status, at in world.transitions():
        if status in ("completed", "canceled"):
            ended[sid] = at
    live = {r["sid"]: r for r in world.truth()}
    ever = {r["sid"]: r for r in world.ever()}
    born_here = [s for s, r in ever.items()
                 if datetime.fromisoformat(r["date_created"].replace("Z", "+00:00")) > ANCHOR]
    gone = [s for s in born_here if s not in live]
    assert gone and any(s in live for s in born_here)
    for sid in born_here:
        if sid in ended and ended[sid] + 300 <= world.clock:
            assert sid not in live, "a task is deleted five minutes after it ends"
        if sid in ended and ended[sid] + 300 > world.clock:
            assert sid in live, "and not before"


def test_the_world_is_the_same_however_the_clock_got_there():
    coarse = World(small_world(workers_per_workspace=4, reservations_per_worker=5))
    fine = World(small_world(workers_per_workspace=4, reservations_per_worker=5))
    coarse.advance(90)
    for _ in range(6):
        fine.advance(15)
    assert coarse.clock == fine.clock
    key = lambda r: r["sid"]  # noqa: E731
    assert sorted(coarse.ever(), key=key) == sorted(fine.ever(), key=key)
    assert coarse.transitions() == fine.transitions()
    for ws in coarse.workspaces:
        assert (coarse.logs[ws].events == fine.logs[ws].events).all()


def test_a_busy_window_read_in_slices_is_every_reservation_event_once(emu):
    from datetime import timedelta

    from pipelines.taskrouter import ClientOptions, TaskRouterClient, credentials_from_env
    from pipelines.taskrouter.events import _slices, read_event_window

    ws = next(iter(emu.world.workspaces))
    emu.world.advance(120)
    end = datetime.fromtimestamp(emu.world.clock, UTC)
    start = end - timedelta(hours=3)
    expected = {e["sid"] for e in all_events(emu, ws, StartDate=start.isoformat(),
                                              EndDate=end.isoformat())
                if e["event_type"].startswith("reservation.")}
    with TaskRouterClient(credentials_from_env(emu.env()), emu.base_url,
                          ClientOptions(page_size=20, concurrency=4)) as client:
        window = read_event_window(client, ws, start, end)
    got = [e["sid"] for e in window.events]
    assert len(got) == len(set(got)) and set(got) == expected and window.pages > 4
    # the slices cover every second once
    pieces = _slices(start, end, 4)
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all((b[0] - a[1]).total_seconds() == 1 for a, b in zip(pieces, pieces[1:], strict=False))
