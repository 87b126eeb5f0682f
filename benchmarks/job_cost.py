"""The whole job ``make sync`` runs, measured from outside: time and memory of every process.

``make sync`` is ``python -m pipelines.cli sync``: Dagster's ``execute_in_process`` of
``taskrouter_sync``, checks included, plus whatever processes the sync starts (the reservation
reader). This module runs that command as it is, on a fresh ``DAGSTER_HOME`` with the project's
instance configuration, and samples its process tree (psutil, every 20 ms): each process's peak
RSS (``VmHWM``, the kernel's own high-water mark, so a spike between two samples still counts)
and the peak of their sum. Nothing here knows the sync's internals.

- ``sync_job(args)``: one sync of the emulator at ``base_url`` into ``warehouse_url`` (the
  harness's ``project_job`` loader: wall time includes start-up, as cron pays it).
- ``run(quick)`` (``--extras startup``): the fixed cost of ``make sync``, on a world of one
  reservation: the interpreter alone, importing Dagster, importing the definitions, and whole
  syncs (the first, which creates the instance and the warehouse, and the steady state).

    python -m benchmarks.job_cost [--quick] [--repetitions 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import emulator, generic_markdown, scratch_database  # noqa: E402

SAMPLE_S = 0.02
SYNC_COMMAND = [sys.executable, "-m", "pipelines.cli", "sync"]
CLEARED = ("TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET", "TASKROUTER_WORKSPACE_SIDS", "SYNC_SHARDS",
           "WAREHOUSE_URL", "DAGSTER_HOME")


def _high_water_mb(process: psutil.Process) -> float | None:
    """The process's peak resident set so far (Linux ``VmHWM``), else its current RSS."""
    try:
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return process.memory_info().rss / 2**20
    except (OSError, psutil.Error):
        return None


def measure_tree(command: list[str], env: dict[str, str], timeout: float = 7200.0) -> dict[str, Any]:
    """Run ``command``; its wall time, exit code, output, and the memory of it and every
    descendant: ``peak_rss_mb`` (the largest single process), ``total_peak_rss_mb`` (the
    largest sum seen at one sample) and each process's peak by command line."""
    started = time.perf_counter()
    root = psutil.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    peaks: dict[int, tuple[str, float]] = {}
    total_peak = 0.0
    deadline = time.monotonic() + timeout
    while root.poll() is None:
        total = 0.0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = [root]
        for process in tree:
            high = _high_water_mb(process)
            if high is None:
                continue
            try:
                rss = process.memory_info().rss / 2**20
                name = " ".join(process.cmdline()[1:4]) or process.name()
            except psutil.Error:
                continue
            total += rss
            if high > peaks.get(process.pid, ("", 0.0))[1]:
                peaks[process.pid] = (name, high)
        total_peak = max(total_peak, total)
        if time.monotonic() > deadline:
            root.kill()
            raise TimeoutError(f"{command} ran over {timeout:.0f}s")
        time.sleep(SAMPLE_S)
    stdout, stderr = root.communicate()
    seconds = time.perf_counter() - started
    largest = max((peak for _name, peak in peaks.values()), default=0.0)
    return {
        "seconds": seconds, "returncode": root.returncode, "stdout": stdout, "stderr": stderr,
        "peak_rss_mb": round(largest, 1), "total_peak_rss_mb": round(total_peak, 1),
        "processes": len(peaks),
        "process_peaks_mb": sorted(((n, round(p, 1)) for n, p in peaks.values()),
                                   key=lambda item: -item[1]),
    }


def _sync_env(info: dict[str, Any], warehouse_url: str, home: Path,
              events: bool = False) -> dict[str, str]:
    """The job's environment. ``events=False`` (the harness's loaders): every sync reads every
    worker's list, the work each loader of ``run.py`` does; the events feed is measured by
    ``benchmarks/events.py`` (and here with ``events=True``)."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update({"TASKROUTER_BASE_URL": info["base_url"], "TWILIO_ACCOUNT_SID": info["account_sid"],
                "TWILIO_AUTH_TOKEN": info["auth_token"], "WAREHOUSE_URL": warehouse_url,
                "DAGSTER_HOME": str(home), "PYTHONWARNINGS": "ignore",
                "TASKROUTER_EVENTS": "1" if events else "0"})
    return env


def fresh_home(parent: Path) -> Path:
    """A ``DAGSTER_HOME`` with the project's instance configuration (what ``make sync`` uses)."""
    home = parent / f"dagster_home_{time.time_ns()}"
    home.mkdir(parents=True)
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


def _synced_figures(home: Path) -> dict[str, Any]:
    """The latest sync's figures, as its ``reservations`` materialization recorded them."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("reservations"))
    if event is None or event.asset_materialization is None:
        return {}
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def sync_job(args: dict[str, Any]) -> dict[str, Any]:
    """One ``make sync`` (the CLI it runs) into ``args["warehouse_url"]``; ``args["dagster_home"]``
    keeps the instance between the harness's scenarios (full, noop, advance)."""
    home = Path(args["dagster_home"])
    info = {k: args[k] for k in ("base_url", "account_sid", "auth_token")}
    result = measure_tree(SYNC_COMMAND, _sync_env(info, args["warehouse_url"], home,
                                                  bool(args.get("events", False))))
    if result["returncode"] != 0:
        raise RuntimeError(f"make sync failed ({result['returncode']}):\n{result['stderr'][-3000:]}")
    figures = _synced_figures(home)
    return {
        "seconds": result["seconds"], "rows": int(figures.get("rows_seen", 0)),
        "requests": int(figures.get("requests", 0)),
        "written": int(figures.get("inserted", 0)) + int(figures.get("updated", 0)),
        "events_applied": int(figures.get("events_applied", 0)),
        "peak_rss_mb": result["peak_rss_mb"], "total_peak_rss_mb": result["total_peak_rss_mb"],
        "processes": result["processes"], "process_peaks_mb": result["process_peaks_mb"],
    }


def _python(code: str) -> float:
    return measure_tree([sys.executable, "-c", code], {**os.environ, "PYTHONWARNINGS": "ignore"})[
        "seconds"]


def run(quick: bool = False, repetitions: int | None = None) -> list[dict[str, Any]]:
    """The fixed cost of ``make sync``: medians over ``repetitions`` (figures, never asserted)."""
    reps = repetitions or (1 if quick else 5)
    samples: dict[str, list[dict[str, Any]]] = {}

    def add(name: str, seconds: float, peak: float = 0.0) -> None:
        samples.setdefault(name, []).append({"seconds": seconds, "peak_rss_mb": peak})

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, \
            emulator(1, 1) as info, scratch_database("sqlite", "bench_startup") as url:
        home = fresh_home(Path(tmp))
        env = _sync_env(info, url, home)
        first = measure_tree(SYNC_COMMAND, env)
        if first["returncode"] != 0:
            raise RuntimeError(f"make sync failed:\n{first['stderr'][-3000:]}")
        add("sync, first (new instance and warehouse)", first["seconds"], first["peak_rss_mb"])
        for _ in range(reps):
            add("python -c pass", _python("pass"))
            add("import dagster", _python("import dagster"))
            add("import pipelines.definitions", _python("import pipelines.definitions"))
            again = measure_tree(SYNC_COMMAND, env)
            add("sync of 1 reservation (steady state)", again["seconds"], again["peak_rss_mb"])
    return [
        {"what": name, "repetitions": len(runs),
         "median_seconds": round(statistics.median(r["seconds"] for r in runs), 3),
         "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1) or ""}
        for name, runs in samples.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repetitions", type=int, default=None)
    args = parser.parse_args(argv)
    print(generic_markdown(run(args.quick, args.repetitions)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
