"""What the reads alone cost, by reader concurrency and arrangement, next to the fetch-only ceiling.

The sync's 0 ms full load is bound by CPU on two cores (reads, emulator, warehouse side all at
once), so the price of a read in CPU, not only in wall time, decides how much is left for the
warehouse side. Per latency, one emulator; per repetition, for each ``TASKROUTER_CONCURRENCY``
in the list and each arrangement:
- ``threads``: ``TaskRouterClient.read_reservations`` with its reader threads in this process
  (``TASKROUTER_READER_PROCESS=0``);
- ``process``: the same reads in the reader process (``=1``; what a first load uses);
and once the ``fetch_only`` ceiling of ``benchmarks/run.py`` (a pooled ``requests`` session, 8
threads; its request count includes its own two listing requests). Records are discarded. ``cpu_seconds`` counts this process and its finished children
(the reader process); ``emulator_cpu_seconds`` is what the emulator spent serving them (from
``/proc``; None where there is none). Both share the machine's two cores with the reads.

Usage: ``python -m benchmarks.read_cost [--quick] [--workers N] [--reservations N]
[--repetitions N] [--latencies 0,20] [--concurrency 1,2,4,8,16] [--output STEM]``; also
``benchmarks/run.py --extras readcost``.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    diagnostic_arguments,
    emulator,
    emulator_client,
    read_every_worker,
    report,
)
from benchmarks.run import control
from benchmarks.runners import cpu_seconds, pooled_fetch
from pipelines.taskrouter.options import DEFAULT_CONCURRENCY  # the row the others are compared with


def emulator_cpu_seconds(pid: int) -> float | None:
    """User + system CPU the emulator process has used so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_with_the_client(emu: dict[str, Any], listing: dict[str, list[str]], concurrency: int,
                         in_a_process: bool) -> tuple[int, int]:
    """Every listed worker read by the project's client; returns (rows, requests)."""
    with emulator_client(emu, concurrency=concurrency, reader_process=in_a_process) as client:
        return read_every_worker(client, listing), int(client.stats.requests)


def _listing(emu: dict[str, Any]) -> dict[str, list[str]]:
    from pipelines.loading import list_workers_by_workspace, resolve_workspaces

    with emulator_client(emu) as client:
        return list_workers_by_workspace(client, resolve_workspaces(client, None))


def _fetch_only(args: dict[str, Any]) -> tuple[int, int]:
    _, rows, requests_made = pooled_fetch(args, keep=False)
    return rows, requests_made


def _measured(emu: dict[str, Any], read: Any, *args: Any) -> dict[str, Any]:
    """``read(*args)`` timed: its wall time, its CPU and the emulator's, its rows and requests."""
    emulator_before, cpu_before = emulator_cpu_seconds(emu["pid"]), cpu_seconds()
    started = time.perf_counter()
    rows, requests_made = read(*args)
    seconds = time.perf_counter() - started
    emulator_after = emulator_cpu_seconds(emu["pid"])
    return {"seconds": seconds, "cpu_seconds": cpu_seconds() - cpu_before, "rows": rows,
            "requests": requests_made,
            "emulator_cpu_seconds": (None if emulator_before is None or emulator_after is None
                                     else emulator_after - emulator_before)}


def run(quick: bool = False, workers: int | None = None, reservations: int | None = None,
        repetitions: int | None = None, latencies: list[float] | None = None,
        concurrencies: list[int] | None = None) -> list[dict[str, Any]]:
    workers = workers or (40 if quick else 1000)
    reservations = reservations or (20 if quick else 100)
    repetitions = repetitions or (1 if quick else 3)
    latencies = latencies if latencies is not None else ([0.0] if quick else [0.0, 20.0])
    concurrencies = concurrencies or ([1, DEFAULT_CONCURRENCY] if quick else [1, 2, 4, 8, 16])
    import pipelines.taskrouter.reader_process  # noqa: F401  (imported before any clock)

    results: list[dict[str, Any]] = []
    for latency in latencies:
        samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
        with emulator(workers, reservations, latency) as emu:
            control(emu, "reset")
            control(emu, "prewarm")
            listing = _listing(emu)
            ceiling_args = {"base_url": emu["base_url"], "account_sid": emu["account_sid"],
                            "auth_token": emu["auth_token"], "concurrency": DEFAULT_CONCURRENCY}
            for _ in range(repetitions):
                for concurrency in concurrencies:
                    for arrangement, in_a_process in (("threads", False), ("process", True)):
                        samples.setdefault((arrangement, concurrency), []).append(_measured(
                            emu, read_with_the_client, emu, listing, concurrency, in_a_process))
                samples.setdefault(("fetch_only", DEFAULT_CONCURRENCY), []).append(
                    _measured(emu, _fetch_only, ceiling_args))
        default = samples.get(("process", DEFAULT_CONCURRENCY))
        default_seconds = statistics.median(s["seconds"] for s in default) if default else None
        for (arrangement, concurrency), runs in samples.items():
            row: dict[str, Any] = {"latency_ms": latency, "workers": workers,
                                   "arrangement": arrangement, "concurrency": concurrency,
                                   "repetitions": len(runs),
                                   "rows": min(r["rows"] for r in runs),
                                   "requests": min(r["requests"] for r in runs)}
            for key in ("seconds", "cpu_seconds", "emulator_cpu_seconds"):
                values = [r[key] for r in runs if r[key] is not None]
                row[key] = round(statistics.median(values), 3) if values else None
            row["vs_process_8"] = (round(row["seconds"] / default_seconds, 2)
                                   if default_seconds else None)
            results.append(row)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = diagnostic_arguments(__doc__.splitlines()[0])
    parser.add_argument("--latencies", help="comma list of ms per request (default 0,20)")
    parser.add_argument("--concurrency", help="comma list of reader counts (default 1,2,4,8,16)")
    args = parser.parse_args(argv)
    rows = run(args.quick, args.workers, args.reservations, args.repetitions,
               [float(x) for x in args.latencies.split(",")] if args.latencies else None,
               [int(x) for x in args.concurrency.split(",")] if args.concurrency else None)
    report(rows, args.output)


if __name__ == "__main__":
    main()
