"""`make bench` must keep working: run the harness on a tiny shape (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


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
    assert "| project | full |" in stem.with_suffix(".md").read_text()


def test_the_reader_threads_loader_loads_what_the_reader_process_loads(tmp_path):
    """The A/B of the reader process: the same rows, writes and requests either way; the
    default ("auto") reads the full load in a child, whose memory it counts, and the
    incremental syncs in-process (figures are not asserted)."""
    stem = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--loaders",
         "project,project_reader_threads,project_reader_process",
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
    servers are up, or skip, or fail under REQUIRE_SERVICES=1); figures are not asserted."""
    stem = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--databases", "postgresql,mariadb",
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
