"""What status history, quarantine and upstream-deletion checks cost a sync, per database.

Same records (an emulator world, no HTTP: this measures the warehouse side only), same batches,
measured in one run:
  * initial load: ``upsert_reservations`` alone (baseline) vs ``load_batch`` (upsert + history +
    quarantine + deletion check, one transaction per batch, what a sync runs);
  * unchanged rerun: the same pair (``load_batch`` screens out unchanged records before
    normalizing them, ``warehouse.screen``; the baseline normalizes and classifies all).
The loads run once each into fresh databases.

    python benchmarks/warehouse_history.py [--quick] [--workers 200 --reservations 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import scratch_database  # noqa: E402
from pipelines.loading import load_batch  # noqa: E402
from pipelines.taskrouter.emulator_world import World, WorldConfig  # noqa: E402
from warehouse.engine import create_warehouse_engine  # noqa: E402
from warehouse.migrate import ensure_schema  # noqa: E402
from warehouse.normalize import normalize_reservations  # noqa: E402
from warehouse.upsert import upsert_reservations  # noqa: E402

DATABASES = ("sqlite", "postgresql", "mariadb")
BATCH = 20_000


def batches_of(workers: int, reservations: int) -> list[list[dict[str, Any]]]:
    world = World(WorldConfig(seed=3, workspaces=1, workers_per_workspace=workers,
                              reservations_per_worker=reservations,
                              anchor=datetime(2026, 11, 1, 12, tzinfo=UTC)))
    records = world.truth()  # grouped by worker, so no worker spans two batches (as in a sync)
    out, batch, current = [], [], None
    for record in records:
        if len(batch) >= BATCH and record["worker_sid"] != current:
            out.append(batch)
            batch = []
        batch.append(record)
        current = record["worker_sid"]
    return [*out, batch] if batch else out


def workers_of(batch: list[dict[str, Any]]) -> list[str]:
    return sorted({r["worker_sid"] for r in batch})


def upsert_only(engine: sa.Engine, batches: list[list[dict[str, Any]]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        rows = normalize_reservations(batch).rows
        with engine.begin() as conn:
            upsert_reservations(conn, rows, datetime.now(UTC))
    return time.perf_counter() - started


def full_batches(engine: sa.Engine, batches: list[list[dict[str, Any]]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        load_batch(engine, batch, workers_of(batch))
    return time.perf_counter() - started


def _row(scenario: str, database: str, rows: int, seconds: float, baseline: float) -> dict[str, Any]:
    return {"scenario": scenario, "database": database, "rows": rows,
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds) if seconds else 0,
            "vs_baseline": round(seconds / baseline, 2) if baseline else 1.0}


def run(quick: bool = False, workers: int | None = None, reservations: int | None = None,
        databases: tuple[str, ...] = DATABASES) -> list[dict[str, Any]]:
    w = workers or (20 if quick else 200)
    r = reservations or (100 if quick else 500)
    batches = batches_of(w, r)
    n = sum(len(b) for b in batches)
    results: list[dict[str, Any]] = []
    for database in databases:
        with ExitStack() as stack:
            try:
                plain_url = stack.enter_context(scratch_database(database))
                full_url = stack.enter_context(scratch_database(database))
            except sa.exc.OperationalError as error:
                print(f"{database}: unreachable ({type(error.orig).__name__}), skipped",
                      file=sys.stderr)
                continue
            plain, full = create_warehouse_engine(plain_url), create_warehouse_engine(full_url)
            stack.callback(plain.dispose)
            stack.callback(full.dispose)
            ensure_schema(plain)
            ensure_schema(full)
            load_base, load_full = upsert_only(plain, batches), full_batches(full, batches)
            rerun_base, rerun_full = upsert_only(plain, batches), full_batches(full, batches)
        results += [
            _row("initial load: upsert only (baseline)", database, n, load_base, load_base),
            _row("initial load: upsert + history + quarantine + deletions", database, n,
                 load_full, load_base),
            _row("unchanged rerun: upsert only (baseline)", database, n, rerun_base, rerun_base),
            _row("unchanged rerun: upsert + history + quarantine + deletions", database, n,
                 rerun_full, rerun_base),
        ]
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| database | scenario | reservations | seconds | rows/s | x baseline time |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['database']} | {r['scenario']} | {r['rows']:,} | {r['seconds']:.3f} | "
              f"{r['rows_per_second']:,} | {r['vs_baseline']:.2f} |" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 workers x 100 reservations")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--reservations", type=int, default=None, help="per worker")
    parser.add_argument("--databases", default=",".join(DATABASES))
    args = parser.parse_args(argv)
    chosen = tuple(x.strip() for x in args.databases.split(",") if x.strip())
    print(markdown(run(args.quick, args.workers, args.reservations, chosen)))


if __name__ == "__main__":
    main()
