"""Extraction benchmark: the pooled sync against a sequential baseline, and the cost of faults.

Scenarios, all in one call against emulator subprocesses with 20 ms latency per request:
- ``sequential_baseline``: a plain ``requests`` loop, PageSize=1000, following next_page_url,
  one ``sqlite3`` ``executemany`` upsert (newest ``date_updated`` wins) per page, committed;
- ``sequential_baseline_wal``: the same with the project's SQLite settings (WAL,
  ``synchronous=NORMAL``), so the comparison does not lean on the default fsync per commit;
- ``pooled_sync``: the project's path (``pipelines.loading`` with the real client: bounded pool,
  retries, rate limiter off) into a fresh SQLite warehouse;
- ``pooled_sync_faults``: the same against an emulator answering 15% of requests with a fault
  (429, 500, 503, reset, truncated, bad JSON, slow beyond the client's read timeout; equal shares).

Summary refreshes are not timed (the baseline has none). Usage:
``python -m benchmarks.extraction_faults [--quick] [--workers N] [--reservations N]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from benchmarks.common import emulator, emulator_client
from benchmarks.runners import baseline

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LATENCY_MS = 20
FAULT_RATE = 0.15
SLOW_SECONDS = 3.0
READ_TIMEOUT_S = 2.0  # below SLOW_SECONDS: a slow answer is a read timeout, then a retry


def server_stats(emu: dict[str, Any]) -> dict[str, Any]:
    response = requests.get(f"{emu['base_url']}/_emulator/stats",
                            auth=(emu["account_sid"], emu["auth_token"]), timeout=30)
    response.raise_for_status()
    return response.json()


# -- the baseline -----------------------------------------------------------------------------
def sequential_baseline(emu: dict[str, Any], path: Path, wal: bool = False) -> dict[str, Any]:
    """The harness's one-hour baseline (``benchmarks.runners.baseline``), run in this process."""
    figures = baseline({"base_url": emu["base_url"], "account_sid": emu["account_sid"],
                        "auth_token": emu["auth_token"], "baseline_url": f"sqlite:///{path}",
                        "wal": wal})
    return {**figures, "retries": 0}


# -- the project's sync -----------------------------------------------------------------------
def pooled_sync(emu: dict[str, Any], path: Path, **client_options: Any) -> dict[str, Any]:
    from pipelines.loading import list_workers_by_workspace, load_reservations, resolve_workspaces
    from warehouse.engine import create_warehouse_engine
    from warehouse.migrate import ensure_schema

    engine = create_warehouse_engine(f"sqlite:///{path}")
    ensure_schema(engine)
    started = time.perf_counter()
    with emulator_client(emu, **client_options) as client:
        listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        figures = load_reservations(client, engine, listing)
        stats = client.stats.snapshot()
    seconds = time.perf_counter() - started
    engine.dispose()
    if figures.workers_failed:
        raise RuntimeError(f"{len(figures.workers_failed)} workers failed: the run is not valid")
    return {"rows": figures.rows_seen, "seconds": seconds, "requests": int(stats["requests"]),
            "retries": int(stats["retries"])}


def _stored_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(DISTINCT sid) FROM reservations").fetchone()[0])


def run(quick: bool = False, workers: int | None = None,
        reservations: int | None = None) -> list[dict[str, Any]]:
    workers = workers or (200 if quick else 1000)
    reservations = reservations or 100
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-extraction-") as tmp:
        folder = Path(tmp)
        with emulator(workers, reservations, LATENCY_MS) as emu:
            base = sequential_baseline(emu, folder / "baseline.db")
            base_stored = _stored_rows(folder / "baseline.db")
            wal = sequential_baseline(emu, folder / "baseline_wal.db", wal=True)
            wal_stored = _stored_rows(folder / "baseline_wal.db")
            clean = pooled_sync(emu, folder / "pooled.db")
            clean_stored = _stored_rows(folder / "pooled.db")
        with emulator(workers, reservations, LATENCY_MS, "--fault-rate", str(FAULT_RATE),
                      "--slow-seconds", str(SLOW_SECONDS)) as emu:
            faulty = pooled_sync(emu, folder / "faults.db", read_timeout=READ_TIMEOUT_S)
            faults_injected = sum(server_stats(emu)["faults"].values())
            faulty_stored = _stored_rows(folder / "faults.db")
    for scenario, figures, stored in (("sequential_baseline", base, base_stored),
                                      ("sequential_baseline_wal", wal, wal_stored),
                                      ("pooled_sync", clean, clean_stored),
                                      ("pooled_sync_faults", faulty, faulty_stored)):
        row = {
            "scenario": scenario,
            "database": "sqlite",
            "workers": workers,
            "rows": figures["rows"],
            "rows_stored": stored,
            "seconds": round(figures["seconds"], 2),
            "rows_per_second": round(figures["rows"] / figures["seconds"], 1),
            "requests": figures["requests"],
            "retries": figures["retries"],
            "speedup_vs_baseline": round(base["seconds"] / figures["seconds"], 2),
            "speedup_vs_wal_baseline": round(wal["seconds"] / figures["seconds"], 2),
        }
        if scenario == "pooled_sync_faults":
            row["faults_injected"] = faults_injected
            row["cost_vs_clean"] = round(figures["seconds"] / clean["seconds"], 2)
        results.append(row)
    return results


def to_markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 workers instead of 1,000")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--reservations", type=int)
    args = parser.parse_args(argv)
    print(to_markdown(run(args.quick, args.workers, args.reservations)))


if __name__ == "__main__":
    main()
