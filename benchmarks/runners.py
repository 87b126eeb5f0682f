"""The loaders the harness compares, each run in its own process so its peak RSS is its own.

``python -m benchmarks.runners NAME JSON_ARGS`` prints one JSON line: seconds (the work only,
not interpreter start-up), rows, requests, peak_rss_mb and the runner's own figures.

- ``project``: the project's real sync path, the functions the Dagster ``reservations`` asset
  calls (real HTTP client, real warehouse code, summary refresh included).
- ``baseline``: what a competent engineer writes in an hour: a sequential requests loop with
  PageSize=1000 following next_page_url, one executemany upsert per page
  (``ON CONFLICT(sid) DO UPDATE ... WHERE excluded.date_updated > reservations.date_updated``).
- ``fetch_only``: the ceiling for HTTP: same paging on a pooled session and thread pool, rows
  parsed and discarded.
- ``load_only``: the ceiling for the database: all rows already in memory as tuples, one
  executemany of the baseline's upsert.
- ``warehouse_only`` (diagnostic): the project's warehouse side alone, records already in
  memory: the same batches (``prepare_batch`` then ``write_batch``: screen, normalize, upsert,
  history, deletions; a first load defers its indexes as the sync does) into the project's
  schema, then the summary refresh. A full sync cannot beat the larger of this
  and fetch-only; compared with ``load_only`` it prices the schema and the bookkeeping.
- ``job`` (the ``project_job`` loader of ``run.py``): the whole job ``make sync`` runs, through
  the CLI (Dagster, the checks, start-up), wall time and the peak RSS of its largest process
  (``total_peak_rss_mb``: all of its processes together), from ``benchmarks.job_cost``.
- ``project`` with ``{"reader_process": false}`` or ``true`` (the ``project_reader_threads`` and
  ``project_reader_process`` loaders of ``run.py``): the same sync with its reader threads always
  in the sync's own process, or always in a child process; the product's default, "auto", reads a
  first load in a child process and other syncs in-process (``pipelines/taskrouter/reader_process.py``).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter

RESERVATION_COLUMNS = ["sid", "account_sid", "workspace_sid", "worker_sid", "worker_name", "task_sid",
                       "reservation_status", "date_created", "date_updated", "url", "links"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- project ----------------------------------------------------------------------------------
def project(args: dict[str, Any]) -> dict[str, Any]:
    from pipelines.loading import list_workers_by_workspace, load_reservations, resolve_workspaces
    from pipelines.taskrouter import ClientOptions, TaskRouterClient
    from pipelines.taskrouter.credentials import choose_credentials
    from warehouse import initial_load
    from warehouse.engine import create_warehouse_engine
    from warehouse.migrate import ensure_schema
    from warehouse.summary import refresh_changed_days

    # {"defer_indexes": false}: a first load keeps its indexes up to date row by row
    # (the A/B of warehouse.initial_load)
    initial_load.DEFER_ON_FIRST_LOAD = args.get("defer_indexes", True)
    engine = create_warehouse_engine(args["warehouse_url"])
    ensure_schema(engine)
    credentials = choose_credentials(args["account_sid"], args["auth_token"])
    started = time.perf_counter()
    options = ClientOptions(concurrency=args.get("concurrency", 8),
                            reader_process=args.get("reader_process", "auto"))
    with TaskRouterClient(credentials, args["base_url"], options) as client:
        listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        listed = time.perf_counter()
        figures = load_reservations(client, engine, listing,
                                    batch_rows=args.get("batch_rows", 10_000))
        refreshing = time.perf_counter()
        refresh = refresh_changed_days(engine, "UTC")
    ended = time.perf_counter()
    seconds = ended - started
    engine.dispose()
    return {
        "seconds": seconds,
        "rows": figures.rows_seen,
        "requests": client.stats.requests,
        "written": figures.inserted + figures.updated,
        "inserted": figures.inserted,
        "updated": figures.updated,
        "unchanged": figures.unchanged,
        "days_refreshed": len(refresh.days),
        "list_seconds": round(listed - started, 3),  # workspaces and workers
        "load_seconds": round(figures.seconds, 3),
        "prepare_seconds": round(figures.prepare_seconds, 3),
        "write_seconds": round(figures.write_seconds, 3),
        "index_build_seconds": round(figures.index_build_seconds, 3),
        "summary_seconds": round(ended - refreshing, 3),
        "reader_peak_rss_mb": round(client.stats.reader_peak_rss_mb, 1),
    }


# -- baseline ---------------------------------------------------------------------------------
# The baseline's own table: every column as text, the sid as key (VARCHAR on MySQL/MariaDB,
# which cannot key a TEXT column).
BASELINE_DDL = """
CREATE TABLE IF NOT EXISTS reservations (
    sid {key} PRIMARY KEY, account_sid TEXT, workspace_sid TEXT, worker_sid TEXT,
    worker_name TEXT, task_sid TEXT, reservation_status TEXT, date_created TEXT,
    date_updated TEXT, url TEXT, links TEXT
)"""


def _baseline_ddl(dialect: str) -> str:
    return BASELINE_DDL.format(key="VARCHAR(34)" if dialect == "mysql" else "TEXT")


def _baseline_upsert_sql(dialect: str) -> str:
    """The hand-written upsert: newer ``date_updated`` wins, per dialect's own syntax."""
    mark = "?" if dialect == "sqlite" else "%s"
    columns = ", ".join(RESERVATION_COLUMNS)
    values = ", ".join([mark] * len(RESERVATION_COLUMNS))
    if dialect == "mysql":
        # assignments run left to right and see the columns already assigned: date_updated,
        # which the condition reads, goes last
        newer = "VALUES(date_updated) > date_updated"
        kept = [c for c in RESERVATION_COLUMNS[1:] if c != "date_updated"] + ["date_updated"]
        updates = ", ".join(f"{c} = IF({newer}, VALUES({c}), {c})" for c in kept)
        return f"INSERT INTO reservations ({columns}) VALUES ({values}) ON DUPLICATE KEY UPDATE {updates}"
    updates = ", ".join(f"{c} = excluded.{c}" for c in RESERVATION_COLUMNS[1:])
    return (f"INSERT INTO reservations ({columns}) VALUES ({values}) "
            f"ON CONFLICT(sid) DO UPDATE SET {updates} "
            "WHERE excluded.date_updated > reservations.date_updated")


def _connect(url: str) -> tuple[Any, str]:
    """A plain DB-API connection (the baseline does not use SQLAlchemy) and its dialect."""
    if url.startswith("sqlite:///"):
        import sqlite3

        return sqlite3.connect(url[len("sqlite:///"):]), "sqlite"
    if url.startswith(("mysql", "mariadb")):
        import pymysql
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        return pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                               password=parsed.password or "", database=parsed.database,
                               charset="utf8mb4"), "mysql"
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn), "postgresql"


def _as_tuple(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["sid"], r["account_sid"], r["workspace_sid"], r["worker_sid"], r["worker_name"],
            r["task_sid"], r["reservation_status"], r["date_created"], r["date_updated"],
            r["url"], json.dumps(r["links"], sort_keys=True))


def baseline(args: dict[str, Any]) -> dict[str, Any]:
    """``args["wal"]``: SQLite in WAL with synchronous=NORMAL (the project's settings), so a
    comparison need not lean on the default fsync per commit."""
    conn, dialect = _connect(args["baseline_url"])
    cur = conn.cursor()
    if args.get("wal") and dialect == "sqlite":
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(_baseline_ddl(dialect))
    conn.commit()
    sql = _baseline_upsert_sql(dialect)
    session = requests.Session()
    session.auth = (args["account_sid"], args["auth_token"])
    base = args["base_url"]
    started = time.perf_counter()
    requests_made = rows = 0

    def pages(url: str, params: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
        nonlocal requests_made
        while url:
            response = session.get(url, params=params, timeout=30)
            requests_made += 1
            response.raise_for_status()
            body = response.json()
            yield body[body["meta"]["key"]]
            url, params = body["meta"]["next_page_url"], None

    for workspaces in pages(f"{base}/v1/Workspaces", {"PageSize": 1000}):
        for ws in workspaces:
            workers = [w for page in pages(f"{base}/v1/Workspaces/{ws['sid']}/Workers",
                                           {"PageSize": 1000}) for w in page]
            for worker in workers:
                url = f"{base}/v1/Workspaces/{ws['sid']}/Workers/{worker['sid']}/Reservations"
                for page in pages(url, {"PageSize": 1000}):
                    cur.executemany(sql, [_as_tuple(r) for r in page])
                    conn.commit()
                    rows += len(page)
    seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "rows": rows, "requests": requests_made}


# -- ceilings ---------------------------------------------------------------------------------
def pooled_fetch(args: dict[str, Any], keep: bool) -> tuple[list[dict[str, Any]], int, int]:
    concurrency = args.get("concurrency", 8)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=concurrency + 2))
    session.auth = (args["account_sid"], args["auth_token"])
    base = args["base_url"]

    def pages(url: str, params: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
        while url:
            body = orjson.loads(session.get(url, params=params, timeout=30).content)
            yield body[body["meta"]["key"]]
            url, params = body["meta"]["next_page_url"], None

    def one_worker(path: str) -> tuple[int, int, list[dict[str, Any]]]:
        count = requests_made = 0
        kept: list[dict[str, Any]] = []
        for page in pages(f"{base}{path}", {"PageSize": 1000}):
            requests_made += 1
            count += len(page)
            if keep:
                kept.extend(page)
        return count, requests_made, kept

    paths = []
    requests_made = 0
    for workspaces in pages(f"{base}/v1/Workspaces", {"PageSize": 1000}):
        requests_made += 1
        for ws in workspaces:
            for page in pages(f"{base}/v1/Workspaces/{ws['sid']}/Workers", {"PageSize": 1000}):
                requests_made += 1
                paths += [f"/v1/Workspaces/{ws['sid']}/Workers/{w['sid']}/Reservations" for w in page]
    rows = 0
    kept: list[dict[str, Any]] = []
    with ThreadPoolExecutor(concurrency) as pool:
        for count, made, records in pool.map(one_worker, paths):
            rows += count
            requests_made += made
            kept.extend(records)
    return kept, rows, requests_made


def fetch_only(args: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    _, rows, requests_made = pooled_fetch(args, keep=False)
    return {"seconds": time.perf_counter() - started, "rows": rows, "requests": requests_made}


def load_only(args: dict[str, Any]) -> dict[str, Any]:
    records, rows, _ = pooled_fetch(args, keep=True)  # not timed: the rows are "already in memory"
    tuples = [_as_tuple(r) for r in records]
    del records
    conn, dialect = _connect(args["baseline_url"])
    cur = conn.cursor()
    cur.execute(_baseline_ddl(dialect))
    conn.commit()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    cur.executemany(_baseline_upsert_sql(dialect), tuples)
    conn.commit()
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    conn.close()
    return {"seconds": seconds, "rows": rows, "requests": 0, "timed_cpu_seconds": round(cpu, 3)}


def worker_batches(records: list[dict[str, Any]],
                   batch_rows: int) -> list[tuple[list[dict[str, Any]], list[str]]]:
    """Records (worker after worker, as fetched) cut into the sync's batches: about
    ``batch_rows`` records each, a worker never split, with the workers each batch holds."""
    batches: list[tuple[list[dict[str, Any]], list[str]]] = []
    batch: list[dict[str, Any]] = []
    workers: list[str] = []
    for record in records:
        if record["worker_sid"] != (workers[-1] if workers else None):
            if len(batch) >= batch_rows:
                batches.append((batch, workers))
                batch, workers = [], []
            workers.append(record["worker_sid"])
        batch.append(record)
    if batch:
        batches.append((batch, workers))
    return batches


def load_batches_like_the_sync(engine: Any, batches: list[tuple[list[dict[str, Any]], list[str]]]) -> None:
    """The sync's warehouse side on batches already in memory, one after the other:
    ``prepare_batch`` then ``write_batch`` (a first load defers its indexes as the sync does),
    then the summary refresh."""
    from pipelines.loading import prepare_batch, write_batch
    from pipelines.memory import fewer_collections
    from warehouse.initial_load import indexes_deferred_if_first_load
    from warehouse.summary import refresh_changed_days

    with indexes_deferred_if_first_load(engine) as first_load, fewer_collections():
        for chunk, chunk_workers in batches:
            write_batch(engine, prepare_batch(engine, chunk, chunk_workers,
                                              screen=not first_load.deferred))
    refresh_changed_days(engine, "UTC")


def warehouse_only(args: dict[str, Any]) -> dict[str, Any]:
    from pipelines.loading import DEFAULT_BATCH_ROWS
    from warehouse.engine import create_warehouse_engine
    from warehouse.migrate import ensure_schema

    records, rows, _ = pooled_fetch(args, keep=True)  # not timed, as for load_only
    batches = worker_batches(records, args.get("batch_rows", DEFAULT_BATCH_ROWS))
    del records
    engine = create_warehouse_engine(args["warehouse_url"])
    ensure_schema(engine)
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    load_batches_like_the_sync(engine, batches)  # as load_reservations runs them, serially here
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    engine.dispose()
    return {"seconds": seconds, "rows": rows, "requests": 0, "timed_cpu_seconds": round(cpu, 3)}


def job(args: dict[str, Any]) -> dict[str, Any]:
    """The whole job ``make sync`` runs (``python -m pipelines.cli sync``: Dagster, checks and the
    reader process included), measured from outside: ``benchmarks.job_cost``."""
    from benchmarks.job_cost import sync_job

    return sync_job(args)


RUNNERS = {"project": project, "baseline": baseline, "fetch_only": fetch_only, "load_only": load_only,
           "warehouse_only": warehouse_only, "job": job}


def cpu_seconds() -> float:
    """This process and its finished children (the sync's reader process)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    name, raw = sys.argv[1], sys.argv[2]
    if name == "project":  # import before measuring: start-up is not the sync's cost
        import pipelines.loading  # noqa: F401
        import warehouse.migrate  # noqa: F401
        import warehouse.summary  # noqa: F401
    cpu_before = cpu_seconds()
    result = RUNNERS[name](json.loads(raw))
    # ceilings that prepare untimed (rows fetched into memory) report the CPU of the timed part
    result["cpu_seconds"] = result.pop("timed_cpu_seconds", round(cpu_seconds() - cpu_before, 3))
    if name != "job":  # the job runner measured its own process tree (this process idles)
        # with the reader process: the sum of both processes' peaks (an upper bound of the total)
        result["peak_rss_mb"] = round(peak_rss_mb() + result.get("reader_peak_rss_mb", 0.0), 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
