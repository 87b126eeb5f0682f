"""The analyst SQL of docs/data-dictionary.md runs as pasted on SQLite, PostgreSQL and MariaDB,
through SQLAlchemy and through the sqlite3/psql/mysql clients, and agrees with pandas.

The data comes from the real path: emulator -> syncs across clock advances (so the history holds
transitions) -> summaries in a DST-observing reporting zone. pandas recomputes every answer from
the raw ``reservations`` and ``reservation_status_history`` rows, never from the summary table.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import subprocess
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.loading import list_workers_by_workspace, load_reservations, load_workers
from pipelines.taskrouter import TaskRouterClient, credentials_from_env
from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import small_world, warehouse_frame
from warehouse.engine import create_warehouse_engine
from warehouse.examples import CLIENTS, DTYPES, EXAMPLES, example_dates, run_example
from warehouse.migrate import ensure_schema
from warehouse.report import ACCEPTED_STATUSES, DECIDED_STATUSES
from warehouse.summary import refresh_changed_days

ZONE = "America/New_York"
STEP = {"pending": 0, "accepted": 1, "wrapping": 2}


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


@pytest.fixture
def analyst_url(warehouse_url: str) -> str:
    build_warehouse(warehouse_url)
    return warehouse_url


def half_up(numerator: int, denominator: int, places: int) -> float:
    """SQL's ROUND of an exact quotient (half away from zero), not Python's float rounding."""
    exact = Decimal(numerator) / Decimal(denominator)
    return float(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def close(a: object, b: object, tolerance: float) -> bool:
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)]
    if any(missing):
        return all(missing)
    return abs(float(a) - float(b)) <= tolerance  # type: ignore[arg-type]


def local_day(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["date_created"], utc=True).dt.tz_convert(ZoneInfo(ZONE)).dt.date


def expected_acceptance(res: pd.DataFrame) -> list[tuple[object, ...]]:
    out = []
    for (day, ws, wk), group in res.assign(day=local_day(res)).groupby(
            ["day", "workspace_sid", "worker_sid"], sort=True):
        status = group["reservation_status"]
        accepted = int(status.isin(ACCEPTED_STATUSES).sum())
        decided = int(status.isin(DECIDED_STATUSES).sum())
        out.append((day, ws, wk, len(group), accepted, decided,
                    half_up(accepted, decided, 4) if decided else None))
    return out


def expected_median(res: pd.DataFrame, hist: pd.DataFrame) -> list[tuple[object, ...]]:
    accepted = hist[hist["reservation_status"] == "accepted"].merge(
        res[["sid", "workspace_sid"]], on="sid")
    first = accepted.groupby(["workspace_sid", "sid"])["seconds_since_created"].min().reset_index()
    return [(ws, float(g["seconds_since_created"].median()), len(g))
            for ws, g in first.groupby("workspace_sid", sort=True)]


def expected_by_hour(res: pd.DataFrame) -> list[tuple[object, ...]]:
    hour = pd.to_datetime(res["date_created"], utc=True).dt.hour
    counts = res.assign(hour=hour).groupby(["hour", "reservation_status"]).size()
    return [(int(h), s, int(n)) for (h, s), n in counts.sort_index().items()]


def expected_timeouts(res: pd.DataFrame, workers: pd.DataFrame) -> list[tuple[object, ...]]:
    week = example_dates("workers_with_most_timeouts")
    day = local_day(res)
    picked = res[(res["reservation_status"] == "timeout") & (day >= week["week_start"])
                 & (day < week["week_end"])]
    grouped = picked.groupby(["workspace_sid", "worker_sid"]).size().reset_index(name="timeouts")
    names = dict(zip(workers["sid"], workers["friendly_name"], strict=True))
    grouped["friendly_name"] = grouped["worker_sid"].map(names)
    grouped = grouped.assign(neg=-grouped["timeouts"]).sort_values(
        ["neg", "workspace_sid", "worker_sid"]).head(10)
    return [(r.workspace_sid, r.worker_sid, r.friendly_name, int(r.timeouts))
            for r in grouped.itertuples()]


def expected_time_in_status(hist: pd.DataFrame) -> list[tuple[object, ...]]:
    """Per reservation, its statuses in the order entered; each lasts until the next one."""
    out = []
    steps = hist.assign(step=hist["reservation_status"].map(STEP).fillna(3))
    for sid, group in steps.sort_values(["sid", "seconds_since_created", "step"]).groupby(
            "sid", sort=True):
        entered = [int(v) for v in group["seconds_since_created"]]
        for i, status in enumerate(group["reservation_status"]):
            following = entered[i + 1] - entered[i] if i + 1 < len(entered) else None
            out.append((sid, status, entered[i], following))
    return out


def expected_average_in_status(timed: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    frame = pd.DataFrame(timed, columns=["sid", "status", "entered", "seconds"]).dropna()
    return [(status, len(g), half_up(int(g["seconds"].sum()), len(g), 1))
            for status, g in frame.groupby("status", sort=True)]


def test_example_queries_as_pasted_agree_with_pandas_with_the_same_dtypes(analyst_url):
    res = warehouse_frame(analyst_url)
    hist = warehouse_frame(analyst_url, "reservation_status_history")
    workers = warehouse_frame(analyst_url, "workers")
    assert (hist["previous_status"].notna()).any(), "the syncs should have seen transitions"
    # the history's precomputed durations are date_updated - date_created, to the second
    joined = hist.merge(res[["sid", "date_created"]], on="sid")
    seconds = (pd.to_datetime(joined["date_updated"], utc=True)
               - pd.to_datetime(joined["date_created"], utc=True)).dt.total_seconds()
    assert len(joined) == len(hist) and (joined["seconds_since_created"] == seconds).all()
    engine = create_warehouse_engine(analyst_url)
    try:
        with engine.connect() as conn:
            got = {name: run_example(conn, name) for name in EXAMPLES}
    finally:
        engine.dispose()

    for name, frame in got.items():  # the same pandas types whatever the database
        for column, kind in EXAMPLES[name].columns.items():
            assert str(frame[column].dtype) == DTYPES[kind], (name, column, frame[column].dtype)
            if kind == "date":
                assert all(type(v) is date for v in frame[column]), (name, column)

    rates = got["acceptance_rate_per_worker_per_day"]
    expected = expected_acceptance(res)
    assert len(rates) == len(expected) > 20
    for row, want in zip(rates.itertuples(index=False), expected, strict=True):
        assert (row.day, row.workspace_sid, row.worker_sid, row.reservations, row.accepted,
                row.decided) == want[:6]
        assert close(row.acceptance_rate, want[6], 1e-9), (row, want)
    # canceled and rescinded are not the worker's decision: some day shows the difference
    assert any(r.decided < r.reservations for r in rates.itertuples())

    medians = got["median_seconds_created_to_accepted"]
    want_medians = expected_median(res, hist)
    assert len(medians) == len(want_medians) == 2
    for row, want in zip(medians.itertuples(index=False), want_medians, strict=True):
        assert row.workspace_sid == want[0] and row.reservations_timed == want[2] > 5
        assert close(row.median_seconds, round(want[1], 1), 1e-9), (row, want)

    by_hour = got["reservations_per_status_per_hour"]
    assert [tuple(r) for r in by_hour.itertuples(index=False)] == expected_by_hour(res)
    assert by_hour["reservations"].sum() == len(res)

    top = got["workers_with_most_timeouts"]
    want_top = expected_timeouts(res, workers)
    assert want_top, "the chosen week should hold timeouts"
    assert [tuple(r) for r in top.itertuples(index=False)] == want_top

    timed = got["seconds_in_each_status_per_reservation"]
    want_timed = expected_time_in_status(hist)
    assert len(timed) == len(hist) == len(want_timed)
    for row, want in zip(timed.itertuples(index=False), want_timed, strict=True):
        assert (row.sid, row.reservation_status, row.entered_after_seconds) == want[:3]
        assert close(row.seconds_in_status, want[3], 0), (row, want)
    assert (timed["seconds_in_status"] > 0).any()

    averages = got["average_seconds_in_each_status"]
    want_averages = expected_average_in_status(want_timed)
    assert len(averages) == len(want_averages) > 0
    for row, want in zip(averages.itertuples(index=False), want_averages, strict=True):
        assert (row.reservation_status, row.reservations) == want[:2]
        assert close(row.average_seconds, want[2], 1e-9), (row, want)


# -- the same text in each database's own client ----------------------------------------------
def _client_command(url: str) -> tuple[str, list[str]]:
    """The client for ``url``'s database and its arguments for CSV-like output."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return "sqlite3", ["sqlite3", "-batch", "-bail", "-csv", "-header", str(parsed.database)]
    if backend == "postgresql":
        return "psql", ["psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1",
                        "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432),
                        "-U", parsed.username or "postgres", "-d", str(parsed.database)]
    return "mysql", ["mysql", "--batch", "--default-character-set=utf8mb4",
                     "-h", parsed.host or "127.0.0.1", "-P", str(parsed.port or 3306),
                     "-u", parsed.username or "root", str(parsed.database)]


def _run_client(argv: list[str], script: str) -> list[dict[str, str | None]]:
    done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    dialect = csv.excel_tab if argv[0] == "mysql" else csv.excel
    rows = list(csv.DictReader(io.StringIO(done.stdout), dialect=dialect))
    null = "NULL" if argv[0] == "mysql" else ""
    return [{k: (None if v == null else v) for k, v in row.items()} for row in rows]


def _same(kind: str, printed: str | None, value: object) -> bool:
    if kind == "number":
        return close(None if printed is None else float(printed), value, 1e-9)
    if kind == "count":
        return printed is not None and int(printed) == value
    if kind == "date":
        return printed == value.isoformat()  # type: ignore[attr-defined]
    return printed == value


def test_example_queries_as_pasted_in_sqlite3_psql_and_mysql(analyst_url):
    """Each client runs the text as pasted, and the variable form the dictionary shows for it,
    and prints the numbers SQLAlchemy returns."""
    client, argv = _client_command(analyst_url)
    if shutil.which(client) is None:
        pytest.skip(f"the {client} client is not installed")
    engine = create_warehouse_engine(analyst_url)
    try:
        with engine.connect() as conn:
            expected = {name: run_example(conn, name) for name in EXAMPLES}
    finally:
        engine.dispose()
    for name, example in EXAMPLES.items():
        setup, with_variables = example.for_client(client)
        scripts = [example.sql + ";\n"]
        if setup:
            scripts.append("\n".join(setup) + "\n" + with_variables + ";\n")
        for script in scripts:
            rows = _run_client(argv, script)
            want = expected[name]
            assert len(rows) == len(want) > 0, (client, name, script)
            assert list(rows[0]) == list(want.columns), (client, name)
            for printed, row in zip(rows, want.itertuples(index=False), strict=True):
                for column, kind in example.columns.items():
                    assert _same(kind, printed[column], getattr(row, column)), \
                        (client, name, column, printed[column], getattr(row, column))


def test_client_variable_forms_use_each_clients_syntax():
    setup, sql = EXAMPLES["workers_with_most_timeouts"].for_client("sqlite3")
    assert setup == [".parameter set :week_start \"'2026-10-27'\"",
                     ".parameter set :week_end \"'2026-11-03'\""]
    assert "c.day >= :week_start AND c.day < :week_end" in sql
    setup, sql = EXAMPLES["workers_with_most_timeouts"].for_client("psql")
    assert setup == ["\\set week_start 2026-10-27", "\\set week_end 2026-11-03"]
    assert "c.day >= :'week_start' AND c.day < :'week_end'" in sql
    setup, sql = EXAMPLES["workers_with_most_timeouts"].for_client("mysql")
    assert setup == ["SET @week_start = '2026-10-27';", "SET @week_end = '2026-11-03';"]
    assert "c.day >= @week_start AND c.day < @week_end" in sql
    assert set(CLIENTS) == {"sqlite3", "psql", "mysql"}
