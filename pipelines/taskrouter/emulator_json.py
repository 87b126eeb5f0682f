"""JSON of the emulator's world as TaskRouter sends it: workspaces, workers and reservations.

A mixin of ``World``: each worker's reservations are serialized to JSON once per change and
reused by every request (the emulator shares the CPU with the sync it serves), and a page is a
single slice of one bytes object per worker, which keeps a 1.5M-reservation world at about its
JSON size in memory.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:
    from pipelines.taskrouter.emulator_world import Worker

STATUSES = (
    "pending",
    "accepted",
    "wrapping",
    "completed",
    "rejected",
    "timeout",
    "canceled",
    "rescinded",
)
ACTIVITIES = [("Available", True), ("Offline", False), ("Break", False), ("Busy", False)]
QUEUES = ("Support", "Sales", "Billing")
CHANNELS = ("voice", "chat", "sms")


def _sid(prefix: str, kind: int, seed: int, number: int) -> str:
    """A stable 34-character SID that looks random but is a bijection of (kind, seed, number)."""
    mixed = (number * 0x9E3779B97F4A7C15 + seed * 0xBF58476D1CE4E5B9 + kind) % (1 << 96)
    return f"{prefix}{kind:02x}{seed & 0xFFFFFF:06x}{mixed:024x}"


_INVERSE = pow(0x9E3779B97F4A7C15, -1, 1 << 96)


def sid_number(sid: str, kind: int, seed: int) -> int | None:
    """The number ``_sid`` made ``sid`` from, or None when it is not one of ours."""
    if len(sid) != 34 or sid[2:4] != f"{kind:02x}" or sid[4:10] != f"{seed & 0xFFFFFF:06x}":
        return None
    try:
        mixed = int(sid[10:], 16)
    except ValueError:
        return None
    return ((mixed - kind - seed * 0xBF58476D1CE4E5B9) * _INVERSE) % (1 << 96)


class WorldJson:
    """Rendering helpers; the attributes used here are ``World``'s."""

    config: Any
    account_sid: str
    resource_base_url: str
    workspaces: dict[str, dict[str, Any]]

    def iso(self, epoch_seconds: int) -> str:
        return iso(epoch_seconds)

    # -- sids, and what a task's number says about it ----------------------------------------
    def reservation_sid(self, serial: int) -> str:
        return _sid("WR", 8, self.config.seed, serial)

    def reservation_serial(self, sid: str) -> int | None:
        return sid_number(sid, 8, self.config.seed)

    def task_sid(self, task: int) -> str:
        return _sid("WT", 9, self.config.seed, task)

    def task_number(self, sid: str) -> int | None:
        return sid_number(sid, 9, self.config.seed)

    def task_queue(self, workspace_sid: str, task: int) -> tuple[str, str]:
        index = task % len(QUEUES)
        ws_index = self.workspaces[workspace_sid]["index"]
        return _sid("WQ", 10, self.config.seed, ws_index * 16 + index), QUEUES[index]

    def task_queue_index(self, sid: str) -> int | None:
        number = sid_number(sid, 10, self.config.seed)
        return None if number is None else number % 16

    def task_channel(self, task: int) -> str:
        return CHANNELS[(task // len(QUEUES)) % len(CHANNELS)]

    def workflow_sid(self, workspace_sid: str) -> str:
        return _sid("WW", 11, self.config.seed, self.workspaces[workspace_sid]["index"])

    def event_sid(self, sequence: int) -> str:
        return _sid("EV", 12, self.config.seed, sequence)

    def event_sequence(self, sid: str) -> int | None:
        return sid_number(sid, 12, self.config.seed)


    def workspace_json(self, ws_sid: str) -> dict[str, Any]:
        ws = self.workspaces[ws_sid]
        url = f"{self.resource_base_url}/v1/Workspaces/{ws_sid}"
        return {
            "account_sid": self.account_sid,
            "date_created": iso(ws["date_created"]),
            "date_updated": iso(ws["date_created"] + 86400),
            "default_activity_name": "Offline",
            "event_callback_url": None,
            "friendly_name": ws["friendly_name"],
            "links": {"workers": f"{url}/Workers", "tasks": f"{url}/Tasks"},
            "prioritize_queue_order": "FIFO",
            "sid": ws_sid,
            "timeout_activity_name": "Offline",
            "url": url,
        }

    def worker_json(self, worker: Worker) -> dict[str, Any]:
        ws_url = f"{self.resource_base_url}/v1/Workspaces/{worker.workspace_sid}"
        url = f"{ws_url}/Workers/{worker.sid}"
        activity_name, available = ACTIVITIES[worker.activity]
        attributes = {
            "skills": ["support", "español"] if worker.activity % 2 else ["sales"],
            "languages": ["en", "es"],
            "contact_uri": f"client:{worker.sid.lower()}",
        }
        return {
            "account_sid": self.account_sid,
            "activity_name": activity_name,
            "activity_sid": _sid("WA", 7, self.config.seed, worker.activity),
            "attributes": orjson.dumps(attributes).decode(),
            "available": available,
            "date_created": iso(worker.date_created),
            "date_status_changed": iso(worker.date_updated),
            "date_updated": iso(worker.date_updated),
            "friendly_name": worker.friendly_name,
            "links": {
                "reservations": f"{url}/Reservations",
                "channels": f"{url}/Channels",
                "workspace": ws_url,
            },
            "sid": worker.sid,
            "url": url,
            "workspace_sid": worker.workspace_sid,
        }

    def reservation_blob(self, worker: Worker) -> tuple[bytes, list[int]]:
        """The worker's reservations as one comma-joined JSON blob and each object's offset.

        Cached until the worker changes. One bytes object per worker (not one per
        reservation) keeps a 1.5M-reservation world at about its JSON size in memory, and a
        page is a single slice of it.
        """
        cached = worker.cache
        if cached is not None and cached[0] == worker.version:
            return cached[1]
        if self.config.dirty or self.config.broken:
            fragments = [orjson.dumps(r) for r in self.reservation_records(worker)]
        else:
            fragments = self._clean_fragments(worker)
        offsets, position = [], 0
        for fragment in fragments:
            offsets.append(position)
            position += len(fragment) + 1
        blob = (b",".join(fragments), offsets)
        worker.cache = (worker.version, blob)
        return blob

    def reservation_slice(self, worker: Worker, start: int, stop: int) -> bytes:
        """Objects ``start:stop`` of the worker's list, comma-joined, straight from the cache."""
        blob, offsets = self.reservation_blob(worker)
        if start >= stop:
            return b""
        end = offsets[stop] - 1 if stop < len(offsets) else len(blob)
        return blob[offsets[start]:end]

    def reservation_fragments(self, worker: Worker) -> list[bytes]:
        """The worker's reservations as separate JSON objects (filters and truth use these)."""
        _, offsets = self.reservation_blob(worker)
        return [self.reservation_slice(worker, i, i + 1) for i in range(len(offsets))]

    def _clean_fragments(self, worker: Worker) -> list[bytes]:
        """Same JSON as ``orjson.dumps(reservation_records(...))``, formatted from a template.

        Building a dict per reservation and serializing it costs ~15 us; the template ~3 us,
        which is what lets one emulator process serve 1.5M reservations beside the sync.
        """
        seed = self.config.seed
        ws = worker.workspace_sid
        ws_url = f"{self.resource_base_url}/v1/Workspaces/{ws}"
        worker_url = f"{ws_url}/Workers/{worker.sid}"
        name = orjson.dumps(worker.friendly_name).decode()
        head = f'{{"account_sid":"{self.account_sid}","date_created":"'
        links = f'","links":{{"task":"{ws_url}/Tasks/'
        tail = (f',"reservation_status":"%s","sid":"%s","task_sid":"%s","url":"{worker_url}'
                f'/Reservations/%s","worker_name":{name},"worker_sid":"{worker.sid}",'
                f'"workspace_sid":"{ws}"}}')
        middle = f'","worker":"{worker_url}","workspace":"{ws_url}"}}'
        created = np.datetime_as_string(worker.created.astype("datetime64[s]")).tolist()
        updated = np.datetime_as_string(worker.updated.astype("datetime64[s]")).tolist()
        tasks = worker.tasks.tolist()
        status = worker.status.tolist()
        out = []
        for i, serial in enumerate(worker.serials.tolist()):
            wr = _sid("WR", 8, seed, serial)
            wt = _sid("WT", 9, seed, tasks[i])
            text = (head + created[i] + 'Z","date_updated":"' + updated[i] + "Z" + links + wt
                    + middle + tail % (STATUSES[status[i]], wr, wt, wr))
            out.append(text.encode())
        return out

    def reservation_records(self, worker: Worker) -> list[dict[str, Any]]:
        cfg = self.config
        ws = worker.workspace_sid
        ws_url = f"{self.resource_base_url}/v1/Workspaces/{ws}"
        worker_url = f"{ws_url}/Workers/{worker.sid}"
        return [self._record(worker, ws_url, worker_url, int(serial), int(task), int(status),
                             int(created), int(updated), cfg)
                for serial, task, status, created, updated in zip(
                    worker.serials.tolist(), worker.tasks.tolist(), worker.status.tolist(),
                    worker.created.tolist(), worker.updated.tolist(), strict=True)]

    def _record(self, worker: Worker, ws_url: str, worker_url: str, serial: int, task: int,
                status: int, created: int, updated: int, cfg: Any) -> dict[str, Any]:
        wr = _sid("WR", 8, cfg.seed, serial)
        wt = _sid("WT", 9, cfg.seed, task)
        record: dict[str, Any] = {
            "account_sid": self.account_sid,
            "date_created": iso(created),
            "date_updated": iso(updated),
            "links": {
                "task": f"{ws_url}/Tasks/{wt}",
                "worker": worker_url,
                "workspace": ws_url,
            },
            "reservation_status": STATUSES[status],
            "sid": wr,
            "task_sid": wt,
            "url": f"{worker_url}/Reservations/{wr}",
            "worker_name": worker.friendly_name,
            "worker_sid": worker.sid,
            "workspace_sid": worker.workspace_sid,
        }
        if cfg.dirty:
            _dirty_up(record, serial)
        if cfg.broken:
            _break(record, serial)
        return record


def iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(int(epoch_seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _break(record: dict[str, Any], serial: int) -> None:
    """Make 3 records in 17 unloadable, the same ones on every request."""
    if serial % 17 == 5:
        record["date_updated"] = "not a date"
    elif serial % 17 == 9:
        del record["sid"]
    elif serial % 17 == 13:
        record["worker_sid"] = serial  # a number where TaskRouter sends a string


def _dirty_up(record: dict[str, Any], serial: int) -> None:
    """Make some records look like what real accounts send now and then."""
    if serial % 5 == 1:
        record["date_updated"] = record["date_updated"].replace("Z", "+00:00")
    if serial % 11 == 2:
        record["reservation_status"] = "escalated"  # a status TaskRouter may add one day
    if serial % 13 == 4:
        record["routing_hint"] = {"extra": "field", "n": serial}


def anchor_from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def minutes_between(a: datetime, b: datetime) -> float:
    return (b - a) / timedelta(minutes=1)
