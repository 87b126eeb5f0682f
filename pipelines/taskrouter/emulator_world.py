"""The emulator's simulated account: workspaces, workers, their reservations, events and a clock.

Everything derives from a seed, so a test, the demo and the benchmarks can rebuild the same
world, advance it, and compare the warehouse with ``truth()`` (what the lists show now) or
``ever()`` (every reservation TaskRouter ever showed, deleted ones with their last state).
Reservations are held per worker in small numpy arrays (a 1.5M-reservation world costs tens of
MB); how they move on is ``emulator_lifecycle``, the Events log ``emulator_events``, the JSON
``emulator_json``. The seed world's past is in the Events log too: every seed reservation's
creation and transitions, with the times its list record implies.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from pipelines.taskrouter.emulator_events import (
    KINDS,
    STATUS_EVENT,
    TASK_CANCELED,
    TASK_COMPLETED,
    TASK_CREATED,
    WORKER_ACTIVITY,
    EventLog,
    build_batch,
    event_millis,
)
from pipelines.taskrouter.emulator_json import (
    ACTIVITIES,
    STATUSES,
    WorldJson,
    _sid,
    anchor_from_iso,
    iso,
    minutes_between,
)
from pipelines.taskrouter.emulator_lifecycle import (
    ACCEPTED,
    CANCELED,
    COMPLETED,
    NEVER,
    PENDING,
    WRAPPING,
    Lifecycle,
    sample_plans,
)

__all__ = ["ACTIVITIES", "STATUSES", "World", "WorldConfig", "Worker", "anchor_from_iso", "iso",
           "minutes_between"]

# How finished reservations of the seed data are spread over the terminal statuses.
TERMINAL_MIX = np.array([0, 0, 0, 0.55, 0.12, 0.13, 0.12, 0.08])
OPEN_MIX = np.array([0.35, 0.45, 0.20, 0, 0, 0, 0, 0])
BACKLOG_CLEANUP_S = 48 * 3600  # finished seed tasks are deleted at random within this time

FIRST_NAMES = ["Zoë", "José", "Ångström", "Łucja", "李", "Ngọc", "Søren", "Renée", "Олег", "Amélie"]
LAST_NAMES = ["Müller", "García", "Øster", "Ñúñez", "王", "Nguyễn", "O'Brien", "Dvořák", "😀", "Smith"]
HOSTILE_NAMES = [
    "Robert'); DROP TABLE reservations;--",
    None,
    'Quote " Back\\slash \t tab',
    "Emoji 🎧📞 agent",
    "",
]
EVENT_SEQUENCE_SPAN = 1 << 40  # event sids: workspace index * span + position in its log


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
    arrivals_per_hour: float = 2.0  # new tasks per worker and hour once the clock moves
    pace: float = 1.0  # stretches every lifecycle duration (benchmarks slow the world down)
    task_ttl_seconds: int = 300  # TaskRouter deletes a task this long after it ends
    open_share: float | None = None  # seed reservations still open (default: by their age)
    events: bool = True  # keep the Events log (list-only benchmarks may save the memory)
    seed_events: bool = True  # the seed's past in the log too (benchmarks of a running feed skip it)


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
    index: int = 0  # position in World.worker_list
    plan_status: np.ndarray = field(default_factory=lambda: np.full((0, 3), -1, np.int8))
    plan_time: np.ndarray = field(default_factory=lambda: np.full((0, 3), NEVER, np.int64))
    delete_at: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    deleted: bool = False
    version: int = 0
    cache: tuple[int, tuple[bytes, list[int]]] | None = field(default=None, repr=False)

    ROWS = ("serials", "tasks", "status", "created", "updated", "plan_status", "plan_time",
            "delete_at")

    def add_reservations(self, serial: np.ndarray, task: np.ndarray, time: np.ndarray,
                         plan_status: np.ndarray, plan_time: np.ndarray) -> None:
        """New pending reservations, created at ``time``; the rows stay sorted by serial."""
        n = len(serial)
        new = {"serials": serial, "tasks": task, "status": np.zeros(n, np.int8),
               "created": time, "updated": time, "plan_status": plan_status,
               "plan_time": plan_time, "delete_at": np.full(n, NEVER, np.int64)}
        for name in self.ROWS:
            setattr(self, name, np.concatenate([getattr(self, name), new[name]]))
        if n and len(self.serials) > n and self.serials[-n - 1] > serial.min():
            order = np.argsort(self.serials, kind="stable")
            for name in self.ROWS:
                setattr(self, name, getattr(self, name)[order])
        self.version += 1

    def keep(self, rows: np.ndarray) -> None:
        for name in self.ROWS:
            setattr(self, name, getattr(self, name)[rows])
        self.version += 1


class World(WorldJson):
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
        self.anchor_clock = self.clock = int(anchor.timestamp())
        self.lock = threading.RLock()
        self._generate()

    def reset(self) -> None:
        """Back to the seed's initial state at the original anchor (benchmarks repeat from here)."""
        with self.lock:
            self.clock = self.anchor_clock
            self._generate()

    # -- generation ---------------------------------------------------------------------------
    def _generate(self) -> None:
        cfg = self.config
        self.steps = 0
        self.workspaces: dict[str, dict[str, Any]] = {}
        self.workers: dict[str, dict[str, Worker]] = {}
        self.worker_list: list[Worker] = []
        self.logs: dict[str, EventLog] = {}
        self.graveyard: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                   np.ndarray]] = []
        self.holders: dict[int, list[Worker]] = {}  # tasks created since the anchor -> offers
        self.task_started: dict[int, int] = {}
        rng = np.random.default_rng(cfg.seed)
        n_workers = cfg.workspaces * cfg.workers_per_workspace
        per = cfg.reservations_per_worker
        total = n_workers * per
        self.seed_tasks = total  # seed task t is the task of seed reservation serial t
        self._next_serial = self._next_task = total
        span = cfg.history_days * 86400
        created = self.clock - rng.integers(60, span, size=total)
        age = self.clock - created
        lag = np.minimum(rng.integers(0, 3600, size=total), age)
        updated = created + lag
        finished = age > 3 * 3600
        if cfg.open_share is not None:
            finished = np.random.default_rng([cfg.seed, 98]).random(total) >= cfg.open_share
        status = np.where(
            finished,
            rng.choice(8, size=total, p=TERMINAL_MIX),
            rng.choice(8, size=total, p=OPEN_MIX),
        ).astype(np.int8)
        # a reservation still pending has not changed since TaskRouter created it
        updated = np.where(status == PENDING, created, updated)
        names = rng.integers(0, len(FIRST_NAMES) * len(LAST_NAMES), size=n_workers)
        activities = rng.integers(0, len(ACTIVITIES), size=n_workers)
        # the seed's future (drawn after the seed itself, so the seed stays what it always was)
        future = np.random.default_rng([cfg.seed, 99])
        plan_status, plan_time = sample_plans(future, status, np.maximum(updated, self.clock),
                                              cfg.pace)
        backlog = np.isin(status, (COMPLETED, CANCELED))
        delete_at = np.where(backlog, self.clock + future.integers(0, BACKLOG_CLEANUP_S, total),
                             NEVER)
        self.seed_created = np.empty(total, dtype=np.int64)  # by serial (= seed task)
        w = 0
        for ws_index in range(cfg.workspaces):
            ws_sid = _sid("WS", 5, cfg.seed, ws_index)
            self.workspaces[ws_sid] = {
                "sid": ws_sid,
                "index": ws_index,
                "friendly_name": f"Contact center {ws_index + 1}",
                "date_created": self.clock - 400 * 86400,
            }
            log = self.logs[ws_sid] = EventLog()
            log.first_sequence = ws_index * EVENT_SEQUENCE_SPAN
            workers: dict[str, Worker] = {}
            for _ in range(cfg.workers_per_workspace):
                lo, hi = w * per, (w + 1) * per
                order = np.argsort(created[lo:hi], kind="stable")
                serials = np.arange(lo, hi, dtype=np.int64)
                first, last = names[w] // len(LAST_NAMES), names[w] % len(LAST_NAMES)
                name: str | None = f"{FIRST_NAMES[first]} {LAST_NAMES[last]} #{w}"
                if cfg.dirty and w % 7 == 3:
                    name = HOSTILE_NAMES[(w // 7) % len(HOSTILE_NAMES)]
                sid = _sid("WK", 6, cfg.seed, w)
                rows = lo + order
                self.seed_created[lo:hi] = created[rows]
                workers[sid] = Worker(
                    sid=sid, workspace_sid=ws_sid, friendly_name=name,
                    activity=int(activities[w]), date_created=self.clock - 200 * 86400 - w,
                    date_updated=self.clock - 3600 - w, serials=serials, tasks=serials.copy(),
                    status=status[rows].copy(), created=created[rows].copy(),
                    updated=updated[rows].copy(), index=w, plan_status=plan_status[rows].copy(),
                    plan_time=plan_time[rows].copy(), delete_at=delete_at[rows].copy(),
                )
                self.worker_list.append(workers[sid])
                w += 1
            self.workers[ws_sid] = workers
            if cfg.events and cfg.seed_events:
                log.append(self._seed_events(list(workers.values())))
        self.lifecycle = Lifecycle(self)

    def _seed_events(self, workers: list[Worker]) -> np.ndarray:
        """The events that made the seed reservations what their list records say."""
        serial = np.concatenate([w.serials for w in workers])
        status = np.concatenate([w.status for w in workers]).astype(np.int64)
        created = np.concatenate([w.created for w in workers])
        updated = np.concatenate([w.updated for w in workers])
        worker = np.concatenate([np.full(len(w.serials), w.index, np.int64) for w in workers])
        columns: list[list[np.ndarray]] = [[], [], [], [], []]

        def add(rows: np.ndarray, seconds: np.ndarray, kind: np.ndarray | int, step: int) -> None:
            kinds = (np.asarray(kind, np.int8)[rows] if np.ndim(kind)
                     else np.full(int(rows.sum()), kind, np.int8))
            for target, values in zip(columns, (
                    event_millis(seconds[rows], serial[rows], step), kinds,
                    worker[rows], serial[rows], serial[rows]), strict=True):
                target.append(np.asarray(values))

        everyone = np.ones(len(serial), dtype=bool)
        add(everyone, created, STATUS_EVENT[PENDING], 0)
        add(everyone, created, TASK_CREATED, 0)
        lived = updated - created
        accepted_at = np.where(status == ACCEPTED, updated,
                               np.where(status == WRAPPING, created + lived // 2,
                                        created + lived // 5))
        went_through = np.isin(status, (ACCEPTED, WRAPPING, COMPLETED))
        add(went_through, accepted_at, STATUS_EVENT[ACCEPTED], 1)
        add(went_through, accepted_at, WORKER_ACTIVITY, 1)
        wrapup_at = np.where(status == WRAPPING, updated, created + 4 * lived // 5)
        add(np.isin(status, (WRAPPING, COMPLETED)), wrapup_at, STATUS_EVENT[WRAPPING], 2)
        terminal = status >= COMPLETED
        add(terminal, updated, STATUS_EVENT[status], 3)
        add(status == COMPLETED, updated, TASK_COMPLETED, 3)
        add(status == CANCELED, updated, TASK_CANCELED, 3)
        return build_batch(*(np.concatenate(c) for c in columns))

    # -- the clock ----------------------------------------------------------------------------
    def advance(self, minutes: float) -> dict[str, int]:
        """Move time forward: open reservations progress, new ones arrive, finished tasks are
        deleted. Returns how many reservations changed, appeared and were deleted."""
        with self.lock:
            self.steps += 1
            return self.lifecycle.advance_to(self.clock + max(1, int(minutes * 60)))

    def churn(self, minutes: float, new_per_worker: int, changed_share: float) -> dict[str, int]:
        """Benchmarks: a known amount of change within the next ``minutes`` (Lifecycle.churn)."""
        with self.lock:
            self.steps += 1
            rng = np.random.default_rng([self.config.seed, 77, self.steps])
            return self.lifecycle.churn(max(1, int(minutes * 60)), new_per_worker, changed_share,
                                        rng)

    def append_events(self, batch: np.ndarray) -> None:
        if not self.config.events or not len(batch):
            return
        for ws_sid, log in self.logs.items():
            index = self.workspaces[ws_sid]["index"]
            lo = index * self.config.workers_per_workspace
            mine = (batch["worker"] >= lo) & (batch["worker"] < lo + self.config.workers_per_workspace)
            log.append(batch[mine])

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

    # -- tasks (the lifecycle's bookkeeping) ---------------------------------------------------
    def take_serials(self, n: int) -> np.ndarray:
        first, self._next_serial = self._next_serial, self._next_serial + n
        return np.arange(first, first + n, dtype=np.int64)

    def take_tasks(self, n: int) -> np.ndarray:
        first, self._next_task = self._next_task, self._next_task + n
        return np.arange(first, first + n, dtype=np.int64)

    def is_emulated_task(self, task: int) -> bool:
        return task >= self.seed_tasks

    def note_offer(self, task: int, worker: Worker, when: int) -> None:
        self.holders.setdefault(task, []).append(worker)
        self.task_started.setdefault(task, when)

    def offers_of(self, task: int) -> int:
        return len(self.holders.get(task, ()))

    def next_worker_for(self, task: int, current: int, offers: int) -> Worker | None:
        """Another live worker of the same workspace, chosen by the task (stable)."""
        ws = self.worker_list[current].workspace_sid
        candidates = [w for w in self.workers[ws].values() if not w.deleted and w.index != current]
        if not candidates:
            return None
        return candidates[(task * 2654435761 + offers) % len(candidates)]

    def end_task(self, task: int, delete_time: int) -> None:
        """The task ended: all its reservations are deleted at ``delete_time``."""
        holders = (self.holders.get(task, []) if self.is_emulated_task(task)
                   else [self.worker_list[task // self.config.reservations_per_worker]])
        for worker in holders:
            rows = worker.tasks == task
            worker.delete_at[rows] = np.minimum(worker.delete_at[rows], delete_time)

    def deletes_task_here(self, task: int, worker: Worker) -> bool:
        """True once per task: the first of its holders to delete it announces it."""
        if not self.is_emulated_task(task):
            return True
        return self.holders.pop(task, None) is not None

    def bury(self, worker: Worker, rows: np.ndarray) -> None:
        """Remove deleted reservations from ``worker``, remembering their last state (``ever``)."""
        self.graveyard.append((worker.index, worker.serials[rows], worker.tasks[rows],
                               worker.status[rows], worker.created[rows], worker.updated[rows]))
        worker.keep(~rows)

    # -- lookups ------------------------------------------------------------------------------
    def live_workers(self, workspace_sid: str) -> list[Worker]:
        return [w for w in self.workers.get(workspace_sid, {}).values() if not w.deleted]

    def find_worker(self, workspace_sid: str, worker_sid: str) -> Worker | None:
        worker = self.workers.get(workspace_sid, {}).get(worker_sid)
        return None if worker is None or worker.deleted else worker

    def worker_by_index(self, index: int) -> Worker:
        return self.worker_list[index]

    def task_created(self, task: int) -> int:
        if self.is_emulated_task(task):
            return self.task_started.get(task, self.clock)
        return int(self.seed_created[task])

    # -- what TaskRouter shows ---------------------------------------------------------------
    def truth(self) -> list[dict[str, Any]]:
        """Every live reservation as the API would return it (parsed JSON)."""
        with self.lock:
            out: list[dict[str, Any]] = []
            for ws_sid in self.workers:
                for worker in self.live_workers(ws_sid):
                    out.extend(orjson.loads(f) for f in self.reservation_fragments(worker))
            return out

    def ever(self) -> list[dict[str, Any]]:
        """Every reservation that ever existed, with its last state (live ones as ``truth``
        would list them, deleted ones as they were when deleted, deleted workers' included)."""
        with self.lock:
            out = [r for w in self.worker_list for r in self.reservation_records(w)]
            cfg = self.config
            for index, serials, tasks, status, created, updated in self.graveyard:
                worker = self.worker_list[index]
                ws_url = f"{self.resource_base_url}/v1/Workspaces/{worker.workspace_sid}"
                worker_url = f"{ws_url}/Workers/{worker.sid}"
                out.extend(self._record(worker, ws_url, worker_url, int(s), int(t), int(st),
                                        int(c), int(u), cfg)
                           for s, t, st, c, u in zip(serials.tolist(), tasks.tolist(),
                                                     status.tolist(), created.tolist(),
                                                     updated.tolist(), strict=True))
            return out

    def transitions(self) -> set[tuple[str, str, int]]:
        """Every reservation event in the Events log: (reservation sid, status, epoch seconds)."""
        with self.lock:
            out: set[tuple[str, str, int]] = set()
            for log in self.logs.values():
                events = log.events
                mine = events[events["kind"] < TASK_CREATED]
                for kind, serial, ms in zip(mine["kind"].tolist(), mine["serial"].tolist(),
                                            mine["ms"].tolist(), strict=True):
                    out.add((self.reservation_sid(serial), KINDS[kind][2], ms // 1000))
            return out

    def truth_workers(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.worker_json(w) for ws in self.workers for w in self.live_workers(ws)]

    def reservation_count(self) -> int:
        with self.lock:
            return sum(
                len(w.serials) for ws in self.workers for w in self.live_workers(ws)
            )

