"""Why the 20 ms full load is slower than its reads: the project's reads alone, and with the
sync's warehouse side running beside them in the same process (a thread, as the sync runs it)
or in a second process.

One emulator at 20 ms per request; per repetition, in this order:
- ``reads_alone``: ``TaskRouterClient.read_reservations`` over every worker, records discarded;
- ``warehouse_alone``: the sync's warehouse side on the same records already in memory
  (``benchmarks.runners.load_batches_like_the_sync``: prepare, write, deferred indexes,
  summary) into a fresh SQLite file, nothing else running;
- ``reads_with_warehouse_thread``: both at once in this process, the warehouse side on a
  thread, as ``load_reservations`` runs its writer beside the reader threads (they share one GIL);
- ``reads_with_warehouse_process``: both at once, the warehouse side in a spawned process
  (its own GIL), started before the clock and released by a pipe once its records are loaded.

``reads_seconds`` is the reads' wall time, ``warehouse_seconds`` the warehouse side's own,
``both_seconds`` until both are done; ``cpu_seconds`` counts this process only (not the
spawned one). When the reads slow down beside a thread but not beside
a process, the cost is the shared GIL, not the CPU (the machine has two cores) nor the emulator.
Nothing here is the sync itself: it prices the contention the sync's design pays for.

Usage: ``python -m benchmarks.read_contention [--quick] [--workers N] [--reservations N]
[--repetitions N]``; also ``benchmarks/run.py --extras contention``.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    diagnostic_arguments,
    emulator,
    emulator_client,
    read_every_worker,
    report,
)
from benchmarks.runners import (
    cpu_seconds,
    load_batches_like_the_sync,
    pooled_fetch,
    worker_batches,
)

LATENCY_MS = 20


def _stored_rows(url: str) -> int:
    """Reservations the warehouse side stored (a run that stored nothing proves nothing)."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0])


def _credentials(emu: dict[str, Any]) -> dict[str, Any]:
    return {"base_url": emu["base_url"], "account_sid": emu["account_sid"],
            "auth_token": emu["auth_token"], "concurrency": 8}


def read_everything(emu: dict[str, Any]) -> tuple[float, int]:
    """The project's reads of every worker (records discarded): seconds and rows."""
    from pipelines.loading import list_workers_by_workspace, resolve_workspaces

    with emulator_client(emu) as client:
        listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        started = time.perf_counter()
        rows = read_every_worker(client, listing)
        return time.perf_counter() - started, rows


def batches_from(records_file: str) -> list[tuple[list[dict[str, Any]], list[str]]]:
    """The warehouse side's input: the fetched records, cut into the sync's batches."""
    from pipelines.loading import DEFAULT_BATCH_ROWS

    return worker_batches(orjson.loads(Path(records_file).read_bytes()), DEFAULT_BATCH_ROWS)


def fresh_warehouse(warehouse_url: str) -> Any:
    from warehouse.engine import create_warehouse_engine
    from warehouse.migrate import ensure_schema

    engine = create_warehouse_engine(warehouse_url)
    ensure_schema(engine)
    return engine


def write_everything(batches: list[tuple[list[dict[str, Any]], list[str]]], engine: Any) -> float:
    """The sync's warehouse side on ``batches`` into ``engine`` (then disposed): its seconds."""
    started = time.perf_counter()
    try:
        load_batches_like_the_sync(engine, batches)
        return time.perf_counter() - started
    finally:
        engine.dispose()


def _warehouse_child(records_file: str, warehouse_url: str, pipe: Any) -> None:
    """Runs in the spawned process: load everything, say ready, wait for go, write, report."""
    batches, engine = batches_from(records_file), fresh_warehouse(warehouse_url)
    pipe.send("ready")
    pipe.recv()
    pipe.send(write_everything(batches, engine))


def _beside_a_thread(emu: dict[str, Any], batches: list[tuple[list[dict[str, Any]], list[str]]],
                     url: str) -> dict[str, float]:
    engine = fresh_warehouse(url)
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            outcome["seconds"] = write_everything(batches, engine)
        except BaseException as error:  # noqa: BLE001 - raised by the caller
            outcome["error"] = error

    cpu_before, started = cpu_seconds(), time.perf_counter()
    writer = threading.Thread(target=write, name="warehouse")
    writer.start()
    reads, rows = read_everything(emu)
    writer.join()
    both = time.perf_counter() - started
    if "error" in outcome:
        raise outcome["error"]
    return {"reads_seconds": reads, "rows": rows, "warehouse_seconds": outcome["seconds"],
            "both_seconds": both, "cpu_seconds": cpu_seconds() - cpu_before}


def _beside_a_process(emu: dict[str, Any], records_file: str, url: str) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_warehouse_child, args=(records_file, url, theirs),
                            name="warehouse")
    child.start()
    try:
        if not ours.poll(300) or ours.recv() != "ready":
            raise RuntimeError("the warehouse process did not get ready")
        cpu_before, started = cpu_seconds(), time.perf_counter()
        ours.send("go")
        reads, rows = read_everything(emu)
        if not ours.poll(600):
            raise RuntimeError("the warehouse process did not finish")
        warehouse = float(ours.recv())
        both = time.perf_counter() - started
    finally:
        child.join(60)
        if child.is_alive():
            child.kill()
    if child.exitcode != 0:
        raise RuntimeError(f"the warehouse process failed (exit code {child.exitcode})")
    return {"reads_seconds": reads, "rows": rows, "warehouse_seconds": warehouse,
            "both_seconds": both, "cpu_seconds": cpu_seconds() - cpu_before}


def run(quick: bool = False, workers: int | None = None, reservations: int | None = None,
        repetitions: int | None = None) -> list[dict[str, Any]]:
    workers = workers or (40 if quick else 1000)
    reservations = reservations or (20 if quick else 100)
    repetitions = repetitions or (1 if quick else 3)
    samples: dict[str, list[dict[str, float]]] = {}
    import pipelines.loading  # noqa: F401  (imported before any clock: start-up is no one's cost)
    import warehouse.migrate  # noqa: F401
    import warehouse.summary  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as tmp, \
            emulator(workers, reservations, LATENCY_MS) as emu:
        folder = Path(tmp)
        records, _, _ = pooled_fetch(_credentials(emu), keep=True)  # the warehouse side's input
        records_file = folder / "records.json"
        records_file.write_bytes(orjson.dumps(records))
        del records
        batches = batches_from(str(records_file))  # the in-process arrangements share them
        for rep in range(repetitions):
            cpu_before = cpu_seconds()
            reads, rows = read_everything(emu)
            samples.setdefault("reads_alone", []).append(
                {"reads_seconds": reads, "rows": rows, "both_seconds": reads,
                 "cpu_seconds": cpu_seconds() - cpu_before})
            url = f"sqlite:///{folder}/alone-{rep}.db"
            engine = fresh_warehouse(url)
            cpu_before = cpu_seconds()
            warehouse = write_everything(batches, engine)
            samples.setdefault("warehouse_alone", []).append(
                {"warehouse_seconds": warehouse, "both_seconds": warehouse,
                 "cpu_seconds": cpu_seconds() - cpu_before, "rows_stored": _stored_rows(url)})
            url = f"sqlite:///{folder}/thread-{rep}.db"
            samples.setdefault("reads_with_warehouse_thread", []).append(
                {**_beside_a_thread(emu, batches, url), "rows_stored": _stored_rows(url)})
            url = f"sqlite:///{folder}/process-{rep}.db"
            samples.setdefault("reads_with_warehouse_process", []).append(
                {**_beside_a_process(emu, str(records_file), url), "rows_stored": _stored_rows(url)})
    alone = statistics.median(s["reads_seconds"] for s in samples["reads_alone"])
    results = []
    for scenario, runs in samples.items():
        row: dict[str, Any] = {"scenario": scenario, "workers": workers, "latency_ms": LATENCY_MS,
                               "repetitions": len(runs),
                               "rows_read": min((r["rows"] for r in runs if "rows" in r), default=None),
                               "rows_stored": min((r["rows_stored"] for r in runs
                                                   if "rows_stored" in r), default=None)}
        for key in ("reads_seconds", "warehouse_seconds", "both_seconds", "cpu_seconds"):
            values = [r[key] for r in runs if key in r]
            row[key] = round(statistics.median(values), 2) if values else None
        row["reads_vs_alone"] = (round(statistics.median(r["reads_seconds"] for r in runs) / alone, 2)
                                 if row["reads_seconds"] is not None else None)
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> None:
    args = diagnostic_arguments(__doc__.splitlines()[0]).parse_args(argv)
    report(run(args.quick, args.workers, args.reservations, args.repetitions), args.output)


if __name__ == "__main__":
    main()
