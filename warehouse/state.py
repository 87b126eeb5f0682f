"""Small persisted facts the warehouse needs across syncs (summary watermark, reporting zone)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warehouse.schema import warehouse_state

SUMMARY_WATERMARK = "summary_refreshed_through"
REPORTING_TIMEZONE = "reporting_timezone"


def read_state(conn: Connection, key: str) -> str | None:
    return conn.execute(
        sa.select(warehouse_state.c.value).where(warehouse_state.c.key == key)
    ).scalar_one_or_none()


def write_state(conn: Connection, key: str, value: str | None) -> None:
    now = datetime.now(UTC)
    updated = conn.execute(
        warehouse_state.update()
        .where(warehouse_state.c.key == key)
        .values(value=value, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(warehouse_state.insert().values(key=key, value=value, updated_at=now))
