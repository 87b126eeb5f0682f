"""``workers``: insert new workers, rewrite the ones whose fields changed, leave the rest.

TaskRouter's workers carry no version to compare, so a stored worker is rewritten whenever
any compared field differs; the write itself is a plain upsert under the workers writer lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warehouse.dialects import BulkWrite, for_connection
from warehouse.schema import WORKER_COLUMNS, workers
from warehouse.writers import WORKERS_WRITER, UpsertCounts, lock_writers

LOOKUP_CHUNK = 2048
WORKER_WRITE = BulkWrite(
    workers, tuple(WORKER_COLUMNS), keys=("sid",),
    update=tuple(c for c in WORKER_COLUMNS if c not in ("sid", "first_loaded_at")),
    booleans=("available",),
)
_WORKER_COMPARED = [c for c in WORKER_COLUMNS if c not in ("sid", "first_loaded_at", "last_changed_at")]


def _signature(values: Sequence[Any]) -> tuple[Any, ...]:
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and v != v) or v is pd.NaT:
            out.append(None)
        elif isinstance(v, datetime):
            out.append(pd.Timestamp(v).tz_convert("UTC").floor("us").isoformat())
        else:
            out.append(v)
    return tuple(out)


def upsert_workers(conn: Connection, rows: pd.DataFrame, now: datetime) -> UpsertCounts:
    """Insert new workers and rewrite the ones whose fields changed; the rest are untouched."""
    if rows.empty:
        return UpsertCounts()
    lock_writers(conn, WORKERS_WRITER)
    sids = rows["sid"].tolist()
    stored_parts = []
    for start in range(0, len(sids), LOOKUP_CHUNK):
        chunk = sids[start : start + LOOKUP_CHUNK]
        result = conn.execute(
            sa.select(*[workers.c[c] for c in ["sid", *_WORKER_COMPARED]]).where(
                workers.c.sid.in_(chunk)
            )
        ).all()
        stored_parts.extend(result)
    stored = {r[0]: r[1:] for r in stored_parts}

    incoming = rows[_WORKER_COMPARED].astype(object).itertuples(index=False, name=None)
    status = []
    for sid, values in zip(sids, incoming, strict=True):
        if sid not in stored:
            status.append("new")
        elif _signature(values) != _signature(stored[sid]):
            status.append("changed")
        else:
            status.append("same")
    flags = pd.Series(status, index=rows.index)
    counts = UpsertCounts(int((flags == "new").sum()), int((flags == "changed").sum()),
                          int((flags == "same").sum()))
    to_write = rows[flags != "same"]
    if not to_write.empty:
        stamp = pd.Timestamp(now).tz_convert("UTC")
        to_write = to_write.assign(first_loaded_at=stamp, last_changed_at=stamp)
        to_write = to_write.sort_values("sid", kind="stable")
        # a small table: the plain statement batches, never a bulk-load path
        for_connection(conn).execute_rows(conn, WORKER_WRITE, to_write)
    return counts
