"""Recompute summary days by hand: ``python -m warehouse.repair FIRST_DAY [LAST_DAY]``.

A backfill repairs the days that are partitions of ``reservation_daily_status_counts``; days
before ``SUMMARY_START_DATE`` have no partition, so the summary check's advice for those points
here. Same SQL and transaction as a backfill (``warehouse.summary.refresh_range``), in
``REPORTING_TIMEZONE``, on the warehouse ``WAREHOUSE_URL`` names. It never migrates the schema.
"""

from __future__ import annotations

import argparse
import os
from datetime import date

from warehouse.engine import WarehouseUrlError, create_warehouse_engine, describe
from warehouse.migrate import SchemaOutOfDate, ensure_schema
from warehouse.summary import UnknownTimezone, refresh_range


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=_day, help="first day to recompute (YYYY-MM-DD)")
    parser.add_argument("last", type=_day, nargs="?", help="last day (default: the first)")
    args = parser.parse_args(argv)
    first, last = args.first, args.last or args.first
    if last < first:
        parser.error(f"the last day {last} is before the first {first}")
    try:
        engine = create_warehouse_engine()
    except WarehouseUrlError as error:  # its message never shows the password
        parser.exit(2, f"error: {error}\n")
    try:
        ensure_schema(engine, auto_upgrade=False)
        refresh = refresh_range(engine, first, last, os.environ.get("REPORTING_TIMEZONE"))
    except (SchemaOutOfDate, UnknownTimezone) as error:
        parser.exit(2, f"error: {error}\n")
    finally:
        engine.dispose()
    print(f"{describe(engine)}: recomputed {len(refresh.days)} summary day(s) {first}..{last} "
          f"in {refresh.zone}: {refresh.rows} row(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
