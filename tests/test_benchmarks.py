"""`make bench` must keep working: run the harness on a tiny shape (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import PROJECT_ROOT


def test_bench_harness_runs_on_a_tiny_shape(tmp_path):
    stem = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--output", str(stem)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads(stem.with_suffix(".json").read_text())
    by_key = {(r["loader"], r["scenario"]): r for r in results["rows"]}
    for key in [("project", "full"), ("project", "noop"), ("project", "advance"),
                ("baseline", "full"), ("fetch_only", "full"), ("load_only", "full"),
                ("warehouse_only", "full")]:
        assert key in by_key, key
    assert by_key[("warehouse_only", "full")]["rows"] == 20 * 30
    full, noop = by_key[("project", "full")], by_key[("project", "noop")]
    assert full["rows"] == 20 * 30 and full["written"] == 600
    assert noop["written"] == 0, "a second sync with nothing changed must write nothing"
    assert by_key[("project", "advance")]["written"] > 0
    assert "speedup_vs_baseline" in full and "vs_ceiling" in full and full["peak_rss_mb"] > 0
    assert full["write_seconds"] > 0 and full["prepare_seconds"] > 0
    # the whole job make sync runs, through the CLI: the same rows, every process measured
    job = {s: by_key[("project_job", s)] for s in ("full", "noop", "advance")}
    assert job["full"]["rows"] == 600 and job["full"]["written"] == 600
    assert job["noop"]["written"] == 0 and job["advance"]["written"] == full_advance_written(by_key)
    assert job["full"]["processes"] >= 1 and job["full"]["total_peak_rss_mb"] >= job["full"]["peak_rss_mb"] > 0
    assert "speedup_vs_baseline" not in job["full"]  # start-up included: not comparable
    startup = {r["what"]: r for r in results["extras"]["startup"]}
    assert startup["sync of 1 reservation (steady state)"]["median_seconds"] > 0
    assert startup["import dagster"]["median_seconds"] > 0
    text = stem.with_suffix(".md").read_text()
    assert "| project | full |" in text and "Targets judged from this run" in text
    assert "| project_job | full |" in text and "**startup**" in text
    judged = {v["target"]: v["met"] for v in results["targets"]}
    assert judged["nothing changed: writes 0 rows"] == "yes"
    assert judged["peak RSS of the 1.5M sync < 300 MB"] == "not measured"  # a tiny shape only
    assert judged["peak RSS of the 1.5M make sync job (every process) < 300 MB"] == "not measured"


def full_advance_written(by_key: dict) -> int:
    return by_key[("project", "advance")]["written"]


def test_the_reader_threads_loader_loads_what_the_reader_process_loads(tmp_path):
    """The A/B of the reader process: the same rows, writes and requests either way; the
    default ("auto") reads the full load in a child, whose memory it counts, and the
    incremental syncs in-process (figures are not asserted)."""
    stem = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--loaders",
         "project,project_reader_threads,project_reader_process", "--extras", "",
         "--output", str(stem)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    by_key = {(r["loader"], r["scenario"]): r
              for r in json.loads(stem.with_suffix(".json").read_text())["rows"]}
    for scenario in ("full", "noop", "advance"):
        auto = by_key[("project", scenario)]
        threads, process = (by_key[("project_reader_threads", scenario)],
                            by_key[("project_reader_process", scenario)])
        for other in (threads, process):
            assert (other["rows"], other["written"], other["requests"]) == (
                auto["rows"], auto["written"], auto["requests"]), scenario
        assert 0 < process["reader_peak_rss_mb"] < process["peak_rss_mb"]
        assert threads["reader_peak_rss_mb"] == 0
        assert (auto["reader_peak_rss_mb"] > 0) == (scenario == "full"), scenario


def test_the_read_contention_diagnostic_reads_and_stores_everything_in_each_arrangement():
    """Figures are not asserted; the arrangements must each do the whole job, or the
    comparison between them means nothing."""
    from benchmarks.read_contention import run

    rows = {row["scenario"]: row for row in run(quick=True)}
    assert set(rows) == {"reads_alone", "warehouse_alone", "reads_with_warehouse_thread",
                         "reads_with_warehouse_process"}
    for scenario in ("reads_alone", "reads_with_warehouse_thread", "reads_with_warehouse_process"):
        assert rows[scenario]["rows_read"] == 40 * 20, scenario
        assert rows[scenario]["reads_seconds"] > 0 and rows[scenario]["reads_vs_alone"] > 0
    for scenario in ("warehouse_alone", "reads_with_warehouse_thread",
                     "reads_with_warehouse_process"):
        assert rows[scenario]["rows_stored"] == 40 * 20, scenario
        assert rows[scenario]["warehouse_seconds"] > 0


def test_the_read_cost_benchmark_reads_everything_in_every_arrangement():
    """Figures are not asserted; every arrangement and reader count must read every row with
    the same requests, or comparing their CPU means nothing."""
    from benchmarks.read_cost import run

    rows = run(quick=True)
    assert {(r["arrangement"], r["concurrency"]) for r in rows} == {
        ("threads", 1), ("process", 1), ("threads", 8), ("process", 8), ("fetch_only", 8)}
    for row in rows:
        assert row["rows"] == 40 * 20, row
        assert row["seconds"] > 0 and row["cpu_seconds"] > 0, row
    client_requests = {r["requests"] for r in rows if r["arrangement"] != "fetch_only"}
    assert client_requests == {40}  # one page per worker: PageSize=1000 > 20 reservations
    assert next(r for r in rows if r["arrangement"] == "process" and r["concurrency"] == 8)[
        "vs_process_8"] == 1.0


def test_the_baselines_upsert_keeps_the_newer_version_on_every_database(warehouse_url):
    """The baseline is only a fair yardstick if its hand-written upsert is right: an older
    version leaves the row alone, a newer one replaces every column (MySQL/MariaDB's
    left-to-right assignments included)."""
    from benchmarks.runners import (
        RESERVATION_COLUMNS,
        _baseline_ddl,
        _baseline_upsert_sql,
        _connect,
    )

    def row(updated: str, status: str) -> tuple[str, ...]:
        values = {c: f"{c}-{status}" for c in RESERVATION_COLUMNS}
        values.update(sid="WR1", date_updated=updated, reservation_status=status)
        return tuple(values[c] for c in RESERVATION_COLUMNS)

    conn, dialect = _connect(warehouse_url)
    try:
        cur = conn.cursor()
        cur.execute(_baseline_ddl(dialect))
        sql = _baseline_upsert_sql(dialect)
        cur.executemany(sql, [row("2026-11-03T12:00:00Z", "pending")])
        cur.executemany(sql, [row("2026-11-03T11:00:00Z", "rejected")])  # older: ignored
        conn.commit()
        cur.execute("SELECT reservation_status, date_updated, task_sid FROM reservations")
        assert list(cur.fetchall()) == [("pending", "2026-11-03T12:00:00Z", "task_sid-pending")]
        cur.executemany(sql, [row("2026-11-03T13:00:00Z", "accepted")])  # newer: replaces all
        conn.commit()
        cur.execute("SELECT reservation_status, date_updated, task_sid FROM reservations")
        assert list(cur.fetchall()) == [("accepted", "2026-11-03T13:00:00Z", "task_sid-accepted")]
    finally:
        conn.close()


def test_the_harness_runs_on_the_server_databases(tmp_path, postgres_url, mariadb_url):
    """`--databases postgresql,mariadb`: every loader runs on both (the fixtures make sure the
    servers are up, or skip, or fail under REQUIRE_SERVICES=1); figures are not asserted. The
    whole-job loader and the start-up extra are covered on SQLite (their cost is Dagster's)."""
    stem = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--databases", "postgresql,mariadb",
         "--loaders", "project,baseline,fetch_only,load_only,warehouse_only", "--extras", "",
         "--output", str(stem)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    rows = json.loads(stem.with_suffix(".json").read_text())["rows"]
    for database in ("postgresql", "mariadb"):
        by_key = {(r["loader"], r["scenario"]): r for r in rows if r["database"] == database}
        assert by_key[("project", "full")]["written"] == 600, database
        assert by_key[("project", "noop")]["written"] == 0, database
        assert by_key[("baseline", "full")]["rows"] == 600, database
        for ceiling in ("fetch_only", "load_only", "warehouse_only"):
            assert by_key[(ceiling, "full")]["rows"] == 600, (database, ceiling)


def _row(shape: str, latency: float, loader: str, scenario: str, seconds: float,
         **extra: object) -> dict[str, object]:
    workers, per_worker = (int(x) for x in shape.split("x"))
    return {"shape": shape, "latency_ms": latency, "database": "sqlite", "loader": loader,
            "scenario": scenario, "seconds": seconds, "rows": workers * per_worker,
            "peak_rss_mb": 100.0, **extra}


def test_the_targets_are_judged_from_the_runs_own_figures():
    """Each bound is applied to the ratio the run computed; the 0 ms full-load verdicts name the
    run's warehouse_only floor, and say when it alone is over what the bound allows."""
    from benchmarks.targets import judge, markdown

    rows = [
        _row("1000x100", 0, "baseline", "full", 6.0),
        _row("1000x100", 0, "fetch_only", "full", 2.0),
        _row("1000x100", 0, "load_only", "full", 1.0),
        _row("1000x100", 0, "warehouse_only", "full", 3.5),
        _row("1000x100", 0, "project", "full", 4.0, speedup_vs_baseline=1.5, vs_ceiling=2.0,
             written=100_000, peak_rss_mb=250.0),
        _row("1000x100", 0, "project", "noop", 1.5, written=0, vs_fetch_only=0.75),
        _row("1000x100", 20, "baseline", "full", 30.0),
        _row("1000x100", 20, "project", "full", 4.0, speedup_vs_baseline=7.5, vs_ceiling=1.3),
        _row("1000x100", 20, "project", "noop", 3.0, written=3, vs_fetch_only=1.3),
        _row("15000x100", 0, "project", "full", 80.0, vs_ceiling=1.9, peak_rss_mb=310.0),
    ]
    verdicts = {(v["target"], v["where"]): v for v in judge(rows)}
    vs_baseline = verdicts[("full load, 0 ms: >= 2x the baseline", "1000x100, 0 ms, sqlite")]
    assert vs_baseline["met"] == "no" and "(<= 3.00 s)" in vs_baseline["bound"]
    assert "3.50 s, above the 3.00 s" in vs_baseline["note"]  # the floor alone misses it
    vs_ceiling = verdicts[("full load, 0 ms: <= 1.5x max(fetch-only, load-only)",
                           "1000x100, 0 ms, sqlite")]
    assert vs_ceiling["met"] == "no" and "(<= 3.00 s)" in vs_ceiling["bound"]
    assert verdicts[("full load, 20 ms: >= 6x the baseline", "1000x100, 20 ms, sqlite")]["met"] == "yes"
    assert verdicts[("nothing changed: writes 0 rows", "1000x100, 0 ms, sqlite")]["met"] == "yes"
    assert verdicts[("nothing changed: writes 0 rows", "1000x100, 20 ms, sqlite")]["met"] == "no"
    assert verdicts[("nothing changed: <= 1.2x fetch-only", "1000x100, 0 ms, sqlite")]["met"] == "yes"
    assert verdicts[("nothing changed: <= 1.2x fetch-only", "1000x100, 20 ms, sqlite")]["met"] == "no"
    # the 1.5M shape ran without the baseline: said so, not left out
    assert verdicts[("full load, 0 ms: >= 2x the baseline", "15000x100, 0 ms, sqlite")][
        "met"] == "not measured"
    assert verdicts[("peak RSS of the 1.5M sync < 300 MB", "15000x100, 0 ms, sqlite")]["met"] == "no"
    flat = verdicts[("peak RSS flat in workers", "1000x100 vs 15000x100, 0 ms, sqlite")]
    assert flat["met"] == "no" and flat["measured"].startswith("1.24x")
    assert "| **no** |" in markdown(judge(rows))


def test_the_memory_targets_say_what_a_run_without_the_large_shape_lacks():
    from benchmarks.targets import judge

    rows = [_row("1000x100", 0, "project", "full", 4.0, peak_rss_mb=250.0)]
    memory = {v["target"]: v for v in judge(rows) if "RSS" in v["target"]}
    assert {v["met"] for v in memory.values()} == {"not measured"}


def test_update_readme_rewrites_only_the_marked_block(tmp_path):
    """`--update-readme` replaces the generated tables of docs/benchmarks.md and keeps the
    analysis around them; a file without exactly one block is left alone with a message."""
    from benchmarks.run import BENCH_DOC, parse_args, update_readme

    # the shipped target: docs/benchmarks.md holds exactly one block, the README none
    assert BENCH_DOC == PROJECT_ROOT / "docs" / "benchmarks.md"
    assert BENCH_DOC.read_text().count("<!-- bench:start -->") == 1
    assert "<!-- bench:start -->" not in (PROJECT_ROOT / "README.md").read_text()
    assert update_readme.__defaults__ == (BENCH_DOC,)
    assert parse_args(["--update-docs"]).update_readme and parse_args(["--update-readme"]).update_readme

    readme = tmp_path / "benchmarks.md"
    readme.write_text("intro\n<!-- bench:start -->\nold table\n<!-- bench:end -->\nanalysis\n")
    update_readme("new table", readme)
    assert readme.read_text() == "intro\n<!-- bench:start -->\nnew table\n<!-- bench:end -->\nanalysis\n"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="expected one"):
        update_readme("new table", readme)
    assert readme.read_text() == "no markers here\n"
