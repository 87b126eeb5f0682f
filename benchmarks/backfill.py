"""Summary backfill: a 365-day range recomputed in one run vs one run per partition.

On a warehouse holding ``--rows`` synthetic reservations (default 1,000,000) spread evenly over
365 days, for each database, in the same call:

- ``baseline: one refresh per partition``: 365 separate ``warehouse.summary.refresh_range(d, d)``
  calls, one transaction each: what 365 single-partition runs execute in SQL (before counting
  the cost of 365 Dagster runs themselves).
- ``single run: one range refresh``: one ``refresh_range(first, last)`` over the 365 days, one
  transaction: what ``reservation_daily_status_counts`` does in a single-run backfill.
- ``dagster: single-run backfill``: the same through Dagster, as the UI launches a single-run
  backfill (one run of the asset job tagged with the partition range), on an ephemeral instance.
- ``dagster: single-partition runs``: a few one-partition Dagster runs, to show the per-run cost a
  run-per-partition backfill would pay 365 times (measured on ``--sample-runs`` runs only).

After every scenario the summary total is compared with the row count (nothing lost or doubled).
Rows are inserted with the driver's executemany (no HTTP). Nothing here asserts on time. The
shape (500 workers, 8 statuses, ~2,700 reservations a day) makes most (day, worker, status)
groups hold one or two reservations, so the summary has almost as many rows as the source
(printed on stderr): a worst case for the recompute, which is dominated by writing those rows.

    python -m benchmarks.backfill [--rows 1000000] [--quick] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import scratch_database  # noqa: E402
from warehouse.engine import create_warehouse_engine  # noqa: E402
from warehouse.lifecycle import KNOWN_STATUSES, status_rank  # noqa: E402
from warehouse.migrate import ensure_schema  # noqa: E402
from warehouse.schema import reservation_daily_status_counts as counts_table  # noqa: E402
from warehouse.summary import refresh_range  # noqa: E402

DATABASES = ("sqlite", "postgresql")
FULL_ROWS, QUICK_ROWS = 1_000_000, 20_000
FULL_DAYS, QUICK_DAYS = 365, 30
WORKERS = 500
FIRST_DAY = date(2025, 1, 1)
INSERT_BATCH = 50_000
COLUMNS = ("sid", "account_sid", "workspace_sid", "worker_sid", "worker_name", "task_sid",
           "reservation_status", "status_rank", "date_created", "date_updated", "url", "links",
           "first_loaded_at", "last_changed_at")


# -- data -------------------------------------------------------------------------------------
def synthetic_batches(n: int, days: int, dialect: str,
                      seed: int = 3) -> Iterator[list[tuple[Any, ...]]]:
    """``n`` reservations, created uniformly over ``days`` days from FIRST_DAY, as driver tuples
    (timestamps as UTC text: naive on SQLite/MariaDB as the schema stores them, with an explicit
    offset for PostgreSQL's timestamptz whatever the session zone)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(FIRST_DAY.isoformat(), "us")
    loaded = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + (
        "+00:00" if dialect == "postgresql" else "")
    ranks = np.array([status_rank(s) for s in KNOWN_STATUSES])
    statuses = np.array(KNOWN_STATUSES, dtype=object)

    suffix = "+00:00" if dialect == "postgresql" else ""

    def text(stamps: np.ndarray) -> list[str]:
        plain = np.char.replace(np.datetime_as_string(stamps, unit="us"), "T", " ")
        return np.char.add(plain, suffix).tolist()

    for offset in range(0, n, INSERT_BATCH):
        size = min(INSERT_BATCH, n - offset)
        created = start + rng.integers(0, days * 86_400_000_000, size).astype("timedelta64[us]")
        updated = created + np.timedelta64(180, "s")
        workers = rng.integers(0, WORKERS, size)
        picks = rng.integers(0, len(KNOWN_STATUSES), size)
        numbers = range(offset, offset + size)
        yield list(zip(
            (f"WR{k:032x}" for k in numbers), ["AC" + "a" * 32] * size,
            (f"WS{w % 2:032x}" for w in workers.tolist()),
            (f"WK{w:032x}" for w in workers.tolist()),
            (f"agent {w}" for w in workers.tolist()),
            (f"WT{k:032x}" for k in numbers),
            statuses[picks].tolist(), ranks[picks].tolist(), text(created), text(updated),
            [None] * size, [None] * size, [loaded] * size, [loaded] * size, strict=True,
        ))


def load(url: str, n: int, days: int) -> None:
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    marker = "?" if engine.dialect.name == "sqlite" else "%s"
    sql = (f"INSERT INTO reservations ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join([marker] * len(COLUMNS))})")
    raw = engine.raw_connection()
    try:
        for rows in synthetic_batches(n, days, engine.dialect.name):
            cursor = raw.cursor()
            cursor.executemany(sql, rows)
            cursor.close()
            raw.commit()
    finally:
        raw.close()
        engine.dispose()


# -- scenarios --------------------------------------------------------------------------------
def summary_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(counts_table)).scalar_one())


def summary_total(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.sum(counts_table.c.reservation_count))).scalar_one()
    return int(total or 0)


def wipe_summary(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(counts_table.delete())


def per_partition(engine: sa.Engine, days: int) -> float:
    started = time.perf_counter()
    for n in range(days):
        day = FIRST_DAY + timedelta(days=n)
        refresh_range(engine, day, day, "UTC")
    return time.perf_counter() - started


def single_range(engine: sa.Engine, days: int) -> float:
    started = time.perf_counter()
    refresh_range(engine, FIRST_DAY, FIRST_DAY + timedelta(days=days - 1), "UTC")
    return time.perf_counter() - started


@contextmanager
def pipeline_env(url: str) -> Iterator[None]:
    """Point ``build_definitions`` at this warehouse (no TaskRouter is called by the summary)."""
    wanted = {"WAREHOUSE_URL": url, "SUMMARY_START_DATE": FIRST_DAY.isoformat(),
              "REPORTING_TIMEZONE": "UTC"}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def dagster_runs(url: str, ranges: list[tuple[date, date]]) -> float:
    """Seconds for one Dagster run per (first, last) range, each launched as the UI does."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from pipelines.definitions import build_definitions

    key = dg.AssetKey("reservation_daily_status_counts")
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with pipeline_env(url):  # secrets resolve at launch, so the variables stay set
        job = build_definitions().resolve_implicit_global_asset_job_def()
        instance = dg.DagsterInstance.ephemeral()
        started = time.perf_counter()
        for first, last in ranges:
            tags = {"dagster/asset_partition_range_start": first.isoformat(),
                    "dagster/asset_partition_range_end": last.isoformat()}
            result = job.execute_in_process(instance=instance, asset_selection=[key], tags=tags,
                                            run_config=quiet)
            assert result.success
        return time.perf_counter() - started


def _row(scenario: str, database: str, rows: int, days: int, runs: int, seconds: float,
         baseline_per_day: float | None, total_days: int) -> dict[str, Any]:
    """``rows`` is the warehouse size; rows_per_second counts the reservations recomputed."""
    per_day = seconds / days
    recomputed = rows * days / total_days
    return {
        "scenario": scenario, "database": database, "rows": rows, "days": days, "runs": runs,
        "seconds": round(seconds, 3),
        "rows_per_second": round(recomputed / seconds) if seconds else 0,
        "seconds_per_day": round(per_day, 4),
        "speedup_vs_per_partition": round(baseline_per_day / per_day, 2) if baseline_per_day else 1.0,
        "load_average": round(os.getloadavg()[0], 1),
    }


def run(quick: bool = False, rows: int | None = None, days: int | None = None,
        databases: tuple[str, ...] = DATABASES, sample_runs: int = 5) -> list[dict[str, Any]]:
    n = rows or (QUICK_ROWS if quick else FULL_ROWS)
    d = days or (QUICK_DAYS if quick else FULL_DAYS)
    sample = min(sample_runs if not quick else 2, d)
    last = FIRST_DAY + timedelta(days=d - 1)
    results: list[dict[str, Any]] = []
    for database in databases:
        with ExitStack() as stack:
            try:
                url = stack.enter_context(scratch_database(database, "bench_bf"))
            except sa.exc.OperationalError as error:
                print(f"{database}: unreachable ({type(error.orig).__name__}), skipped",
                      file=sys.stderr)
                continue
            started = time.perf_counter()
            load(url, n, d)
            print(f"{database}: loaded {n:,} reservations over {d} days in "
                  f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
            engine = create_warehouse_engine(url)
            baseline = per_partition(engine, d)
            assert summary_total(engine) == n
            wipe_summary(engine)
            single = single_range(engine, d)
            assert summary_total(engine) == n
            written = summary_rows(engine)
            wipe_summary(engine)
            through_dagster = dagster_runs(url, [(FIRST_DAY, last)])
            assert summary_total(engine) == n
            sampled = dagster_runs(url, [(FIRST_DAY + timedelta(days=k),) * 2 for k in range(sample)])
            engine.dispose()
        per_day = baseline / d
        print(f"{database}: the summary holds {written:,} rows for {n:,} reservations",
              file=sys.stderr)
        results.append(_row("baseline: one refresh per partition (SQL)", database, n, d, d,
                            baseline, None, d))
        results.append(_row("single run: one range refresh (SQL)", database, n, d, 1, single,
                            per_day, d))
        results.append(_row("dagster: single-run backfill", database, n, d, 1, through_dagster,
                            per_day, d))
        results.append(_row(f"dagster: single-partition runs (sample of {sample})", database, n,
                            sample, sample, sampled, per_day, d))
        estimate = _row(f"dagster: one run per partition (ESTIMATE: sample x {d})", database, n,
                        d, d, sampled / sample * d, per_day, d)
        results.append({**estimate, "estimated": True})
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| database | scenario | reservations | days | runs | seconds | s/day | "
             "speedup vs per-partition | load avg |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['database']} | {r['scenario']} | {r['rows']:,} | {r['days']} | "
                     f"{r['runs']} | {r['seconds']:.2f} | {r['seconds_per_day']:.4f} | "
                     f"{r['speedup_vs_per_partition']:.2f} | {r['load_average']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROWS:,} rows over {QUICK_DAYS} days (smoke run)")
    parser.add_argument("--rows", type=int, default=None, help=f"reservations (default {FULL_ROWS:,})")
    parser.add_argument("--days", type=int, default=None, help=f"days / partitions (default {FULL_DAYS})")
    parser.add_argument("--databases", default=",".join(DATABASES))
    parser.add_argument("--sample-runs", type=int, default=5,
                        help="single-partition Dagster runs to time")
    args = parser.parse_args(argv)
    chosen = tuple(x.strip() for x in args.databases.split(",") if x.strip())
    results = run(quick=args.quick, rows=args.rows, days=args.days, databases=chosen,
                  sample_runs=args.sample_runs)
    print(markdown(results))


if __name__ == "__main__":
    main()
