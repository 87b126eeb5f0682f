"""A local TaskRouter: the same URLs, list envelope, PageToken paging, Basic auth and error bodies.

It serves the demo, the tests and the benchmarks over real HTTP on 127.0.0.1. Each response
goes out in one ``sendall`` with ``TCP_NODELAY`` set, so keep-alive clients do not meet the
~40 ms Nagle/delayed-ACK stall. Optional faults (``Faults``: latency, a rate limit answering 429
with ``Retry-After``, a fault rate over 429/500/503/reset/truncated/badjson/slow, workers
vanishing after listing, workers that always fail, 403 for everything, a ``next_page_url`` on
another origin) let tests prove the client survives the real API; ``GET /_emulator/stats``
reports what the server saw (requests, faults, 429s, the busiest one-second window, the most
requests in flight at once).

Run it alone: ``python -m pipelines.taskrouter.emulator --workers 50``; it prints one JSON line
with its base URL and credentials.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from pipelines.taskrouter.emulator_events import (
    EventsRequestError,
    event_query,
    render_event,
    statistics_body,
)
from pipelines.taskrouter.emulator_world import STATUSES, World, WorldConfig, anchor_from_iso
from pipelines.taskrouter.ratelimit import TokenBucket

FAULT_KINDS = ("429", "500", "503", "reset", "truncated", "badjson", "slow")
ERROR_DOCS = "https://www.twilio.com/docs/errors/"


@dataclass
class Faults:
    latency_ms: float = 0.0
    requests_per_second: float | None = None  # above it: 429 with Retry-After
    rate_limit_burst: float | None = None  # requests allowed at once (default: rate / 5, >= 2)
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    slow_seconds: float = 2.0
    vanish_after_listing: int = 0  # workers deleted right after a complete worker listing ...
    vanish_on_listing: int = 1  # ... the n-th one (a Dagster sync lists workers twice)
    failing_workers: tuple[str, ...] = ()  # worker sids whose reservations always answer 500
    next_page_base_url: str | None = None  # put next_page_url on another origin (must be refused)
    forbidden: bool = False  # answer every API request 403 (credentials valid, access denied)
    retry_after_header: bool = True
    events_refused: int = 0  # answer the Events resource with this status (403 or 404)
    events_retention: str = "refuse"  # a StartDate older than 30 days: "refuse" (400) or "truncate"
    events_lag_seconds: int = 0  # events become visible this long after they happen
    events_fail_after: int | None = None  # Events requests after this many answer 500
    retry_after: str = "1"  # the header's value (seconds or an HTTP date; junk to test parsing)
    seed: int = 1

    def __post_init__(self) -> None:
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        if self.events_retention not in ("refuse", "truncate"):
            raise ValueError("events_retention must be 'refuse' or 'truncate'")


@dataclass
class ServerStats:
    requests: int = 0
    api_requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    events_requests: int = 0
    in_flight: int = 0  # API requests being answered right now
    max_in_flight: int = 0
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each API request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "api_requests": self.api_requests,
                "faults": dict(self.faults),
                "rate_limited": self.rate_limited,
                "events_requests": self.events_requests,
                "max_in_flight": self.max_in_flight,
                "max_requests_in_any_second": max_in_window(self.arrivals, 1.0),
            }


def max_in_window(times: list[float], window: float) -> int:
    """The most events inside any sliding window of ``window`` seconds."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _token(value: int) -> str:
    return "PA" + base64.urlsafe_b64encode(f"after:{value}".encode()).decode().rstrip("=")


def _untoken(token: str) -> int:
    if not token.startswith("PA"):
        raise ValueError("bad token")
    raw = token[2:] + "=" * (-len(token[2:]) % 4)
    text = base64.urlsafe_b64decode(raw.encode()).decode()
    if not text.startswith("after:"):
        raise ValueError("bad token")
    return int(text[6:])


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, world: World, faults: Faults, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.world = world
        self.faults = faults
        self.stats = ServerStats()
        self.limiter = TokenBucket(None)
        self.rng = random.Random(faults.seed)
        self.rng_lock = threading.Lock()
        self._vanished = False
        self._listings = 0
        self.set_faults(faults)
        host, port = self.server_address[:2]
        world.base_url = f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, injected resets) are expected here: stay quiet."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        rate = faults.requests_per_second or 0.0
        self.limiter = TokenBucket(rate, faults.rate_limit_burst or max(2.0, rate / 5))

    @property
    def base_url(self) -> str:
        return self.world.base_url

    def roll_fault(self) -> str | None:
        f = self.faults
        if f.fault_rate <= 0:
            return None
        with self.rng_lock:
            if self.rng.random() >= f.fault_rate:
                return None
            return self.rng.choice(f.fault_kinds)

    def over_rate_limit(self) -> bool:
        return not self.limiter.try_acquire()

    def chance(self) -> float:
        with self.rng_lock:
            return self.rng.random()

    def after_worker_listing(self, workspace_sid: str) -> None:
        with self.rng_lock:
            self._listings += 1
            due = (self.faults.vanish_after_listing and not self._vanished
                   and self._listings >= self.faults.vanish_on_listing)
            if due:
                self._vanished = True
        if due:
            self.world.delete_workers(self.faults.vanish_after_listing, workspace_sid)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return  # quiet: the sync's own logs are what matter

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        head.append("Content-Type: application/json; charset=utf-8")
        head.append(f"Content-Length: {len(body)}")
        head.append(f"Date: {formatdate(self.server.world.clock, usegmt=True)}")  # its own clock
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, orjson.dumps(payload), headers)

    def _send_error(self, err: _ApiError) -> None:
        body = {
            "code": err.code,
            "message": err.message,
            "more_info": f"{ERROR_DOCS}{err.code}",
            "status": err.status,
        }
        self._send_json(err.status, body, err.headers)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        world = self.server.world
        return (user, password) in {
            (world.account_sid, world.auth_token),
            (world.api_key_sid, world.api_key_secret),
        }

    # -- verbs --------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        server = self.server
        with server.stats.lock:
            server.stats.requests += 1
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            if not self._authorized():
                raise _ApiError(
                    401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
                )
            if parts.path.startswith("/_emulator/"):
                self._control(method, parts.path, query)
                return
            with server.stats.lock:
                server.stats.api_requests += 1
                server.stats.arrivals.append(time.monotonic())
                server.stats.in_flight += 1
                server.stats.max_in_flight = max(server.stats.max_in_flight,
                                                 server.stats.in_flight)
            try:
                self._answer(method, parts.path, query)
            finally:
                with server.stats.lock:
                    server.stats.in_flight -= 1
        except _ApiError as err:
            self._send_error(err)

    def _answer(self, method: str, path: str, query: dict[str, str]) -> None:
        server = self.server
        try:
            if server.faults.forbidden:
                raise _ApiError(403, 20403, "Forbidden: these credentials may not read this account")
            if server.faults.latency_ms:
                time.sleep(server.faults.latency_ms / 1000.0)
            if server.over_rate_limit():
                with server.stats.lock:
                    server.stats.rate_limited += 1
                headers = {"Retry-After": server.faults.retry_after} if server.faults.retry_after_header else {}
                raise _ApiError(429, 20429, "Too Many Requests", headers)
            fault = server.roll_fault()
            if server.faults.failing_workers and self._is_failing_worker(path):
                with server.stats.lock:
                    server.stats.faults["failing_worker"] += 1
                self._send_fault_status(500)
                return
            if fault in ("429", "500", "503"):
                with server.stats.lock:
                    server.stats.faults[fault] += 1
                self._send_fault_status(int(fault))
                return
            if method != "GET":
                raise _ApiError(405, 20004, "Method not allowed")
            body = self._route(path, query)
            if fault is not None:
                with server.stats.lock:
                    server.stats.faults[fault] += 1
                self._send_broken(fault, body)
                return
            self._send(200, body)
        except _ApiError as err:
            self._send_error(err)

    def _is_failing_worker(self, path: str) -> bool:
        parts = [p for p in path.split("/") if p]
        return (len(parts) == 6 and parts[5] == "Reservations"
                and parts[4] in self.server.faults.failing_workers)

    def _send_fault_status(self, status: int) -> None:
        if status == 429:
            headers = {}
            if self.server.faults.retry_after_header and self.server.chance() < 0.5:
                headers["Retry-After"] = self.server.faults.retry_after
            self._send_error(_ApiError(429, 20429, "Too Many Requests", headers))
        elif status == 503:
            self._send_error(_ApiError(503, 20503, "Service Unavailable"))
        else:
            self._send_error(_ApiError(500, 20500, "Internal Server Error"))

    def _send_broken(self, fault: str, body: bytes) -> None:
        if fault == "reset":
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.close_connection = True
        elif fault == "truncated":
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            self.wfile.write(head + body[: max(1, len(body) // 2)])
            self.close_connection = True
        elif fault == "badjson":
            self._send(200, body[: max(1, len(body) // 2)])
        elif fault == "slow":
            time.sleep(self.server.faults.slow_seconds)
            self._send(200, body)

    # -- the API ------------------------------------------------------------------------------
    def _route(self, path: str, query: dict[str, str]) -> bytes:
        parts = [p for p in path.split("/") if p]
        world = self.server.world
        if len(parts) < 2 or parts[0] != "v1" or parts[1] != "Workspaces":
            raise _ApiError(404, 20404, f"The requested resource {path} was not found")
        page_size = self._page_size(query)
        with world.lock:
            if len(parts) == 2:
                sids = sorted(world.workspaces)
                items = [world.workspace_json(s) for s in sids]
                return self._page(path, query, "workspaces", items, list(range(len(items))), page_size)
            ws_sid = parts[2]
            if ws_sid not in world.workspaces:
                raise _ApiError(404, 20404, f"The requested resource {path} was not found")
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
                    raise _ApiError(400, 20001, str(error)) from None
            if parts[3] == "Workers" and len(parts) == 6 and parts[5] == "Reservations":
                worker = world.find_worker(ws_sid, parts[4])
                if worker is None:
                    raise _ApiError(404, 20404, f"The requested resource {path} was not found")
                return self._reservation_page(path, query, worker, page_size)
        raise _ApiError(404, 20404, f"The requested resource {path} was not found")

    @staticmethod
    def _page_size(query: dict[str, str]) -> int:
        try:
            size = int(query.get("PageSize", "50"))
        except ValueError:
            raise _ApiError(400, 20001, "Invalid PageSize") from None
        if not 1 <= size <= 1000:
            raise _ApiError(400, 20007, "PageSize must be between 1 and 1000")
        return size

    def _window(self, query: dict[str, str], keys: Iterable[int], page_size: int) -> tuple[int, int, int]:
        """(page number, start index, stop index) for the PageToken keyset over sorted ``keys``."""
        keys = list(keys)
        page = int(query.get("Page", "0") or 0)
        token = query.get("PageToken")
        if page > 0 and not token:
            raise _ApiError(400, 20001, "Page > 0 needs the PageToken from next_page_url")
        start = 0
        if token:
            try:
                after = _untoken(token)
            except ValueError:
                raise _ApiError(400, 20001, "Invalid PageToken") from None
            import bisect

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
        next_token = _token(keys[stop - 1]) if stop < len(keys) else None
        meta = self._meta(path, query, key, page, page_size, next_token)
        return orjson.dumps({key: items[start:stop], "meta": meta})

    def _reservation_page(self, path: str, query: dict[str, str], worker: Any, page_size: int) -> bytes:
        world = self.server.world
        keys = worker.serials.tolist()
        wanted = query.get("ReservationStatus")
        if wanted:
            if wanted not in STATUSES:
                raise _ApiError(400, 20001, f"Invalid ReservationStatus {wanted}")
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
        next_token = _token(keys[stop - 1]) if stop < len(keys) else None
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
            raise _ApiError(500, 20500, "Internal Server Error")
        if faults.events_refused:
            status = faults.events_refused
            raise _ApiError(status, 20000 + status, "Forbidden: Events are not available to "
                            "these credentials" if status == 403 else
                            f"The requested resource {path} was not found")
        try:
            wanted = event_query(world, ws_sid, query, faults.events_retention == "refuse",
                                 faults.events_lag_seconds)
        except EventsRequestError as error:
            raise _ApiError(400, 20001, str(error)) from None
        log = world.logs[ws_sid]
        positions = log.window(wanted, lambda tasks: _channels(world, tasks),
                               lambda tasks: tasks % 3)
        page = int(query.get("Page", "0") or 0)
        token = query.get("PageToken")
        if token:
            try:
                after = _untoken(token)
            except ValueError:
                raise _ApiError(400, 20001, "Invalid PageToken") from None
            positions = positions[positions < after]
        chosen = positions[:page_size]
        events = log.events
        items = [render_event(world, ws_sid, events[int(p)], log.first_sequence + int(p))
                 for p in chosen]
        next_token = _token(int(chosen[-1])) if len(positions) > page_size else None
        meta = self._meta(path, query, "events", page, page_size, next_token)
        return orjson.dumps({"events": items, "meta": meta})

    # -- control (tests, demo and benchmarks drive the world through these) ------------------
    def _control(self, method: str, path: str, query: dict[str, str]) -> None:
        server, world = self.server, self.server.world
        if path == "/_emulator/advance" and method == "POST":
            figures = world.advance(float(query.get("minutes", "60")))
            self._send_json(200, {**figures, "clock": world.clock})
        elif path == "/_emulator/truth":
            self._send_json(200, {"reservations": world.truth(), "workers": world.truth_workers()})
        elif path == "/_emulator/ever":
            self._send_json(200, {"reservations": world.ever()})
        elif path == "/_emulator/churn" and method == "POST":
            figures = world.churn(float(query.get("minutes", "5")), int(query.get("new", "2")),
                                  float(query.get("changed", "0.02")))
            self._send_json(200, {**figures, "clock": world.clock})
        elif path == "/_emulator/stats":
            self._send_json(200, {**server.stats.as_dict(), "reservations": world.reservation_count()})
        elif path == "/_emulator/delete_workers" and method == "POST":
            gone = world.delete_workers(int(query.get("count", "1")))
            self._send_json(200, {"deleted": gone})
        elif path == "/_emulator/reset" and method == "POST":
            world.reset()
            self._send_json(200, {"reservations": world.reservation_count(), "clock": world.clock})
        elif path == "/_emulator/prewarm" and method == "POST":
            with world.lock:
                n = sum(
                    len(world.reservation_fragments(w))
                    for ws in world.workers
                    for w in world.live_workers(ws)
                )
            self._send_json(200, {"serialized": n})
        else:
            raise _ApiError(404, 20404, f"No emulator control at {path}")


def _channels(world: World, tasks: Any) -> Any:
    import numpy as np

    return np.array([world.task_channel(int(t)) for t in tasks], dtype=object)


class Emulator:
    """An emulator running in a background thread of this process (tests use this)."""

    def __init__(self, config: WorldConfig | None = None, faults: Faults | None = None,
                 port: int = 0) -> None:
        self.world = World(config or WorldConfig())
        self.server = EmulatorServer(self.world, faults or Faults(), port=port)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="taskrouter-emulator")

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def env(self, api_key: bool = False) -> dict[str, str]:
        """Environment variables that point the pipeline at this emulator."""
        w = self.world
        env = {"TASKROUTER_BASE_URL": self.base_url}
        if api_key:
            env |= {"TWILIO_API_KEY_SID": w.api_key_sid, "TWILIO_API_KEY_SECRET": w.api_key_secret,
                    "TWILIO_ACCOUNT_SID": w.account_sid}
        else:
            env |= {"TWILIO_ACCOUNT_SID": w.account_sid, "TWILIO_AUTH_TOKEN": w.auth_token}
        return env

    def start(self) -> Emulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve a local TaskRouter emulator on 127.0.0.1.")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workspaces", type=int, default=2)
    p.add_argument("--workers", type=int, default=25, help="workers per workspace")
    p.add_argument("--reservations", type=int, default=40, help="reservations per worker")
    p.add_argument("--history-days", type=int, default=30)
    p.add_argument("--anchor", help="ISO time the clock starts at (default: now)")
    p.add_argument("--advance-minutes", type=float, default=0.0,
                   help="advance the clock this much (in steps of at most 60 min) before serving")
    p.add_argument("--dirty", action="store_true", help="serve hostile and unusual records")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--rps", type=float, default=None, help="rate limit; above it answer 429")
    p.add_argument("--rps-burst", type=float, default=None, help="requests allowed at once")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS))
    p.add_argument("--slow-seconds", type=float, default=2.0)
    p.add_argument("--vanish-after-listing", type=int, default=0)
    p.add_argument("--prewarm", action="store_true", help="serialize every page before serving")
    p.add_argument("--arrivals-per-hour", type=float, default=2.0, help="new tasks per worker")
    p.add_argument("--pace", type=float, default=1.0, help="stretch every lifecycle duration")
    p.add_argument("--open-share", type=float, default=None,
                   help="share of seed reservations still open (default: by age)")
    p.add_argument("--no-seed-events", action="store_true",
                   help="no Events for the seed's past (a feed that starts now)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = WorldConfig(
        seed=args.seed,
        workspaces=args.workspaces,
        workers_per_workspace=args.workers,
        reservations_per_worker=args.reservations,
        history_days=args.history_days,
        anchor=anchor_from_iso(args.anchor),
        dirty=args.dirty,
        arrivals_per_hour=args.arrivals_per_hour,
        pace=args.pace,
        open_share=args.open_share,
        seed_events=not args.no_seed_events,
    )
    faults = Faults(
        latency_ms=args.latency_ms,
        requests_per_second=args.rps,
        rate_limit_burst=args.rps_burst,
        fault_rate=args.fault_rate,
        fault_kinds=tuple(k for k in args.fault_kinds.split(",") if k),
        slow_seconds=args.slow_seconds,
        vanish_after_listing=args.vanish_after_listing,
    )
    emulator = Emulator(config, faults, port=args.port)
    remaining = args.advance_minutes
    while remaining > 0:
        step = min(60.0, remaining)
        emulator.world.advance(step)
        remaining -= step
    if args.prewarm:
        for ws in emulator.world.workers:
            for worker in emulator.world.live_workers(ws):
                emulator.world.reservation_fragments(worker)
    world = emulator.world
    print(json.dumps({
        "base_url": emulator.base_url,
        "account_sid": world.account_sid,
        "auth_token": world.auth_token,
        "api_key_sid": world.api_key_sid,
        "api_key_secret": world.api_key_secret,
        "reservations": world.reservation_count(),
        "clock": world.clock,
    }), flush=True)
    try:
        emulator.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
