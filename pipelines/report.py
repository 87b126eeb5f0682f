"""`make report`: the daily status report as one self-contained HTML page.

The figures come from ``warehouse.report``; this module only draws them: a chart (matplotlib,
Agg backend, inlined as SVG, so the page needs no network and no other file) of reservations
per day stacked by status with the acceptance rate below it, then the same counts as an HTML
table, the page's first ``<table>``: one row per day (``YYYY-MM-DD``), one integer column per
status and ``Total``. The acceptance rate has its own table after it.
"""

from __future__ import annotations

import html
import io
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from warehouse.report import DailyReport

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REPORT_PATH = PROJECT_ROOT / "data" / "report.html"

# One colour per known status (accepted work in blues and greens, the worker's refusals in
# red and orange, the rest muted); statuses TaskRouter adds later take the spare colours.
STATUS_COLOURS = {
    "pending": "#bab0ac", "accepted": "#4e79a7", "wrapping": "#76b7b2", "completed": "#59a14f",
    "rejected": "#e15759", "timeout": "#f28e2b", "canceled": "#9c755f", "rescinded": "#b07aa1",
}
SPARE_COLOURS = ("#edc948", "#ff9da7", "#8cd17d", "#499894", "#d37295", "#79706e")

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: #555; margin-top: 0; } figure { margin: 1rem 0; } svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; } thead th { border-bottom: 2px solid #999; }
tbody tr:nth-child(even) { background: #f6f6f6; } .note { color: #555; font-size: .9rem; }
"""


def colours(statuses: list[str]) -> dict[str, str]:
    spare = iter(SPARE_COLOURS * (1 + len(statuses) // len(SPARE_COLOURS)))
    return {s: STATUS_COLOURS.get(s) or next(spare) for s in statuses}


def _all_days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def chart_svg(report: DailyReport) -> str:
    """The chart as an inline ``<svg>`` element: stacked bars per day, the rate below."""
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe where another backend was chosen
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    days = _all_days(report.first, report.last)
    counts = report.counts.reindex(days, fill_value=0)  # days without data show as gaps
    rate = report.rates["rate"].reindex(days) * 100
    palette = colours(list(counts.columns))
    with matplotlib.rc_context({"svg.hashsalt": "taskrouter-report", "font.size": 9}):
        figure, (bars, line) = plt.subplots(
            2, 1, figsize=(11, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]},
            layout="constrained")
        bottom = [0] * len(days)
        for status in counts.columns:
            values = counts[status].tolist()
            bars.bar(days, values, bottom=bottom, width=0.8, label=status, color=palette[status])
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        bars.set_ylabel("reservations")
        bars.set_title(f"Reservations per day by current status ({report.zone} days)",
                       loc="left", fontsize=11)
        bars.legend(ncols=min(len(counts.columns), 8), loc="upper left",
                    bbox_to_anchor=(0, -0.01, 1, 0), frameon=False, fontsize=8)
        bars.grid(axis="y", color="#e5e5e5")
        bars.set_axisbelow(True)
        line.plot(days, rate.tolist(), marker="o", markersize=3, color="#4e79a7")
        line.set_ylim(0, 100)
        line.set_ylabel("acceptance %")
        line.grid(axis="y", color="#e5e5e5")
        margin = timedelta(hours=14)  # half a bar and a little air on both ends
        line.set_xlim(datetime.combine(days[0], time()) - margin,
                      datetime.combine(days[-1], time()) + margin)
        line.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
        line.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, len(days) // 12)))
        for axis in (bars, line):
            axis.spines[["top", "right"]].set_visible(False)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
        plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline in HTML


def _cell(value: object) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def counts_table(report: DailyReport) -> str:
    """The first table: Day, one column per status, Total; one row per day with data."""
    statuses = list(report.counts.columns)
    head = "".join(f"<th>{html.escape(s)}</th>" for s in statuses)
    rows = []
    for day, row in report.counts.iterrows():
        values = [int(row[s]) for s in statuses]
        rows.append(f"<tr><td>{day.isoformat()}</td>"  # type: ignore[union-attr]
                    + "".join(_cell(v) for v in values) + _cell(sum(values)) + "</tr>")
    return (f'<table id="daily-status-counts">\n<thead><tr><th>Day</th>{head}<th>Total</th>'
            f"</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>")


def rates_table(report: DailyReport) -> str:
    rows = []
    for day, row in report.rates.iterrows():
        rate = "" if row["rate"] != row["rate"] else f"{row['rate'] * 100:.1f}%"  # NaN: no decision
        rows.append(f"<tr><td>{day.isoformat()}</td>{_cell(int(row['accepted']))}"  # type: ignore[union-attr]
                    f"{_cell(int(row['decided']))}{_cell(rate)}</tr>")
    return ('<table id="acceptance-rate">\n<thead><tr><th>Day</th><th>Accepted</th>'
            "<th>Decided</th><th>Acceptance rate</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>")


def render_html(report: DailyReport, warehouse: str, generated: datetime | None = None) -> str:
    """The whole page (no script, no external resource)."""
    generated = generated or datetime.now(UTC)
    overall = report.overall_rate
    title = f"TaskRouter reservations, {report.first} to {report.last}"
    summary = (f"{report.first} to {report.last}, days in {report.zone}: "
               f"{report.total:,} reservations on {len(report.counts)} day(s); acceptance rate "
               f"{'n/a' if overall is None else f'{overall * 100:.1f}%'}.")
    if report.counts.empty:
        figure = "<p><strong>No reservations in this range.</strong></p>"
    else:
        figure = (f"<figure>{chart_svg(report)}<figcaption class=\"note\">Bars: reservations "
                  "created each day, by their current status. Line: the acceptance rate.</figcaption>"
                  "</figure>")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>TaskRouter reservations by day and status</h1>
<p class="meta">{html.escape(summary)}<br>Warehouse {html.escape(warehouse)}; generated
{generated:%Y-%m-%d %H:%M} UTC by <code>make report</code>.</p>
{figure}
<h2>Reservations per day and status</h2>
{counts_table(report)}
<p class="note">A reservation counts on the day it was created (in {html.escape(report.zone)}),
under the status it has now; days without reservations are left out. Same figures as
<code>SELECT day, reservation_status, SUM(reservation_count) FROM reservation_daily_status_counts
GROUP BY day, reservation_status</code>.</p>
<h2>Acceptance rate per day</h2>
{rates_table(report)}
<p class="note">Acceptance rate: the worker's own decisions only. Reservations now
<code>accepted</code>, <code>wrapping</code> or <code>completed</code>, over those plus
<code>rejected</code> and <code>timeout</code>. <code>canceled</code> and <code>rescinded</code>
(the task was withdrawn, not refused) and <code>pending</code> (undecided) are left out.</p>
</body>
</html>
"""


def write_report(engine: Engine, output: Path = REPORT_PATH, first: date | None = None,
                 last: date | None = None, warehouse: str = "") -> DailyReport:
    """Build the report for [first, last] (default: the 30 days ending at the latest day with
    data) and write it to ``output`` atomically (a half-written page is never left there)."""
    from warehouse.report import build_report

    report = build_report(engine, first, last)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".tmp")
    partial.write_text(render_html(report, warehouse), encoding="utf-8")
    partial.replace(output)
    return report
