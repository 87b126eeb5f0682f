"""`make report`: the page's first table equals the summary's GROUP BY, the page stands alone,
and a real headless Chromium shows the chart.

The warehouse is filled by the real path (emulator over HTTP -> sync -> summary refresh), and
the expected figures are read with SQL straight from ``reservation_daily_status_counts``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.loading import list_workers_by_workspace, load_reservations, load_workers
from pipelines.report import STATUS_COLOURS, write_report
from pipelines.taskrouter import TaskRouterClient, credentials_from_env
from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import PROJECT_ROOT, services_required, small_world
from warehouse.engine import create_warehouse_engine
from warehouse.lifecycle import KNOWN_STATUSES
from warehouse.migrate import ensure_schema
from warehouse.report import acceptance, build_report, day_span
from warehouse.schema import reservation_daily_status_counts as counts
from warehouse.summary import refresh_changed_days

ZONE = "America/New_York"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def fill(url: str) -> None:
    """Two syncs of a 45-day world (statuses move between them), summarized in New York days."""
    with Emulator(small_world(history_days=45, reservations_per_worker=60), Faults()) as emulator:
        engine = create_warehouse_engine(url)
        ensure_schema(engine)
        with TaskRouterClient(credentials_from_env(emulator.env()), emulator.base_url) as client:
            workspaces = list(emulator.world.workspaces)
            load_workers(client, engine, workspaces)
            for minutes in (0, 30):
                if minutes:
                    emulator.world.advance(minutes)
                load_reservations(client, engine, list_workers_by_workspace(client, workspaces))
        refresh_changed_days(engine, ZONE)
        engine.dispose()


def group_by_day(url: str, first: date, last: date) -> dict[date, int]:
    """The done-when query: SELECT day, SUM(reservation_count) ... GROUP BY day."""
    engine = create_warehouse_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT day, SUM(reservation_count) FROM reservation_daily_status_counts "
                "GROUP BY day")).all()
    finally:
        engine.dispose()
    days = {(d if isinstance(d, date) else date.fromisoformat(str(d))): int(n) for d, n in rows}
    return {d: n for d, n in days.items() if first <= d <= last}


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts; also notes scripts and external links."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.svgs = 0
        self.external: list[str] = []
        self.scripts = 0
        self._depth = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and re.match(r"(https?:)?//", value):
                self.external.append(value)
        if tag == "svg":
            self.svgs += 1
        elif tag == "script":
            self.scripts += 1
        elif tag == "table":
            self.tables.append([])
            self._depth += 1
        elif tag == "tr" and self._depth:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self._depth:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(page: str) -> Tables:
    parser = Tables()
    parser.feed(page)
    return parser


def first_table_totals(page: str) -> tuple[list[str], dict[date, int]]:
    """The first table's header and its per-day totals, checking its shape on the way."""
    table = parse(page).tables[0]
    header, rows = table[0], table[1:]
    assert header[0] == "Day" and header[-1] == "Total", header
    statuses = header[1:-1]
    assert len(set(statuses)) == len(statuses) and all(not s.isdigit() for s in statuses)
    totals = {}
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row[0]), row
        values = [int(cell) for cell in row[1:]]  # every other column is an integer count
        assert len(values) == len(statuses) + 1 and sum(values[:-1]) == values[-1], row
        totals[date.fromisoformat(row[0])] = values[-1]
    return header, totals


def test_the_first_table_equals_the_summary_group_by(warehouse_url, tmp_path):
    fill(warehouse_url)
    engine = create_warehouse_engine(warehouse_url)
    try:
        first_day, last_day = day_span(engine)  # type: ignore[misc]
        report = write_report(engine, tmp_path / "report.html", warehouse="test")
        chosen = write_report(engine, tmp_path / "range.html", last_day - timedelta(days=40),
                              last_day - timedelta(days=35), warehouse="test")
    finally:
        engine.dispose()
    assert (last_day - first_day).days > 40  # more history than the default range shows
    assert (report.first, report.last) == (last_day - timedelta(days=29), last_day)
    header, totals = first_table_totals((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert totals == group_by_day(warehouse_url, report.first, report.last)
    assert len(totals) > 20 and sum(totals.values()) == report.total
    assert header[1:-1] == [s for s in KNOWN_STATUSES if s in header]  # lifecycle order
    assert report.zone == ZONE

    _, ranged = first_table_totals((tmp_path / "range.html").read_text(encoding="utf-8"))
    assert ranged == group_by_day(warehouse_url, chosen.first, chosen.last) and ranged
    assert all(chosen.first <= day <= chosen.last for day in ranged)


def test_the_acceptance_rate_counts_the_workers_decisions_only():
    day = date(2026, 11, 2)
    table = pd.DataFrame({"pending": [4], "accepted": [2], "completed": [3], "rejected": [1],
                          "timeout": [1], "canceled": [5], "rescinded": [2]}, index=[day])
    rates = acceptance(table)
    assert rates.loc[day, "accepted"] == 5 and rates.loc[day, "decided"] == 7
    assert rates.loc[day, "rate"] == pytest.approx(5 / 7)
    assert str(rates["rate"].dtype) == "float64"
    undecided = acceptance(pd.DataFrame({"canceled": [3]}, index=[day]))
    assert undecided.loc[day, "decided"] == 0 and pd.isna(undecided.loc[day, "rate"])


def test_an_empty_warehouse_and_hostile_status_names(sqlite_url, tmp_path):
    engine = create_warehouse_engine(sqlite_url)
    try:
        ensure_schema(engine)
        write_report(engine, tmp_path / "empty.html", warehouse="test")
        empty = (tmp_path / "empty.html").read_text(encoding="utf-8")
        assert "No reservations in this range" in empty
        assert parse(empty).tables[0] == [["Day", "Total"]]
        with engine.begin() as conn:  # a status TaskRouter might add, written by someone hostile
            conn.execute(counts.insert(), [
                {"day": date(2026, 11, 2), "workspace_sid": "WS1", "worker_sid": "WK1",
                 "reservation_status": "<b>escalated</b>", "reservation_count": 3},
                {"day": date(2026, 11, 2), "workspace_sid": "WS1", "worker_sid": "WK1",
                 "reservation_status": "accepted", "reservation_count": 2}])
        report = build_report(engine)
        write_report(engine, tmp_path / "odd.html", warehouse="<i>x</i>")
    finally:
        engine.dispose()
    odd = (tmp_path / "odd.html").read_text(encoding="utf-8")
    assert "<b>escalated</b>" not in odd and "&lt;b&gt;escalated&lt;/b&gt;" in odd
    assert "<i>x</i>" not in odd
    header, totals = first_table_totals(odd)
    assert header == ["Day", "accepted", "<b>escalated</b>", "Total"]
    assert totals == {date(2026, 11, 2): 5} and report.overall_rate == 1.0


def test_make_report_command_writes_the_page_after_a_sync(sync_env, tmp_path):
    """The command behind `make report`, after a real sync through Dagster."""
    from tests.helpers import run_sync_job

    assert run_sync_job().success
    output = tmp_path / "out" / "report.html"
    env = {**os.environ, **sync_env, "LOG_DIR": str(tmp_path / "logs")}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", "--output", str(output)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Wrote {output}" in done.stdout and output.as_uri() in done.stdout
    page = output.read_text(encoding="utf-8")
    _, totals = first_table_totals(page)
    last = max(group_by_day(sync_env["WAREHOUSE_URL"], date.min, date.max))
    assert totals == group_by_day(sync_env["WAREHOUSE_URL"], last - timedelta(days=29), last)
    found = parse(page)
    assert found.svgs >= 1 and found.scripts == 0 and found.external == []  # stands alone
    assert len(found.tables) == 2 and found.tables[1][0][-1] == "Acceptance rate"

    bad = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", "--from", "someday"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


# -- in a real browser -----------------------------------------------------------------------
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Chromium is not installed (.ci/run installs it: apt-get install -y chromium)"
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but {message}")
        pytest.skip(message)
    return found


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium headless in its own process group, killed whole if it does not finish."""
    process = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def colour_pixels(png: Path, colour: str, tolerance: float = 0.03) -> int:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))[..., :3]
    target = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    return int((abs(pixels - target) <= tolerance).all(axis=-1).sum())


def test_headless_chromium_shows_the_chart_and_the_table(sqlite_url, tmp_path):
    binary = chromium()
    fill(sqlite_url)
    engine = create_warehouse_engine(sqlite_url)
    try:
        report = write_report(engine, tmp_path / "report.html", warehouse="test")
    finally:
        engine.dispose()
    page = (tmp_path / "report.html").as_uri()
    dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = parse(dom.stdout)
    assert rendered.svgs >= 1
    _, totals = first_table_totals(dom.stdout)
    assert sum(totals.values()) == report.total > 0

    shot = tmp_path / "report.png"
    done = run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}",
                        "--window-size=1200,1000", page)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    # the bars are drawn in the status colours: each big status shows as a solid area
    for status in ("completed", "rejected", "timeout", "canceled"):
        assert colour_pixels(shot, STATUS_COLOURS[status]) > 500, status
