"""Benchmark harness: the project's sync against a hand-written baseline and two ceilings.

For each shape (workers x reservations) and latency it starts the emulator in its own process,
then, repeated N times from the same seed state:
  (a) full load into an empty warehouse, (b) a second sync with nothing changed,
  (c) a sync after the emulator advances 60 minutes,
for the project and the baseline, plus the fetch-only and load-only ceilings. Every loader runs in
its own process (``benchmarks.runners``) so its peak RSS is its own. Medians and ratios come from
the same run; nothing here asserts on time.

    python benchmarks/run.py                       # the issue's shapes, SQLite (+ PostgreSQL if up)
    python benchmarks/run.py --quick               # a tiny shape: proves the harness works
    python benchmarks/run.py --shapes 1000x100 --latencies 0,20 --repetitions 3
    python benchmarks/run.py --shapes 1000x100 --latencies 0 --databases mariadb
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.common import (  # noqa: E402
    MYSQL_ADMIN_URL,
    PG_ADMIN_URL,
    emulator,
    generic_markdown,
    machine,
    scratch_database,
)
from benchmarks.targets import judge  # noqa: E402
from benchmarks.targets import markdown as targets_markdown  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# the server databases the harness can load, by --databases name
SERVERS = {"postgresql": PG_ADMIN_URL, "mariadb": MYSQL_ADMIN_URL}
EXTRA_MODULES = {
    "upsert": "benchmarks.upsert_scale",
    "faults": "benchmarks.extraction_faults",
    "backfill": "benchmarks.backfill",
    "shards": "benchmarks.shards",
    "history": "benchmarks.warehouse_history",
    "contention": "benchmarks.read_contention",
    "readcost": "benchmarks.read_cost",
    "events": "benchmarks.events",
    "startup": "benchmarks.job_cost",
}


# loader name -> (runner, extra runner args); on request: project_eager_indexes, the project with
# its first load keeping every index up to date row by row (the A/B of warehouse.initial_load),
# and project_reader_threads / project_reader_process, the project reading every sync in-process /
# in a child process instead of its default "auto" (the A/B of pipelines.taskrouter.reader_process)
SYNC_LOADERS: dict[str, tuple[str, dict[str, Any]]] = {
    "project": ("project", {}),
    "project_eager_indexes": ("project", {"defer_indexes": False}),
    "project_reader_threads": ("project", {"reader_process": False}),
    "project_reader_process": ("project", {"reader_process": True}),
    # the whole job `make sync` runs (CLI, Dagster, checks), every process's memory
    "project_job": ("job", {}),
    "baseline": ("baseline", {}),
}


def control(info: dict[str, Any], action: str, **params: Any) -> dict[str, Any]:
    response = requests.post(f"{info['base_url']}/_emulator/{action}", params=params,
                             auth=(info["account_sid"], info["auth_token"]), timeout=600)
    response.raise_for_status()
    return response.json()


def run_runner(name: str, args: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.runners", name, json.dumps(args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"runner {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Databases:
    """Fresh warehouses (``benchmarks.common.scratch_database``), all dropped by ``cleanup``;
    PostgreSQL and MariaDB only when their servers are reachable."""

    def __init__(self, names: list[str]) -> None:
        self.stack = ExitStack()
        unknown = sorted(set(names) - set(SERVERS) - {"sqlite"})
        if unknown:
            raise SystemExit(f"unknown database(s) {', '.join(unknown)}: sqlite, "
                             f"{', '.join(SERVERS)}")
        self.names = [n for n in names if n == "sqlite" or self._reachable(n)]

    def _reachable(self, name: str) -> bool:
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(SERVERS[name])
            with engine.connect():
                pass
            engine.dispose()
            return True
        except Exception as error:  # noqa: BLE001
            print(f"{name} unreachable ({type(error).__name__}): skipped", file=sys.stderr)
            return False

    def fresh(self, name: str) -> str:
        return self.stack.enter_context(scratch_database(name, "bench"))

    def fresh_home(self) -> Path:
        """A throw-away DAGSTER_HOME with the project's instance config (the job loader's)."""
        from benchmarks.job_cost import fresh_home

        if not hasattr(self, "_homes"):
            self._homes = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dh-")))
        return fresh_home(self._homes)

    def cleanup(self) -> None:
        self.stack.close()


def measure_shape(workers: int, reservations: int, latency: float, database: str, reps: int,
                  dbs: Databases, scenarios: list[str], concurrency: int,
                  loaders: list[str]) -> list[dict[str, Any]]:
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with emulator(workers, reservations, latency) as info:
        common = {"base_url": info["base_url"], "account_sid": info["account_sid"],
                  "auth_token": info["auth_token"], "concurrency": concurrency}
        for rep in range(reps):
            for loader in [x for x in SYNC_LOADERS if x in loaders]:
                control(info, "reset")
                control(info, "prewarm")
                url = dbs.fresh(database)
                args = {**common, "warehouse_url": url, "baseline_url": url,
                        "dagster_home": str(dbs.fresh_home()), **SYNC_LOADERS[loader][1]}
                for scenario in ("full", "noop", "advance"):
                    if scenario == "advance":
                        control(info, "advance", minutes=60)
                        control(info, "prewarm")
                    if scenario not in scenarios:
                        continue
                    result = run_runner(SYNC_LOADERS[loader][0], args)
                    samples.setdefault((loader, scenario), []).append(result)
                    print(f"  rep {rep + 1} {loader:8s} {scenario:7s} {result['seconds']:7.2f}s "
                          f"cpu {result['cpu_seconds']:6.2f}s "
                          f"{result['rows']:>9,} rows  rss {result['peak_rss_mb']:.0f} MB"
                          + (f" (all {result['processes']} processes: "
                             f"{result['total_peak_rss_mb']:.0f} MB)" if "processes" in result else ""),
                          flush=True)
            control(info, "reset")
            control(info, "prewarm")
            for ceiling in [x for x in ("fetch_only", "load_only", "warehouse_only")
                            if x in loaders]:
                url = dbs.fresh(database)
                result = run_runner(ceiling, {**common, "baseline_url": url, "warehouse_url": url})
                samples.setdefault((ceiling, "full"), []).append(result)
                print(f"  rep {rep + 1} {ceiling:10s} {result['seconds']:7.2f}s "
                      f"cpu {result['cpu_seconds']:6.2f}s", flush=True)
    return summarize(samples, workers, reservations, latency, database)


def _median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def summarize(samples: dict[tuple[str, str], list[dict[str, Any]]], workers: int, reservations: int,
              latency: float, database: str) -> list[dict[str, Any]]:
    fetch = _median(samples[("fetch_only", "full")], "seconds") if ("fetch_only", "full") in samples else None
    load = _median(samples[("load_only", "full")], "seconds") if ("load_only", "full") in samples else None
    ceiling = max(x for x in (fetch, load) if x is not None) if (fetch or load) else None
    rows_out = []
    for (loader, scenario), results in sorted(samples.items()):
        seconds = _median(results, "seconds")
        rows = int(_median(results, "rows"))
        row: dict[str, Any] = {
            "shape": f"{workers}x{reservations}", "latency_ms": latency, "database": database,
            "loader": loader, "scenario": scenario, "repetitions": len(results),
            "seconds": round(seconds, 3), "rows": rows,
            "rows_per_second": round(rows / seconds, 1) if seconds else None,
            "requests": int(_median(results, "requests")),
            "cpu_seconds": round(_median(results, "cpu_seconds"), 3),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results), 1),
            "written": int(_median(results, "written")) if "written" in results[0] else None,
            "all_seconds": [round(r["seconds"], 3) for r in results],
        }
        for key in ("list_seconds", "load_seconds", "prepare_seconds", "write_seconds",
                    "index_build_seconds", "summary_seconds", "reader_peak_rss_mb"):
            if key in results[0]:
                row[key] = round(_median(results, key), 3)
        for key in ("total_peak_rss_mb", "processes"):  # the job loader: worst of the runs
            if key in results[0]:
                row[key] = max(r[key] for r in results)
        if "process_peaks_mb" in results[0]:  # each process of the worst run, largest first
            row["process_peaks_mb"] = max(results, key=lambda r: r["peak_rss_mb"])["process_peaks_mb"]
        if loader.startswith("project") and loader != "project_job":  # the job pays start-up
            base = samples.get(("baseline", scenario))
            if base:
                row["speedup_vs_baseline"] = round(_median(base, "seconds") / seconds, 2)
            if scenario == "full" and ceiling:
                row["vs_ceiling"] = round(seconds / ceiling, 2)
            if scenario == "noop" and fetch:
                row["vs_fetch_only"] = round(seconds / fetch, 2)
        rows_out.append(row)
    return rows_out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| shape | latency | db | loader | scenario | median s | CPU s | rows/s | requests | "
             "written | peak RSS MB | vs baseline | vs ceiling |",
             "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        written = "" if r["written"] is None else f"{r['written']:,}"
        ratio = r.get("vs_ceiling", r.get("vs_fetch_only", ""))
        ratio_text = (f"{ratio}x of {'max(fetch,load)' if 'vs_ceiling' in r else 'fetch-only'}"
                      if ratio != "" else "")
        lines.append(
            f"| {r['shape']} | {r['latency_ms']:g} ms | {r['database']} | {r['loader']} | "
            f"{r['scenario']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
            f"{r['rows_per_second'] or 0:,.0f} | "
            f"{r['requests']:,} | {written} | "
            f"{r['peak_rss_mb']:.0f} | "
            f"{str(r['speedup_vs_baseline']) + 'x' if 'speedup_vs_baseline' in r else ''} | {ratio_text} |"
        )
    return "\n".join(lines)


BENCH_DOC = ROOT / "docs" / "benchmarks.md"


def update_readme(text: str, readme: Path = BENCH_DOC) -> None:
    """Replace what stands between the bench markers of docs/benchmarks.md (only the generated
    tables live there; the analysis around them is kept). Refuses, rather than appends, without
    markers. (The name predates the docs/ split; the option keeps it.)"""
    body = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if body.count(start) != 1 or body.count(end) != 1 or body.index(start) > body.index(end):
        raise SystemExit(f"{readme}: expected one {start} ... {end} block; file left as it was")
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="1000x100,15000x100",
                   help="comma list of WORKERSxRESERVATIONS (default: the issue's)")
    p.add_argument("--latencies", default="0,20", help="ms per request; 20 ms only runs on the first shape")
    p.add_argument("--databases", default="sqlite", help="comma list of sqlite, postgresql, mariadb")
    p.add_argument("--scenarios", default="full,noop,advance")
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--loaders",
                   default="project,project_job,baseline,fetch_only,load_only,warehouse_only",
                   help="which loaders to run (e.g. skip the slow baseline at 1.5M rows)")
    p.add_argument("--quick", action="store_true", help="tiny shape, one repetition (smoke test)")
    p.add_argument("--extras", default="startup",
                   help=f"also run: {','.join(EXTRA_MODULES)} (or 'all'; default: startup, the "
                        "fixed cost of make sync)")
    p.add_argument("--output", default=str(RESULTS / "latest"), help="path stem for .json and .md")
    p.add_argument("--update-readme", "--update-docs", dest="update_readme", action="store_true",
                   help="write the table into docs/benchmarks.md's bench block")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.shapes, args.latencies, args.repetitions = "20x30", "0", 1
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",") if s]
    latencies = [float(x) for x in args.latencies.split(",") if x]
    scenarios = [s for s in args.scenarios.split(",") if s]
    dbs = Databases([d for d in args.databases.split(",") if d])
    rows: list[dict[str, Any]] = []
    started = time.time()
    try:
        for index, (workers, reservations) in enumerate(shapes):
            for latency in latencies:
                if latency and index > 0:
                    continue  # the latency shape is the first one (1.5M x 20 ms takes too long)
                for database in dbs.names:
                    print(f"{workers} workers x {reservations} reservations, {latency:g} ms, {database}",
                          flush=True)
                    rows += measure_shape(workers, reservations, latency, database,
                                          args.repetitions, dbs, scenarios, args.concurrency,
                                          args.loaders.split(","))
    finally:
        dbs.cleanup()
    sections = [f"Machine: {machine()}; {args.repetitions} repetition(s), medians.\n", markdown(rows),
                f"\nTargets judged from this run (`benchmarks/targets.py`):\n\n{targets_markdown(judge(rows))}"]
    extras = list(EXTRA_MODULES) if args.extras == "all" else [e for e in args.extras.split(",") if e]
    extra_results: dict[str, Any] = {}
    for name in extras:
        module = importlib.import_module(EXTRA_MODULES[name])
        print(f"extra benchmark: {name}", flush=True)
        extra_rows = module.run(quick=args.quick)
        extra_results[name] = extra_rows
        sections.append(f"\n**{name}**\n\n{generic_markdown(extra_rows)}")
    text = "\n".join(sections)
    out = Path(args.output)
    out = out.with_name(out.name.replace(".", "_"))  # "shape-1.5m" must not lose ".5m" as a suffix
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"machine": machine(), "seconds": round(time.time() - started, 1), "rows": rows,
         "targets": judge(rows), "extras": extra_results}, indent=2))
    out.with_suffix(".md").write_text(text + "\n")
    print("\n" + text)
    if args.update_readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
