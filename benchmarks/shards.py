"""1 shard vs 4 shards: the sharded ``reservations`` asset on Dagster's multiprocess executor, PostgreSQL.

The emulator runs in its own process (``--prewarm``, 20 ms latency per request); each scenario
runs a full initial load of the same data into a fresh PostgreSQL database through Dagster
(``dg.execute_job`` on a reconstructable job, multiprocess executor, a temporary persistent
instance), so 1 shard and 4 shards pay the same step-process overheads. Reported per scenario:
wall time of the run, rows read, rows/s, the speed-up against 1 shard measured in the same call,
and where the CPU went (the whole machine's busy share, the emulator process's CPU seconds).

    python -m benchmarks.shards            # 15,000 workers x 100 reservations, 20 ms (minutes)
    python -m benchmarks.shards --quick    # a small shape: proves the benchmark works

Never asserts on time.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from benchmarks.common import PG_ADMIN_URL as PG_ADMIN  # noqa: E402
from benchmarks.common import emulator, scratch_database  # noqa: E402

FULL = {"workers": 15_000, "reservations": 100, "latency_ms": 20.0}
QUICK = {"workers": 400, "reservations": 20, "latency_ms": 20.0}
CONCURRENCY = 8  # TASKROUTER_CONCURRENCY per shard (the default)
# (scenario, shards, threads per shard): the third row separates "more requests in flight"
# from "more processes": one shard with as many threads as four shards have together
SCENARIOS = [("1 shard", 1, CONCURRENCY), ("4 shards", 4, CONCURRENCY),
             ("1 shard, 32 threads", 1, 4 * CONCURRENCY)]
PROJECT_PREFIXES = ("TWILIO_", "TASKROUTER_", "SYNC_", "WAREHOUSE_", "REPORTING_", "SUMMARY_")


def benchmark_job(env: dict[str, str]) -> dg.JobDefinition:
    """``reservations`` alone (no checks), rebuilt in every step process from ``env``."""
    os.environ.clear()
    os.environ.update(env)
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    job = dg.define_asset_job(
        "bench_reservations", selection=dg.AssetSelection.assets("reservations").without_checks()
    )
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(job.name)


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU seconds of the PostgreSQL server: live processes plus backends it already reaped
    (the postmaster's children's time), best effort; other databases' work counts too."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


class BackendSampler:
    """Samples the scenario database's backends twice a second: how many are running a
    statement, and how many of those wait on a lock (the shards' per-table writer lock)."""

    def __init__(self, url: str, every: float = 0.5) -> None:
        self.name = sa.make_url(url).database
        self.every, self.samples = every, []
        self.engine = sa.create_engine(PG_ADMIN, pool_size=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        query = sa.text(
            "SELECT count(*) FILTER (WHERE state = 'active'),"
            " count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock')"
            " FROM pg_stat_activity WHERE datname = :db"
        )
        with self.engine.connect() as conn:
            while not self._stop.wait(self.every):
                self.samples.append(tuple(conn.execute(query, {"db": self.name}).one()))
                conn.rollback()

    def __enter__(self) -> "BackendSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def averages(self) -> tuple[float, float]:
        if not self.samples:
            return 0.0, 0.0
        n = len(self.samples)
        return sum(a for a, _ in self.samples) / n, sum(w for _, w in self.samples) / n


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def run_scenario(info: dict[str, Any], shards: int, threads: int) -> dict[str, Any]:
    saved = dict(os.environ)  # benchmark_job replaces the environment of the calling process too
    env = {k: v for k, v in saved.items() if not k.startswith(PROJECT_PREFIXES)}
    with scratch_database("postgresql", "bench_shards") as url, tempfile.TemporaryDirectory(prefix="bench-dh-") as home:
        env.update({
            "TASKROUTER_BASE_URL": info["base_url"], "TWILIO_ACCOUNT_SID": info["account_sid"],
            "TWILIO_AUTH_TOKEN": info["auth_token"], "WAREHOUSE_URL": url, "DAGSTER_HOME": home,
            "SYNC_SHARDS": str(shards), "SYNC_SHARD_RETRIES": "0",
            "TASKROUTER_CONCURRENCY": str(threads),
        })
        job = dg.build_reconstructable_job(
            "benchmarks.shards", "benchmark_job", reconstructable_kwargs={"env": env},
            reconstructor_working_directory=str(ROOT),
        )
        run_config = {
            "execution": {"config": {"multiprocess": {
                "max_concurrent": max(shards, 1),
                "start_method": {"forkserver": {"preload_modules": ["pipelines.definitions"]}},
            }}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        }
        with dg.instance_for_test(temp_dir=home) as instance:
            load_before = os.getloadavg()[0]
            emu_cpu, (busy0, total0) = process_cpu_seconds(info["pid"]), machine_cpu()
            pg_cpu = postgres_cpu_seconds()
            started = time.perf_counter()
            try:
                with BackendSampler(url) as sampler:
                    result = dg.execute_job(job, instance=instance, run_config=run_config)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            seconds = time.perf_counter() - started
            busy1, total1 = machine_cpu()
            emu_cpu = process_cpu_seconds(info["pid"]) - emu_cpu
            pg_cpu = postgres_cpu_seconds() - pg_cpu
            if not result.success:
                raise RuntimeError(f"the {shards}-shard run failed")
            meta = next(
                {k: getattr(v, "value", v) for k, v in m.metadata.items()}
                for m in result.asset_materializations_for_node("reservations")
                if m.partition is None and m.asset_key == dg.AssetKey("reservations")
            )
    rows = int(meta["rows_seen"])
    return {
        "database": "postgresql", "rows": rows, "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds, 1), "shards": int(meta["shards"]),
        "threads_per_shard": threads, "inserted": int(meta["inserted"]),
        "requests": int(meta["requests"]),
        "load_seconds": float(meta["seconds"]),  # plan_shards -> finish_sync, inside the run
        "machine_cpu_busy_pct": round(100.0 * (busy1 - busy0) / max(total1 - total0, 1), 1),
        "emulator_cpu_seconds": round(emu_cpu, 1),
        "shard_cpu_seconds": float(meta.get("shard_cpu_seconds", 0.0)),  # all shard processes
        "postgres_cpu_seconds": round(pg_cpu, 1),  # every postgres process on the machine
        # sampled: backends running a statement / of those, waiting on a lock
        "pg_active_backends_avg": round(sampler.averages()[0], 2),
        "pg_lock_waiting_avg": round(sampler.averages()[1], 2),
        "load_average_before": round(load_before, 2),  # other work on the machine skews figures
    }


def run(quick: bool = False, shape: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every scenario against one emulator; ratios against 1 shard from the same call."""
    shape = shape or (QUICK if quick else FULL)
    try:
        sa.create_engine(PG_ADMIN).connect().close()
    except Exception as error:  # noqa: BLE001
        print(f"PostgreSQL unreachable ({type(error).__name__}): shards benchmark skipped",
              file=sys.stderr)
        return []
    results: list[dict[str, Any]] = []
    with emulator(shape["workers"], shape["reservations"], shape["latency_ms"]) as info:
        for scenario, shards, threads in SCENARIOS:
            row = {"scenario": scenario, **run_scenario(info, shards, threads)}
            row["shape"] = (f"{shape['workers']:,} workers x {shape['reservations']} "
                            f"reservations, {shape['latency_ms']:g} ms")
            results.append(row)
            print(f"  {scenario}: {row['seconds']:.1f}s, {row['rows_per_second']:,.0f} rows/s",
                  file=sys.stderr, flush=True)
    base = results[0]["seconds"]
    for row in results:
        row["speedup_vs_1_shard"] = round(base / row["seconds"], 2)
    return results


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | shards x threads | rows | wall s | rows/s | speed-up vs 1 shard | "
            "machine CPU busy | shard CPU s | PostgreSQL CPU s | emulator CPU s | "
            "PG backends active (avg) | of which waiting on a lock | load avg before |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['shards']} x {r['threads_per_shard']} | {r['rows']:,} | "
            f"{r['seconds']:.1f} | {r['rows_per_second']:,.0f} | {r['speedup_vs_1_shard']:.2f} | "
            f"{r['machine_cpu_busy_pct']:.0f}% | {r['shard_cpu_seconds']:.1f} | "
            f"{r['postgres_cpu_seconds']:.1f} | {r['emulator_cpu_seconds']:.1f} | "
            f"{r['pg_active_backends_avg']:.2f} | {r['pg_lock_waiting_avg']:.2f} | "
            f"{r['load_average_before']:.1f} |"
        )
    if rows:
        lines.append(f"\nShape: {rows[0]['shape']}; PostgreSQL; Dagster multiprocess executor; "
                     f"{os.cpu_count()} CPUs.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small shape (smoke run)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--workers", type=int, help="another shape: workers (one workspace)")
    parser.add_argument("--reservations", type=int, default=100, help="with --workers")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="with --workers")
    args = parser.parse_args(argv)
    shape = ({"workers": args.workers, "reservations": args.reservations,
              "latency_ms": args.latency_ms} if args.workers else None)
    rows = run(quick=args.quick, shape=shape)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
