"""API records to warehouse rows, vectorized with pandas.

A record that cannot be stored (no sid, wrong types, unparseable dates) is set aside with a
reason instead of failing its batch; unknown statuses and unknown extra fields are fine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter, methodcaller
from typing import Any

import orjson
import pandas as pd

from warehouse.lifecycle import STATUS_RANK, TERMINAL_RANK
from warehouse.schema import reservations as _reservations_table

RESERVATION_FIELDS = [
    "sid",
    "account_sid",
    "workspace_sid",
    "worker_sid",
    "worker_name",
    "task_sid",
    "reservation_status",
    "date_created",
    "date_updated",
    "url",
    "links",
]
REQUIRED = ["sid", "workspace_sid", "worker_sid", "reservation_status"]
TEXT_FIELDS = ["sid", "account_sid", "workspace_sid", "worker_sid", "worker_name", "task_sid",
               "reservation_status", "url"]
DATE_FIELDS = ["date_created", "date_updated"]

WORKER_FIELDS = [
    "sid",
    "account_sid",
    "workspace_sid",
    "friendly_name",
    "activity_sid",
    "activity_name",
    "available",
    "attributes",
    "date_created",
    "date_updated",
    "date_status_changed",
    "url",
]


@dataclass
class Rejected:
    record: Any
    reason: str


@dataclass
class Normalized:
    rows: pd.DataFrame
    rejected: list[Rejected] = field(default_factory=list)


def parse_utc(values: pd.Series) -> pd.Series:
    """ISO 8601 text (``Z`` or ``+00:00``, any offset) to UTC timestamps; junk becomes NaT."""
    return pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")


def compact_json(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


_NOT_AN_OBJECT = object()
_SORTED = orjson.OPT_SORT_KEYS


def _links_json(values: list[Any]) -> list[Any]:
    """Compact, key-sorted JSON text per ``links`` object in one pass (it is per-row by nature)."""
    dumps = orjson.dumps
    return [
        dumps(v, option=_SORTED).decode() if type(v) is dict
        else (None if v is None else _NOT_AN_OBJECT)
        for v in values
    ]


# Column lengths of the text fields: PostgreSQL and MySQL (strict mode) refuse longer values and
# SQLite would keep them, so they are handled here, the same way on every database: a display
# name is cut to its column (the reservation is kept), any other field rejects its record.
TEXT_LIMITS = {name: _reservations_table.c[name].type.length for name in TEXT_FIELDS
               if getattr(_reservations_table.c[name].type, "length", None)}
CUT_TO_FIT = {"worker_name"}
WORKER_NAME_LIMITS = {"friendly_name": 512, "activity_name": 255}
NUL, NUL_REPLACEMENT = "\x00", "\ufffd"


def storable_text(column: pd.Series) -> pd.Series:
    """U+0000 becomes U+FFFD: PostgreSQL text cannot hold NUL (the whole batch would fail there
    and load elsewhere), so it is replaced the same way on every database."""
    try:  # the common case, checked at C speed: no NUL anywhere in the column
        if NUL not in "".join(column.dropna().tolist()):
            return column
    except TypeError:  # values that are not strings: checked one by one
        pass
    has_nul = column.map(lambda v: isinstance(v, str) and NUL in v)
    if not has_nul.any():
        return column
    return column.where(~has_nul, column[has_nul].str.replace(NUL, NUL_REPLACEMENT, regex=False))


def too_long(column: pd.Series, limit: int) -> pd.Series:
    """True where a value is a string longer than ``limit`` characters (vectorized when it can)."""
    try:
        return column.str.len().gt(limit).fillna(False).astype(bool)
    except AttributeError:  # no strings at all in the column: nothing is too long
        return pd.Series(False, index=column.index)


def cut_to_fit(column: pd.Series, limit: int) -> pd.Series:
    """Strings longer than ``limit`` characters cut to it; everything else unchanged."""
    long = too_long(column, limit)
    if not long.any():
        return column
    return column.where(~long, column[long].str.slice(0, limit))


def _not_text(column: pd.Series) -> pd.Series:
    """True where a value is neither a string nor missing (vectorized fast path for clean data)."""
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if kind in ("string", "empty"):
        return pd.Series(False, index=column.index)
    return ~column.map(lambda v: v is None or isinstance(v, str))


_EMPTY_RESERVATIONS = pd.DataFrame({
    **{name: pd.Series(dtype=object) for name in RESERVATION_FIELDS},
    **{name: pd.Series(dtype="datetime64[ns, UTC]") for name in DATE_FIELDS},
    "status_rank": pd.Series(dtype="int16"),
})


def normalize_reservations(records: list[Any]) -> Normalized:
    """Records as the API returns them -> one row per valid record, plus the rejects."""
    rejected: list[Rejected] = []
    dicts = []
    for record in records:
        if isinstance(record, dict):
            dicts.append(record)
        else:
            rejected.append(Rejected(record, "record is not a JSON object"))
    if not dicts:  # e.g. every record of a batch was screened out as unchanged
        return Normalized(_EMPTY_RESERVATIONS.copy(), rejected)
    frame = _clean_frame(dicts)
    if frame is None:
        frame = _checked_frame(dicts, rejected)
    frame["status_rank"] = (
        frame["reservation_status"].map(STATUS_RANK).fillna(TERMINAL_RANK).astype("int16")
    )
    frame = keep_newest(frame)
    return Normalized(frame.reset_index(drop=True), rejected)


_ALL_FIELDS = itemgetter(*RESERVATION_FIELDS)
_TEXT_KINDS = {str, type(None)}
_LINKS_KINDS = {dict, type(None)}


def _clean_frame(dicts: list[dict[str, Any]]) -> pd.DataFrame | None:
    """The batch as a frame when nothing in it needs a reason, a repair or a cut; else None.

    Every check runs at C speed over whole columns (``map``, ``set``, ``max``, ``str.join``),
    so a clean page, which is nearly every page, never pays for the per-row reasons that
    ``_checked_frame`` computes; any doubt sends the batch there, with the same outcome.
    """
    try:  # every field present (TaskRouter sends them all): one C-level pass, then a transpose
        columns = dict(zip(RESERVATION_FIELDS,
                           map(list, zip(*map(_ALL_FIELDS, dicts), strict=True)), strict=True))
    except KeyError:
        columns = {name: list(map(methodcaller("get", name), dicts)) for name in RESERVATION_FIELDS}
    for name in TEXT_FIELDS:
        values = columns[name]
        if not set(map(type, values)) <= _TEXT_KINDS:
            return None
        present = list(filter(None, values))
        limit = TEXT_LIMITS.get(name)
        if NUL in "".join(present) or (limit is not None and present
                                       and max(map(len, present)) > limit):
            return None
    for name in REQUIRED:
        if None in columns[name] or "" in columns[name]:
            return None
    if not set(map(type, columns["links"])) <= _LINKS_KINDS:
        return None
    frame = pd.DataFrame(columns, dtype=object)
    for name in DATE_FIELDS:
        if set(map(type, columns[name])) != {str}:
            return None
        parsed = parse_utc(frame[name])
        if parsed.isna().any():
            return None
        frame[name] = parsed
    frame["links"] = pd.Series(_links_json(columns["links"]), index=frame.index, dtype=object)
    return frame


def _checked_frame(dicts: list[dict[str, Any]], rejected: list[Rejected]) -> pd.DataFrame:
    """The batch as a frame, row by row reasons: bad rows go to ``rejected``, long names are cut."""
    frame = pd.DataFrame.from_records(dicts, columns=RESERVATION_FIELDS).astype(object)
    reasons = pd.Series("", index=frame.index, dtype=object)

    for name in TEXT_FIELDS:
        bad = _not_text(frame[name])
        reasons = reasons.mask(bad & (reasons == ""), f"{name} is not a string")
        frame[name] = storable_text(frame[name])
        limit = TEXT_LIMITS.get(name)
        if limit is not None:
            long = too_long(frame[name], limit)
            if name in CUT_TO_FIT:
                frame[name] = cut_to_fit(frame[name], limit)
            else:
                reasons = reasons.mask(long & (reasons == ""),
                                       f"{name} is longer than {limit} characters")
    for name in REQUIRED:
        missing = frame[name].isna() | (frame[name] == "")
        reasons = reasons.mask(missing & (reasons == ""), f"missing {name}")
    for name in DATE_FIELDS:
        raw = frame[name]
        wrong = _not_text(raw)
        parsed = parse_utc(raw.where(~wrong, None))
        frame[name] = parsed
        reasons = reasons.mask((parsed.isna()) & (reasons == ""), f"{name} is not an ISO 8601 date")
    links = _links_json(frame["links"].tolist())
    bad_links = pd.Series([v is _NOT_AN_OBJECT for v in links], index=frame.index)
    frame["links"] = pd.Series(links, index=frame.index, dtype=object)
    reasons = reasons.mask(bad_links & (reasons == ""), "links is not an object")

    bad_rows = reasons != ""
    if bad_rows.any():
        for position in bad_rows[bad_rows].index:
            rejected.append(Rejected(dicts[position], str(reasons[position])))
        frame = frame[~bad_rows]
    return frame


def keep_newest(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per sid: the newest ``date_updated``, ties broken by lifecycle rank."""
    if frame.empty or not frame["sid"].duplicated().any():
        return frame
    ordered = frame.sort_values(["sid", "date_updated", "status_rank"], kind="stable")
    return ordered.drop_duplicates("sid", keep="last")


# A worker's identifiers: the first two are required (the table's key and NOT NULL column);
# any of them that is not text, or longer than its column, would fail the whole workspace's
# upsert on PostgreSQL and MySQL, so the one worker is set aside instead.
WORKER_SIDS = {"sid": True, "workspace_sid": True, "account_sid": False, "activity_sid": False}
_WORKER_SID_LENGTH = _reservations_table.c["sid"].type.length


def _worker_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "worker is not a JSON object"
    for name, required in WORKER_SIDS.items():
        value = record.get(name)
        if value is None or value == "":
            if required:
                return f"worker without a {name}"
        elif not isinstance(value, str):
            return f"worker {name} is not a string"
        elif _WORKER_SID_LENGTH and len(value) > _WORKER_SID_LENGTH:
            return f"worker {name} is longer than {_WORKER_SID_LENGTH} characters"
    return None


def normalize_workers(records: list[dict[str, Any]]) -> Normalized:
    rejected: list[Rejected] = []
    good = []
    for r in records:
        problem = _worker_problem(r)
        if problem is None:
            good.append(r)
        else:
            rejected.append(Rejected(r, problem))
    frame = pd.DataFrame.from_records(good, columns=WORKER_FIELDS) if good else pd.DataFrame(
        columns=WORKER_FIELDS
    )
    frame = frame.astype(object)
    for name in ("date_created", "date_updated", "date_status_changed"):
        frame[name] = parse_utc(frame[name].where(~_not_text(frame[name]), None))
    frame["attributes"] = frame["attributes"].map(
        lambda v: v if v is None or isinstance(v, str) else compact_json(v)
    )
    for name in ("friendly_name", "activity_name", "attributes", "url"):
        frame[name] = storable_text(frame[name])
    for name, limit in WORKER_NAME_LIMITS.items():
        frame[name] = cut_to_fit(frame[name], limit)
    frame["available"] = frame["available"].map(lambda v: None if v is None else bool(v))
    frame = frame.drop_duplicates("sid", keep="last")
    return Normalized(frame.reset_index(drop=True), rejected)
