"""The README's example SQL runs unchanged on SQLite, PostgreSQL and MariaDB and agrees with pandas.

The data comes from the real path: emulator -> syncs across clock advances (so the history holds
transitions) -> summaries in a DST-observing reporting zone. pandas recomputes every answer from
the raw ``reservations`` and ``reservation_status_history`` rows, never from the summary table.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import sqlalchemy as sa

from pipelines.loading import list_workers_by_workspace, load_reservations, load_workers
from pipelines.taskrouter import TaskRouterClient, credentials_from_env
from pipelines.taskrouter.emulator import Emulator, Faults
from tests.conftest import PROJECT_ROOT, small_world
from tests.helpers import warehouse_frame
from warehouse.engine import create_warehouse_engine
from warehouse.examples import EXAMPLES, run_example
from warehouse.migrate import ensure_schema
from warehouse.summary import refresh_changed_days

ZONE = "America/New_York"
ACCEPTED = {"accepted", "wrapping", "completed"}
WEEK_START, WEEK_END = date(2026, 10, 27), date(2026, 11, 3)  # the 7 days before ANCHOR's


def build_warehouse(url: str) -> None:
    with Emulator(small_world(reservations_per_worker=40, history_days=3), Faults()) as emulator:
        engine = create_warehouse_engine(url)
        ensure_schema(engine)
        creds = credentials_from_env(emulator.env())
        with TaskRouterClient(creds, emulator.base_url) as client:
            workspaces = list(emulator.world.workspaces)
            load_workers(client, engine, workspaces)
            for minutes in (0, 8, 8, 8, 30):
                if minutes:
                    emulator.world.advance(minutes)
                load_reservations(client, engine, list_workers_by_workspace(client, workspaces))
        refresh_changed_days(engine, ZONE)
        engine.dispose()


def as_day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def close(a: object, b: object, tolerance: float) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return a is None and (b is None or math.isnan(b))  # type: ignore[arg-type]
    return abs(float(a) - float(b)) <= tolerance  # type: ignore[arg-type]


def expected_acceptance(res: pd.DataFrame) -> list[tuple[object, ...]]:
    res = res.assign(day=pd.to_datetime(res["date_created"], utc=True)
                     .dt.tz_convert(ZoneInfo(ZONE)).dt.date)
    out = []
    for (day, ws, wk), group in res.groupby(["day", "workspace_sid", "worker_sid"], sort=True):
        status = group["reservation_status"]
        accepted, decided = int(status.isin(ACCEPTED).sum()), int((status != "pending").sum())
        out.append((day, ws, wk, len(group), accepted, accepted / decided if decided else None))
    return out


def expected_median(res: pd.DataFrame, hist: pd.DataFrame) -> list[tuple[object, ...]]:
    accepted = hist[hist["reservation_status"] == "accepted"].merge(
        res[["sid", "workspace_sid", "date_created"]], on="sid")
    accepted["seconds"] = (pd.to_datetime(accepted["date_updated"], utc=True)
                           - pd.to_datetime(accepted["date_created"], utc=True)).dt.total_seconds()
    first = accepted.groupby(["workspace_sid", "sid"])["seconds"].min().reset_index()
    return [(ws, float(g["seconds"].median()), len(g))
            for ws, g in first.groupby("workspace_sid", sort=True)]


def expected_by_hour(res: pd.DataFrame) -> list[tuple[object, ...]]:
    hour = pd.to_datetime(res["date_created"], utc=True).dt.hour
    counts = res.assign(hour=hour).groupby(["hour", "reservation_status"]).size()
    return [(int(h), s, int(n)) for (h, s), n in counts.sort_index().items()]


def expected_timeouts(res: pd.DataFrame, workers: pd.DataFrame) -> list[tuple[object, ...]]:
    day = pd.to_datetime(res["date_created"], utc=True).dt.tz_convert(ZoneInfo(ZONE)).dt.date
    picked = res[(res["reservation_status"] == "timeout") & (day >= WEEK_START) & (day < WEEK_END)]
    grouped = picked.groupby(["workspace_sid", "worker_sid"]).size().reset_index(name="timeouts")
    names = dict(zip(workers["sid"], workers["friendly_name"], strict=True))
    grouped["friendly_name"] = grouped["worker_sid"].map(names)
    grouped = grouped.assign(neg=-grouped["timeouts"]).sort_values(
        ["neg", "workspace_sid", "worker_sid"]).head(10)
    return [(r.workspace_sid, r.worker_sid, r.friendly_name, int(r.timeouts))
            for r in grouped.itertuples()]


def test_example_queries_agree_with_pandas(warehouse_url):
    build_warehouse(warehouse_url)
    res = warehouse_frame(warehouse_url)
    hist = warehouse_frame(warehouse_url, "reservation_status_history")
    workers = warehouse_frame(warehouse_url, "workers")
    assert (hist["previous_status"].notna()).any(), "the syncs should have seen transitions"
    # the history's precomputed durations are date_updated - date_created, to the second
    joined = hist.merge(res[["sid", "date_created"]], on="sid")
    seconds = (pd.to_datetime(joined["date_updated"], utc=True)
               - pd.to_datetime(joined["date_created"], utc=True)).dt.total_seconds()
    assert len(joined) == len(hist) and (joined["seconds_since_created"] == seconds).all()
    engine = create_warehouse_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            got = {name: run_example(conn, name, week_start=WEEK_START, week_end=WEEK_END)
                   for name in EXAMPLES}
    finally:
        engine.dispose()

    rates = got["acceptance_rate_per_worker_per_day"]
    expected = expected_acceptance(res)
    assert len(rates) == len(expected) > 20
    for row, want in zip(rates.itertuples(index=False), expected, strict=True):
        assert (as_day(row.day), row.workspace_sid, row.worker_sid, int(row.reservations),
                int(row.accepted)) == want[:5]
        assert close(None if pd.isna(row.acceptance_rate) else row.acceptance_rate, want[5],
                     0.5e-4 + 1e-9), (row, want)

    medians = got["median_seconds_created_to_accepted"]
    want_medians = expected_median(res, hist)
    assert len(medians) == len(want_medians) == 2
    for row, want in zip(medians.itertuples(index=False), want_medians, strict=True):
        assert row.workspace_sid == want[0] and int(row.accepted_reservations) == want[2] > 5
        assert close(row.median_seconds, want[1], 1e-6), (row, want)
    assert any(want[1] > 0 for want in want_medians)

    by_hour = got["reservations_per_status_per_hour"]
    assert [(int(h), s, int(n)) for h, s, n in by_hour.itertuples(index=False)] \
        == expected_by_hour(res)
    assert by_hour["reservations"].astype(int).sum() == len(res)

    top = got["workers_with_most_timeouts"]
    want_top = expected_timeouts(res, workers)
    assert want_top, "the chosen week should hold timeouts"
    assert [(a, b, c, int(d)) for a, b, c, d in top.itertuples(index=False)] == want_top


def test_readme_shows_every_example_verbatim():
    readme = (Path(PROJECT_ROOT) / "README.md").read_text(encoding="utf-8")
    for example in EXAMPLES.values():
        assert example.sql in readme, f"README is missing the SQL of {example.name}"
    with_params = [e for e in EXAMPLES.values() if e.date_params]
    assert all(isinstance(e.statement(), sa.TextClause) for e in with_params)
