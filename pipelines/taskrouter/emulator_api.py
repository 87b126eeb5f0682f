"""The emulator's TaskRouter API: its URLs, list envelope, PageToken paging and Events.

A mixin of the request handler (``emulator._Handler``): ``route`` answers one API path with the
JSON body TaskRouter would send, or raises ``ApiError`` with TaskRouter's error.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

import numpy as np
import orjson

from pipelines.taskrouter.emulator_events import (
    EventsRequestError,
    event_query,
    render_event,
    statistics_body,
)
from pipelines.taskrouter.emulator_server import (
    ApiError,
    EmulatorServer,
    page_token,
    token_position,
)
from pipelines.taskrouter.emulator_world import STATUSES, World


class TaskRouterRoutes:
    """The API half of the handler; ``server`` is the ``EmulatorServer``."""

    server: EmulatorServer

    def _route(self, path: str, query: dict[str, str]) -> bytes:
        parts = [p for p in path.split("/") if p]
        world = self.server.world
        if len(parts) < 2 or parts[0] != "v1" or parts[1] != "Workspaces":
            raise ApiError(404, 20404, f"The requested resource {path} was not found")
        page_size = self._page_size(query)
        with world.lock:
            if len(parts) == 2:
                sids = sorted(world.workspaces)
                items = [world.workspace_json(s) for s in sids]
                return self._page(path, query, "workspaces", items, list(range(len(items))), page_size)
            ws_sid = parts[2]
            if ws_sid not in world.workspaces:
                raise ApiError(404, 20404, f"The requested resource {path} was not found")
            if len(parts) == 3:
                return orjson.dumps(world.workspace_json(ws_sid))
            if parts[3] == "Workers" and len(parts) == 4:
                workers = world.live_workers(ws_sid)
                items = [world.worker_json(w) for w in workers]
                keys = list(range(len(items)))
                body = self._page(path, query, "workers", items, keys, page_size)
                if body and b'"next_page_url":null' in body:
                    self.server.after_worker_listing(ws_sid)
                return body
            if parts[3] == "Events" and len(parts) == 4:
                return self._events_page(path, query, ws_sid, page_size)
            if parts[3] == "CumulativeStatistics" and len(parts) == 4:
                try:
                    return orjson.dumps(statistics_body(world, ws_sid, query))
                except EventsRequestError as error:
                    raise ApiError(400, 20001, str(error)) from None
            if parts[3] == "Workers" and len(parts) == 5:
                worker = world.find_worker(ws_sid, parts[4])
                if worker is None:
                    raise ApiError(404, 20404, f"The requested resource {path} was not found")
                return orjson.dumps(world.worker_json(worker))
            if parts[3] == "Workers" and len(parts) == 6 and parts[5] == "Reservations":
                worker = world.find_worker(ws_sid, parts[4])
                if worker is None:
                    raise ApiError(404, 20404, f"The requested resource {path} was not found")
                return self._reservation_page(path, query, worker, page_size)
        raise ApiError(404, 20404, f"The requested resource {path} was not found")

    @staticmethod
    def _page_size(query: dict[str, str]) -> int:
        try:
            size = int(query.get("PageSize", "50"))
        except ValueError:
            raise ApiError(400, 20001, "Invalid PageSize") from None
        if not 1 <= size <= 1000:
            raise ApiError(400, 20007, "PageSize must be between 1 and 1000")
        return size

    def _window(self, query: dict[str, str], keys: Iterable[int], page_size: int) -> tuple[int, int, int]:
        """(page number, start index, stop index) for the PageToken keyset over sorted ``keys``."""
        keys = list(keys)
        page = int(query.get("Page", "0") or 0)
        token = query.get("PageToken")
        if page > 0 and not token:
            raise ApiError(400, 20001, "Page > 0 needs the PageToken from next_page_url")
        start = 0
        if token:
            try:
                after = token_position(token)
            except ValueError:
                raise ApiError(400, 20001, "Invalid PageToken") from None
            start = bisect.bisect_right(keys, after)
        return page, start, min(len(keys), start + page_size)

    def _meta(self, path: str, query: dict[str, str], key: str, page: int, page_size: int,
              next_token: str | None) -> dict[str, Any]:
        base = f"{self.server.base_url}{path}"
        elsewhere = self.server.faults.next_page_base_url
        next_base = f"{elsewhere.rstrip('/')}{path}" if elsewhere else base
        keep = {k: v for k, v in query.items() if k not in ("Page", "PageToken", "PageSize")}
        first = f"{base}?{urlencode({**keep, 'PageSize': page_size, 'Page': 0})}"
        here = {**keep, "PageSize": page_size, "Page": page}
        if query.get("PageToken"):
            here["PageToken"] = query["PageToken"]
        nxt = None
        if next_token:
            nxt = f"{next_base}?{urlencode({**keep, 'PageSize': page_size, 'Page': page + 1, 'PageToken': next_token})}"
        return {
            "first_page_url": first,
            "key": key,
            "next_page_url": nxt,
            "page": page,
            "page_size": page_size,
            "previous_page_url": None,
            "url": f"{base}?{urlencode(here)}",
        }

    def _page(self, path: str, query: dict[str, str], key: str, items: list[Any],
              keys: list[int], page_size: int) -> bytes:
        page, start, stop = self._window(query, keys, page_size)
        next_token = page_token(keys[stop - 1]) if stop < len(keys) else None
        meta = self._meta(path, query, key, page, page_size, next_token)
        return orjson.dumps({key: items[start:stop], "meta": meta})

    def _reservation_page(self, path: str, query: dict[str, str], worker: Any, page_size: int) -> bytes:
        world = self.server.world
        keys = worker.serials.tolist()
        wanted = query.get("ReservationStatus")
        if wanted:
            if wanted not in STATUSES:
                raise ApiError(400, 20001, f"Invalid ReservationStatus {wanted}")
            code = STATUSES.index(wanted)
            picked = [i for i, s in enumerate(worker.status.tolist()) if s == code]
            fragments = world.reservation_fragments(worker)
            fragments = [fragments[i] for i in picked]
            keys = [keys[i] for i in picked]
            page, start, stop = self._window(query, keys, page_size)
            items = b",".join(fragments[start:stop])
        else:
            page, start, stop = self._window(query, keys, page_size)
            items = world.reservation_slice(worker, start, stop)
        next_token = page_token(keys[stop - 1]) if stop < len(keys) else None
        meta = orjson.dumps(self._meta(path, query, "reservations", page, page_size, next_token))
        return b'{"meta":' + meta + b',"reservations":[' + items + b"]}"

    def _events_page(self, path: str, query: dict[str, str], ws_sid: str, page_size: int) -> bytes:
        """``GET .../Events``: newest first; the token is the position of the last event sent."""
        world, faults = self.server.world, self.server.faults
        with self.server.stats.lock:
            self.server.stats.events_requests += 1
            failing = (faults.events_fail_after is not None
                       and self.server.stats.events_requests > faults.events_fail_after)
        if failing:
            raise ApiError(500, 20500, "Internal Server Error")
        if faults.events_refused:
            status = faults.events_refused
            raise ApiError(status, 20000 + status, "Forbidden: Events are not available to "
                            "these credentials" if status == 403 else
                            f"The requested resource {path} was not found")
        try:
            wanted = event_query(world, ws_sid, query, faults.events_retention == "refuse",
                                 faults.events_lag_seconds)
        except EventsRequestError as error:
            raise ApiError(400, 20001, str(error)) from None
        log = world.logs[ws_sid]
        positions = log.window(wanted, lambda tasks: _channels(world, tasks),
                               lambda tasks: tasks % 3)
        page = int(query.get("Page", "0") or 0)
        token = query.get("PageToken")
        if token:
            try:
                after = token_position(token)
            except ValueError:
                raise ApiError(400, 20001, "Invalid PageToken") from None
            positions = positions[positions < after]
        chosen = positions[:page_size]
        events = log.events
        items = [render_event(world, ws_sid, events[int(p)], log.first_sequence + int(p))
                 for p in chosen]
        next_token = page_token(int(chosen[-1])) if len(positions) > page_size else None
        meta = self._meta(path, query, "events", page, page_size, next_token)
        return orjson.dumps({"events": items, "meta": meta})


def _channels(world: World, tasks: Any) -> Any:
    return np.array([world.task_channel(int(t)) for t in tasks], dtype=object)
