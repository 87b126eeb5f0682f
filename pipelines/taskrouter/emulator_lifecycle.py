"""How the emulator's world moves on: reservations' lifecycles, new tasks, and deletions.

Every reservation carries its future when it is created: up to three planned transitions with
their times (pending -> accepted -> wrapping -> completed, or one terminal step). Advancing the
clock applies the transitions that are due, in time order, with one event each; tasks arrive
per one-hour epoch from a seeded generator; a rejected, timed-out or rescinded reservation is
offered again to another worker (three offers, then the task is canceled); and a task that ends
is deleted, with all its reservations, ``task_ttl_seconds`` later (TaskRouter: about five
minutes). So the world at a given clock is the same however the clock got there, and a
reservation can be born and gone between two syncs, as on TaskRouter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pipelines.taskrouter.emulator_events import (
    STATUS_EVENT,
    TASK_CANCELED,
    TASK_COMPLETED,
    TASK_CREATED,
    TASK_DELETED,
    WORKER_ACTIVITY,
    build_batch,
    event_millis,
)

if TYPE_CHECKING:
    from pipelines.taskrouter.emulator_world import World

PENDING, ACCEPTED, WRAPPING, COMPLETED, REJECTED, TIMEOUT, CANCELED, RESCINDED = range(8)
NEVER = np.iinfo(np.int64).max
EPOCH_SECONDS = 3600
MAX_OFFERS = 3
REOFFER_BASE = 1 << 40  # serials of re-offers: REOFFER_BASE + task * 4 + offer (stable)
# what a pending reservation becomes, and how likely
PENDING_OUTCOMES = np.array([ACCEPTED, REJECTED, TIMEOUT, CANCELED, RESCINDED], dtype=np.int8)
PENDING_ODDS = np.array([0.68, 0.12, 0.10, 0.06, 0.04])
RESERVATION_TIMEOUT_S = 120
RE_OFFERED = (REJECTED, TIMEOUT, RESCINDED)
ENDS_TASK = {COMPLETED: TASK_COMPLETED, CANCELED: TASK_CANCELED}
STEP = np.array([0, 1, 2, 3, 3, 3, 3, 3], dtype=np.int64)  # lifecycle step of each status


def sample_plans(rng: np.random.Generator, status: np.ndarray, start: np.ndarray,
                 pace: float) -> tuple[np.ndarray, np.ndarray]:
    """The planned transitions of reservations now in ``status`` since ``start``: (n, 3)
    statuses (-1: none) and (n, 3) times. ``pace`` stretches every duration."""
    n = len(status)
    plan_status = np.full((n, 3), -1, dtype=np.int8)
    plan_time = np.full((n, 3), NEVER, dtype=np.int64)
    if n == 0:
        return plan_status, plan_time

    def later(base: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        return base + np.maximum(1, np.round(seconds * pace)).astype(np.int64)

    outcome = PENDING_OUTCOMES[rng.choice(len(PENDING_OUTCOMES), size=n, p=PENDING_ODDS)]
    decide = np.select(
        [outcome == ACCEPTED, outcome == REJECTED, outcome == TIMEOUT],
        [np.minimum(1 + rng.exponential(15, n), 110), 1 + rng.exponential(10, n),
         np.full(n, RESERVATION_TIMEOUT_S, dtype=float)],
        rng.uniform(2, 60, n),
    )
    talk = np.minimum(10 + rng.exponential(240, n), 3600)
    wrap = np.minimum(5 + rng.exponential(60, n), 900)

    pending = status == PENDING
    t1 = later(start, decide)
    plan_status[pending, 0] = outcome[pending]
    plan_time[pending, 0] = t1[pending]
    goes_on = pending & (outcome == ACCEPTED)
    t2 = later(t1, talk)
    plan_status[goes_on, 1], plan_time[goes_on, 1] = WRAPPING, t2[goes_on]
    plan_status[goes_on, 2], plan_time[goes_on, 2] = COMPLETED, later(t2, wrap)[goes_on]

    accepted = status == ACCEPTED
    t2 = later(start, talk)
    plan_status[accepted, 0], plan_time[accepted, 0] = WRAPPING, t2[accepted]
    plan_status[accepted, 1], plan_time[accepted, 1] = COMPLETED, later(t2, wrap)[accepted]

    wrapping = status == WRAPPING
    plan_status[wrapping, 0], plan_time[wrapping, 0] = COMPLETED, later(start, wrap)[wrapping]
    return plan_status, plan_time


@dataclass
class Arrivals:
    """New reservations, per worker index: created at ``time``, pending, with their plans."""

    worker: np.ndarray
    time: np.ndarray
    serial: np.ndarray
    task: np.ndarray
    plan_status: np.ndarray
    plan_time: np.ndarray

    def between(self, after: int, until: int) -> Arrivals:
        keep = (self.time > after) & (self.time <= until)
        return Arrivals(self.worker[keep], self.time[keep], self.serial[keep], self.task[keep],
                        self.plan_status[keep], self.plan_time[keep])

    @staticmethod
    def join(parts: Iterable[Arrivals]) -> Arrivals:
        parts = list(parts)
        if not parts:
            return Arrivals(*(np.empty(0, dtype=np.int64) for _ in range(4)),
                            np.empty((0, 3), dtype=np.int8), np.empty((0, 3), dtype=np.int64))
        return Arrivals(*(np.concatenate([getattr(p, name) for p in parts])
                          for name in ("worker", "time", "serial", "task", "plan_status",
                                       "plan_time")))


@dataclass
class Events:
    """Event columns collected during one advance; ``batch`` sorts them."""

    ms: list[np.ndarray] = field(default_factory=list)
    kind: list[np.ndarray] = field(default_factory=list)
    worker: list[np.ndarray] = field(default_factory=list)
    serial: list[np.ndarray] = field(default_factory=list)
    task: list[np.ndarray] = field(default_factory=list)

    def add(self, ms: np.ndarray, kind: np.ndarray | int, worker: np.ndarray | int,
            serial: np.ndarray, task: np.ndarray) -> None:
        n = len(ms)
        if not n:
            return
        self.ms.append(np.asarray(ms, dtype=np.int64))
        self.kind.append(np.broadcast_to(np.asarray(kind, dtype=np.int8), (n,)))
        self.worker.append(np.broadcast_to(np.asarray(worker, dtype=np.int32), (n,)))
        self.serial.append(np.asarray(serial, dtype=np.int64))
        self.task.append(np.asarray(task, dtype=np.int64))

    def batch(self) -> np.ndarray:
        if not self.ms:
            return build_batch(*(np.empty(0, dtype=np.int64) for _ in range(5)))
        return build_batch(*(np.concatenate(getattr(self, name))
                             for name in ("ms", "kind", "worker", "serial", "task")))


class Lifecycle:
    """Moves one ``World`` forward; the world's lock is held by the caller."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.epochs: dict[int, Arrivals] = {}
        self.deferred = Arrivals.join([])  # re-offers due after the clock

    # -- arrivals --------------------------------------------------------------------------
    def epoch_arrivals(self, epoch: int) -> Arrivals:
        """Tasks arriving in epoch ``epoch`` (seconds ``(start, start + 3600]`` after the anchor),
        one per new task; generated once, in epoch order, so serials and tasks are stable."""
        if epoch in self.epochs:
            return self.epochs[epoch]
        world, cfg = self.world, self.world.config
        rng = np.random.default_rng([cfg.seed, 21, epoch])
        n_workers = len(world.worker_list)
        counts = rng.poisson(cfg.arrivals_per_hour, size=n_workers)
        total = int(counts.sum())
        worker = np.repeat(np.arange(n_workers, dtype=np.int64), counts)
        start = world.anchor_clock + epoch * EPOCH_SECONDS
        time = start + rng.integers(1, EPOCH_SECONDS + 1, size=total)
        serial = world.take_serials(total)
        task = world.take_tasks(total)
        plan_status, plan_time = sample_plans(rng, np.zeros(total, dtype=np.int8), time, cfg.pace)
        self.epochs[epoch] = Arrivals(worker, time, serial, task, plan_status, plan_time)
        return self.epochs[epoch]

    def scheduled_arrivals(self, after: int, until: int) -> Arrivals:
        anchor = self.world.anchor_clock
        first = max(0, (after - anchor) // EPOCH_SECONDS)
        last = max(0, (until - 1 - anchor) // EPOCH_SECONDS)
        parts = [self.epoch_arrivals(e).between(after, until) for e in range(first, last + 1)]
        for e in [e for e in self.epochs if e < first]:
            del self.epochs[e]  # the clock never goes back (reset() starts a new Lifecycle)
        parts.append(self.deferred.between(after, until))
        self.deferred = self.deferred.between(until, NEVER - 1)
        return Arrivals.join(parts)

    # -- the clock ---------------------------------------------------------------------------
    def advance_to(self, target: int, extra: Arrivals | None = None) -> dict[str, int]:
        """Apply everything that happens in ``(clock, target]``; returns the figures."""
        world = self.world
        start = world.clock
        events = Events()
        figures = {"changed": 0, "created": 0, "deleted": 0}
        arrivals = self.scheduled_arrivals(start, target)
        if extra is not None:
            arrivals = Arrivals.join([arrivals, extra])
        dirty = set(range(len(world.worker_list)))
        changed: set[int] = set()  # serials of reservations that existed before and moved
        while True:
            if len(arrivals.time):
                self.insert(arrivals, events)
                figures["created"] += len(arrivals.time)
            outcomes = self.apply_due(target, dirty, events, changed, start)
            arrivals, dirty = self.settle(outcomes, target, events)
            if not len(arrivals.time):
                break
        figures["changed"] = len(changed)
        figures["deleted"] = self.delete_due(target, events)
        world.clock = target
        world.append_events(events.batch())
        return figures

    def insert(self, arrivals: Arrivals, events: Events) -> None:
        """Add new pending reservations to their workers (kept sorted by serial)."""
        world = self.world
        order = np.argsort(arrivals.worker, kind="stable")
        workers = arrivals.worker[order]
        bounds = np.flatnonzero(np.diff(workers)) + 1
        for chunk in np.split(order, bounds):
            if not len(chunk):
                continue
            worker = world.worker_list[int(arrivals.worker[chunk[0]])]
            if worker.deleted:
                continue
            time, serial, task = arrivals.time[chunk], arrivals.serial[chunk], arrivals.task[chunk]
            worker.add_reservations(serial, task, time, arrivals.plan_status[chunk],
                                    arrivals.plan_time[chunk])
            for t, when in zip(task.tolist(), time.tolist(), strict=True):
                world.note_offer(t, worker, when)
            events.add(event_millis(time, serial, 0), STATUS_EVENT[PENDING], worker.index,
                       serial, task)
            first = np.array([world.offers_of(t) == 1 for t in task.tolist()], dtype=bool)
            events.add(event_millis(time[first], task[first], 0), TASK_CREATED,
                       worker.index, task[first], task[first])

    def apply_due(self, target: int, dirty: set[int], events: Events, changed: set[int],
                  start: int) -> list[tuple[int, int, int, int, int]]:
        """Apply the due transitions of the ``dirty`` workers; returns the terminal outcomes as
        (time, status, serial, task, worker index), which may end or re-offer their tasks."""
        outcomes: list[tuple[int, int, int, int, int]] = []
        for index in sorted(dirty):
            worker = self.world.worker_list[index]
            if worker.deleted or not len(worker.serials):
                continue
            touched = False
            while True:
                due = (worker.plan_status[:, 0] >= 0) & (worker.plan_time[:, 0] <= target)
                if not due.any():
                    break
                touched = True
                status = worker.plan_status[due, 0]
                time = worker.plan_time[due, 0]
                serial, task = worker.serials[due], worker.tasks[due]
                worker.status[due] = status
                worker.updated[due] = time
                worker.plan_status[due] = np.roll(worker.plan_status[due], -1, axis=1)
                worker.plan_time[due] = np.roll(worker.plan_time[due], -1, axis=1)
                worker.plan_status[due, 2], worker.plan_time[due, 2] = -1, NEVER
                events.add(event_millis(time, serial, STEP[status]), STATUS_EVENT[status],
                           index, serial, task)
                busy = status == ACCEPTED
                events.add(event_millis(time[busy], serial[busy], 1) + 1, WORKER_ACTIVITY, index,
                           serial[busy], task[busy])
                old = worker.created[due] <= start
                changed.update(serial[old].tolist())
                final = status >= COMPLETED
                outcomes.extend(zip(time[final].tolist(), status[final].tolist(),
                                    serial[final].tolist(), task[final].tolist(),
                                    [index] * int(final.sum()), strict=True))
            if touched:
                worker.version += 1
        outcomes.sort()
        return outcomes

    def settle(self, outcomes: list[tuple[int, int, int, int, int]], target: int,
               events: Events) -> tuple[Arrivals, set[int]]:
        """End or re-offer the tasks of terminal reservations. Returns the re-offers created by
        ``target`` (their own transitions may be due too) and the workers they went to."""
        world, cfg = self.world, self.world.config
        parts: list[Arrivals] = []
        for time, status, _serial, task, index in outcomes:
            ends = ENDS_TASK.get(status)
            emulated = world.is_emulated_task(task)
            if ends is None and emulated and status in RE_OFFERED:
                offers = world.offers_of(task)
                target_worker = world.next_worker_for(task, index, offers) if offers < MAX_OFFERS else None
                if target_worker is not None:
                    rng = np.random.default_rng([cfg.seed, 3, task, offers])
                    when = np.array([time + 1 + int(rng.integers(0, 10))], dtype=np.int64)
                    plan_status, plan_time = sample_plans(rng, np.zeros(1, dtype=np.int8), when,
                                                          cfg.pace)
                    parts.append(Arrivals(np.array([target_worker.index]), when,
                                          np.array([REOFFER_BASE + task * 4 + offers]),
                                          np.array([task]), plan_status, plan_time))
                    continue
                ends, time = TASK_CANCELED, time + 1  # no one left to offer it to
            if ends is None:
                continue  # a seed task that moved on elsewhere: nothing more happens here
            events.add(event_millis(np.array([time]), np.array([task]), 3) + 2, ends, index,
                       np.array([task]), np.array([task]))
            world.end_task(task, time + cfg.task_ttl_seconds)
        offered = Arrivals.join(parts)
        now = offered.between(-1, target)
        later = offered.between(target, NEVER - 1)
        if len(later.time):  # offered after the target: they arrive in a later advance
            self.deferred = Arrivals.join([self.deferred, later])
        return now, {int(w) for w in now.worker.tolist()}

    def delete_due(self, target: int, events: Events) -> int:
        """Delete the reservations whose task was deleted by ``target``; returns how many."""
        deleted = 0
        for worker in self.world.worker_list:
            if worker.deleted or not len(worker.serials):
                continue
            doomed = worker.delete_at <= target
            if not doomed.any():
                continue
            tasks, when = worker.tasks[doomed], worker.delete_at[doomed]
            firsts = np.unique(tasks, return_index=True)[1]
            own = np.array([self.world.deletes_task_here(int(t), worker) for t in tasks[firsts]],
                           dtype=bool)
            events.add(event_millis(when[firsts][own], tasks[firsts][own], 3) + 3, TASK_DELETED,
                       worker.index, tasks[firsts][own], tasks[firsts][own])
            self.world.bury(worker, doomed)
            deleted += int(doomed.sum())
        return deleted

    # -- benchmarks ----------------------------------------------------------------------------
    def churn(self, seconds: int, new_per_worker: int, changed_share: float,
              rng: np.random.Generator) -> dict[str, int]:
        """Within the next ``seconds``: ``new_per_worker`` new reservations per live worker and
        the next step of ``changed_share`` of all live reservations (open ones, chosen at
        random), then everything else due. For benchmarks with a known amount of change."""
        world = self.world
        start, target = world.clock, world.clock + seconds
        live = [w for w in world.worker_list if not w.deleted]
        total = sum(len(w.serials) for w in live)
        wanted = int(round(total * changed_share))
        open_rows = [(w, np.flatnonzero(w.plan_status[:, 0] >= 0)) for w in live]
        pool = sum(len(rows) for _, rows in open_rows)
        chosen = min(wanted, pool)
        if chosen:
            picks = np.sort(rng.choice(pool, size=chosen, replace=False))
            offset = 0
            for worker, rows in open_rows:
                mine = picks[(picks >= offset) & (picks < offset + len(rows))] - offset
                offset += len(rows)
                if not len(mine):
                    continue
                row = rows[mine]
                when = start + rng.integers(1, seconds + 1, size=len(row))
                shift = worker.plan_time[row, 0] - when
                valid = worker.plan_status[row] >= 0
                worker.plan_time[row] = np.where(valid, worker.plan_time[row] - shift[:, None],
                                                 NEVER)
        n = new_per_worker * len(live)
        workers = np.repeat(np.array([w.index for w in live], dtype=np.int64), new_per_worker)
        time = start + rng.integers(1, seconds + 1, size=n)
        plan_status, plan_time = sample_plans(rng, np.zeros(n, dtype=np.int8), time,
                                              world.config.pace)
        extra = Arrivals(workers, time, world.take_serials(n), world.take_tasks(n), plan_status,
                         plan_time)
        figures = self.advance_to(target, extra)
        figures["triggered"] = chosen
        return figures
