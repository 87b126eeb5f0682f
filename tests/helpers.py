"""Helpers the tests share: running the sync job and comparing the warehouse with the truth."""

from __future__ import annotations

from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from warehouse.engine import create_warehouse_engine
from warehouse.normalize import compact_json, parse_utc

CRAFTED_WS = "WS" + "a" * 32
CRAFTED_WK = "WK" + "b" * 32


def crafted_reservation(sid: Any, status: str = "pending", updated: str = "2026-11-20T10:00:05Z",
                        created: str = "2026-11-20T10:00:00Z", **extra: Any) -> dict[str, Any]:
    """One reservation as TaskRouter returns it, for feeding ``load_batch`` directly."""
    return {
        "account_sid": "AC" + "c" * 32, "workspace_sid": CRAFTED_WS, "worker_sid": CRAFTED_WK,
        "worker_name": "Zoë", "task_sid": "WT" + "d" * 32, "reservation_status": status,
        "date_created": created, "date_updated": updated,
        "url": "https://taskrouter.twilio.com/x", "links": {"worker": "https://w"},
        "sid": sid, **extra,
    }


def run_sync_job(instance: dg.DagsterInstance | None = None,
                 raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Build definitions from the current environment and run ``taskrouter_sync`` once."""
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    job = defs.resolve_job_def("taskrouter_sync")
    return job.execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=raise_on_error
    )


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for mat in result.asset_materializations_for_node(asset):
        if mat.partition is None:
            return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialization of {asset}")


def warehouse_frame(url: str, table: str = "reservations") -> pd.DataFrame:
    engine = create_warehouse_engine(url)
    try:
        from warehouse import schema

        tbl = schema.metadata.tables[table]
        with engine.connect() as conn:
            rows = conn.execute(sa.select(tbl)).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in tbl.columns])
    finally:
        engine.dispose()


def truth_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The emulator's records as the warehouse should hold them."""
    frame = pd.DataFrame.from_records(records)
    for name in ("date_created", "date_updated"):
        frame[name] = parse_utc(frame[name])
    frame["links"] = frame["links"].map(compact_json)
    return frame


def assert_matches_truth(url: str, truth: list[dict[str, Any]], allow_extra: bool = False) -> pd.DataFrame:
    """Every truth sid is in the warehouse with identical fields; returns the warehouse frame."""
    stored = warehouse_frame(url).set_index("sid")
    assert stored.index.is_unique
    expected = truth_frame(truth).set_index("sid")
    missing = set(expected.index) - set(stored.index)
    assert not missing, f"{len(missing)} sids missing, e.g. {sorted(missing)[:3]}"
    if not allow_extra:
        assert set(stored.index) == set(expected.index)
    got = stored.loc[expected.index]
    for column in ("account_sid", "workspace_sid", "worker_sid", "worker_name", "task_sid",
                   "reservation_status", "url", "links"):
        left = got[column].astype(object).where(got[column].notna(), None).tolist()
        right = expected[column].astype(object).where(expected[column].notna(), None).tolist()
        assert left == right, f"column {column} differs"
    for column in ("date_created", "date_updated"):
        left = pd.to_datetime(got[column], utc=True)
        right = pd.to_datetime(expected[column], utc=True)
        assert (left.values == right.values).all(), f"column {column} differs"
    return stored


def expected_daily_counts(url: str, zone: str = "UTC") -> pd.DataFrame:
    """``GROUP BY day, workspace, worker, status`` over ``reservations``, computed in pandas."""
    stored = warehouse_frame(url)
    if stored.empty:
        return pd.DataFrame(columns=["day", "workspace_sid", "worker_sid", "reservation_status",
                                     "reservation_count"])
    local = pd.to_datetime(stored["date_created"], utc=True).dt.tz_convert(ZoneInfo(zone))
    stored["day"] = local.dt.date
    grouped = (
        stored.groupby(["day", "workspace_sid", "worker_sid", "reservation_status"])
        .size()
        .reset_index(name="reservation_count")
    )
    return grouped.sort_values(["day", "workspace_sid", "worker_sid", "reservation_status"]).reset_index(drop=True)


def stored_daily_counts(url: str) -> pd.DataFrame:
    frame = warehouse_frame(url, "reservation_daily_status_counts")
    frame["day"] = frame["day"].map(lambda d: d if isinstance(d, date) else date.fromisoformat(str(d)))
    frame["reservation_count"] = frame["reservation_count"].astype(int)
    return frame.sort_values(["day", "workspace_sid", "worker_sid", "reservation_status"]).reset_index(drop=True)


def assert_summary_consistent(url: str, zone: str = "UTC") -> None:
    expected = expected_daily_counts(url, zone)
    stored = stored_daily_counts(url)
    assert len(stored) == len(expected)
    assert stored.values.tolist() == expected.values.tolist()
