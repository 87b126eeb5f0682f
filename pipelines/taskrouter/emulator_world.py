"""The emulator's simulated account: workspaces, workers and their reservations, and a clock.

Everything derives from a seed, so a test, the demo and the benchmarks can rebuild the same
world, advance it, and compare the warehouse with ``truth()``. Reservations are held per worker
in small numpy arrays (a 1.5M-reservation world costs tens of MB), and each worker's records are
serialized to JSON once per change and reused by every request (the emulator shares the CPU
with the sync it serves).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

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
PENDING, ACCEPTED, WRAPPING, COMPLETED, REJECTED, TIMEOUT, CANCELED, RESCINDED = range(8)
DELETABLE = (COMPLETED, CANCELED)  # TaskRouter deletes completed and canceled tasks
# How finished reservations of the seed data are spread over the terminal statuses.
TERMINAL_MIX = np.array([0, 0, 0, 0.55, 0.12, 0.13, 0.12, 0.08])
OPEN_MIX = np.array([0.35, 0.45, 0.20, 0, 0, 0, 0, 0])

FIRST_NAMES = ["Zoë", "José", "Ångström", "Łucja", "李", "Ngọc", "Søren", "Renée", "Олег", "Amélie"]
LAST_NAMES = ["Müller", "García", "Øster", "Ñúñez", "王", "Nguyễn", "O'Brien", "Dvořák", "😀", "Smith"]
HOSTILE_NAMES = [
    "Robert'); DROP TABLE reservations;--",
    None,
    'Quote " Back\\slash \t tab',
    "Emoji 🎧📞 agent",
    "",
]
ACTIVITIES = [("Available", True), ("Offline", False), ("Break", False), ("Busy", False)]


def _sid(prefix: str, kind: int, seed: int, number: int) -> str:
    """A stable 34-character SID that looks random but is a bijection of (kind, seed, number)."""
    mixed = (number * 0x9E3779B97F4A7C15 + seed * 0xBF58476D1CE4E5B9 + kind) % (1 << 96)
    return f"{prefix}{kind:02x}{seed & 0xFFFFFF:06x}{mixed:024x}"


def iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(int(epoch_seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WorldConfig:
    seed: int = 7
    workspaces: int = 2
    workers_per_workspace: int = 20
    reservations_per_worker: int = 100
    history_days: int = 30
    anchor: datetime | None = None  # the clock's start; default: now, floored to the minute
    dirty: bool = False  # hostile names, +00:00 dates, unknown statuses, extra fields
    broken: bool = False  # a few records unloadable (no sid, bad date, wrong type): quarantine


@dataclass
class Worker:
    sid: str
    workspace_sid: str
    friendly_name: str | None
    activity: int
    date_created: int
    date_updated: int
    # reservations, sorted by serial (the keyset the page tokens use)
    serials: np.ndarray
    tasks: np.ndarray
    status: np.ndarray
    created: np.ndarray
    updated: np.ndarray
    deleted: bool = False
    version: int = 0
    cache: tuple[int, tuple[bytes, list[int]]] | None = field(default=None, repr=False)


class World:
    """The whole simulated account; thread-safe for one writer and many readers."""

    def __init__(self, config: WorldConfig, base_url: str = "http://127.0.0.1") -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")  # where this emulator listens (paging URLs)
        # Resource URLs inside records are TaskRouter's canonical ones, as the real API returns,
        # so they do not change with the emulator's port between runs.
        self.resource_base_url = "https://taskrouter.twilio.com"
        seed = config.seed
        self.account_sid = _sid("AC", 1, seed, 0)
        self.auth_token = f"emulator-token-{seed:04d}-{_sid('', 2, seed, 0)[:16]}"
        self.api_key_sid = _sid("SK", 3, seed, 0)
        self.api_key_secret = f"emulator-key-secret-{_sid('', 4, seed, 0)[:20]}"
        anchor = config.anchor or datetime.now(UTC).replace(second=0, microsecond=0)
        self.clock = int(anchor.timestamp())
        self.steps = 0
        self._advanced: list[int] = []
        self.lock = threading.RLock()
        self._next_serial = 0
        self.workspaces: dict[str, dict[str, Any]] = {}
        self.workers: dict[str, dict[str, Worker]] = {}
        self._generate()

    def reset(self) -> None:
        """Back to the seed's initial state at the original anchor (benchmarks repeat from here)."""
        with self.lock:
            self.clock -= sum(self._advanced)
            self._advanced.clear()
            self.steps = 0
            self._next_serial = 0
            self.workspaces.clear()
            self.workers.clear()
            self._generate()

    # -- generation ---------------------------------------------------------------------------
    def _generate(self) -> None:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        n_workers = cfg.workspaces * cfg.workers_per_workspace
        per = cfg.reservations_per_worker
        total = n_workers * per
        span = cfg.history_days * 86400
        created = self.clock - rng.integers(60, span, size=total)
        age = self.clock - created
        lag = np.minimum(rng.integers(0, 3600, size=total), age)
        updated = created + lag
        finished = age > 3 * 3600
        status = np.where(
            finished,
            rng.choice(8, size=total, p=TERMINAL_MIX),
            rng.choice(8, size=total, p=OPEN_MIX),
        ).astype(np.int8)
        names = rng.integers(0, len(FIRST_NAMES) * len(LAST_NAMES), size=n_workers)
        activities = rng.integers(0, len(ACTIVITIES), size=n_workers)
        w = 0
        for ws_index in range(cfg.workspaces):
            ws_sid = _sid("WS", 5, cfg.seed, ws_index)
            self.workspaces[ws_sid] = {
                "sid": ws_sid,
                "friendly_name": f"Contact center {ws_index + 1}",
                "date_created": self.clock - 400 * 86400,
            }
            workers: dict[str, Worker] = {}
            for _ in range(cfg.workers_per_workspace):
                lo, hi = w * per, (w + 1) * per
                order = np.argsort(created[lo:hi], kind="stable")
                serials = np.arange(self._next_serial, self._next_serial + per, dtype=np.int64)
                self._next_serial += per
                first, last = names[w] // len(LAST_NAMES), names[w] % len(LAST_NAMES)
                name: str | None = f"{FIRST_NAMES[first]} {LAST_NAMES[last]} #{w}"
                if cfg.dirty and w % 7 == 3:
                    name = HOSTILE_NAMES[(w // 7) % len(HOSTILE_NAMES)]
                sid = _sid("WK", 6, cfg.seed, w)
                workers[sid] = Worker(
                    sid=sid,
                    workspace_sid=ws_sid,
                    friendly_name=name,
                    activity=int(activities[w]),
                    date_created=self.clock - 200 * 86400 - w,
                    date_updated=self.clock - 3600 - w,
                    serials=serials,
                    tasks=serials.copy(),
                    status=status[lo:hi][order].copy(),
                    created=created[lo:hi][order].copy(),
                    updated=updated[lo:hi][order].copy(),
                )
                w += 1
            self.workers[ws_sid] = workers

    # -- the clock ----------------------------------------------------------------------------
    def advance(self, minutes: float) -> dict[str, int]:
        """Move time forward: open reservations progress, new ones arrive, finished ones vanish.

        Returns how many reservations changed, appeared and were deleted.
        """
        with self.lock:
            self.steps += 1
            seconds = max(1, int(minutes * 60))
            start, self.clock = self.clock, self.clock + seconds
            self._advanced.append(seconds)
            rng = np.random.default_rng([self.config.seed, self.steps])
            p_progress = min(1.0, minutes / 20.0)
            p_delete = min(0.5, minutes / 600.0)
            new_rate = minutes / 30.0
            figures = {"changed": 0, "created": 0, "deleted": 0}
            for workers in self.workers.values():
                for worker in workers.values():
                    if worker.deleted:
                        continue
                    if self._advance_worker(worker, rng, start, p_progress, p_delete, new_rate, figures):
                        worker.version += 1
            return figures

    def _advance_worker(
        self,
        worker: Worker,
        rng: np.random.Generator,
        start: int,
        p_progress: float,
        p_delete: float,
        new_rate: float,
        figures: dict[str, int],
    ) -> bool:
        n = len(worker.serials)
        status = worker.status
        touched = False
        moving = (status <= WRAPPING) & (rng.random(n) < p_progress)
        if moving.any():
            roll = rng.random(n)
            nxt = np.where(
                status == PENDING,
                np.where(roll < 0.7, ACCEPTED, np.where(roll < 0.85, REJECTED, TIMEOUT)),
                np.where(status == ACCEPTED, np.where(roll < 0.9, WRAPPING, RESCINDED), COMPLETED),
            ).astype(np.int8)
            stamp = start + rng.integers(1, self.clock - start + 1, size=n)
            worker.status = np.where(moving, nxt, status).astype(np.int8)
            worker.updated = np.where(moving, np.maximum(stamp, worker.updated + 1), worker.updated)
            figures["changed"] += int(moving.sum())
            touched = True
        deletable = np.isin(worker.status, DELETABLE) & ~moving
        doomed = deletable & (rng.random(n) < p_delete)
        if doomed.any():
            keep = ~doomed
            for name in ("serials", "tasks", "status", "created", "updated"):
                setattr(worker, name, getattr(worker, name)[keep])
            figures["deleted"] += int(doomed.sum())
            touched = True
        arrivals = int(rng.poisson(new_rate))
        if arrivals:
            serials = np.arange(self._next_serial, self._next_serial + arrivals, dtype=np.int64)
            self._next_serial += arrivals
            created = np.sort(start + rng.integers(1, self.clock - start + 1, size=arrivals))
            status = rng.choice([PENDING, ACCEPTED], size=arrivals).astype(np.int8)
            worker.serials = np.concatenate([worker.serials, serials])
            worker.tasks = np.concatenate([worker.tasks, serials])
            worker.status = np.concatenate([worker.status, status])
            worker.created = np.concatenate([worker.created, created])
            worker.updated = np.concatenate([worker.updated, created])
            figures["created"] += arrivals
            touched = True
        return touched

    def delete_workers(self, count: int, workspace_sid: str | None = None) -> list[str]:
        """Delete ``count`` workers (and so their reservations), as an admin would upstream."""
        with self.lock:
            gone: list[str] = []
            for ws_sid, workers in self.workers.items():
                if workspace_sid and ws_sid != workspace_sid:
                    continue
                for worker in workers.values():
                    if len(gone) >= count:
                        return gone
                    if not worker.deleted:
                        worker.deleted = True
                        gone.append(worker.sid)
            return gone

    # -- lookups ------------------------------------------------------------------------------
    def live_workers(self, workspace_sid: str) -> list[Worker]:
        return [w for w in self.workers.get(workspace_sid, {}).values() if not w.deleted]

    def find_worker(self, workspace_sid: str, worker_sid: str) -> Worker | None:
        worker = self.workers.get(workspace_sid, {}).get(worker_sid)
        return None if worker is None or worker.deleted else worker

    # -- JSON ---------------------------------------------------------------------------------
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
        created = np.datetime_as_string(worker.created.astype("datetime64[s]")).tolist()
        updated = np.datetime_as_string(worker.updated.astype("datetime64[s]")).tolist()
        records = []
        for i, serial in enumerate(worker.serials.tolist()):
            wr = _sid("WR", 8, cfg.seed, serial)
            wt = _sid("WT", 9, cfg.seed, int(worker.tasks[i]))
            status = STATUSES[worker.status[i]]
            date_created, date_updated = created[i] + "Z", updated[i] + "Z"
            record: dict[str, Any] = {
                "account_sid": self.account_sid,
                "date_created": date_created,
                "date_updated": date_updated,
                "links": {
                    "task": f"{ws_url}/Tasks/{wt}",
                    "worker": worker_url,
                    "workspace": ws_url,
                },
                "reservation_status": status,
                "sid": wr,
                "task_sid": wt,
                "url": f"{worker_url}/Reservations/{wr}",
                "worker_name": worker.friendly_name,
                "worker_sid": worker.sid,
                "workspace_sid": ws,
            }
            if cfg.dirty:
                _dirty_up(record, serial)
            if cfg.broken:
                _break(record, serial)
            records.append(record)
        return records

    def truth(self) -> list[dict[str, Any]]:
        """Every live reservation as the API would return it (parsed JSON)."""
        with self.lock:
            out: list[dict[str, Any]] = []
            for ws_sid in self.workers:
                for worker in self.live_workers(ws_sid):
                    out.extend(orjson.loads(f) for f in self.reservation_fragments(worker))
            return out

    def truth_workers(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.worker_json(w) for ws in self.workers for w in self.live_workers(ws)]

    def reservation_count(self) -> int:
        with self.lock:
            return sum(
                len(w.serials) for ws in self.workers for w in self.live_workers(ws)
            )


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
