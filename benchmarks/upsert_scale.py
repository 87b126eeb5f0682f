"""Upsert throughput at scale on SQLite, PostgreSQL and MariaDB, against the driver's ceiling.

For each database, in the same run and on fresh databases:

- ``ceiling``: the driver's plain ``cursor.executemany("INSERT INTO reservations ...")`` of the
  rows, already converted to driver tuples (no conflict handling, no lookup, no conversion):
  the fastest a row can go in through the driver.
- ``full load``: ``warehouse.upsert.upsert_reservations`` of the same rows into the empty table
  (normalized pandas frames in, exactly what the sync hands it).
- ``incremental``: the same rows again, 10% of them a newer version and 90% unchanged.
- PostgreSQL only: the full load and the incremental pass again with the upsert's other write
  path (driver ``executemany`` for every batch instead of ``COPY`` into a staging table plus
  one ``INSERT ... SELECT ... ON CONFLICT``), so the choice of path is measured in the same run.

Batches are ``--batch`` rows (the sync's ``SYNC_BATCH_ROWS`` default), one transaction each, for
all three scenarios. Rows are synthetic (pandas, no HTTP). Ratios are against the ceiling
measured in the same call.

    python -m benchmarks.upsert_scale [--rows 1000000] [--quick] [--databases sqlite,postgresql,mariadb]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import scratch_database  # noqa: E402
from warehouse.dialects import pgcopy  # noqa: E402
from warehouse.engine import create_warehouse_engine  # noqa: E402
from warehouse.lifecycle import status_rank  # noqa: E402
from warehouse.migrate import ensure_schema  # noqa: E402
from warehouse.schema import RESERVATION_COLUMNS  # noqa: E402
from warehouse.upsert import upsert_reservations  # noqa: E402

DATABASES = ("sqlite", "postgresql", "mariadb")
FULL_ROWS = 1_000_000
QUICK_ROWS = 20_000
BATCH_ROWS = 20_000
STATUSES = np.array(["pending", "accepted", "wrapping", "completed", "rejected", "timeout",
                     "canceled", "rescinded"], dtype=object)
NAMES = np.array(["Zoë Müller", "José García", "李 王", "Robert'); DROP TABLE reservations;--",
                  "Emoji 🎧📞 agent", 'Quote " Back\\slash', "Smith"], dtype=object)


# -- synthetic rows ---------------------------------------------------------------------------
def synthetic_rows(n: int, seed: int = 5) -> pd.DataFrame:
    """``n`` normalized reservation rows, shaped like ``normalize_reservations`` output."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    sid = pd.Series(ids).map(lambda i: f"WR{i:032x}")
    worker = rng.integers(0, max(1, n // 200), n)
    workspace = worker % 3
    base = pd.Timestamp("2026-10-01", tz="UTC")
    created = base + pd.to_timedelta(rng.integers(0, 60 * 86400, n), unit="s")
    updated = created + pd.to_timedelta(rng.integers(0, 3600, n), unit="s")
    status = STATUSES[rng.integers(0, len(STATUSES), n)]
    ws_sid = pd.Series(workspace).map(lambda w: f"WS{w:032x}")
    wk_sid = pd.Series(worker).map(lambda w: f"WK{w:032x}")
    frame = pd.DataFrame({
        "sid": sid.astype(object),
        "account_sid": "AC" + "a" * 32,
        "workspace_sid": ws_sid.astype(object),
        "worker_sid": wk_sid.astype(object),
        "worker_name": NAMES[worker % len(NAMES)],
        "task_sid": ("WT" + sid.str[2:]).astype(object),
        "reservation_status": status,
        "date_created": created,
        "date_updated": updated,
    })
    frame["url"] = ("https://taskrouter.twilio.com/v1/Workspaces/" + frame["workspace_sid"] + "/Workers/"
                    + frame["worker_sid"] + "/Reservations/" + frame["sid"]).astype(object)
    frame["links"] = ('{"task":"https://taskrouter.twilio.com/v1/Workspaces/' + frame["workspace_sid"]
                      + '/Tasks/' + frame["task_sid"] + '","worker":"https://taskrouter.twilio.com/v1/'
                      'Workspaces/' + frame["workspace_sid"] + '/Workers/' + frame["worker_sid"]
                      + '"}').astype(object)
    frame["status_rank"] = frame["reservation_status"].map(status_rank).astype("int16")
    return frame


def newer_versions(frame: pd.DataFrame, share: float = 0.10, seed: int = 6) -> pd.DataFrame:
    """The same rows, ``share`` of them a minute newer and further along; the rest unchanged."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    pick = rng.random(len(out)) < share
    out.loc[pick, "date_updated"] = out.loc[pick, "date_updated"] + pd.Timedelta(seconds=60)
    out.loc[pick, "reservation_status"] = "completed"
    out.loc[pick, "status_rank"] = 3
    return out


def batches(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]


# -- databases --------------------------------------------------------------------------------
def _driver_tuples(frame: pd.DataFrame, dialect: str, stamp: datetime) -> list[tuple[Any, ...]]:
    """Rows as the driver takes them (datetimes for psycopg, naive UTC text elsewhere)."""
    data = frame.assign(first_loaded_at=pd.Timestamp(stamp), last_changed_at=pd.Timestamp(stamp))
    columns = []
    for name in RESERVATION_COLUMNS:
        column = data[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            if dialect == "postgresql":
                columns.append(list(column.dt.to_pydatetime()))
            else:
                columns.append(column.dt.strftime("%Y-%m-%d %H:%M:%S.%f").tolist())
        elif name == "status_rank":
            columns.append(column.astype(int).tolist())
        else:
            columns.append(column.tolist())
    return list(zip(*columns, strict=True))


def ceiling(url: str, frame: pd.DataFrame, batch: int) -> float:
    """Seconds for the driver's executemany of a plain INSERT of every row (tuples prebuilt)."""
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    dialect = "postgresql" if engine.dialect.name == "postgresql" else engine.dialect.name
    marker = "?" if dialect == "sqlite" else "%s"
    sql = (f"INSERT INTO reservations ({', '.join(RESERVATION_COLUMNS)}) "
           f"VALUES ({', '.join([marker] * len(RESERVATION_COLUMNS))})")
    stamp = datetime.now(UTC)
    raw = engine.raw_connection()
    seconds = 0.0
    try:
        for part in batches(frame, batch):
            # tuples built per batch and not timed: holding all of them at once would make
            # Python's garbage collector rescan a million tuples during the timed inserts
            rows = _driver_tuples(part, dialect, stamp)
            started = time.perf_counter()
            cursor = raw.cursor()
            cursor.executemany(sql, rows)
            cursor.close()
            raw.commit()
            seconds += time.perf_counter() - started
    finally:
        raw.close()
        engine.dispose()
    return seconds


def upsert_pass(engine: sa.Engine, frame: pd.DataFrame, batch: int) -> tuple[float, dict[str, int]]:
    totals = {"inserted": 0, "updated": 0, "unchanged": 0}
    started = time.perf_counter()
    for part in batches(frame, batch):
        with engine.begin() as conn:
            counts = upsert_reservations(conn, part, datetime.now(UTC))
        totals["inserted"] += counts.inserted
        totals["updated"] += counts.updated
        totals["unchanged"] += counts.unchanged
    return time.perf_counter() - started, totals


def _row(scenario: str, database: str, rows: int, seconds: float, ceiling_rps: float | None,
         **extra: Any) -> dict[str, Any]:
    rps = rows / seconds if seconds else 0.0
    return {
        "scenario": scenario, "database": database, "rows": rows, "seconds": round(seconds, 3),
        "rows_per_second": round(rps), "ratio_to_ceiling": round(rps / ceiling_rps, 2) if ceiling_rps else 1.0,
        **extra,
    }


def run(quick: bool = False, rows: int | None = None, databases: tuple[str, ...] = DATABASES,
        batch: int = BATCH_ROWS, staging: bool = True) -> list[dict[str, Any]]:
    n = rows or (QUICK_ROWS if quick else FULL_ROWS)
    frame = synthetic_rows(n)
    second = newer_versions(frame)
    expected_newer = int((second["date_updated"] != frame["date_updated"]).sum())
    results: list[dict[str, Any]] = []
    for database in databases:
        try:
            with scratch_database(database, "upsert_bench") as url:
                base_seconds = ceiling(url, frame, batch)
        except sa.exc.OperationalError as error:
            print(f"{database}: unreachable ({type(error.orig).__name__}), skipped", file=sys.stderr)
            continue
        base_rps = n / base_seconds
        print(f"{database}: ceiling {base_seconds:.1f}s", file=sys.stderr, flush=True)
        results.append(_row("ceiling: driver executemany INSERT", database, n, base_seconds, None))
        with scratch_database(database, "upsert_bench") as url:
            engine = create_warehouse_engine(url)
            ensure_schema(engine)
            full_seconds, full = upsert_pass(engine, frame, batch)
            assert full == {"inserted": n, "updated": 0, "unchanged": 0}, full
            inc_seconds, inc = upsert_pass(engine, second, batch)
            assert inc == {"inserted": 0, "updated": expected_newer,
                           "unchanged": n - expected_newer}, inc
            engine.dispose()
        results.append(_row("upsert: full load", database, n, full_seconds, base_rps,
                            inserted=full["inserted"]))
        results.append(_row("upsert: 10% newer, 90% unchanged", database, n, inc_seconds, base_rps,
                            updated=inc["updated"], unchanged=inc["unchanged"]))
        if database == "postgresql" and staging:
            # the same upsert with its other PostgreSQL write path: executemany for every batch
            saved = pgcopy.COPY_MIN_ROWS
            pgcopy.COPY_MIN_ROWS = None
            try:
                with scratch_database(database, "upsert_bench") as url:
                    engine = create_warehouse_engine(url)
                    ensure_schema(engine)
                    em_full, _ = upsert_pass(engine, frame, batch)
                    em_inc, _ = upsert_pass(engine, second, batch)
                    engine.dispose()
            finally:
                pgcopy.COPY_MIN_ROWS = saved
            results.append(_row("upsert, executemany path: full load", database, n, em_full,
                                base_rps))
            results.append(_row("upsert, executemany path: 10% newer, 90% unchanged", database,
                                n, em_inc, base_rps))
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| database | scenario | rows | seconds | rows/s | ratio to ceiling |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['database']} | {r['scenario']} | {r['rows']:,} | {r['seconds']:.2f} | "
                     f"{r['rows_per_second']:,} | {r['ratio_to_ceiling']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows (smoke run)")
    parser.add_argument("--rows", type=int, default=None, help=f"rows (default {FULL_ROWS:,})")
    parser.add_argument("--batch", type=int, default=BATCH_ROWS, help="rows per transaction")
    parser.add_argument("--databases", default=",".join(DATABASES))
    parser.add_argument("--no-staging", action="store_true",
                        help="skip the PostgreSQL executemany-path comparison")
    args = parser.parse_args(argv)
    chosen = tuple(d.strip() for d in args.databases.split(",") if d.strip())
    results = run(quick=args.quick, rows=args.rows, databases=chosen, batch=args.batch,
                  staging=not args.no_staging)
    print(markdown(results))


if __name__ == "__main__":
    main()
