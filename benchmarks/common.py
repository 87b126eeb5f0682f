"""What every benchmark needs: an emulator in its own process, throw-away databases, and
the machine line its figures are reported with."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipelines.cli import running_emulator

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
MYSQL_ADMIN_URL = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
ANCHOR = "2026-11-03T12:00:00Z"


@contextmanager
def emulator(workers: int, reservations: int, latency_ms: float = 0.0,
             *extra: str) -> Iterator[dict[str, Any]]:
    """One workspace of ``workers`` x ``reservations`` served by an emulator process (its own
    CPU, like a remote API), every page serialized up front; yields its start-up line."""
    args = ["--seed", "7", "--workspaces", "1", "--workers", str(workers),
            "--reservations", str(reservations), "--latency-ms", str(latency_ms),
            "--anchor", ANCHOR, "--prewarm", *extra]
    with running_emulator(args) as info:
        yield info


@contextmanager
def scratch_database(kind: str, prefix: str = "bench") -> Iterator[str]:
    """A fresh, empty database URL of ``kind`` (sqlite, postgresql, mariadb); dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'warehouse.db'}"
        return
    admin_url = PG_ADMIN_URL if kind == "postgresql" else MYSQL_ADMIN_URL
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{kind[:2]}_{uuid.uuid4().hex[:8]}"
    quote = '"' if kind == "postgresql" else "`"
    with admin.connect() as conn:
        extra = "" if kind == "postgresql" else " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        conn.exec_driver_sql(f"CREATE DATABASE {quote}{name}{quote}{extra}")
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote}{name}{quote}{force}")
        admin.dispose()


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
            f"{datetime.now(UTC):%Y-%m-%d}")


def generic_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("" if r.get(k) is None else str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def diagnostic_arguments(description: str) -> argparse.ArgumentParser:
    """The options every one-emulator diagnostic takes (``read_contention``, ``read_cost``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="40 workers x 20, one repetition")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--reservations", type=int)
    parser.add_argument("--repetitions", type=int)
    parser.add_argument("--output", help="path stem: also write STEM.json and STEM.md")
    return parser


def report(rows: list[dict[str, Any]], output: str | None) -> None:
    """Print a diagnostic's rows as a table with the machine line; keep them at ``output``."""
    text = f"Machine: {machine()}; medians.\n\n{generic_markdown(rows)}\n"
    print(text)
    if output:
        stem = Path(output)
        stem.with_suffix(".json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
        stem.with_suffix(".md").write_text(text)


def emulator_client(emu: dict[str, Any], **options: Any) -> Any:
    """The project's ``TaskRouterClient`` for an ``emulator()``, with the emulator's credentials."""
    from pipelines.taskrouter import ClientOptions, TaskRouterClient
    from pipelines.taskrouter.credentials import choose_credentials

    return TaskRouterClient(choose_credentials(emu["account_sid"], emu["auth_token"]),
                            emu["base_url"], ClientOptions(**options))


def read_every_worker(client: Any, listing: dict[str, list[str]]) -> int:
    """Every listed worker's reservations read (records discarded); the rows read. A worker
    left unread makes the run invalid, so it raises instead of reporting a faster run."""
    rows = 0
    for workspace, sids in listing.items():
        for read in client.read_reservations(workspace, sids):
            if not read.complete:
                raise RuntimeError(f"worker {read.worker_sid} was not read: the run is not valid")
            rows += len(read.records)
    return rows
