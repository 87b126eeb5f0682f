"""The events feed next to list polling, in the same run, on the same emulator state.

Per shape (workers x 100 reservations, one workspace) and latency, one emulator process whose
world holds still unless told (no arrivals of its own, lifecycles stretched), with 5% of the
seed reservations open. A warehouse is brought to steady state once (a full list load, then the
feed's cursor set to TaskRouter's time, as a running feed leaves it) and copied per mode, then:

- ``noop``: a sync with nothing changed;
- ``busy``: a sync after every worker had two new reservations and 2% of all reservations
  changed (``POST /_emulator/churn``);

each by ``events`` (the default sync: no list sweep due, the events since the cursor),
``events_server_filter`` (the same, filtering EventType on the server: one request per type) and
``lists`` (``TASKROUTER_EVENTS=0``: every worker's list). Each is timed the same way: the
functions a sync runs (``load_workers`` + ``pipelines.sync.sync_reservations``), reading plus
applying, no process start-up; requests are the client's. Then the issue's targets are judged
from the figures of this run (no target is asserted anywhere).

Usage: ``python -m benchmarks.events [--quick] [--shapes 1000,15000] [--latencies 20,100]
[--output STEM]``; also ``benchmarks/run.py --extras events``. ``--first-sync`` measures a
first sync instead: every list, then the 30 days of events TaskRouter keeps, against every list
alone (peak RSS is the benchmark process's, cumulative).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import emulator as running
from benchmarks.common import emulator_client, generic_markdown, report
from benchmarks.run import control
from pipelines.event_feed import FeedOptions
from pipelines.loading import load_workers, resolve_workspaces
from pipelines.sync import sync_reservations
from warehouse.engine import create_warehouse_engine, run_in_transaction
from warehouse.feed import write_cursor
from warehouse.migrate import ensure_schema

MODES = {
    "events": FeedOptions(),
    "events_server_filter": FeedOptions(server_filter=True),
    "lists": FeedOptions(enabled=False),
}
# the targets, at 100 ms: (scenario, share of list polling's requests, share of its time)
TARGETS = {"noop": (0.01, 0.10), "busy": (0.05, 0.20)}


# a world that holds still unless churned, 5% of it open, with no Events for its past
STILL_WORLD = ["--arrivals-per-hour", "0", "--pace", "100000", "--open-share", "0.05",
               "--no-seed-events"]


def one_sync(emu: dict[str, Any], url: str, options: FeedOptions) -> dict[str, Any]:
    """The sync's functions on a warehouse; its seconds and requests."""
    engine = create_warehouse_engine(url)
    try:
        with emulator_client(emu) as client:
            started = time.perf_counter()
            workspaces = resolve_workspaces(client, None)
            _, listing = load_workers(client, engine, workspaces)
            figures, _ = sync_reservations(client, engine, listing, options)
            seconds = time.perf_counter() - started
            return {"seconds": round(seconds, 3), "requests": int(client.stats.requests),
                    "rows_written": figures.inserted + figures.updated,
                    "events_applied": figures.events_applied, "rows_read": figures.rows_seen}
    finally:
        engine.dispose()


def steady_state(emu: dict[str, Any], url: str) -> None:
    """A full list load, then the cursor where a running feed would have left it."""
    one_sync(emu, url, MODES["lists"])
    engine = create_warehouse_engine(url)
    with emulator_client(emu) as client:
        workspaces = resolve_workspaces(client, None)
        now = client.clock.now() or datetime.now(UTC)

    def follow(conn: Any) -> None:
        for ws in workspaces:
            write_cursor(conn, ws, events_through=now, coverage_start=now, last_sweep_at=now)

    run_in_transaction(engine, follow, what="bench cursor")
    engine.dispose()


def measure(workers: int, latency_ms: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with running(workers, 100, latency_ms, *STILL_WORLD) as emu, \
            tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        base = Path(tmp) / "base.db"
        ensure_schema(create_warehouse_engine(f"sqlite:///{base}"))
        steady_state(emu, f"sqlite:///{base}")
        copies = {}
        for mode in MODES:  # the whole database, its write-ahead log included
            copies[mode] = Path(tmp) / f"{mode}.db"
            with sqlite3.connect(base) as source, sqlite3.connect(copies[mode]) as target:
                source.backup(target)
        for scenario in ("noop", "busy"):
            if scenario == "busy":
                control(emu, "churn", minutes=5, new=2, changed=0.02)
            for mode, options in MODES.items():
                result = one_sync(emu, f"sqlite:///{copies[mode]}", options)
                rows.append({"workers": workers, "latency_ms": latency_ms,
                             "scenario": scenario, "mode": mode, **result})
    return rows


def first_sync(workers: int, latency_ms: float) -> list[dict[str, Any]]:
    """What a first sync costs with the feed (every list, then 30 days of events back) and
    without it (every list), on a world whose past is in its Events log."""
    import resource

    rows = []
    with running(workers, 100, latency_ms) as emu, \
            tempfile.TemporaryDirectory(prefix="bench-first-") as tmp:
        for mode in ("events", "lists"):
            url = f"sqlite:///{Path(tmp) / f'{mode}.db'}"
            ensure_schema(create_warehouse_engine(url))
            result = one_sync(emu, url, MODES[mode])
            rows.append({"workers": workers, "latency_ms": latency_ms, "scenario": "first",
                         "mode": mode, **result,
                         "peak_rss_mb_so_far": round(resource.getrusage(
                             resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    return rows


def judge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets, from this run's figures: events against lists, same shape and latency."""
    verdicts = []
    for row in rows:
        if row["mode"] != "events" or row["scenario"] not in TARGETS:
            continue
        lists = next(r for r in rows if r["mode"] == "lists" and r["scenario"] == row["scenario"]
                     and r["workers"] == row["workers"] and r["latency_ms"] == row["latency_ms"])
        max_requests, max_time = TARGETS[row["scenario"]]
        request_share = row["requests"] / max(lists["requests"], 1)
        time_share = row["seconds"] / max(lists["seconds"], 1e-9)
        timed = row["latency_ms"] >= 100
        verdicts.append({
            "workers": row["workers"], "latency_ms": row["latency_ms"],
            "scenario": row["scenario"],
            "requests": f"{row['requests']} / {lists['requests']} = {request_share:.2%} "
                        f"(target <= {max_requests:.0%}): "
                        + ("yes" if request_share <= max_requests else "**no**"),
            "time": f"{row['seconds']:.2f} / {lists['seconds']:.2f} s = {time_share:.1%}"
                    + (f" (target <= {max_time:.0%}): "
                       + ("yes" if time_share <= max_time else "**no**") if timed
                       else " (no target below 100 ms)"),
        })
    return verdicts


def run(quick: bool = False, shapes: list[int] | None = None,
        latencies: list[float] | None = None) -> list[dict[str, Any]]:
    shapes = shapes or ([60] if quick else [1000, 15000])
    latencies = latencies or ([0.0] if quick else [20.0, 100.0])
    rows: list[dict[str, Any]] = []
    for workers in shapes:
        for latency in latencies:
            print(f"events benchmark: {workers} workers x 100, {latency:g} ms", flush=True)
            rows.extend(measure(workers, latency))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shapes", help="workers per shape, e.g. 1000,15000")
    parser.add_argument("--latencies", help="ms, e.g. 20,100")
    parser.add_argument("--output", help="path stem: also write STEM.json and STEM.md")
    parser.add_argument("--first-sync", action="store_true",
                        help="instead: a first sync with and without the feed (30 days of events)")
    args = parser.parse_args(argv)
    shapes = [int(s) for s in args.shapes.split(",")] if args.shapes else None
    latencies = [float(x) for x in args.latencies.split(",")] if args.latencies else None
    if args.first_sync:
        rows = [r for w in shapes or [1000] for ms in latencies or [20.0]
                for r in first_sync(w, ms)]
        report(rows, args.output)
        return
    rows = run(args.quick, shapes, latencies)
    report(rows, args.output)
    verdicts = judge(rows)
    text = f"Targets (from this run):\n\n{generic_markdown(verdicts)}\n"
    print(text)
    if args.output:
        stem = Path(args.output).with_suffix(".md")
        stem.write_text(stem.read_text() + "\n" + text)


if __name__ == "__main__":
    main()
