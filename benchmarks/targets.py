"""The issue's targets judged from a harness run: each with its figure, its bound and a verdict.

``run.py`` appends this table to every run's markdown (and so to docs/benchmarks.md's block), and it can
judge saved results, several files at once (a 100k run and a separate 1.5M run, say):

    python -m benchmarks.targets benchmarks/results/a.json benchmarks/results/b.json

Every time ratio here was computed inside one run (``run.summarize``); across files only peak
memory is compared, which does not drift with the machine's load the way time does.

For the full-load ratio targets the table also states the floor that the same run measured:
``warehouse_only``, the project's warehouse side alone with every record already in memory (no
HTTP at all), which no full sync can beat. When that floor is above the time a target allows,
no change to the reads can meet it; only a cheaper warehouse side can.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The bounds ("Benchmarks at contact-center scale")
FULL_0MS_VS_BASELINE = 2.0
FULL_0MS_VS_CEILING = 1.5
FULL_20MS_VS_BASELINE = 6.0
NOOP_VS_FETCH_ONLY = 1.2
LARGE_ROWS = 1_500_000
LARGE_RSS_MB = 300.0
# "not growing with the number of workers": the largest shape's peak within 15% of the smallest's
RSS_GROWTH = 1.15

Row = dict[str, Any]
Key = tuple[str, float, str]  # shape, latency, database


def _where(key: Key) -> str:
    shape, latency, database = key
    return f"{shape}, {latency:g} ms, {database}"


def _index(rows: Iterable[Row]) -> dict[tuple[Key, str, str], Row]:
    return {((r["shape"], float(r["latency_ms"]), r["database"]), r["loader"], r["scenario"]): r
            for r in rows}


def _verdict(target: str, key: Key, measured: str, bound: str, met: bool | None,
             note: str = "") -> Row:
    return {"target": target, "where": _where(key), "measured": measured, "bound": bound,
            "met": "not measured" if met is None else ("yes" if met else "no"), "note": note}


def _floor_note(floor: Row | None, allowed_seconds: float) -> str:
    """What the run's own warehouse_only says about a full-load bound of ``allowed_seconds``."""
    if floor is None:
        return ""
    seconds = floor["seconds"]
    if seconds > allowed_seconds:
        return (f"the warehouse side alone (warehouse_only, no HTTP) takes {seconds:.2f} s, above "
                f"the {allowed_seconds:.2f} s this bound allows: faster reads cannot meet it")
    return (f"the warehouse side alone (warehouse_only) takes {seconds:.2f} s of the "
            f"{allowed_seconds:.2f} s this bound allows")


def _full_load(index: dict[tuple[Key, str, str], Row], key: Key) -> list[Row]:
    project = index.get((key, "project", "full"))
    baseline = index.get((key, "baseline", "full"))
    floor = index.get((key, "warehouse_only", "full"))
    out: list[Row] = []
    latency = key[1]
    wanted = {0.0: FULL_0MS_VS_BASELINE, 20.0: FULL_20MS_VS_BASELINE}.get(latency)
    if wanted is not None:
        target = f"full load, {latency:g} ms: >= {wanted:g}x the baseline"
        if project is None or baseline is None or "speedup_vs_baseline" not in project:
            out.append(_verdict(target, key, "", f">= {wanted:g}x", None))
        else:
            speedup = project["speedup_vs_baseline"]
            allowed = baseline["seconds"] / wanted
            out.append(_verdict(
                target, key, f"{speedup:.2f}x ({project['seconds']:.2f} s vs {baseline['seconds']:.2f} s)",
                f">= {wanted:g}x (<= {allowed:.2f} s)", speedup >= wanted,
                _floor_note(floor, allowed)))
    if latency == 0:
        target = f"full load, 0 ms: <= {FULL_0MS_VS_CEILING:g}x max(fetch-only, load-only)"
        if project is None or "vs_ceiling" not in project:
            out.append(_verdict(target, key, "", f"<= {FULL_0MS_VS_CEILING:g}x", None))
        else:
            ratio = project["vs_ceiling"]
            ceiling = project["seconds"] / ratio if ratio else 0.0
            allowed = ceiling * FULL_0MS_VS_CEILING
            out.append(_verdict(
                target, key, f"{ratio:.2f}x ({project['seconds']:.2f} s vs {ceiling:.2f} s)",
                f"<= {FULL_0MS_VS_CEILING:g}x (<= {allowed:.2f} s)",
                ratio <= FULL_0MS_VS_CEILING, _floor_note(floor, allowed)))
    return out


def _nothing_changed(index: dict[tuple[Key, str, str], Row], key: Key) -> list[Row]:
    noop = index.get((key, "project", "noop"))
    if noop is None:
        return []
    written = noop.get("written")
    out = [_verdict("nothing changed: writes 0 rows", key, f"{written} rows", "0 rows",
                    None if written is None else written == 0)]
    ratio = noop.get("vs_fetch_only")
    out.append(_verdict(
        f"nothing changed: <= {NOOP_VS_FETCH_ONLY:g}x fetch-only", key,
        "" if ratio is None else f"{ratio:.2f}x ({noop['seconds']:.2f} s)",
        f"<= {NOOP_VS_FETCH_ONLY:g}x", None if ratio is None else ratio <= NOOP_VS_FETCH_ONLY))
    return out


def _memory(rows: list[Row], loader: str = "project") -> list[Row]:
    """Peak RSS of the project's full load: under the bound at 1.5M rows, flat in workers.
    ``project_job``: the largest process of the whole job ``make sync`` runs."""
    out: list[Row] = []
    full = [r for r in rows if r["loader"] == loader and r["scenario"] == "full"
            and float(r["latency_ms"]) == 0]
    if not full and loader != "project":
        return out
    what = "sync" if loader == "project" else "make sync job (every process)"
    for database in sorted({r["database"] for r in full}):
        mine = sorted((r for r in full if r["database"] == database),
                      key=lambda r: int(r["shape"].split("x")[0]))
        large = [r for r in mine if r["rows"] >= LARGE_ROWS]
        key: Key = (large[-1]["shape"] if large else f">= {LARGE_ROWS:,} rows", 0.0, database)
        target = f"peak RSS of the {LARGE_ROWS / 1e6:g}M {what} < {LARGE_RSS_MB:g} MB"
        if not large:
            out.append(_verdict(target, key, "", f"< {LARGE_RSS_MB:g} MB", None))
        else:
            rss = large[-1]["peak_rss_mb"]
            out.append(_verdict(target, key, f"{rss:.0f} MB", f"< {LARGE_RSS_MB:g} MB",
                                rss < LARGE_RSS_MB))
        few, many = (mine[0], mine[-1]) if mine else (None, None)
        target = "peak RSS flat in workers" + ("" if loader == "project" else f" ({what})")
        if few is None or many is None or few["shape"].split("x")[0] == many["shape"].split("x")[0]:
            out.append(_verdict(target, key, "", f"<= {RSS_GROWTH:g}x", None,
                                "needs two shapes with different worker counts"))
        else:
            growth = many["peak_rss_mb"] / few["peak_rss_mb"]
            out.append(_verdict(
                target, (f"{few['shape']} vs {many['shape']}", 0.0, database),
                f"{growth:.2f}x ({few['peak_rss_mb']:.0f} -> {many['peak_rss_mb']:.0f} MB)",
                f"<= {RSS_GROWTH:g}x", growth <= RSS_GROWTH))
    return out


def judge(rows: list[Row]) -> list[Row]:
    """One verdict per target and place (shape, latency, database) the rows cover."""
    index = _index(rows)
    keys = sorted({key for key, loader, _ in index if loader == "project"},
                  key=lambda k: (k[2], int(k[0].split("x")[0]), k[1]))
    out: list[Row] = []
    for key in keys:
        out += _full_load(index, key)
        out += _nothing_changed(index, key)
    return out + _memory(rows) + _memory(rows, "project_job")


def markdown(verdicts: list[Row]) -> str:
    lines = ["| target | where | measured | bound | met? | note |", "|---|---|---|---|---|---|"]
    for v in verdicts:
        met = f"**{v['met']}**" if v["met"] == "no" else v["met"]
        lines.append(f"| {v['target']} | {v['where']} | {v['measured']} | {v['bound']} | {met} | "
                     f"{v['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="JSON files written by benchmarks/run.py")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for path in args.results:
        rows += json.loads(Path(path).read_text())["rows"]
    print(markdown(judge(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
