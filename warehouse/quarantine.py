"""``rejected_records``: API records a sync could not load, kept verbatim with the reason.

A record without a sid, with an unparseable date or with a wrong type must neither fail its
batch nor vanish: it goes here in the batch's transaction, the rest of the batch loads. Each
distinct record is stored once (``fingerprint`` is a SHA-256 of its canonical JSON), so reruns
only bump ``last_rejected_at`` and ``times_rejected``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warehouse.dialects import for_connection
from warehouse.normalize import Rejected
from warehouse.schema import rejected_records as table

REASON_LENGTH = 255
SID_LENGTH = 64


def canonical_json(record: Any) -> str:
    """Sorted keys, no whitespace: the same record always gives the same text."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)


def fingerprint(entity: str, raw: str) -> str:
    return hashlib.sha256(f"{entity}\n{raw}".encode()).hexdigest()


def _text_field(record: Any, name: str) -> str | None:
    value = record.get(name) if isinstance(record, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= SID_LENGTH else None


def quarantine(conn: Connection, rejected: Sequence[Rejected], now: datetime,
               entity: str = "reservation") -> int:
    """Store the rejects in ``conn``'s transaction; returns how many were never seen before."""
    if not rejected:
        return 0
    rows: dict[str, dict[str, Any]] = {}
    for item in rejected:
        raw = canonical_json(item.record)
        key = fingerprint(entity, raw)
        rows.setdefault(key, {
            "fingerprint": key, "entity": entity, "reason": item.reason[:REASON_LENGTH],
            "sid": _text_field(item.record, "sid"),
            "workspace_sid": _text_field(item.record, "workspace_sid"),
            "worker_sid": _text_field(item.record, "worker_sid"),
            "raw": raw, "first_rejected_at": now, "last_rejected_at": now, "times_rejected": 1,
        })
    keys = sorted(rows)
    known: set[str] = set()
    for start in range(0, len(keys), 1000):
        known.update(conn.execute(
            sa.select(table.c.fingerprint).where(table.c.fingerprint.in_(keys[start:start + 1000]))
        ).scalars())
    fresh = [rows[k] for k in keys if k not in known]
    if fresh:
        conn.execute(for_connection(conn).insert_if_absent(table, ["fingerprint"]), fresh)
    seen_again = sorted(known)
    for start in range(0, len(seen_again), 1000):
        conn.execute(
            table.update()
            .where(table.c.fingerprint.in_(seen_again[start:start + 1000]))
            .values(last_rejected_at=now, times_rejected=table.c.times_rejected + 1)
        )
    return len(fresh)
